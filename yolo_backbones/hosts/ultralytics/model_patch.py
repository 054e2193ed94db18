"""Installing the plugin into ``ultralytics.nn.tasks``: YAML names, ``parse_model``, ``fuse`` / ``is_fused``.

``BaseModel._predict_once`` of ultralytics already stores list outputs and hands them to the rows that
refer to them, so the forward needs no patch and checkpoints run under a stock ultralytics.
"""
from __future__ import annotations

import types

from ...core.registry import backbone_classes
from ...core.select import Select
from ..common.fuse import make_fuse, make_is_fused
from ..common.patching import replace
from .parse_model import make_parse_model

__all__ = ["is_tasks_module", "patch_tasks_module", "TOPS"]

TOPS = ("ultralytics",)  # where functions of this host may be imported by name
_PATCHED_FLAG = "_yolo_backbones_patched"


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
    setattr(module, _PATCHED_FLAG, True)
    return True
