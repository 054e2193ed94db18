"""The YOLOv5 host (PyPI ``yolov5`` package or a clone): ``parse_model``/forward/fuse patch, compat fixes, COCO val."""
from __future__ import annotations

import sys

from .checkpoints import register_checkpoint_support
from .model_patch import is_yolo_module, patch_yolo_module

__all__ = ["install", "is_yolo_module", "patch_yolo_module"]


def install() -> list[str]:
    """Patch every YOLOv5 ``models.yolo`` already imported and apply the compat fixes; return the names patched now."""
    register_checkpoint_support()
    patched = [name for name, module in list(sys.modules.items())
               if name.endswith("models.yolo") and module is not None and is_yolo_module(module)
               and patch_yolo_module(module)]
    if any(name == "yolov5" or name.startswith(("yolov5.", "utils.", "models.")) for name in sys.modules):
        from .compat import apply_compat

        apply_compat()
    return patched
