"""Preparing a model for a static-shape graph capture (LiteRT, Core ML, NCNN, ExecuTorch).

:func:`export_ready` gives a copy of the model that every converter takes:

* eval mode, parameters without gradients, every parameter and buffer NCHW-contiguous (``fuse()`` lays 4-D
  weights out channels-last for eager CPU speed; XNNPACK's lowering asserts NCHW weights);
* outputs as one flat tuple of contiguous tensors (the backbones return lists; YOLOv5's export head a tuple);
* EfficientFormer's attention biases as constants of the example's size
  (:func:`~yolo_backbones.core.layers.attention_bias.static_biases`).

Blocks take their export formulations by themselves while a graph is captured
(:func:`~yolo_backbones.core.layers.layout.is_tracing`).
"""
from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch
from torch import nn

from ..core.layers.attention_bias import static_biases
from .ncnn_graph import ncnn_friendly
from .xnnpack_graph import executorch_friendly, xnnpack_friendly

__all__ = ["FlatOutputs", "capture_rewrites", "export_copy", "export_model", "export_ready", "flatten_outputs",
           "has_backbone"]

# The module rewrites a capture for each runtime runs inside (every exporter of both hosts goes through
# capture_rewrites, so a rewrite added here reaches them all).
_REWRITES = {"ncnn": ncnn_friendly, "xnnpack": xnnpack_friendly, "executorch": executorch_friendly}


def flatten_outputs(y: object) -> list[torch.Tensor]:
    """The tensors of a (nested) tuple/list output, in order."""
    if isinstance(y, torch.Tensor):
        return [y]
    if isinstance(y, (list, tuple)):
        return [t for item in y for t in flatten_outputs(item)]
    raise TypeError(f"model output of type {type(y).__name__} is not a tensor or a list/tuple of tensors")


class FlatOutputs(nn.Module):
    """``model(x)`` as a flat tuple of contiguous tensors (what converters name ``out0``, ``out1``, ...)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(t.contiguous() for t in flatten_outputs(self.model(x)))


def export_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` in eval mode, without gradients, with NCHW-contiguous parameters and buffers."""
    model = copy.deepcopy(model).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            if not t.is_contiguous():
                t.data = t.data.contiguous()
    return model


@contextlib.contextmanager
def export_model(model: nn.Module, example: torch.Tensor) -> Iterator[nn.Module]:
    """Context yielding an :func:`export_copy` of ``model`` with static attention biases (outputs unchanged).

    ``model`` itself is not changed. The yielded module is for capturing at ``example``'s shape only.
    """
    ready = export_copy(model)
    with static_biases(ready, example):
        yield ready


@contextlib.contextmanager
def export_ready(model: nn.Module, example: torch.Tensor) -> Iterator[nn.Module]:
    """:func:`export_model` with the outputs as one flat tuple (:class:`FlatOutputs`).

    The copy runs ``example`` once before it is yielded, so state a model builds lazily on its first call at a size
    (YOLOv5's Detect grids) is in place: otherwise a trace records building it, and the trace's sanity check (which
    traces again) sees another graph.
    """
    with export_model(FlatOutputs(model), example) as ready:
        with torch.no_grad():
            ready(example)
        yield ready


def capture_rewrites(runtime: str | None, ready: nn.Module) -> contextlib.AbstractContextManager:
    """Context for a capture of ``ready`` (an export copy, changed in place) for ``runtime``: ``"ncnn"`` (pnnx:
    :func:`~.ncnn_graph.ncnn_friendly`), ``"xnnpack"`` (LiteRT: :func:`~.xnnpack_graph.xnnpack_friendly`),
    ``"executorch"`` (:func:`~.xnnpack_graph.executorch_friendly`), anything else (None, Core ML, ONNX) no rewrite."""
    rewrite = _REWRITES.get(runtime)
    return contextlib.nullcontext(ready) if rewrite is None else rewrite(ready)


def has_backbone(model: nn.Module) -> bool:
    """True if ``model`` holds a yolo_backbones backbone (the hosts' export patches act only on those)."""
    from ..core.base import Backbone

    return any(isinstance(m, Backbone) for m in model.modules())
