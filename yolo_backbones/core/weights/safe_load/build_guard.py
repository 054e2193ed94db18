"""The context a model is rebuilt in: bounded allocations, no random initialisation, quiet host loggers.

:func:`rebuilding` is entered while a model is built from a checkpoint's config (the host's constructor,
including its stride-probe forward). A :class:`BuildGuard` torch-function mode, active for this thread only:

* refuses before allocating once the tensors the build creates exceed a budget derived from the file
  (:data:`~.limits.BUILD_BYTES_FACTOR` x its tensor bytes, :data:`~.limits.BUILD_TENSORS_FACTOR` x its tensor
  count): absurd channel counts or layer counts in a small file fail fast with a one-line refusal;
* bounds the host's stride probe (the forward of a blank image its constructor makes): before a convolution,
  transposed convolution, interpolation or padding runs, the size of its output is computed from its
  arguments, and any operation's output is checked after it ran; one above :data:`~.limits.BUILD_OP_BYTES`
  is refused (layer arguments of a file's config cannot blow a small image up);
* skips random initialisation (``torch.nn.init`` and ``Tensor.uniform_`` / ``normal_``), which every loaded
  weight overwrites anyway, and zero-fills ``torch.empty`` (no denormals for the stride probe): the build
  costs no random numbers.

:func:`is_rebuilding` tells model-building code (a backbone row's pretrained-weights argument) that the weights
come from the checkpoint, so nothing named by the file is read or downloaded.
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import threading
from collections.abc import Iterable, Iterator
from typing import Any, Callable

import torch
from torch.overrides import TorchFunctionMode

from . import limits
from .errors import OverLimit

_REBUILDING: contextvars.ContextVar[bool] = contextvars.ContextVar("yolo_backbones_rebuilding", default=False)


def is_rebuilding() -> bool:
    """True while a model is being rebuilt from a checkpoint (its weights then come from the file)."""
    return _REBUILDING.get()


_INIT = {getattr(torch.nn.init, n) for n in (
    "uniform_", "normal_", "trunc_normal_", "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_",
    "xavier_normal_", "orthogonal_", "sparse_") if hasattr(torch.nn.init, n)}
_INIT |= {torch.Tensor.uniform_, torch.Tensor.normal_}
_FACTORIES = {torch.empty, torch.zeros, torch.ones, torch.rand, torch.randn, torch.full, torch.empty_strided,
              torch.randint, torch.Tensor.new_empty, torch.Tensor.new_zeros, torch.Tensor.new_ones,
              torch.Tensor.new_full}
_UNINITIALISED = {torch.empty, torch.empty_strided, torch.Tensor.new_empty}
def _requested_numel(func: Any, args: tuple, kwargs: dict) -> int | None:
    """Elements a factory call asks for, from its arguments (None when they cannot be read)."""
    if "size" in kwargs:
        size = kwargs["size"]
    elif func in (torch.Tensor.new_empty, torch.Tensor.new_zeros, torch.Tensor.new_ones, torch.Tensor.new_full):
        size = args[1] if len(args) > 1 else None
    elif func is torch.randint:
        size = args[-1] if args else None
    elif func in (torch.full, torch.empty_strided):
        size = args[0] if args else None
    else:
        size = args[0] if len(args) == 1 and not isinstance(args[0], int) else args
    if isinstance(size, int):
        size = (size,)
    try:
        dims = [int(s) for s in size]
    except (TypeError, ValueError):
        return None
    return math.prod(dims) if all(d >= 0 for d in dims) else None


PROBE_SIDE = 64  # the side the stride probe of a rebuild runs at (the host's is 256)


def run_probe(forward: Callable[[Any], Any], x: Any) -> Any:
    """A host model's forward of ``x``; during a rebuild, the host's stride probe runs at a quarter of its size.

    The hosts compute strides as ``s / out.shape[-2]`` from a forward of a blank ``(1, ch, s, s)`` image. Here
    that forward runs on a ``PROBE_SIDE`` crop and each output's ``shape[-2]`` is scaled back by ``s /
    PROBE_SIDE`` (free, zero-stride tensors), so the strides come out the same for a sixteenth of the work.
    If the small forward fails (a layer needing a larger input), the full probe runs.
    """
    side = x.shape[-1] if isinstance(x, torch.Tensor) and x.dim() == 4 else 0
    if not (_REBUILDING.get() and side == x.shape[-2] and side > PROBE_SIDE and side % PROBE_SIDE == 0):
        return forward(x)
    try:
        out = forward(x[..., :PROBE_SIDE, :PROBE_SIDE])
    except (RuntimeError, ValueError):
        return forward(x)
    return _scaled(out, side // PROBE_SIDE)


def _scaled(out: Any, ratio: int) -> Any:
    if isinstance(out, torch.Tensor):
        if out.dim() < 2:
            return out
        shape = list(out.shape)
        shape[-2] *= ratio
        return torch.zeros((), dtype=out.dtype).expand(shape)
    if isinstance(out, (list, tuple)):
        return type(out)(_scaled(o, ratio) for o in out) if type(out) in (list, tuple) else out
    if isinstance(out, dict):
        return {k: _scaled(v, ratio) for k, v in out.items()}
    return out


def _ints(value: Any, n: int) -> list[int]:
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value][:n] + [int(value[-1])] * max(0, n - len(value)) if value else [0] * n
    return [int(value)] * n


def _planned_numel(func: Any, args: tuple, kwargs: dict) -> int | None:
    """An upper bound of the elements a spatially expanding operation will produce, from its arguments."""
    name = getattr(func, "__name__", "")
    x = args[0] if args else kwargs.get("input")
    if not isinstance(x, torch.Tensor) or x.dim() < 3:
        return None
    lead, spatial = x.shape[:2], list(x.shape[2:])
    nd = len(spatial)
    try:
        if name in ("conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d"):
            w = args[1] if len(args) > 1 else kwargs.get("weight")
            names = ("stride", "padding", "output_padding", "groups", "dilation") if "transpose" in name else (
                "stride", "padding", "dilation", "groups")
            opts = dict(zip(names, args[3:])) | {k: v for k, v in kwargs.items() if k in names}
            stride = _ints(opts.get("stride", 1), nd)
            pad = [0] * nd if isinstance(opts.get("padding", 0), str) else _ints(opts.get("padding", 0), nd)
            k = list(w.shape[2:])
            if "transpose" in name:
                outs = [(s + 1) * st + kk * _ints(opts.get("dilation", 1), nd)[i] + _ints(
                    opts.get("output_padding", 0), nd)[i] for i, (s, st, kk) in enumerate(zip(spatial, stride, k))]
                channels = w.shape[1] * int(opts.get("groups", 1))
            else:
                outs = [s + 2 * p + kk for s, p, kk in zip(spatial, pad, k)]
                channels = w.shape[0]
            return lead[0] * channels * math.prod(outs)
        if name in ("interpolate", "upsample", "upsample_nearest", "upsample_bilinear"):
            size = args[1] if len(args) > 1 else kwargs.get("size")
            scale = args[2] if len(args) > 2 else kwargs.get("scale_factor")
            if size is not None:
                outs = _ints(size, nd)
            elif scale is not None:
                factors = list(scale) if isinstance(scale, (list, tuple)) else [scale] * nd
                outs = [int(s * float(f)) + 1 for s, f in zip(spatial, factors)]
            else:
                return None
            return math.prod(lead) * math.prod(outs)
        if name == "pad":
            pads = [int(p) for p in (args[1] if len(args) > 1 else kwargs.get("pad", ()))]
            shape = list(x.shape)
            for i in range(len(pads) // 2):
                shape[-1 - i] += max(pads[2 * i], 0) + max(pads[2 * i + 1], 0)
            return math.prod(shape)
    except (TypeError, ValueError, IndexError, AttributeError):
        return None
    return None


def _nbytes(out: Any) -> int:
    if isinstance(out, torch.Tensor):
        return out.numel() * out.element_size()
    if isinstance(out, (list, tuple)):
        return max((_nbytes(t) for t in out), default=0)
    return 0


class BuildGuard(TorchFunctionMode):
    """Torch-function mode bounding what a rebuild allocates (see the module docstring)."""

    def __init__(self, max_bytes: int, max_tensors: int, op_bytes: int) -> None:
        super().__init__()
        self.max_bytes, self.max_tensors, self.op_bytes = max_bytes, max_tensors, op_bytes
        self.bytes = 0
        self.tensors = 0

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in _INIT:
            return args[0] if args else kwargs.get("tensor")  # zeros already (below); the file's weights follow
        if func in _FACTORIES:
            numel = _requested_numel(func, args, kwargs)
            self.tensors += 1
            if self.tensors > self.max_tensors:
                raise OverLimit("BUILD_TENSORS_FACTOR", limits.BUILD_TENSORS_FACTOR,
                                f"the number of tensors its model config creates ({self.tensors}), against the "
                                "tensors the file holds,")
            if numel is not None:
                dtype = kwargs.get("dtype") or torch.get_default_dtype()
                self.bytes += numel * (torch.empty((), dtype=dtype).element_size() if isinstance(
                    dtype, torch.dtype) else 4)
                if self.bytes > self.max_bytes:
                    raise OverLimit("BUILD_BYTES_FACTOR", limits.BUILD_BYTES_FACTOR,
                                    f"the memory its model config allocates ({self.bytes >> 20} MB), against the "
                                    "tensor bytes the file holds,")
        else:
            planned = _planned_numel(func, args, kwargs)
            if planned is not None:
                self._check_op(getattr(func, "__name__", "an operation"), planned * 4)
        out = func(*args, **kwargs)
        if func in _UNINITIALISED:
            out.zero_()  # garbage memory may hold denormals, which make the stride probe's convolutions crawl
        elif func not in _FACTORIES:
            self._check_op(getattr(func, "__name__", "an operation"), _nbytes(out))
        return out

    def _check_op(self, name: str, nbytes: int) -> None:
        if nbytes > self.op_bytes:
            raise OverLimit("BUILD_OP_BYTES", self.op_bytes >> 20,
                            f"the output of {name} while its model is built ({nbytes >> 20} MB)")


class _ThreadFilter(logging.Filter):
    def __init__(self, thread: int) -> None:
        super().__init__()
        self.thread = thread

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread != self.thread


@contextlib.contextmanager
def quiet_loggers(names: Iterable[str]) -> Iterator[None]:
    """Drop the records this thread logs to the loggers ``names`` (a host's model summary while rebuilding)."""
    flt = _ThreadFilter(threading.get_ident())
    loggers = [logging.getLogger(n) for n in names]
    for lg in loggers:
        lg.addFilter(flt)
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeFilter(flt)


@contextlib.contextmanager
def rebuilding(file_bytes: int, file_tensors: int, loggers: Iterable[str] = ()) -> Iterator[BuildGuard]:
    """Enter the rebuild context for a file with ``file_bytes`` tensor bytes in ``file_tensors`` tensors."""
    guard = BuildGuard(limits.BUILD_BYTES_FACTOR * file_bytes + limits.BUILD_BYTES_SLACK,
                       limits.BUILD_TENSORS_FACTOR * file_tensors + limits.BUILD_TENSORS_SLACK,
                       max(limits.BUILD_OP_BYTES, limits.BUILD_BYTES_FACTOR * file_bytes))
    token = _REBUILDING.set(True)
    try:
        with quiet_loggers(loggers), guard:
            yield guard
    finally:
        _REBUILDING.reset(token)
