"""Process-level settings that make eager CPU inference faster; applied when a backbone is fused for inference.

glibc's ``malloc`` hands memory of freed large blocks back to the kernel (heap trimming, dynamic ``mmap``
threshold), so the next forward pass faults the same pages in again, zero-filled: 30-40 thousand page faults
per 640x640 forward for Mobile-Former and EfficientFormerV2 detectors (a stock YOLOv5s: about 6 thousand),
which is 20-40 % of their eager latency. :func:`tune_cpu_allocator` keeps freed memory in the process
instead: blocks up to 32 MB come from the heap and the heap is trimmed only above 1 GB of free memory. The
peak memory does not change (only memory that was already in use at the peak is kept); the process gives
back less memory after it. Allocator libraries such as jemalloc or tcmalloc, which PyTorch's CPU
performance guides recommend, behave similarly.

Set ``YOLO_BACKBONES_MALLOC_TUNING=0`` to leave the allocator alone.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys
from typing import Iterator

import torch

__all__ = ["tune_cpu_allocator", "single_threaded"]

# mallopt(3) parameters of glibc.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# glibc caps the mmap threshold at HEAP_MAX_SIZE / 2 (32 MB on 64-bit); larger blocks are always mmap'ed.
_MMAP_THRESHOLD = 32 * 1024 * 1024
_TRIM_THRESHOLD = 1024 * 1024 * 1024

_tuned: bool | None = None


def tune_cpu_allocator() -> bool:
    """Keep freed memory in the process (glibc ``mallopt``) so repeated forwards do not page-fault; idempotent.

    Returns True if the settings are in effect (now or from an earlier call), False where they do not
    apply (not Linux/glibc, or ``YOLO_BACKBONES_MALLOC_TUNING=0``).
    """
    global _tuned
    if _tuned is not None:
        return _tuned
    _tuned = False
    if os.environ.get("YOLO_BACKBONES_MALLOC_TUNING", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # Setting the mmap threshold also stops glibc from moving it (and the trim threshold) dynamically.
    _tuned = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    return _tuned


@contextlib.contextmanager
def single_threaded(active: bool = True) -> Iterator[None]:
    """Run the body on one intra-op thread (if ``active``), then restore the thread count.

    For runs of tiny operators (a handful of global tokens: Linear, LayerNorm, attention among ``M <= 6``
    tokens) between large ones: each tiny operator that opens an OpenMP parallel region costs a fork/join of
    the thread team, far more than its arithmetic, and on a shared, oversubscribed CPU a team member that is
    not scheduled stalls it for a whole time slice. One thread computes the same function (float rounding
    may differ where a kernel's blocking depends on the thread count). Used by fused-inference code paths only; the switch itself costs well
    under a microsecond.
    """
    threads = torch.get_num_threads() if active else 1
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
