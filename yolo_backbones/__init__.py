"""yolo-backbones: EdgeViT, Mobile-Former and EfficientFormer (v1/v2) as YOLOv5 backbones.

``import yolo_backbones`` registers the backbones and installs the plugin into every YOLOv5 that
is (or later gets) imported: the PyPI package (``yolov5.models.yolo``) and a clone on
``sys.path`` (``models.yolo``). It never imports a YOLOv5 itself.
"""
from __future__ import annotations

import sys

from . import backbones  # noqa: F401  (registers the families)
from .checkpoints import load_checkpoint
from .registry import backbone_names, create, list_backbones
from .yolov5_patch import Select, patch_yolo_module

__all__ = ["create", "list_backbones", "backbone_names", "install", "load_checkpoint", "Select"]
__version__ = "0.1.0"


def install() -> list[str]:
    """Install the plugin into every YOLOv5 module already imported; return the names patched now.

    Idempotent. Applies the compatibility fixes (offline, torch >= 2.6) and the ``parse_model``
    patch. Modules imported later are handled by the import hook that this also enables.
    """
    import yolo_backbones_autoload

    from .compat import apply_compat
    from .yolov5_patch import is_yolo_module

    yolo_backbones_autoload.enable()
    patched = [name for name, module in list(sys.modules.items())
               if name.endswith("models.yolo") and module is not None and is_yolo_module(module)
               and patch_yolo_module(module)]
    if any(name == "yolov5" or name.startswith(("yolov5.", "utils.", "models.")) for name in sys.modules):
        apply_compat()
    return patched


install()
