"""Make YOLOv5 usable offline and on torch >= 2.6, without loosening checkpoint security.

The host is the PyPI package ``yolov5==7.0.14`` (modules ``yolov5.*``) or a clone of
ultralytics/yolov5 (top-level ``utils.*``, ``models.*``, ``train`` ...). :func:`apply_compat`
replaces a few host functions, only those that exist, and is idempotent:

* checkpoints: every ``torch.load`` of the host (and a clone's ``torch_load``) goes through
  :func:`yolo_backbones.load_checkpoint`, which rebuilds objects but never calls file-chosen code;
* nothing is downloaded (``general``, ``downloads``, ``plots``); ``pip install`` never runs;
* bare YAML names are also looked up in this project's ``models/`` and ``data/`` folders;
* ``train`` with ``--cfg`` and no ``--weights`` trains from scratch (``train_defaults``);
* numpy >= 2.4: the host's mAP code finds ``np.trapz`` again (``standins``);
* ``val.run`` with ``save_json`` computes pycocotools mAP for any dataset with a COCO JSON (``coco_val``);
* ``export.py --include openvino`` and ``DetectMultiBackend`` use today's ``openvino`` API, at f32 (``openvino``);
* ``--include tflite|coreml|ncnn|executorch`` and their ``DetectMultiBackend`` loading go through
  ``yolo_backbones.deploy`` (``edge``);
* ``DetectMultiBackend`` reads exported models' metadata as literals and checks names and stride (``metadata``).
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
import warnings

import numpy as np
import torch

from ...common.checkpoints import load_model_checkpoint
from ...common.offline import go_offline
from ...common.patching import repoint
from .downloads import _patch_downloads
from .edge import patch_edge
from .general import _patch_general
from .layout import _is_yolov5_file
from .metadata import patch_metadata
from .openvino import patch_openvino
from .plots import _patch_plots
from .standins import _TORCH, _TORCH_USERS, _NumpyForHost
from .train_defaults import _patch_train

__all__ = ["apply_compat"]



def _silence_pkg_resources_warning() -> None:
    # Why: every `import yolov5` prints "pkg_resources is deprecated as an API" (utils/general.py and
    # utils/loggers import pkg_resources; setuptools<81 still ships it). Only that warning is ignored.
    warnings.filterwarnings("ignore", message=r"pkg_resources is deprecated as an API", category=UserWarning)


_silence_pkg_resources_warning()  # at import too: the warning fires on YOLOv5's first import


_PIP_ENTRY_MODULES = ("yolov5.train", "yolov5.val", "yolov5.detect", "yolov5.export")


def _try_import(name: str) -> bool:
    try:
        importlib.import_module(name)
        return True
    except ImportError:
        return False


def _layout_prefixes(host: types.ModuleType | None) -> list[str]:
    """Module-name prefixes of the hosts to patch: "yolov5." (pip package) and/or "" (clone layout)."""
    if host is not None:
        if host.__name__ == "yolov5":
            for name in ("yolov5.utils.general", "yolov5.models.experimental", *_PIP_ENTRY_MODULES):
                importlib.import_module(name)
            return ["yolov5."]
        if host.__name__ in ("utils", "models"):
            for name in ("utils.general", "utils.downloads", "utils.plots", "models.common", "models.experimental"):
                _try_import(name)
            return [""]
        raise ValueError(f"apply_compat: {host.__name__!r} is not a YOLOv5 host package "
                         "(expected yolov5, or a clone's utils or models)")
    prefixes = []
    if any(n == "yolov5" or n.startswith("yolov5.") for n in sys.modules):
        prefixes.append("yolov5.")
    if any(n in sys.modules for n in ("utils.general", "utils.downloads", "models.yolo", "models.experimental")):
        prefixes.append("")
    if not prefixes and importlib.util.find_spec("yolov5") is not None:
        return _layout_prefixes(importlib.import_module("yolov5"))
    return prefixes


def apply_compat(host: types.ModuleType | None = None) -> None:
    """Make a YOLOv5 work offline and load its checkpoints safely on torch >= 2.6. Idempotent.

    Args:
        host: the YOLOv5 to patch: the pip ``yolov5`` package (its train/val/detect/export modules
            are imported and patched too), or a clone's top-level ``utils`` or ``models`` package.
            ``None`` patches every YOLOv5 module already imported (pip and/or clone layout); if
            none is, the pip package is imported and patched when installed. Modules imported
            later are patched by the next call (yolo_backbones' import hook makes that call).
    """
    _silence_pkg_resources_warning()
    go_offline()
    for prefix in _layout_prefixes(host):
        general = sys.modules.get(prefix + "utils.general")
        if general is not None:
            _patch_general(general)
            if prefix + "utils.plots" in sys.modules:
                _patch_plots(sys.modules[prefix + "utils.plots"], general)
        if prefix + "utils.downloads" in sys.modules:
            _patch_downloads(sys.modules[prefix + "utils.downloads"], general)
        for name in _TORCH_USERS:
            module = sys.modules.get(prefix + name)
            if module is not None and module.__dict__.get("torch") is torch and _is_yolov5_file(module):
                module.torch = _TORCH
        for name in ("train", "segment.train"):
            module = sys.modules.get(prefix + name)
            if module is not None and (prefix or _is_yolov5_file(module)):
                _patch_train(module)
        metrics = sys.modules.get(prefix + "utils.metrics")
        if metrics is not None and metrics.__dict__.get("np") is np and not hasattr(np, "trapz"):
            metrics.np = _NumpyForHost()
        val = sys.modules.get(prefix + "val")
        if val is not None and (prefix or _is_yolov5_file(val)):
            from ..coco_val import patch_val

            patch_val(val)  # val.py --save-json: pycocotools mAP for any dataset with a COCO annotation file
        export, common = (sys.modules.get(prefix + name) for name in ("export", "models.common"))
        export = export if export is not None and (prefix or _is_yolov5_file(export)) else None
        common = common if common is not None and (prefix or _is_yolov5_file(common)) else None
        patch_openvino(export, common)
        patch_edge(export, common)  # after OpenVINO: its run/DetectMultiBackend are wrapped in turn
        patch_metadata(common)  # last: its checks wrap every format's branch of DetectMultiBackend
    patches = sys.modules.get("ultralytics.utils.patches")
    if patches is not None and callable(getattr(patches, "torch_load", None)):
        # Why: a clone loads every checkpoint with ultralytics' torch_load, which defaults to weights_only=False
        repoint(patches.torch_load, load_model_checkpoint, "torch_load")
