"""Mobile-Former: the reference model (:mod:`.model`, with its dynamic ReLU in :mod:`.dynamic_relu`) and the fused
forms of its blocks (:mod:`.fused`; the NCNN capture's bridges in :mod:`.ncnn_bridges`).

Checkpoints saved when Mobile-Former was one module name its classes by this package's path
(``yolo_backbones.core.mobileformer.MobileFormer``), newer ones by :mod:`.model`'s: every class stays importable
from here.
"""
from .dynamic_relu import dynamic_relu
from .fused import FrozenLinear, FusedSlopes, dynamic_relu_conv
from .model import (
                    MOBILEFORMER_CFGS,
                    ChannelShuffle,
                    DnaBlock,
                    DnaBlock3,
                    Global2Local,
                    GlobalBlock,
                    HyperFunc,
                    LiteBlock,
                    Local2Global,
                    MergeClassifier,
                    MobileFormer,
                    TokenLayerNorm,
                    TokenLinear,
)

__all__ = ["MOBILEFORMER_CFGS", "ChannelShuffle", "DnaBlock", "DnaBlock3", "FrozenLinear", "FusedSlopes",
           "Global2Local", "GlobalBlock", "HyperFunc", "LiteBlock", "Local2Global", "MergeClassifier", "MobileFormer",
           "TokenLayerNorm", "TokenLinear", "dynamic_relu", "dynamic_relu_conv"]
