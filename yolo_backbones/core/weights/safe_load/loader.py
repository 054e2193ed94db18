"""load_checkpoint: file checks, the inert reader, then data and rebuilt models; every refusal one line."""
from __future__ import annotations

import os
import warnings
from typing import IO, Any, Callable, Union

import torch

from .archive import open_archive
from .errors import (
    CheckpointFileError,
    Damaged,
    Mismatch,
    OverLimit,
    Refused,
    UnsafeCheckpointLoadWarning,
    UntrustedCheckpointError,
    one_line,
)
from .file_kinds import check_file, name_of
from .interpret import Interpreter

TRUST_ENV = "YOLO_BACKBONES_TRUST_CHECKPOINTS"
_TRUST_HINT = (f"If you trust this file, set {TRUST_ENV}=1 to load it with plain torch.load(weights_only=False), "
               "which runs any code the file contains.")

FileLike = Union[str, os.PathLike, IO[bytes]]
CheckpointHook = Callable[[Any, "str | None"], None]
_hooks: list[CheckpointHook] = []


def register_checkpoint_hook(hook: CheckpointHook) -> None:
    """Host hook: ``hook(checkpoint, path)`` runs on every loaded checkpoint (plain data and rebuilt models) before it
    is returned; ``path`` is the file's path, or None for a file object. Used to confine run settings."""
    if hook not in _hooks:
        _hooks.append(hook)


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on", "y")


def load_checkpoint(f: FileLike, map_location: Any = None, pickle_module: Any = None, *,
                    weights_only: bool | None = None, mmap: bool | None = None, **pickle_load_args: Any) -> Any:
    """Load a checkpoint written by ``torch.save`` as data: ``torch.load``'s signature, nothing of the file runs.

    Takes a path or binary file object. Returns what the file holds with every object replaced by data:
    tensors (dense, on the CPU or ``map_location``: a device, a ``{saved: target}`` dict; callables are ignored),
    plain values and containers, and each model (``nn.Module``) *rebuilt* from its config and loaded with its
    tensors, e.g. YOLOv5's ``{'model': DetectionModel, 'ema': ..., 'optimizer': {...}, 'epoch': int, ...}``
    (see the package docstring). ``weights_only=True`` (or ``TORCH_FORCE_WEIGHTS_ONLY_LOAD=1``) refuses model
    objects: tensors and plain data only. ``pickle_module``, ``mmap`` and extra arguments are accepted for
    torch.load compatibility and ignored. With ``YOLO_BACKBONES_TRUST_CHECKPOINTS=1`` the file is loaded with
    ``torch.load(weights_only=False)`` after an :class:`UnsafeCheckpointLoadWarning`.

    Raises :class:`CheckpointFileError` (one line) for a missing, empty, truncated, damaged or non-checkpoint
    file, or a model that does not match its own config, and :class:`UntrustedCheckpointError` for anything the
    loader refuses (naming the global or limit and why); in both cases nothing from the file has run.
    """
    name = name_of(f)
    kind = check_file(f)
    if _env_true(TRUST_ENV):
        warnings.warn(f"{TRUST_ENV}=1: loading {name} with torch.load(weights_only=False), which runs any code the "
                      "file contains. Only do this for files you trust.", UnsafeCheckpointLoadWarning, stacklevel=2)
        kwargs = dict(pickle_load_args, **({"mmap": mmap} if mmap is not None else {}))
        return torch.load(f, map_location, weights_only=False, **kwargs)
    models = not (weights_only or _env_true("TORCH_FORCE_WEIGHTS_ONLY_LOAD"))
    path = os.fspath(f) if isinstance(f, (str, os.PathLike)) else None
    try:
        archive, close = open_archive(f, kind, name)
        try:
            out = Interpreter(archive, map_location, models=models).convert(archive.read_records())
        finally:
            close()
        for hook in _hooks:
            hook(out, path)
        return out
    except OverLimit as e:
        raise UntrustedCheckpointError(
            one_line(f"Refusing to load {name}: {e.reason}. Nothing from the file was executed. A genuine checkpoint "
                     f"stays far below this limit. {_TRUST_HINT}", 1000), None, e.reason, name, e.limit) from None
    except Refused as e:
        what = f"the file asks for `{e.global_name}`; {e.reason}" if e.global_name else e.reason
        raise UntrustedCheckpointError(
            one_line(f"Refusing to load {name}: {what}. Nothing from the file was executed. {_TRUST_HINT}", 1000),
            e.global_name, e.reason, name) from None
    except Damaged as e:
        text = f"{name}: cannot be loaded: {e}" if e.version else \
            f"{name}: is a damaged or malformed checkpoint ({one_line(e, 200)}); re-download or re-save it"
        raise CheckpointFileError(text, name) from None
    except Mismatch as e:
        raise CheckpointFileError(f"{name}: its model cannot be rebuilt from the config it stores: {one_line(e, 300)}; "
                                  "the file was altered, or saved by code this version cannot rebuild; re-save it with "
                                  "the code that trained it", name) from None
