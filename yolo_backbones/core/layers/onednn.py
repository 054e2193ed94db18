"""Fused oneDNN kernels for eager CPU inference: a conv / linear layer, its activation and a residual add in one pass.

In eager mode every activation and residual add is a separate pass over a feature map; on a CPU these
passes are memory-bound and cost as much as the convolutions of the wide, high-resolution maps of these
backbones (e.g. the GELU after a 4x-expanding 1x1 conv at stride 4). PyTorch ships oneDNN kernels that
apply such element-wise "post-ops" while the conv / linear result is still in cache
(``torch.ops.mkldnn._convolution_pointwise`` / ``_linear_pointwise``, the kernels ``torch.compile``'s CPU
backend uses). :func:`conv` and :func:`linear` call them where that is safe and fall back to the plain
``torch.nn`` modules otherwise, so the function is the same either way (float rounding only).

The fused path is taken only inside a *fused* backbone's forward (:meth:`Backbone.fuse
<yolo_backbones.core.base.Backbone.fuse>`; see :func:`allowed`), for CPU float32 inference: module in eval
mode, autograd disabled (``torch.no_grad()`` / ``inference_mode``), channels-last maps, no hooks on the
module (e.g. thop's FLOP count in YOLOv5's model summary, which then sees the module run), not while
tracing / scripting / exporting / compiling, and no ``TorchDispatchMode`` active
(``torch.utils.flop_counter`` counts the plain ops). An unfused model therefore computes with the plain
``torch`` ops, exactly like the graphs traced or exported from it. The kernels are private PyTorch
operators: they are checked once against the plain ops on first use, and any failure switches the fused
path off for the process. ``YOLO_BACKBONES_ONEDNN=0`` switches it off.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
from typing import Callable, Iterator

import torch
from torch import nn
import torch.nn.functional as F

from .layout import is_tracing

__all__ = ["allowed", "enabled", "conv", "linear", "sequential", "activation_name", "fused_kernels_available", "ACTIVATIONS"]

# Activation name -> (plain function, oneDNN post-op attribute, its scalars, its algorithm).
ACTIVATIONS: dict[str | None, tuple[Callable[[torch.Tensor], torch.Tensor], str, list, str | None]] = {
    None: (lambda t: t, "none", [], None),
    "gelu": (F.gelu, "gelu", [], "none"),  # exact (erf) GELU, as nn.GELU()
    "relu": (F.relu, "relu", [], None),
    "relu6": (F.relu6, "hardtanh", [0.0, 6.0], None),
}

_available: bool | None = None

# A call of the fused oneDNN operators costs some 25-70 us more than the plain ``F.conv2d`` / ``F.linear`` (it builds
# its oneDNN objects on every call; measured on 2 threads of a Xeon with torch 2.x, eager, batch 1). The fused call
# therefore runs only where it saves a pass over a large map: a conv with an activation, a conv + residual add
# with at least this many output values, a linear layer over at least this many rows (tokens). Below, and for
# a conv with nothing to fuse, the plain ops are faster (Mobile-Former: 1x1 / depth-wise convs without
# post-op, residual adds at strides 8-32, the 3-6 global tokens).
_MIN_FUSED_RESIDUAL = 1 << 19
_MIN_FUSED_ROWS = 128


def _probe() -> bool:
    """Run each fused kernel once on small inputs and compare with the plain ops."""
    ops = torch.ops.mkldnn
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 8, 5, 6, generator=g).contiguous(memory_format=torch.channels_last)
    w = torch.randn(4, 8, 3, 3, generator=g).contiguous(memory_format=torch.channels_last)
    b, other = torch.randn(4, generator=g), torch.randn(1, 4, 5, 6, generator=g)
    lx, lw = torch.randn(2, 3, 8, generator=g), torch.randn(4, 8, generator=g)
    with torch.no_grad():
        checks = [
            (ops._convolution_pointwise(x, w, b, [1, 1], [1, 1], [1, 1], 1, "gelu", [], "none"),
             F.gelu(F.conv2d(x, w, b, 1, 1))),
            (ops._convolution_pointwise(x, w, b, [1, 1], [1, 1], [1, 1], 1, "hardtanh", [0.0, 6.0], None),
             F.relu6(F.conv2d(x, w, b, 1, 1))),
            (ops._convolution_pointwise.binary(x, other.contiguous(memory_format=torch.channels_last), w, b, [1, 1],
                                               [1, 1], [1, 1], 1, "add", None, None, [], None),
             F.conv2d(x, w, b, 1, 1) + other),
            (ops._linear_pointwise(lx, lw, b, "gelu", [], "none"), F.gelu(F.linear(lx, lw, b))),
            (ops._linear_pointwise.binary(lx, torch.randn(2, 3, 4, generator=g), lw, b, "add").shape, (2, 3, 4)),
        ]
    for got, ref in checks:
        if isinstance(ref, tuple):
            if tuple(got) != ref:
                return False
        elif got.shape != ref.shape or not torch.allclose(got, ref, atol=1e-4, rtol=1e-4):
            return False
    return True


def fused_kernels_available() -> bool:
    """Whether the oneDNN fused kernels exist here and match the plain ops (checked once per process)."""
    global _available
    if _available is None:
        _available = False
        if os.environ.get("YOLO_BACKBONES_ONEDNN", "1").strip().lower() not in ("0", "false", "no", "off"):
            try:
                _available = torch.backends.mkldnn.is_available() and _probe()
            except Exception:  # noqa: BLE001  (missing operator, other signature, unsupported CPU...)
                _available = False
    return _available


def _dispatch_mode_active() -> bool:
    try:
        from torch.utils._python_dispatch import _get_current_dispatch_mode

        return _get_current_dispatch_mode() is not None
    except Exception:  # noqa: BLE001
        return True  # cannot tell: stay on the plain ops


_ALLOWED: contextvars.ContextVar[bool] = contextvars.ContextVar("yolo_backbones_fused_kernels", default=False)


@contextlib.contextmanager
def allowed(flag: bool = True) -> Iterator[None]:
    """Context in which fused kernels may run (if ``flag``); a fused backbone's forward runs inside it.

    The conditions that hold for a whole forward (autograd off, no tracing / exporting / compiling, no dispatch
    mode, kernels available) are checked once on entry: :func:`enabled` runs some hundred times per forward.
    A dispatch mode entered inside the forward is still seen by each fused call (:func:`_fusable`).
    """
    token = _ALLOWED.set(bool(flag) and _inference_context())
    try:
        yield
    finally:
        _ALLOWED.reset(token)


def _inference_context() -> bool:
    """Autograd off, not tracing / exporting / compiling, no ``TorchDispatchMode``, fused kernels available."""
    return (not torch.is_grad_enabled() and not (is_tracing() or torch.compiler.is_compiling())
            and fused_kernels_available() and not _dispatch_mode_active())


def enabled(x: torch.Tensor) -> bool:
    """Whether fused kernels may run for input ``x``: inside :func:`allowed` (CPU float32 inference, no tracing /
    dispatch mode). Blocks use it to pick their inference code path; :func:`conv` / :func:`linear` also check
    each module.
    """
    return _ALLOWED.get() and x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled()


def _fusable(module: nn.Module, x: torch.Tensor) -> bool:
    """The conditions of the module docstring for one call."""
    w = module.weight
    return (not module.training and w.dtype == torch.float32 and w.device.type == "cpu"
            and not (module._forward_hooks or module._forward_pre_hooks
                     or nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks)
            and enabled(x) and not _dispatch_mode_active())  # a mode entered inside the forward must see plain ops


def conv(module: nn.Conv2d, x: torch.Tensor, act: str | None = None, residual: torch.Tensor | None = None,
         weight: torch.Tensor | None = None) -> torch.Tensor:
    """``act(module(x))``, or ``module(x) + residual``: one fused kernel in CPU inference, else the plain ops.

    Args:
        module: a ``Conv2d``.
        x: ``(B, C_in, H, W)``; the fused kernel is used for channels-last input.
        act: ``None``, ``"gelu"``, ``"relu"`` or ``"relu6"``, applied to the conv output. Give an activation or
            a residual, not both (the backbones add residuals to linear branch ends only).
        residual: ``(B, C_out, H', W')`` added to the conv output.
        weight: use this weight instead of ``module.weight`` (same shape; e.g. with per-image scaled input
            channels), with the module's bias and geometry.

    Returns:
        ``(B, C_out, H', W')``, channels-last when fused.
    """
    if act is not None and residual is not None:
        raise ValueError("give either an activation or a residual to fuse, not both")
    fusable = (not isinstance(module.padding, str) and module.padding_mode == "zeros" and _fusable(module, x)
               and x.is_contiguous(memory_format=torch.channels_last)
               and (residual is None or (residual.dim() == 4 and residual.dtype == x.dtype)))
    if not fusable or (act is None and (residual is None or residual.numel() < _MIN_FUSED_RESIDUAL)):
        if weight is None:
            y = module(x)
        else:
            y = F.conv2d(x, weight, module.bias, module.stride, module.padding, module.dilation, module.groups)
        if residual is None:
            return ACTIVATIONS[act][0](y)
        # In fused inference y is a fresh map nobody else holds: add in place (no new map).
        return y.add_(residual) if fusable and y.shape == residual.shape else y + residual
    args = (module.weight if weight is None else weight, module.bias, list(module.padding), list(module.stride),
            list(module.dilation), module.groups)
    if residual is not None:
        return torch.ops.mkldnn._convolution_pointwise.binary(
            x, residual.contiguous(memory_format=torch.channels_last), *args, "add", None, None, [], None)
    _, attr, scalars, algorithm = ACTIVATIONS[act]
    return torch.ops.mkldnn._convolution_pointwise(x, *args, attr, scalars, algorithm)


def activation_name(module: nn.Module) -> str | None:
    """The :data:`ACTIVATIONS` key computing ``module``, or ``None`` if it is not a fusable activation."""
    if isinstance(module, nn.GELU) and module.approximate == "none":
        return "gelu"
    if isinstance(module, nn.ReLU):
        return "relu"
    if isinstance(module, nn.ReLU6) or (isinstance(module, nn.Hardtanh) and (module.min_val, module.max_val) == (0.0, 6.0)):
        return "relu6"
    return None


def sequential(seq: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """Run ``seq`` with each ``Conv2d`` and the activation right after it (``nn.Identity`` entries, e.g. BNs
    folded by fusing, are skipped) as one :func:`conv` call; other entries run as they are."""
    mods = [m for m in seq if not isinstance(m, nn.Identity)]
    if not (mods and isinstance(mods[0], nn.Conv2d) and _fusable(mods[0], x)
            and x.is_contiguous(memory_format=torch.channels_last)):
        return seq(x)
    i = 0
    while i < len(mods):
        m = mods[i]
        if isinstance(m, nn.Conv2d):
            act = activation_name(mods[i + 1]) if i + 1 < len(mods) else None
            x = conv(m, x, act)
            i += 2 if act is not None else 1
        else:
            x = m(x)
            i += 1
    return x


def linear(module: nn.Linear, x: torch.Tensor, act: str | None = None, residual: torch.Tensor | None = None
           ) -> torch.Tensor:
    """``act(module(x))``, or ``module(x) + residual``, on ``(..., C_in)`` tokens: one fused kernel in CPU
    inference, else the plain ops. Returns ``(..., C_out)``."""
    if act is not None and residual is not None:
        raise ValueError("give either an activation or a residual to fuse, not both")
    if x.numel() < _MIN_FUSED_ROWS * module.in_features or not _fusable(module, x):
        y = module(x)
        return ACTIVATIONS[act][0](y) if residual is None else y + residual
    if residual is not None:
        if residual.shape != (*x.shape[:-1], module.out_features) or residual.dtype != x.dtype:
            return module(x) + residual
        return torch.ops.mkldnn._linear_pointwise.binary(x, residual.contiguous(), module.weight, module.bias, "add")
    _, attr, scalars, algorithm = ACTIVATIONS[act]
    return torch.ops.mkldnn._linear_pointwise(x, module.weight, module.bias, attr, scalars, algorithm)
