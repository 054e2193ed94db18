"""The loader's exceptions: the public ones callers catch and the internal ones the reader raises."""
from __future__ import annotations

import pickle
from typing import Any


class UntrustedCheckpointError(pickle.UnpicklingError):
    """The checkpoint asks for something the loader refuses (or exceeds a limit); nothing it asked for ran.

    Attributes: ``global_name`` (the pickled global, e.g. ``'models.yolo.Model'``, or ``None``),
    ``reason`` (why it was refused), ``path`` (the file, when known) and ``limit`` (the name of the
    limit it exceeded, see :mod:`yolo_backbones.core.weights.safe_load.limits`, or ``None``).
    """

    def __init__(self, message: str, global_name: str | None = None, reason: str | None = None,
                 path: str | None = None, limit: str | None = None) -> None:
        super().__init__(message)
        self.global_name, self.reason, self.path, self.limit = global_name, reason or message, path, limit


class CheckpointFileError(ValueError):
    """The file is not a readable PyTorch checkpoint (missing, empty, truncated, another format, ...).

    ``str(error)`` is one line naming the file, what it is and what to do; ``path`` is the file.
    """

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(one_line(message))
        self.path = path


class UnsafeCheckpointLoadWarning(RuntimeWarning):
    """A checkpoint is loaded with ``torch.load(weights_only=False)`` because the user opted in.

    Not a UserWarning on purpose: YOLOv5 ignores every UserWarning process-wide.
    """


# ------------------------------------------------------------------- internal: never leave load_checkpoint
class Refused(Exception):
    """Raised while reading or rebuilding; load_checkpoint turns it into UntrustedCheckpointError with the file name."""

    def __init__(self, global_name: str | None, reason: str) -> None:
        super().__init__(reason)
        self.global_name, self.reason = global_name, reason


class OverLimit(Refused):
    """A size, count or depth of the file exceeds one of the loader's limits (named by ``limit``)."""

    def __init__(self, limit: str, value: Any, what: str) -> None:
        super().__init__(None, f"{what} exceeds the loader's limit {limit} = {value}")
        self.limit = limit


class Damaged(Exception):
    """The pickle stream or archive is broken (or, with ``version=True``, names a class this code lacks)."""

    def __init__(self, detail: str, version: bool = False) -> None:
        super().__init__(detail)
        self.version = version


class Mismatch(Exception):
    """The model a checkpoint stores does not match what its own config builds (checked before any weight is used)."""


def one_line(text: Any, limit: int = 400) -> str:
    """``text`` with whitespace runs collapsed to single spaces, cut to ``limit`` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."
