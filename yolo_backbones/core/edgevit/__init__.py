"""EdgeViT: the reference model (:mod:`.model`) and the fused forms of its blocks (:mod:`.fused`).

Checkpoints saved when EdgeViT was one module name its classes by this package's path
(``yolo_backbones.core.edgevit.EdgeViT``), newer ones by :mod:`.model`'s: every class stays importable from here.
"""
from .model import EDGEVIT_CFGS, EdgeViT, GlobalSparseAttn, LGLBlock, LocalAgg, PatchEmbed, SelfAttn

__all__ = ["EDGEVIT_CFGS", "EdgeViT", "GlobalSparseAttn", "LGLBlock", "LocalAgg", "PatchEmbed", "SelfAttn"]
