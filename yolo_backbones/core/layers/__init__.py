"""Building blocks shared by several backbones, one concept a file; a block used by one backbone only lives there.

Each block's ``forward`` is its reference math; its fused inference form lives in
:mod:`.fused`.
"""
from .attention_bias import OffsetBiasAttention, biased_scores, mix_heads, softmax_attention
from .conv_bn import ConvBnDownsample, ConvSequential, conv3x3_s2_bn, conv_bn_stem
from .drop import DropPath
from .layer_scale import LayerScaleBlock, scaled
from .layout import channels_last_weights, heads_to_map, is_channels_last, is_tracing, map_to_heads
from .mlp import ConvBnMlp, ConvMlp, Mlp
from .norms import LayerNorm2d, SafeBatchNorm2d

__all__ = ["ConvBnDownsample", "ConvBnMlp", "ConvMlp", "ConvSequential", "DropPath", "LayerNorm2d", "LayerScaleBlock",
           "Mlp", "OffsetBiasAttention", "SafeBatchNorm2d", "biased_scores", "channels_last_weights", "conv3x3_s2_bn",
           "conv_bn_stem", "heads_to_map", "is_channels_last", "is_tracing", "map_to_heads", "mix_heads", "scaled",
           "softmax_attention"]
