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
    """A backbone of the record's class from its variant, stages, classes and input channels."""
    cls = backbone_classes().get(rec.name)
    a = {k: interp.value(rec.attrs.get(k), depth) for k in ("variant", "out_indices", "num_classes", "in_chans",
                                                           "grad_checkpointing")}
    ok = (cls is not None and type(a["variant"]) is str and type(a["out_indices"]) in (tuple, list)
          and all(type(i) is int for i in a["out_indices"]) and type(a["num_classes"]) is int
          and type(a["in_chans"]) is int and 0 < a["in_chans"] <= 64 and 0 <= a["num_classes"] <= 100_000)
    if not ok:
        raise Refused(rec.path, "its variant, stages, classes or input channels are not plain values")
    try:
        model = cls(a["variant"], a["out_indices"], num_classes=a["num_classes"], in_chans=a["in_chans"],
                    grad_checkpointing=bool(a["grad_checkpointing"]))
    except (TypeError, ValueError) as e:
        raise Mismatch(f"{rec.path} cannot be rebuilt from its record ({e})") from None
    if rec.attrs.get("fused") is True:
        model.fuse()
    return model


def register() -> None:
    """Register the plugin's layers with the loader (idempotent)."""
    register_layer_builder(Select, rebuild_select)
    for cls in backbone_classes().values():
        if issubclass(cls, Backbone):
            register_layer_builder(cls, rebuild_backbone)
