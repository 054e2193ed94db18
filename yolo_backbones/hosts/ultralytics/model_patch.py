"""Installing the plugin into ``ultralytics.nn.tasks``: YAML names, ``parse_model``, ``fuse`` / ``is_fused``.

``BaseModel._predict_once`` of ultralytics already stores list outputs and hands them to the rows that
refer to them, so checkpoints run under a stock ultralytics. It is wrapped only to make the stride probe of a
checkpoint's model being rebuilt cheaper (:func:`~yolo_backbones.core.weights.safe_load.run_probe`).
"""
from __future__ import annotations

import types
from typing import Any, Callable

from torch import nn

from ...core.registry import backbone_classes
from ...core.select import Select
from ...core.weights.safe_load import is_rebuilding, run_probe
from ..common.fuse import make_fuse, make_is_fused
from ..common.patching import replace
from .parse_model import make_parse_model

__all__ = ["is_tasks_module", "patch_tasks_module", "TOPS"]

TOPS = ("ultralytics",)  # where functions of this host may be imported by name
_PATCHED_FLAG = "_yolo_backbones_patched"


def _make_predict_once(original: Callable[..., Any]) -> Callable[..., Any]:
    def _predict_once(self: nn.Module, x: Any, profile: bool = False, *args: Any, **kwargs: Any) -> Any:
        if is_rebuilding() and not profile and not args and not kwargs:
            return run_probe(lambda im: original(self, im), x)
        return original(self, x, profile, *args, **kwargs)

    _predict_once.__wrapped__ = original
    _predict_once.__doc__ = original.__doc__
    return _predict_once


def is_tasks_module(module: types.ModuleType) -> bool:
    """True if ``module`` looks like a (fully imported) ``ultralytics/nn/tasks.py``."""
    return all(hasattr(module, a) for a in ("parse_model", "BaseModel", "DetectionModel", "yaml_model_load"))


def patch_tasks_module(module: types.ModuleType) -> bool:
    """Install the plugin into ``ultralytics.nn.tasks``; return True if it was patched now (idempotent).

    Makes ``Select`` and the backbone classes nameable in model YAMLs (ultralytics looks names up in this
    module's globals), wraps ``parse_model`` (:mod:`.parse_model`) and makes ``BaseModel.fuse`` fuse the
    backbones too, exactly (``is_fused`` is ``False`` until they are).
    """
    if getattr(module, _PATCHED_FLAG, False) or not is_tasks_module(module):
        return False
    ns = module.__dict__
    ns["Select"] = Select
    ns.update(backbone_classes())
    replace(module, "parse_model", lambda original: make_parse_model(original, ns), tops=TOPS)
    base = module.BaseModel
    base.fuse = make_fuse(base.fuse)
    base.is_fused = make_is_fused(base.is_fused)
    if callable(base.__dict__.get("_predict_once")):
        base._predict_once = _make_predict_once(base._predict_once)
    setattr(module, _PATCHED_FLAG, True)
    return True
