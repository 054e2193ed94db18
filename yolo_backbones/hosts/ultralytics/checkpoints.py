"""ultralytics loads checkpoints through :func:`yolo_backbones.load_checkpoint`: data only, models rebuilt.

Every ``.pt`` ultralytics reads as a model (``YOLO("best.pt")``, ``yolo val/predict/export model=...``,
resume, ``AutoBackend``, ``strip_optimizer``) goes through ``tasks.torch_safe_load`` or
``torch_utils.torch_load``: ``torch_safe_load`` is replaced (the loader's one-line errors reach the user
instead of ultralytics' "corrupted file" wrapping, and nothing is auto-installed for a module a file names),
and the name ``torch_load`` of both modules points to the safe loader; ``strip_optimizer``, which turns any
load error into a "Skipping" warning, re-raises the loader's refusal. ``ultralytics.utils.patches.torch_load``
itself stays ultralytics' (full unpickling): the DDP launcher uses it to hand the trainer, callbacks included,
to its rank processes.

A model record of ``ultralytics.nn.tasks`` (``DetectionModel``, ``SegmentationModel``, ``PoseModel``,
``OBBModel``, ``ClassificationModel``) is rebuilt by :class:`UltralyticsBuilder` with the host's constructor
from its stored ``yaml`` (through the plugin-wrapped ``parse_model``: module classes only); ``names``,
``nc``, ``args``, ``task``, ``pt_path``, ``inplace`` are copied after type checks. ``IterableSimpleNamespace``
objects become namespaces of plain values. :func:`confine_checkpoint` points the ``train_args['save_dir']``
of a checkpoint (where ``yolo train resume`` writes) at the checkpoint's own run folder.
"""
from __future__ import annotations

import contextvars
import importlib
import sys
from pathlib import Path
from typing import Any, Callable

from torch import nn

from ...core.weights import safe_load
from ...core.weights.metadata import checkpoint_run_dir
from ...core.weights.safe_load.errors import Refused
from ...core.weights.safe_load.modules import ConfigModelBuilder, ModuleRecord
from ..common.checkpoints import require_model_checkpoint
from ..common.patching import replace

__all__ = ["allow_ultralytics_classes", "patch_checkpoint_loading", "UltralyticsBuilder", "confine_checkpoint"]

MODEL_CLASSES = ("DetectionModel", "SegmentationModel", "PoseModel", "OBBModel", "ClassificationModel")
_ALIASES = {"YOLOv10DetectionModel": "DetectionModel"}
_PATHS = [f"ultralytics.nn.tasks.{name}" for name in (*MODEL_CLASSES, *_ALIASES)]
_NAMESPACES = ("ultralytics.utils.IterableSimpleNamespace", "ultralytics.yolo.utils.IterableSimpleNamespace")


class UltralyticsBuilder(ConfigModelBuilder):
    """Rebuilds ultralytics' model classes (see the module docstring)."""

    loggers = ("ultralytics",)
    attribute_checks = {k: v for k, v in ConfigModelBuilder.attribute_checks.items()
                        if k in ("names", "nc", "args", "task", "pt_path", "inplace", "yaml_file")}

    def __init__(self, class_path: str) -> None:
        self.tasks = importlib.import_module("ultralytics.nn.tasks")
        from .model_patch import patch_tasks_module

        patch_tasks_module(self.tasks)

    def model_class(self, rec: ModuleRecord) -> type:
        name = _ALIASES.get(rec.name, rec.name)
        cls = self.tasks.__dict__.get(name) if name in MODEL_CLASSES else None
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise Refused(rec.obj.cls.path, f"only {', '.join(MODEL_CLASSES)} checkpoints are rebuilt from data")
        return cls

    def construct(self, cls: type, cfg: dict) -> nn.Module:
        ch = cfg.get("channels", 3)
        if type(ch) is not int or not 1 <= ch <= 64:
            raise Refused(None, f"its model config sets {ch!r} input channels")
        nc = cfg.get("nc")
        return cls(cfg, ch=ch, nc=nc if type(nc) is int else None, verbose=False)


def _factory(class_path: str) -> UltralyticsBuilder:
    return UltralyticsBuilder(class_path)


def confine_checkpoint(ckpt: Any, path: str | None) -> None:
    """Loader hook: an ultralytics checkpoint's run folder (``train_args['save_dir']``, else ``project`` / ``name``,
    where ``yolo train resume`` writes) is the checkpoint's own run folder; a dataset it names by URL is dropped
    (``yolo val model=...`` would use it when no ``data=`` is given)."""
    if isinstance(ckpt, dict) and isinstance(ckpt.get("train_args"), dict):
        args = ckpt["train_args"]
        args["save_dir"] = str(checkpoint_run_dir(path)) if path else None
        if isinstance(args.get("data"), str) and "://" in args["data"]:
            args["data"] = None


def allow_ultralytics_classes() -> None:
    """Register the builder for ultralytics' model classes, its namespaces and the run-folder hook (idempotent)."""
    safe_load.register_model_builder(_PATHS, _factory)
    utils = sys.modules.get("ultralytics.utils")
    namespace = getattr(utils, "IterableSimpleNamespace", None)
    if isinstance(namespace, type):
        for path in _NAMESPACES:
            safe_load.register_plain_class(path, namespace)
    safe_load.register_checkpoint_hook(confine_checkpoint)


# The loader's refusal inside ultralytics' strip_optimizer, which turns every load error into a warning.
_REFUSAL: contextvars.ContextVar[list | None] = contextvars.ContextVar("yolo_backbones_strip_refusal", default=None)


def _make_torch_load(original: Callable) -> Callable:
    def torch_load(*args: Any, **kwargs: Any) -> Any:
        """``torch_load`` as ultralytics calls it, served by :func:`yolo_backbones.load_checkpoint`."""
        allow_ultralytics_classes()
        try:
            return safe_load.load_checkpoint(*args, **kwargs)
        except (safe_load.UntrustedCheckpointError, safe_load.CheckpointFileError) as e:
            seen = _REFUSAL.get()
            if seen is not None:
                seen.append(e)
            raise

    return torch_load


def _make_strip_optimizer(original: Callable) -> Callable:
    def strip_optimizer(*args: Any, **kwargs: Any) -> Any:
        """ultralytics' ``strip_optimizer``; a file the loader refuses raises its one-line error (ultralytics would
        log "Skipping ..." and report success)."""
        seen: list = []
        token = _REFUSAL.set(seen)
        try:
            out = original(*args, **kwargs)
        finally:
            _REFUSAL.reset(token)
        if seen and not out:
            raise seen[0]
        return out

    return strip_optimizer


def _make_torch_safe_load(original: Callable) -> Callable:
    tasks = sys.modules.get("ultralytics.nn.tasks")

    def torch_safe_load(weight: Any, safe_only: Any = None) -> tuple[dict, str]:
        """ultralytics' ``torch_safe_load`` on the project's loader: ``(checkpoint dict, file)``.

        The file is looked up as ultralytics does (``attempt_download_asset``, offline); anything the loader
        refuses or cannot read raises its one-line error (ultralytics would call every such file "corrupted",
        and would pip-install a module a file names).
        """
        from ultralytics.utils.downloads import attempt_download_asset

        tasks.check_suffix(file=weight, suffix=".pt")
        file = attempt_download_asset(weight)
        allow_ultralytics_classes()
        ckpt = safe_load.load_checkpoint(file, map_location="cpu")
        if isinstance(ckpt, nn.Module):
            ckpt = {"model": ckpt}  # torch.save(model, ...) instead of model.save(...)
        return require_model_checkpoint(ckpt, str(file)), str(Path(file))

    return torch_safe_load


def patch_checkpoint_loading() -> None:
    """Route the checkpoint loads of the ultralytics modules imported so far through the safe loader."""
    allow_ultralytics_classes()
    for name in ("ultralytics.nn.tasks", "ultralytics.utils.torch_utils"):
        module = sys.modules.get(name)
        if module is not None and callable(module.__dict__.get("torch_load")):
            # tops=(): the name is re-pointed in this module only (see the module docstring)
            replace(module, "torch_load", _make_torch_load, tops=())
    tasks = sys.modules.get("ultralytics.nn.tasks")
    if tasks is not None and callable(tasks.__dict__.get("torch_safe_load")):
        replace(tasks, "torch_safe_load", _make_torch_safe_load, tops=("ultralytics",))
    utils = sys.modules.get("ultralytics.utils.torch_utils")
    if utils is not None and callable(utils.__dict__.get("strip_optimizer")):
        replace(utils, "strip_optimizer", _make_strip_optimizer, tops=("ultralytics",))
