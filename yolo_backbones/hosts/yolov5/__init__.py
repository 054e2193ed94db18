"""The YOLOv5 host (PyPI ``yolov5`` package or a clone): ``parse_model``/forward/fuse patch, compat fixes, COCO val."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from ...core.weights.safe_load import register_model_namespace, register_module_alias
from .model_patch import is_yolo_module, patch_yolo_module

__all__ = ["install", "is_yolo_module", "patch_yolo_module"]


def register_checkpoint_classes() -> None:
    """Let the safe loader rebuild YOLOv5's model classes (pip ``yolov5.models``, a clone's ``models``)."""
    register_model_namespace("yolov5.models")
    register_model_namespace("models")
    if "models" not in sys.modules and not _yolov5_clone_on_path():
        register_module_alias("models", "yolov5.models")  # a clone's checkpoint, read with only the pip package


def _yolov5_clone_on_path() -> bool:
    """True if ``import models.yolo`` would find a YOLOv5 clone's module (not merely a folder named ``models``,
    such as this project's YAML folder, which Python imports as an empty namespace package)."""
    spec = importlib.util.find_spec("models")
    if spec is None:
        return False
    return any(Path(folder, "yolo.py").is_file() for folder in (spec.submodule_search_locations or ()))


def install() -> list[str]:
    """Patch every YOLOv5 ``models.yolo`` already imported and apply the compat fixes; return the names patched now."""
    register_checkpoint_classes()
    patched = [name for name, module in list(sys.modules.items())
               if name.endswith("models.yolo") and module is not None and is_yolo_module(module)
               and patch_yolo_module(module)]
    if any(name == "yolov5" or name.startswith(("yolov5.", "utils.", "models.")) for name in sys.modules):
        from .compat import apply_compat

        apply_compat()
    return patched
