"""The loader's exceptions: the public ones callers catch and the internal ones the unpickler raises."""
from __future__ import annotations

import pickle
from typing import Any


class UntrustedCheckpointError(pickle.UnpicklingError):
    """The checkpoint asks for something the restricted loader refuses; nothing it asked for ran.

    Attributes: ``global_name`` (the pickled global, e.g. ``'models.yolo.Model'``, or ``None``),
    ``reason`` (why it was refused) and ``path`` (the file, when known).
    """

    def __init__(self, message: str, global_name: str | None = None, reason: str | None = None,
                 path: str | None = None) -> None:
        super().__init__(message)
        self.global_name, self.reason, self.path = global_name, reason or message, path


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
    """Raised inside the unpickler; load_checkpoint turns it into UntrustedCheckpointError with the file name."""

    def __init__(self, global_name: str | None, reason: str) -> None:
        super().__init__(reason)
        self.global_name, self.reason = global_name, reason


class Damaged(Exception):
    """The pickle stream is broken (or, with ``version=True``, names a class this code lacks)."""

    def __init__(self, detail: str, version: bool = False) -> None:
        super().__init__(detail)
        self.version = version


def one_line(text: Any, limit: int = 400) -> str:
    """``text`` with whitespace runs collapsed to single spaces, cut to ``limit`` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


class DevicePassthrough(Exception):
    """A device error of torch (e.g. CUDA tensors without CUDA), re-raised unchanged for the caller to see."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error
