"""Recognising YOLOv5's files (pip package or clone) among loaded modules."""
from __future__ import annotations

import types
from pathlib import Path

from ...common.patching import register_host_tops


def _is_yolov5_file(module: types.ModuleType) -> bool:
    """True if ``module`` is a file of a YOLOv5 tree (pip package or clone), not a namesake."""
    file = getattr(module, "__file__", None)
    if not file:
        return False
    here = Path(file).resolve().parent
    return any((d / "models" / "yolo.py").is_file() and (d / "utils" / "general.py").is_file()
               for d in (here, here.parent))


register_host_tops("yolov5", "models", "utils", "train", "val", "detect", "export", "hubconf", "benchmarks", "segment",
                   "classify", main_is_host=_is_yolov5_file)
