"""When the fused inference code may run: one switch, set by a fused backbone's forward, and the checks behind it.

A block's ``forward`` is its reference math with at most one early return into its fused form, taken when
:func:`fused_inference` is true. That holds only inside the forward of a backbone that
:meth:`~yolo_backbones.core.base.Backbone.fuse` prepared (:func:`fused_forward`), for eager CPU float32
inference: autograd off (``torch.no_grad()`` / ``inference_mode``), not tracing, scripting, exporting or
compiling, no ``TorchDispatchMode`` active (``torch.utils.flop_counter`` counts the plain ops) and the fused
oneDNN kernels present and correct here (:func:`fused_kernels_available`). Everything else, exports and
traced graphs included, runs the reference math on the folded weights.

:func:`hooked` is the one check for forward hooks: a fused form that would skip a module's call (and so its
hooks, e.g. thop's FLOP count in YOLOv5's model summary) runs the module instead.
``YOLO_BACKBONES_ONEDNN=0`` switches the fused kernels (and with them the fused forms) off.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as module_hooks

try:  # a private helper of torch: without it, assume a mode may be active (the plain ops then run)
    from torch.utils._python_dispatch import _get_current_dispatch_mode as _current_dispatch_mode
except ImportError:
    _current_dispatch_mode = None

__all__ = ["fused_forward", "fused_inference", "hooked", "dispatch_mode_active", "fused_kernels_available",
           "is_tracing", "capturing_for", "capture_target"]

_ACTIVE: contextvars.ContextVar[bool] = contextvars.ContextVar("yolo_backbones_fused_inference", default=False)
_TARGET: contextvars.ContextVar[str | None] = contextvars.ContextVar("yolo_backbones_capture_target", default=None)
_available: bool | None = None


def is_tracing() -> bool:
    """True while a model is captured as a graph for export: TorchScript tracing or scripting (``torch.jit.trace``,
    the ``dynamo=False`` ONNX exporter, pnnx, coremltools) or ``torch.export`` (litert-torch, ExecuTorch).

    Inference shortcuts that branch on the batch size, on grad mode or on data, or that keep caches, must not be
    recorded into such graphs: blocks take their reference formulation instead (see docs/deployment.md).
    """
    return (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export()
            or torch.compiler.is_exporting())


@contextlib.contextmanager
def capturing_for(target: str) -> Iterator[None]:
    """Context of a graph capture for the runtime ``target`` (e.g. ``"ncnn"``, set by the NCNN exporter), so that
    blocks with a formulation for that runtime take it (:func:`capture_target`)."""
    token = _TARGET.set(target)
    try:
        yield
    finally:
        _TARGET.reset(token)


def capture_target() -> str | None:
    """The runtime of the :func:`capturing_for` context around this call, or None."""
    return _TARGET.get()


def hooked(module: nn.Module) -> bool:
    """Whether ``module``'s call is observed: forward (pre-)hooks on it or on every module (global hooks)."""
    return bool(module._forward_hooks or module._forward_pre_hooks
                or module_hooks._global_forward_hooks or module_hooks._global_forward_pre_hooks)


def dispatch_mode_active() -> bool:
    """Whether a ``TorchDispatchMode`` (e.g. ``FlopCounterMode``) sees the ops; True when it cannot be told."""
    return _current_dispatch_mode is None or _current_dispatch_mode() is not None


def _probe() -> bool:
    """Run each fused oneDNN kernel once on small inputs and compare it with the plain ops."""
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
    """Whether the oneDNN fused kernels exist here and match the plain ops (checked once per process).

    They are private PyTorch operators (``torch.ops.mkldnn._convolution_pointwise`` / ``_linear_pointwise``, the
    kernels ``torch.compile``'s CPU backend uses): any failure of the check switches the fused forms off.
    """
    global _available
    if _available is None:
        _available = False
        if os.environ.get("YOLO_BACKBONES_ONEDNN", "1").strip().lower() not in ("0", "false", "no", "off"):
            try:
                _available = torch.backends.mkldnn.is_available() and _probe()
            except Exception:  # noqa: BLE001  (missing operator, other signature, unsupported CPU...)
                _available = False
    return _available


@contextlib.contextmanager
def fused_forward(fused: bool = True) -> Iterator[None]:
    """Context of a backbone's forward: fused forms may run inside it if ``fused`` and the forward is eager
    inference (the whole-forward conditions of the module docstring, checked once here)."""
    token = _ACTIVE.set(bool(fused) and not torch.is_grad_enabled() and not is_tracing()
                        and not torch.compiler.is_compiling() and fused_kernels_available()
                        and not dispatch_mode_active())
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def fused_inference(x: torch.Tensor) -> bool:
    """The fast-path switch of every block: ``x`` flows through a fused backbone's eager CPU float32 inference."""
    return _ACTIVE.get() and x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled()
