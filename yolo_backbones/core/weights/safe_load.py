"""Safe loading of YOLOv5 checkpoints on torch >= 2.6: ``weights_only=True`` plus a YOLOv5 allowlist.

A YOLOv5 checkpoint pickles the whole model, so since torch 2.6 (``weights_only=True`` by default)
the PyPI package cannot load any of them. Turning ``weights_only`` off would let a checkpoint run
arbitrary code. Instead :func:`load_checkpoint` keeps ``weights_only=True`` and allows exactly the
globals a YOLOv5 checkpoint legitimately contains: ``nn.Module`` classes of ``torch.nn``, of the
host's ``models.*`` and of ``yolo_backbones``, numpy scalars/arrays and paths. Anything else is
refused with :class:`UntrustedCheckpointError` before any of the file's code runs, unless the user
opts in with ``YOLO_BACKBONES_TRUST_CHECKPOINTS=1``.
"""
from __future__ import annotations

import functools
import importlib
import os
import pickle
import re
import sys
import types
import warnings
from pathlib import PosixPath, PurePosixPath, PureWindowsPath, WindowsPath
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

__all__ = ["load_checkpoint", "allow_classes", "UntrustedCheckpointError", "UnsafeCheckpointLoadWarning", "TRUST_ENV"]

TRUST_ENV = "YOLO_BACKBONES_TRUST_CHECKPOINTS"

class UntrustedCheckpointError(pickle.UnpicklingError):
    """A checkpoint references a global outside the YOLOv5 allowlist; nothing in it was executed."""


class UnsafeCheckpointLoadWarning(RuntimeWarning):
    """A checkpoint is being loaded with ``weights_only=False`` because the user trusts it.

    Not a UserWarning on purpose: yolov5/utils/torch_utils.py ignores every UserWarning process-wide.
    """


# Modules whose nn.Module classes a checkpoint may reference; a missing one is imported on demand
# (pickle would import it too), e.g. models.common for an upstream checkpoint loaded under pip.
_MODEL_MODULES = re.compile(r"^(yolov5\.)?models\.(common|yolo|experimental)$|^yolo_backbones(\.\w+)*$")
# Module classes never allowlisted: unpickling may call an allowed class with file-chosen arguments,
# and DetectMultiBackend's constructor opens files, imports backends and can reach Triton servers.
_NEVER_ALLOWED = frozenset({"DetectMultiBackend"})
_allowed: set[Any] = set()  # everything given to torch.serialization.add_safe_globals so far


def allow_classes(*classes: type | Callable[..., Any]) -> None:
    """Allow extra globals in checkpoints loaded by YOLOv5 (``torch.load(weights_only=True)``).

    Use it for a class a checkpoint legitimately contains and the automatic allowlist misses, e.g.
    an ``nn.Module`` defined outside ``torch.nn``, the host's ``models`` and ``yolo_backbones``.
    Only allow classes whose construction and ``__setstate__`` have no side effects: unpickling
    may call them with arguments chosen by the file.
    """
    new = [c for c in classes if c not in _allowed]
    if new:
        torch.serialization.add_safe_globals(new)
        _allowed.update(new)


@functools.lru_cache(maxsize=1)
def _plain_globals() -> tuple[Any, ...]:
    """The non-module globals found in real YOLOv5 checkpoints (1-epoch runs of pip 7.0.14 and a clone)."""
    # numpy scalars (np.interp learning rates in optimizer.param_groups, best_fitness) and arrays
    # (best_fitness is fitness()'s (1,)-array once mAP > 0). dtype classes are needed because the
    # unpickler only BUILDs instances of allowed types; numpy 1.x pickles say numpy.core.
    core = np._core if hasattr(np, "_core") else np.core
    dtype_classes = {v for v in vars(getattr(np, "dtypes", types.SimpleNamespace())).values()
                     if isinstance(v, type) and issubclass(v, np.dtype)}
    dtype_classes |= {type(np.dtype(c)) for c in "?bBhHiIlLqQefdgFDGSUVOMm"}
    numpy_aliases = [(f, f"numpy.{p}.multiarray.{f.__name__}") for f in (core.multiarray.scalar,
                     core.multiarray._reconstruct) for p in ("core", "_core")]
    # pathlib paths: a clone's opt holds evolve_population=PosixPath('data/hyps'); Python 3.13 names
    # the module pathlib._local.
    paths = (PosixPath, WindowsPath, PurePosixPath, PureWindowsPath)
    path_aliases = [(c, f"pathlib.{m}{c.__name__}") for c in paths for m in ("", "_local.")]
    return (np.dtype, np.ndarray, *dtype_classes, *numpy_aliases, *paths, *path_aliases)


def _refresh_allowlist() -> None:
    """Allow every nn.Module subclass of torch.nn, the host's models.* and yolo_backbones.* loaded now."""
    found: list[Any] = []
    for name, module in list(sys.modules.items()):
        torch_nn = name == "torch.nn" or name.startswith("torch.nn.")
        if module is None or not (torch_nn or _MODEL_MODULES.match(name)):
            continue
        for obj in list(vars(module).values()):
            if (isinstance(obj, type) and issubclass(obj, nn.Module) and obj.__name__ not in _NEVER_ALLOWED
                    and (not torch_nn or obj.__module__.startswith("torch.nn"))):
                found.append(obj)
    allow_classes(*found, *_plain_globals())


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _global_named_in(error: BaseException) -> str | None:
    match = re.search(r"GLOBAL ([\w.]+)", str(error))
    return match.group(1) if match else None


def load_checkpoint(f: Any, map_location: Any = None, *args: Any, **kwargs: Any) -> Any:
    """``torch.load`` for YOLOv5 checkpoints: ``weights_only=True`` with the YOLOv5 allowlist.

    Takes ``torch.load``'s arguments (a path or file object first); returns the unpickled object,
    e.g. the checkpoint dict ``{'model': DetectionModel, 'ema': ..., 'epoch': ...}``.

    An explicit ``weights_only`` from the caller is respected. With ``YOLO_BACKBONES_TRUST_CHECKPOINTS=1``
    the file is loaded with ``weights_only=False`` (warned). Otherwise a global outside the allowlist
    raises :class:`UntrustedCheckpointError` naming it; the file's code never runs.
    """
    if kwargs.get("weights_only") is not None:
        return torch.load(f, map_location, *args, **kwargs)
    kwargs.pop("weights_only", None)
    if _env_true(TRUST_ENV):
        warnings.warn(f"{TRUST_ENV}=1: loading {f} with torch.load(weights_only=False); this runs any code "
                      "the file contains. Only do this for files you trust.", UnsafeCheckpointLoadWarning, stacklevel=2)
        return torch.load(f, map_location, *args, weights_only=False, **kwargs)
    imported: set[str] = set()
    while True:
        _refresh_allowlist()
        try:
            return torch.load(f, map_location, *args, weights_only=True, **kwargs)
        except pickle.UnpicklingError as e:
            name = _global_named_in(e)
            module = name.rpartition(".")[0] if name else ""
            if (module and module not in sys.modules and module not in imported and _MODEL_MODULES.match(module)
                    and _try_import(module)):
                imported.add(module)
                if hasattr(f, "seek"):
                    f.seek(0)
                continue
            what = f"the global `{name}`" if name else "a global"
            raise UntrustedCheckpointError(
                f"Refusing to load {f}: it references {what}, which is not among the classes a YOLOv5 "
                "checkpoint may contain (torch.nn / YOLOv5 / yolo_backbones modules, numpy scalars and arrays, paths). "
                "It was read with torch.load(weights_only=True), so nothing in the file was executed. "
                f"If you trust this file: allow the class with yolo_backbones.compat.allow_classes(...), or set "
                f"{TRUST_ENV}=1 to load it with weights_only=False (this runs any code the file contains). "
                f"torch said: {_torch_reason(e)}") from e


def _torch_reason(error: BaseException) -> str:
    text = str(error)
    match = re.search(r"WeightsUnpickler error: ([^\n]*)", text)
    return (match.group(1) if match else text.strip().splitlines()[0])[:300]


def _try_import(module: str) -> bool:
    try:
        importlib.import_module(module)
        return True
    except ImportError:
        return False


