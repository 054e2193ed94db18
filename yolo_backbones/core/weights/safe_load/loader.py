"""load_checkpoint: file checks, then the restricted unpickler (or plain torch.load when asked), errors in one line."""
from __future__ import annotations

import os
import pickle
import warnings
from typing import IO, Any, Union

import torch

from .errors import (
    CheckpointFileError,
    Damaged,
    DevicePassthrough,
    Refused,
    UnsafeCheckpointLoadWarning,
    UntrustedCheckpointError,
    one_line,
)
from .file_kinds import check_file, name_of
from .unpickler import PICKLE_MODULE

TRUST_ENV = "YOLO_BACKBONES_TRUST_CHECKPOINTS"
_HINT = (f"If you trust this file: allow a missing class with yolo_backbones.allow_classes(...) (it is then "
         f"rebuilt, never called), or set {TRUST_ENV}=1 to load it with plain torch.load(weights_only=False), "
         "which runs any code the file contains.")

FileLike = Union[str, os.PathLike, IO[bytes]]


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on", "y")


_ZIP_READER_ERRORS = ("PytorchStreamReader", "inline_container", "zip archive", "central directory", "miniz",
                      "file not found", "unexpected EOF", "might be corrupted")


def load_checkpoint(f: FileLike, map_location: Any = None, pickle_module: Any = None, *,
                    weights_only: bool | None = None, mmap: bool | None = None, **pickle_load_args: Any) -> Any:
    """Load a checkpoint written by ``torch.save`` without letting it run code: ``torch.load``'s signature.

    Takes a path or binary file object (``f``), and ``map_location``, ``mmap`` and extra unpickler
    arguments as ``torch.load`` does. Returns the unpickled object, e.g. YOLOv5's
    ``{'model': DetectionModel, 'ema': ..., 'optimizer': {...}, 'epoch': int, ...}`` with tensors on
    ``map_location``. ``weights_only=None`` or ``False`` (and any ``pickle_module``, which is ignored)
    select the restricted loader described in the package docstring; ``weights_only=True`` is plain
    ``torch.load(weights_only=True)``. With ``YOLO_BACKBONES_TRUST_CHECKPOINTS=1`` the file is loaded with
    ``torch.load(weights_only=False)`` after an :class:`UnsafeCheckpointLoadWarning`.

    Raises :class:`CheckpointFileError` (one line) for a missing, empty, truncated, damaged or
    non-checkpoint file and :class:`UntrustedCheckpointError` naming the global the file asks for
    and why it is refused; in both cases nothing from the file has run.
    """
    name = name_of(f)
    check_file(f)
    kwargs: dict[str, Any] = dict(pickle_load_args)
    if mmap is not None:
        kwargs["mmap"] = mmap
    try:
        if weights_only or _env_true("TORCH_FORCE_WEIGHTS_ONLY_LOAD"):
            return torch.load(f, map_location, weights_only=True, **kwargs)
        if _env_true(TRUST_ENV):
            warnings.warn(f"{TRUST_ENV}=1: loading {name} with torch.load(weights_only=False), which runs any "
                          "code the file contains. Only do this for files you trust.",
                          UnsafeCheckpointLoadWarning, stacklevel=2)
            return torch.load(f, map_location, pickle_module, weights_only=False, **kwargs)
        # Sparse tensors are validated as under weights_only=True (bad indices would read out of bounds).
        with torch.sparse.check_sparse_tensor_invariants(enable=True):
            return torch.load(f, map_location, PICKLE_MODULE, weights_only=False, **kwargs)
    except Refused as e:
        what = f"the file asks for `{e.global_name}`; {e.reason}" if e.global_name else e.reason
        raise UntrustedCheckpointError(
            one_line(f"Refusing to load {name}: {what}. Nothing from the file was executed. {_HINT}", 1000),
            e.global_name, e.reason, name) from None
    except Damaged as e:
        text = f"{name}: cannot be loaded: {e}" if e.version else \
            f"{name}: is a damaged or malformed checkpoint ({e}); re-download or re-save it"
        raise CheckpointFileError(text, name) from None
    except DevicePassthrough as e:
        raise e.error from None
    except RuntimeError as e:
        text = str(e)
        if any(marker in text for marker in _ZIP_READER_ERRORS):
            raise CheckpointFileError(f"{name}: is a damaged or truncated checkpoint ({one_line(text, 160)}); "
                                      "re-download or re-save it", name) from None
        raise
    except (EOFError, pickle.UnpicklingError) as e:
        if isinstance(e, UntrustedCheckpointError) or weights_only:
            raise
        raise CheckpointFileError(f"{name}: is a damaged or truncated checkpoint ({type(e).__name__}: "
                                  f"{one_line(e, 160)}); re-download or re-save it", name) from None
