"""Building blocks shared by several backbones, one concept a file; a block used by one backbone only lives there."""
from .attention_bias import OffsetBiasAttention, biased_scores, mix_heads, softmax_attention
from .conv_bn import ConvBnDownsample, conv3x3_s2_bn, conv_bn_stem
from .drop import DropPath
from .layer_scale import LayerScaleBlock, scaled
from .layout import channels_last_weights, heads_to_map, is_channels_last, is_tracing, map_to_heads
from .mlp import ConvBnMlp, ConvMlp, Mlp
from .norms import LayerNorm2d, SafeBatchNorm2d
from . import onednn

__all__ = ["OffsetBiasAttention", "biased_scores", "mix_heads", "softmax_attention", "ConvBnDownsample", "conv3x3_s2_bn", "conv_bn_stem", "DropPath", "LayerScaleBlock", "scaled", "channels_last_weights", "heads_to_map", "is_channels_last", "is_tracing", "map_to_heads", "ConvBnMlp", "ConvMlp", "Mlp", "LayerNorm2d",
           "SafeBatchNorm2d", "onednn"]
