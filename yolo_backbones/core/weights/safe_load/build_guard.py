"""The context a model is rebuilt in: bounded allocations, no random initialisation, quiet host loggers.

:func:`rebuilding` is entered while a model is built from a checkpoint's config (the host's constructor,
including its stride-probe forward). A :class:`BuildGuard` torch-function mode, active for this thread only:

* refuses before allocating once the tensors the build creates exceed a budget derived from the file
  (:data:`~.limits.BUILD_BYTES_FACTOR` x its tensor bytes, :data:`~.limits.BUILD_TENSORS_FACTOR` x its tensor
  count): absurd channel counts or layer counts in a small file fail fast with a one-line refusal;
* runs the host's stride probe (the forward of a blank image its constructor makes) on the meta device: a
  host's forward hands its input to :func:`probe_input`, and every operation that meets a meta tensor runs on
  meta copies of its arguments, so the probe computes shapes only (no memory, no arithmetic). Code whose
  control flow reads tensor values cannot run on meta; the build is then repeated with a real probe, where the
  output size of every operation that can produce more than it reads (convolutions, pooling, interpolation,
  padding, matrix products, repeats) is checked on meta first and refused above :data:`~.limits.BUILD_OP_BYTES`;
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
from typing import Any, Iterable, Iterator

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

from . import limits
from .errors import OverLimit

_REBUILDING: contextvars.ContextVar[bool] = contextvars.ContextVar("yolo_backbones_rebuilding", default=False)
_META_PROBE: contextvars.ContextVar[bool] = contextvars.ContextVar("yolo_backbones_meta_probe", default=False)


def is_rebuilding() -> bool:
    """True while a model is being rebuilt from a checkpoint (its weights then come from the file)."""
    return _REBUILDING.get()


def probe_input(x: Any) -> Any:
    """What a host's model forward should run on: ``x`` on the meta device during a rebuild's stride probe, else
    ``x`` itself (hosts call this at the top of their forward; see the module docstring)."""
    if _META_PROBE.get() and isinstance(x, torch.Tensor) and not x.is_meta:
        return torch.empty_strided(x.size(), x.stride(), dtype=x.dtype, device="meta")
    return x


def _has_meta(args: tuple, kwargs: dict) -> bool:
    for a in args:
        if isinstance(a, torch.Tensor):
            if a.is_meta:
                return True
        elif isinstance(a, (list, tuple)) and any(isinstance(t, torch.Tensor) and t.is_meta for t in a):
            return True
    return any(isinstance(v, torch.Tensor) and v.is_meta for v in kwargs.values())


_INIT = {getattr(torch.nn.init, n) for n in (
    "uniform_", "normal_", "trunc_normal_", "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_",
    "xavier_normal_", "orthogonal_", "sparse_") if hasattr(torch.nn.init, n)}
_INIT |= {torch.Tensor.uniform_, torch.Tensor.normal_}
_FACTORIES = {torch.empty, torch.zeros, torch.ones, torch.rand, torch.randn, torch.full, torch.empty_strided,
              torch.randint, torch.Tensor.new_empty, torch.Tensor.new_zeros, torch.Tensor.new_ones,
              torch.Tensor.new_full}
_UNINITIALISED = {torch.empty, torch.empty_strided, torch.Tensor.new_empty}
_EXPANDING = ("conv", "pool", "interpolate", "upsample", "pad", "linear", "matmul", "bmm", "mm", "einsum", "repeat",
              "tile", "expand", "attention", "unfold", "im2col", "outer", "kron", "baddbmm", "addmm")


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


def _meta(x: Any) -> Any:
    if isinstance(x, torch.Tensor) and x.device.type != "meta":
        return torch.empty_strided(x.size(), x.stride(), dtype=x.dtype, device="meta")
    return x


def _nbytes(out: Any) -> int:
    return max((t.numel() * t.element_size() for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)), default=0)


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
        elif _has_meta(args, kwargs):
            return func(*tree_map(_meta, args), **tree_map(_meta, kwargs))  # the probe: shapes only
        else:
            name = getattr(func, "__name__", "")
            if any(word in name for word in _EXPANDING):
                try:
                    planned = _nbytes(func(*tree_map(_meta, args), **tree_map(_meta, kwargs)))
                except Exception:  # noqa: BLE001 - no meta kernel: the real call is checked after it ran
                    planned = 0
                self._check_op(name, planned)
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
def rebuilding(file_bytes: int, file_tensors: int, loggers: Iterable[str] = (), meta_probe: bool = True
               ) -> Iterator[BuildGuard]:
    """Enter the rebuild context for a file with ``file_bytes`` tensor bytes in ``file_tensors`` tensors
    (``meta_probe``: run the host's stride probe on the meta device)."""
    guard = BuildGuard(limits.BUILD_BYTES_FACTOR * file_bytes + limits.BUILD_BYTES_SLACK,
                       limits.BUILD_TENSORS_FACTOR * file_tensors + limits.BUILD_TENSORS_SLACK,
                       max(limits.BUILD_OP_BYTES, limits.BUILD_BYTES_FACTOR * file_bytes))
    token, meta = _REBUILDING.set(True), _META_PROBE.set(meta_probe)
    try:
        with quiet_loggers(loggers), guard:
            yield guard
    finally:
        _META_PROBE.reset(meta)
        _REBUILDING.reset(token)
