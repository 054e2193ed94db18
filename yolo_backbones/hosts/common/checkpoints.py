"""What a host expects of a checkpoint file: a dict whose ``model`` (or ``ema``) is a model.

The loader returns whatever the file holds, as data. A host's checkpoint code then indexes it
(``ckpt['model'].float()``); a file whose top level is a list, or whose ``model`` is a number, would end in a
traceback deep inside the host. :func:`load_model_checkpoint` is the loader for host code that reads model
checkpoints: it says in one line what the file holds instead.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from ...core.weights.safe_load import CheckpointFileError, load_checkpoint
from ...core.weights.safe_load.file_kinds import name_of

__all__ = ["load_model_checkpoint", "require_model_checkpoint"]


def require_model_checkpoint(ckpt: Any, name: str) -> Any:
    """``ckpt`` if it is a dict with a model under ``model`` or ``ema`` (the other ``None`` or a model); else raise
    :class:`CheckpointFileError` naming the file and what it holds."""
    if isinstance(ckpt, dict):
        entries = [ckpt.get(k) for k in ("model", "ema")]
        if any(isinstance(e, nn.Module) for e in entries) and all(e is None or isinstance(e, nn.Module)
                                                                   for e in entries):
            return ckpt
        what = "a dict without a model under 'model' or 'ema'"
    else:
        what = f"a {type(ckpt).__name__}"
    raise CheckpointFileError(f"{name}: holds {what}, not a YOLO training checkpoint; pass a best.pt / last.pt "
                              "written by train.py (backbone ImageNet weights go in the model YAML instead)", name)


def load_model_checkpoint(f: Any, *args: Any, **kwargs: Any) -> Any:
    """:func:`yolo_backbones.load_checkpoint` for host code that reads model checkpoints (torch.load's signature)."""
    return require_model_checkpoint(load_checkpoint(f, *args, **kwargs), name_of(f))
