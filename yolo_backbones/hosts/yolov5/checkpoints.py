"""YOLOv5 checkpoints as data: detection and segmentation models rebuilt from their YAML, run settings confined.

A YOLOv5 checkpoint pickles ``models.yolo.DetectionModel`` (a clone) or ``yolov5.models.yolo.DetectionModel``
(the PyPI package). The loader hands such a record to :class:`YOLOv5Builder`, which imports the host that
defines the class (a clone's ``models.yolo`` when one is importable, else the PyPI package), builds the model
with the host's constructor from the ``yaml`` dict the record stores (through the plugin's ``parse_model``:
module classes only, never a call of anything else), and copies ``names``, ``nc``, ``hyp``, ``class_weights``
and ``yaml_file`` after type checks. The YAML's ``activation:`` changes ``Conv.default_act`` only while the
model is built.

:func:`confine_checkpoint` (a loader hook) points the ``opt['save_dir']`` of a training checkpoint at the
checkpoint's own run folder and clears the hyperparameter-evolution settings (``evolve``, ``bucket``), which
YOLOv5 hands to a shell command.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

from torch import nn

from ...core.weights.metadata import checkpoint_run_dir
from ...core.weights.safe_load import ModelBuilder, ModuleRecord, register_checkpoint_hook, register_model_builder
from ...core.weights.safe_load.errors import Refused
from ...core.weights.safe_load.modules import ConfigModelBuilder

__all__ = ["YOLOv5Builder", "register_checkpoint_support", "confine_checkpoint", "yolo_module_for"]

MODEL_CLASSES = ("DetectionModel", "Model", "SegmentationModel")
_PATHS = [f"{prefix}models.yolo.{name}" for prefix in ("", "yolov5.")
          for name in (*MODEL_CLASSES, "ClassificationModel")]


def _clone_on_path() -> bool:
    """True if ``import models.yolo`` would find a YOLOv5 clone: not this project's YAML-only ``models/`` folder, nor
    the PyPI package's own ``models/`` (which ``import yolov5`` puts on ``sys.path``)."""
    spec = importlib.util.find_spec("models")
    pip = importlib.util.find_spec("yolov5")
    pip_models = Path(pip.origin).parent.resolve() / "models" if pip is not None and pip.origin else None
    return spec is not None and any(Path(folder, "yolo.py").is_file() and Path(folder).resolve() != pip_models
                                    for folder in (spec.submodule_search_locations or ()))


def yolo_module_for(class_path: str) -> types.ModuleType:
    """The YOLOv5 ``models.yolo`` module that rebuilds ``class_path``: a clone's for ``models.yolo.*`` when one is
    imported or importable, else the PyPI package's; the plugin is installed into it."""
    from .model_patch import is_yolo_module, patch_yolo_module

    module = None
    if class_path.startswith("models.yolo."):
        loaded = sys.modules.get("models.yolo")
        if loaded is not None and is_yolo_module(loaded) and _clone_on_path():
            module = loaded
        elif _clone_on_path():
            module = importlib.import_module("models.yolo")
    if module is None:
        try:
            module = importlib.import_module("yolov5.models.yolo")
        except ImportError:
            raise Refused(class_path, "it is a YOLOv5 model and YOLOv5 is not installed (pip install yolov5, or run "
                                      "from a YOLOv5 clone)") from None
    patch_yolo_module(module)
    return module


class YOLOv5Builder(ConfigModelBuilder):
    """Rebuilds YOLOv5 detection and segmentation models (see the module docstring)."""

    loggers = ("yolov5",)

    def __init__(self, class_path: str) -> None:
        self.yolo = yolo_module_for(class_path)

    def model_class(self, rec: ModuleRecord) -> type:
        cls = self.yolo.__dict__.get(rec.name) if rec.name in MODEL_CLASSES else None
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise Refused(rec.obj.cls.path, "YOLOv5 classification checkpoints (and other model classes than "
                                            f"{', '.join(MODEL_CLASSES)}) are not rebuilt from data")
        return cls

    def construct(self, cls: type, cfg: dict) -> nn.Module:
        ch = cfg.get("ch", 3)
        if type(ch) is not int or not 1 <= ch <= 64:
            raise Refused(None, f"its model config sets {ch!r} input channels")
        conv = self.yolo.__dict__.get("Conv")
        default_act = getattr(conv, "default_act", None)
        try:
            return cls(cfg, ch=ch)
        finally:
            if conv is not None:
                conv.default_act = default_act  # an `activation:` of the file's YAML applies to this model only


def _factory(class_path: str) -> ModelBuilder:
    return YOLOv5Builder(class_path)


def confine_checkpoint(ckpt: Any, path: str | None) -> None:
    """Loader hook: a YOLOv5 training checkpoint's ``opt`` may not send writes or shell commands anywhere."""
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("opt"), dict):
        return
    opt = ckpt["opt"]
    opt["save_dir"] = str(checkpoint_run_dir(path)) if path else None
    for key, value in (("evolve", None), ("bucket", "")):
        if key in opt:
            opt[key] = value


def register_checkpoint_support() -> None:
    """Register the builder for YOLOv5's model classes and the run-settings hook with the loader (idempotent)."""
    register_model_builder(_PATHS, _factory)
    register_checkpoint_hook(confine_checkpoint)
