"""Reading a weights file (``.safetensors``, or a torch pickle through the restricted loader) into a state dict.

:func:`read_weights_file` returns a flat ``{key: tensor}`` dict, unwrapping training checkpoints;
:func:`guess_key_format` tells the official key layout from timm's.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .locate import PathLike, WeightsNotFoundError, first_line
from .safe_load import CheckpointFileError, UntrustedCheckpointError, load_checkpoint

__all__ = ["DamagedWeightsFileError", "RefusedWeightsFileError", "WeightsFileError", "guess_key_format",
           "read_weights_file"]

# Training checkpoints wrap the weights; the authors' own loaders read `model` (EfficientFormer)
# and `state_dict` (Mobile-Former / timm train.py), so those win over the EMA copies.
WRAPPER_KEYS = ("model", "state_dict", "model_ema", "state_dict_ema")



class WeightsFileError(RuntimeError):
    """A weights file exists but holds no readable state dict (empty, truncated, not a checkpoint)."""


class DamagedWeightsFileError(WeightsFileError, CheckpointFileError):
    """A torch pickle the restricted loader cannot read (truncated, damaged): both error kinds."""

    def __init__(self, message: str, path: str | None = None) -> None:
        CheckpointFileError.__init__(self, message, path)


class RefusedWeightsFileError(WeightsFileError, UntrustedCheckpointError):
    """A torch pickle asking for something the restricted loader refuses; nothing from it ran."""

    def __init__(self, message: str, global_name: str | None = None) -> None:
        UntrustedCheckpointError.__init__(self, message, global_name)


def _looks_like_safetensors(path: Path) -> bool:
    """safetensors files start with an 8-byte little-endian header length and a JSON ``{``."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return False
    return 2 <= int.from_bytes(head[:8], "little") <= path.stat().st_size - 8


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(torch.is_tensor(v) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj or not all(torch.is_tensor(v) for v in obj.values()):
        raise WeightsFileError(f"{path} holds no state dict of tensors (looked at the top level and under "
                               f"{', '.join(WRAPPER_KEYS)}): pass a checkpoint of the backbone's weights")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def read_weights_file(path: PathLike) -> dict[str, torch.Tensor]:
    """Read a weights file into a flat ``{key: tensor}`` dict on the CPU.

    Args:
        path: a ``.safetensors`` file (recognised by its header, whatever its suffix), or a torch
            pickle (``.pth``, ``.pth.tar``, ``.pt``, ``.bin``), read by the project's restricted loader
            (:func:`yolo_backbones.load_checkpoint`, which never runs code from the file).

    Returns:
        The state dict: a raw one, or the one under ``model`` / ``state_dict`` / ``model_ema`` /
        ``state_dict_ema`` (first match), with a DistributedDataParallel ``module.`` prefix removed.

    Raises:
        WeightsNotFoundError: no such file.
        WeightsFileError: empty, truncated, not a checkpoint, or holding no tensors (one line:
            the file, the cause, the fix).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsNotFoundError(f"weights file not found: {path}")
    if path.stat().st_size == 0:
        raise WeightsFileError(f"{path} is empty (0 bytes; an interrupted download?): delete it and get the file again")
    redo = "delete it and get the file again (truncated download?) or pass a .pth/.safetensors checkpoint"
    if _looks_like_safetensors(path):
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise WeightsFileError(f"{path} is a safetensors file and the safetensors package is missing: "
                                   f"pip install safetensors") from None
        try:
            return _unwrap(load_file(str(path), device="cpu"), path)
        except WeightsFileError:
            raise
        except Exception as e:
            raise WeightsFileError(f"{path} cannot be read as safetensors ({first_line(e)}): {redo}") from e
    return _unwrap(_load_pickle_safely(path), path)


def _load_pickle_safely(path: Path) -> Any:
    """Unpickle ``path`` with the project's restricted loader, its refusals turned into one-line
    :class:`WeightsFileError` s (the file, the cause, the fix)."""
    try:
        return load_checkpoint(path, map_location="cpu")
    except UntrustedCheckpointError as e:
        raise RefusedWeightsFileError(str(e), e.global_name) from None  # the loader's own one-line message
    except CheckpointFileError as e:
        raise DamagedWeightsFileError(f"{e}; or pass a different .pth/.safetensors checkpoint", str(path)) from None


def guess_key_format(keys: Any) -> str:
    """``"timm"`` if the keys use timm's EfficientFormer layout (``stages.*``), else ``"official"``."""
    return "timm" if any(str(k).startswith("stages.") for k in keys) else "official"
