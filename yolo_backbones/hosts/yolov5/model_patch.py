"""Installing the plugin into one YOLOv5 ``models/yolo.py``: names, ``parse_model``, forward, fuse, BN stats, and the
in-place box decoding of fused plugin models' ``Detect`` heads.

YOLOv5's stock ``_forward_once`` already stores list outputs and hands them to the layers that refer
to them, so a checkpoint built here also runs under an unpatched YOLOv5; the patched ``_forward_once``
only adds what YOLOv5 gets wrong for list outputs (``--visualize``). :func:`patch_yolo_module` works
on the PyPI package's ``yolov5.models.yolo`` or a clone's ``models.yolo`` and is idempotent.
"""
from __future__ import annotations

import types
from typing import Any, Callable

import torch
from torch import nn

from ...core.base import Backbone
from ...core.inference.fuse import fuse_conv_bn, is_foldable_bn
from ...core.layers.layout import is_tracing
from ...core.registry import backbone_classes
from ...core.select import Select
from ...core.weights.safe_load import is_rebuilding, run_probe
from ..common.fuse import make_fuse
from .parse_model import _NORM_SNAPSHOTS, make_parse_model

_PATCHED_FLAG = "_yolo_backbones_patched"


def make_forward_once(visualize_fn: Callable | None) -> Callable:
    """Build a ``BaseModel._forward_once`` equal to YOLOv5's, except that ``visualize`` handles list outputs.

    ``visualize_fn`` is the host's ``feature_visualization(x, module_type, stage, save_dir=...)``
    (``None`` for hosts without it). Each map of a list output is saved as ``<type>_<k>``.
    """

    def _forward_once(self: nn.Module, x: torch.Tensor, profile: bool = False, visualize: Any = False) -> Any:
        if is_rebuilding() and not profile and not visualize:  # a checkpoint's model: a cheaper stride probe
            return run_probe(lambda im: forward(self, im), x)
        return forward(self, x, profile, visualize)

    def forward(self: nn.Module, x: torch.Tensor, profile: bool = False, visualize: Any = False) -> Any:
        y, dt = [], []
        for m in self.model:
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            if profile:
                self._profile_one_layer(m, x, dt)
            x = m(x)
            y.append(x if m.i in self.save else None)
            if visualize and visualize_fn is not None:
                if isinstance(x, (list, tuple)):
                    for k, xk in enumerate(x):
                        visualize_fn(xk, f"{m.type}_{k}", m.i, save_dir=visualize)
                else:
                    visualize_fn(x, m.type, m.i, save_dir=visualize)
        return x

    return _forward_once


def make_initialize_weights(original: Callable[[nn.Module], None]) -> Callable[[nn.Module], None]:
    """Wrap YOLOv5's ``initialize_weights(model)`` (called right after the stride probe in ``DetectionModel``).

    After the original runs, every backbone gets back the BatchNorm statistics it had when
    ``parse_model`` built it (pretrained or not): the probe's training-mode forward of a blank image
    would otherwise have shifted them. The snapshot is dropped once used.
    """

    def initialize_weights(model: nn.Module) -> None:
        original(model)
        for m in model.modules():
            stats = _NORM_SNAPSHOTS.pop(m, None) if isinstance(m, Backbone) else None
            if stats:
                m.load_state_dict(stats, strict=False)

    initialize_weights.__wrapped__ = original
    return initialize_weights


def _fold_host_conv_bn(model: nn.Module) -> None:
    """Do YOLOv5's own ``Conv``/``DWConv`` + BN folds as ``BaseModel.fuse`` does, but in float64.

    YOLOv5 folds in float32; folding in float64 (as the backbone folds are) keeps the fused detector closer to
    the unfused one. The original ``fuse`` then finds no BN left to fold in these modules.
    """
    for m in model.modules():
        conv, bn = getattr(m, "conv", None), getattr(m, "bn", None)
        if isinstance(conv, nn.Conv2d) and is_foldable_bn(bn) and callable(getattr(m, "forward_fuse", None)):
            m.conv = fuse_conv_bn(conv, bn)
            delattr(m, "bn")
            m.forward = m.forward_fuse


# Set on a plugin model's Detect head by the fuse wrapper: its inference runs :func:`_detect_inference`.
_FAST_DETECT = "_yolo_backbones_fast_inference"


def make_detect_forward(original: Callable, detect_cls: type) -> Callable:
    """Wrap YOLOv5's ``Detect.forward``: a fused plugin model's head (flag :data:`_FAST_DETECT`) decodes in place.

    Stock models, subclasses (``Segment``), training, export mode, autograd and tracing run ``original``.
    """

    def forward(self: nn.Module, x: list[torch.Tensor]) -> Any:
        if (not getattr(self, _FAST_DETECT, False) or type(self) is not detect_cls or self.training
                or getattr(self, "export", False) or is_tracing()
                or (torch.is_grad_enabled() and any(t.requires_grad for t in x))):
            return original(self, x)
        return _detect_inference(self, x)

    forward.__wrapped__ = original
    forward.__doc__ = original.__doc__
    return forward


def _detect_inference(self: nn.Module, x: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """YOLOv5 ``Detect`` inference with the decoded boxes written straight into the returned ``(B, N, no)`` tensor.

    The stock head decodes each level into a new tensor (sigmoid), concatenates the pieces into another (per level)
    and those into the result: three passes over every level's ``(B, na, ny, nx, no)`` values. Here the sigmoid
    writes into the level's rows of the result and the box terms are updated in place with the same operations in
    the same order (``(xy * 2 + grid) * stride``, ``(wh * 2) ** 2 * anchor_grid``), so the values are the stock
    head's (bitwise for one image; for a batch the sigmoid writes strided rows and may round differently in the
    last bit). Returns ``(z, x)`` like the stock head, ``x[i]`` the raw ``(B, na, ny, nx, no)`` level outputs.
    """
    for i in range(self.nl):
        y = self.m[i](x[i])
        bs, _, ny, nx = y.shape
        x[i] = y.view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
        if self.dynamic or self.grid[i].shape[2:4] != x[i].shape[2:4]:
            self.grid[i], self.anchor_grid[i] = self._make_grid(nx, ny, i)
    rows = [t.shape[1] * t.shape[2] * t.shape[3] for t in x]
    z = x[0].new_empty((x[0].shape[0], sum(rows), self.no))
    for i, level in enumerate(z.split(rows, 1)):
        level = level.view(x[i].shape)                     # (B, na, ny, nx, no) rows of z
        torch.sigmoid(x[i], out=level)
        level[..., 0:2].mul_(2).add_(self.grid[i]).mul_(self.stride[i])
        level[..., 2:4].mul_(2).pow_(2).mul_(self.anchor_grid[i])
    return z, x


def enable_fast_detect(model: nn.Module) -> None:
    """Mark every ``Detect`` head of a fused plugin model for :func:`_detect_inference` (a plain flag: the model
    still pickles, and loads in an unpatched YOLOv5, which ignores it)."""
    for m in model.modules():
        # The head of YOLOv5 v7.0 (``dynamic`` flag, per-level grid lists); older clones keep their own head.
        if type(m).__name__ == "Detect" and all(hasattr(m, a) for a in ("anchor_grid", "dynamic", "_make_grid")):
            setattr(m, _FAST_DETECT, True)


def _fuse_host(model: nn.Module) -> None:
    """The YOLOv5 host's extra inference folds for a model with a plugin backbone (see :func:`make_fuse`)."""
    _fold_host_conv_bn(model)
    enable_fast_detect(model)


def make_info(original: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``BaseModel.info`` (the model summary with a FLOPs count, a forward of a model copy): skipped while a
    checkpoint's model is rebuilt, where the summary is silenced anyway."""

    def info(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        if is_rebuilding():
            return None
        return original(self, *args, **kwargs)

    info.__wrapped__ = original
    info.__doc__ = original.__doc__
    return info


def is_yolo_module(module: types.ModuleType) -> bool:
    """True if ``module`` looks like a YOLOv5 ``models/yolo.py`` (PyPI package or clone)."""
    return all(hasattr(module, a) for a in ("parse_model", "BaseModel", "DetectionModel", "Detect", "Conv"))


def patch_yolo_module(module: types.ModuleType) -> bool:
    """Install the plugin into one YOLOv5 ``models/yolo.py`` module; return True if it was patched now.

    Injects ``Select`` and the backbone classes into its namespace (YAML names are looked up there),
    replaces its ``parse_model`` and extends ``BaseModel._forward_once`` and ``BaseModel.fuse`` (which then
    also fuses the backbones). Calling it again is a no-op.
    """
    if getattr(module, _PATCHED_FLAG, False) or not is_yolo_module(module):
        return False
    ns = module.__dict__
    ns["Select"] = Select
    ns.update(backbone_classes())
    ns["parse_model"] = make_parse_model(ns)
    if "initialize_weights" in ns:
        ns["initialize_weights"] = make_initialize_weights(ns["initialize_weights"])
    # Kept for reference and tests: plugin checkpoints must also run under the stock forward.
    module.BaseModel._yolo_backbones_stock_forward_once = module.BaseModel._forward_once
    module.BaseModel._forward_once = make_forward_once(ns.get("feature_visualization"))
    module.BaseModel.fuse = make_fuse(module.BaseModel.fuse, fold_host=_fuse_host)
    module.Detect.forward = make_detect_forward(module.Detect.forward, module.Detect)
    if callable(module.BaseModel.__dict__.get("info")):
        module.BaseModel.info = make_info(module.BaseModel.info)
    setattr(module, _PATCHED_FLAG, True)
    return True
