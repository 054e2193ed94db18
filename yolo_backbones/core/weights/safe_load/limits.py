"""What a checkpoint may make the loader do: sizes, counts and depths, each far above any genuine YOLO checkpoint.

A refusal names the limit (:class:`~.errors.OverLimit`), so the one-line message says which one was hit.
Only the total tensor size is adjustable (``YOLO_BACKBONES_MAX_CHECKPOINT_MB``): everything else is a
property of the pickle format that no real checkpoint comes near.
"""
from __future__ import annotations

import os

MAX_CHECKPOINT_MB_ENV = "YOLO_BACKBONES_MAX_CHECKPOINT_MB"

# The pickle (data.pkl) of a YOLOv5x / YOLO11x training checkpoint is 1-3 MB.
MAX_PICKLE_BYTES = 64 << 20
# Objects pushed by the pickle program (new objects and references to memoised ones); YOLO checkpoints: < 1M.
MAX_PUSHES = 8_000_000
# Nesting of tuples and frozensets while they are built (hashing a deeply nested tuple recurses in C).
MAX_TUPLE_DEPTH = 64
# Nesting of containers and objects reached from the root (a YOLO checkpoint: ~30 levels).
MAX_DEPTH = 200
# Bytes of one pickled integer (LONG1 / LONG4).
MAX_INT_BYTES = 256
# A tensor view may have more elements than its storage (stride 0, overlapping strides) only up to this many.
MAX_EXPANDED_ELEMENTS = 1024
# All tensor views together may cover at most this multiple of the stored bytes (plus 1 MiB).
VIEW_BYTES_FACTOR = 4
# Archive members: data.pkl, byteorder, version, ids and one record per storage.
MAX_ZIP_MEMBERS = 200_000
# Rebuilding a model from a file's config may allocate this multiple of the file's tensor bytes (plus 256 MiB):
# fp16 checkpoints become fp32 models, and the host's stride probe needs activations.
BUILD_BYTES_FACTOR = 4
BUILD_BYTES_SLACK = 256 << 20
# ... and create at most this multiple of the file's tensor count (plus 4096) tensors.
BUILD_TENSORS_FACTOR = 8
BUILD_TENSORS_SLACK = 4096
# One tensor an operation of the rebuild (the stride probe's forward) may produce, at least.
BUILD_OP_BYTES = 1 << 30


def max_tensor_bytes() -> int:
    """The clear cap on all tensor bytes of one checkpoint: ``YOLO_BACKBONES_MAX_CHECKPOINT_MB`` (default 4096 MB)."""
    text = os.environ.get(MAX_CHECKPOINT_MB_ENV, "").strip()
    try:
        mb = float(text) if text else 4096.0
    except ValueError:
        mb = 4096.0
    return int(mb * (1 << 20))
