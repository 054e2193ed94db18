"""Host-independent core: backbones, their building blocks, the registry, weights loading and fusion.

Nothing here imports a YOLO host. Importing this package registers every backbone family.
"""
from . import edgevit, efficientformer, mobileformer  # noqa: F401  (register the families)
from .base import Backbone, InputSizeError
from .registry import backbone_classes, backbone_names, create, list_backbones
from .select import Select

__all__ = ["Backbone", "InputSizeError", "Select", "backbone_classes", "backbone_names", "create", "list_backbones"]
