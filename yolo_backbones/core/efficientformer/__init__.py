"""EfficientFormer (v1, ``v1.py``) and EfficientFormerV2 (``v2.py``, which reuses v1's shared parts)."""
from .v1 import EfficientFormer
from .v2 import EfficientFormerV2

__all__ = ["EfficientFormer", "EfficientFormerV2"]
