"""Opt-in process settings for fast eager CPU inference: glibc's allocator keeps freed memory for the next forward.

glibc's ``malloc`` hands memory of freed large blocks back to the kernel (heap trimming, dynamic ``mmap``
threshold), so the next forward pass faults the same pages in again, zero-filled: 30-40 thousand page faults
per 640x640 forward for Mobile-Former and EfficientFormerV2 detectors (a stock YOLOv5s: about 6 thousand),
which is 20-40 % of their eager latency. :func:`tune_cpu_allocator` keeps freed memory in the process
instead: blocks up to 32 MB come from the heap and the heap is trimmed only above 1 GB of free memory. The
peak memory does not change (only memory that was already in use at the peak is kept); the process gives
back less memory after it. Allocator libraries such as jemalloc or tcmalloc, which PyTorch's CPU
performance guides recommend, behave similarly.

It changes the whole process, so the plugin never does it on its own: call :func:`tune_cpu_allocator` (the
benchmark does), or set ``YOLO_BACKBONES_MALLOC_TUNING=1`` to have :meth:`Backbone.fuse
<yolo_backbones.core.base.Backbone.fuse>` call it (:func:`tune_if_requested`).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["tune_cpu_allocator", "tune_if_requested", "TUNING_ENV"]

TUNING_ENV = "YOLO_BACKBONES_MALLOC_TUNING"

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
    apply (not Linux / glibc).
    """
    global _tuned
    if _tuned is not None:
        return _tuned
    _tuned = False
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


def tune_if_requested() -> bool:
    """:func:`tune_cpu_allocator` if ``YOLO_BACKBONES_MALLOC_TUNING`` is set to a true value; returns whether the
    setting is in effect."""
    if os.environ.get(TUNING_ENV, "").strip().lower() in ("1", "true", "yes", "on"):
        return tune_cpu_allocator()
    return bool(_tuned)
