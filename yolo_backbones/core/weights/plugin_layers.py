"""How the loader rebuilds the plugin's own layers saved without a model config (``Select``, whole backbones).

A checkpoint of ``nn.Sequential(backbone, Select(1))`` (as the 0.1 tests and notebooks saved) has no YAML: its
backbone record holds ``variant``, ``out_indices``, ``num_classes``, ``in_chans`` and ``grad_checkpointing``,
from which :func:`rebuild_backbone` builds it anew (fused again if the saved one was); the loader then loads
its tensors. :func:`register` is called on ``import yolo_backbones``.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from ..base import Backbone
from ..registry import backbone_classes
from ..select import Select
from .safe_load import register_layer_builder
from .safe_load.errors import Mismatch, Refused

__all__ = ["register", "rebuild_backbone", "rebuild_select"]


def rebuild_select(rec: Any, interp: Any, depth: int) -> nn.Module:
    """``Select(index)`` from its record."""
    index = interp.value(rec.attrs.get("index", 0), depth)
    if type(index) is not int:
        raise Refused(rec.path, "its index is not an integer")
    return Select(index)


def rebuild_backbone(rec: Any, interp: Any, depth: int) -> nn.Module:
    """A backbone of the record's class from its variant, mode, stages, classes and input options, pruned as the
    record is (``prune_intermediate_layers``) and fused if it was."""
    cls = backbone_classes().get(rec.name)
    a = {k: interp.value(rec.attrs.get(k), depth) for k in ("variant", "out_indices", "num_classes", "in_chans",
                                                           "grad_checkpointing", "_features_only", "_input_norm")}
    ok = (cls is not None and type(a["variant"]) is str and type(a["out_indices"]) in (tuple, list)
          and all(type(i) is int for i in a["out_indices"]) and type(a["num_classes"]) is int
          and type(a["in_chans"]) is int and 0 < a["in_chans"] <= 64 and 0 <= a["num_classes"] <= 100_000
          and all(a[k] is None or type(a[k]) is bool for k in ("_features_only", "_input_norm")))
    if not ok:
        raise Refused(rec.path, "its variant, mode, stages, classes or input options are not plain values")
    # Records of 0.2 and earlier store no mode: num_classes 0 was their feature extractor (normalising its input).
    features_only = a["num_classes"] == 0 if a["_features_only"] is None else a["_features_only"]
    input_norm = a["num_classes"] == 0 if a["_input_norm"] is None else a["_input_norm"]
    try:
        model = cls(a["variant"], a["out_indices"] if features_only else None, features_only=features_only,
                    num_classes=a["num_classes"], in_chans=a["in_chans"], input_norm=input_norm,
                    grad_checkpointing=bool(a["grad_checkpointing"]))
        _prune_as_recorded(model, rec)
        model.out_indices = model._check_out_indices(a["out_indices"])
    except (TypeError, ValueError) as e:
        raise Mismatch(f"{rec.path} cannot be rebuilt from its record ({e})") from None
    if rec.attrs.get("fused") is True:
        model.fuse()
    return model


def _prune_as_recorded(model: Backbone, rec: Any) -> None:
    """Prune ``model`` further where the record lacks stages, the final norm or the head (a model pruned with
    ``prune_intermediate_layers`` after it was built); the structure check then compares every layer."""
    present = [i for i in range(len(model.stage_strides)) if _recorded(rec, model.stage_module_names(i)[-1])]
    last = max(present, default=0)
    no_norm = model.final_norm_name is not None and not _recorded(rec, model.final_norm_name)
    no_head = not all(_recorded(rec, name) for name in model.head_module_names)
    if last < model.num_built_stages - 1 or (no_norm and model._has(model.final_norm_name)) or (
            no_head and any(model._has(name) for name in model.head_module_names)):
        model.prune_intermediate_layers(list(range(last + 1)), prune_norm=no_norm, prune_head=no_head)


def _recorded(rec: Any, dotted: str) -> bool:
    """Whether the module record ``rec`` has the sub-module ``dotted`` (``a.b.3``), read from its ``_modules``."""
    modules = rec.attrs.get("_modules")
    for part in dotted.split("."):
        child = modules.get(part) if isinstance(modules, dict) else None
        if child is None:
            return False
        state = getattr(child, "state", None)
        state = state[0] if type(state) is tuple and state else state
        modules = state.get("_modules") if type(state) is dict else None
    return True


def register() -> None:
    """Register the plugin's layers with the loader (idempotent)."""
    register_layer_builder(Select, rebuild_select)
    for cls in backbone_classes().values():
        if issubclass(cls, Backbone):
            register_layer_builder(cls, rebuild_backbone)
