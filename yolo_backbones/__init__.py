"""yolo-backbones: EdgeViT, Mobile-Former and EfficientFormer (v1/v2) as YOLOv5 backbones."""
from .registry import backbone_names, create, list_backbones
from . import backbones  # noqa: F401  (registers the families)

__all__ = ["create", "list_backbones", "backbone_names"]
