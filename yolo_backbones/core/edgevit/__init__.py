"""EdgeViT: the reference model (:mod:`.model`) and the fused forms of its blocks (:mod:`.fused`).

Checkpoints name the classes by this package's path (``yolo_backbones.core.edgevit.EdgeViT``): they stay here.
"""
from .model import EDGEVIT_CFGS, EdgeViT, GlobalSparseAttn, LGLBlock, LocalAgg, PatchEmbed, SelfAttn

__all__ = ["EDGEVIT_CFGS", "EdgeViT", "GlobalSparseAttn", "LGLBlock", "LocalAgg", "PatchEmbed", "SelfAttn"]
