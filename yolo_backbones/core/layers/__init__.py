"""Building blocks shared by several backbones, one concept a file; a block used by one backbone only lives there."""
from .attention_bias import OffsetBiasAttention
from .conv_bn import ConvBnDownsample, conv3x3_s2_bn, conv_bn_stem
from .drop import DropPath
from .layer_scale import LayerScaleBlock, scaled
from .mlp import ConvBnMlp, ConvMlp, Mlp
from .norms import LayerNorm2d, SafeBatchNorm2d

__all__ = ["OffsetBiasAttention", "ConvBnDownsample", "conv3x3_s2_bn", "conv_bn_stem", "DropPath", "LayerScaleBlock", "scaled", "ConvBnMlp", "ConvMlp", "Mlp", "LayerNorm2d",
           "SafeBatchNorm2d"]
