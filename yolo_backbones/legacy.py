"""Old module paths of pickled classes (checkpoints saved by yolo-backbones 0.1), mapped to today's modules.

A YOLO checkpoint pickles the whole model, so it names each class by the module it lived in when it
was saved. Importing :mod:`yolo_backbones` registers these names in ``sys.modules`` so such files
keep loading after the package layout changed.
"""
from __future__ import annotations

import importlib
import sys

# old module path -> module that now defines (or re-exports) the same classes
MODULE_ALIASES: dict[str, str] = {
    "yolo_backbones.backbones": "yolo_backbones.core",
    "yolo_backbones.backbones.base": "yolo_backbones.core.base",
    "yolo_backbones.backbones.edgevit": "yolo_backbones.core.edgevit",
    "yolo_backbones.backbones.mobileformer": "yolo_backbones.core.mobileformer",
    "yolo_backbones.backbones.efficientformer": "yolo_backbones.core.efficientformer.v1",
    "yolo_backbones.backbones.efficientformer_v2": "yolo_backbones.core.efficientformer.v2",
    "yolo_backbones.layers": "yolo_backbones.core.layers",
    "yolo_backbones.yolov5_patch": "yolo_backbones.core.select",
    # 0.2 -> 0.3: the inference machinery moved into core/inference (no pickled classes; imports of code written
    # against 0.2 keep working)
    "yolo_backbones.core.fuse": "yolo_backbones.core.inference.fuse",
    "yolo_backbones.core.eval_fusion": "yolo_backbones.core.inference.eval_fusion",
    "yolo_backbones.core.runtime": "yolo_backbones.core.inference.runtime",
    "yolo_backbones.core.layers.onednn": "yolo_backbones.core.inference.onednn",
    "yolo_backbones.core.layers.tiling": "yolo_backbones.core.inference.tiling",
}


def install_aliases() -> None:
    """Make every old module path importable as an alias of its new module, and known to the safe loader."""
    from .core.weights.safe_load import register_module_alias

    for old, new in MODULE_ALIASES.items():
        sys.modules.setdefault(old, importlib.import_module(new))
        register_module_alias(old, new)
