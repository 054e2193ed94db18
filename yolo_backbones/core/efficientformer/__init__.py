"""EfficientFormer (v1, :mod:`.v1`) and EfficientFormerV2 (:mod:`.v2`) on a shared skeleton (:mod:`.base`); the fused
forms of their blocks are in :mod:`.fused`."""
from .v1 import EfficientFormer
from .v2 import EfficientFormerV2

__all__ = ["EfficientFormer", "EfficientFormerV2"]
