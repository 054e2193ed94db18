"""Loading official ImageNet checkpoints into the backbones, with clear reports when they do not match."""
from __future__ import annotations

import argparse
import pickle
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import torch

if TYPE_CHECKING:
    from ..base import Backbone

# Keys under which training scripts of the reference repositories store the weights.
_WRAPPER_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model")


class CheckpointMismatchError(RuntimeError):
    """Raised when a checkpoint's keys or shapes do not fit the model it is loaded into."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file and return its flat ``{key: tensor}`` state_dict.

    Accepts a raw state_dict or a training checkpoint that wraps it under ``state_dict``
    (timm / Mobile-Former ``.pth.tar``) or ``model`` (EfficientFormer), and strips a DDP
    ``module.`` prefix. The file is unpickled with ``weights_only=True``; only
    ``argparse.Namespace`` (the ``args`` entry of those training checkpoints) is allowed
    beyond tensors and containers, so a malicious pickle cannot run code.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file not found: {path} (give the path of a local .pth/.pth.tar file; "
                                "nothing is downloaded)")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointMismatchError(f"{path} holds objects other than tensors and containers, so it was not loaded "
                                      f"(nothing in it was executed): {str(e).splitlines()[0]}") from e
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointMismatchError(f"{path} cannot be read as a PyTorch checkpoint (truncated or not written by "
                                      f"torch.save?): {str(e).splitlines()[0]}") from e
    return extract_state_dict(obj, source=str(path))


def extract_state_dict(obj: object, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Return the tensor state_dict inside ``obj`` (a raw state_dict or a wrapping training checkpoint)."""
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(torch.is_tensor(v) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj or not all(torch.is_tensor(v) for v in obj.values()):
        raise CheckpointMismatchError(f"{source} holds no state_dict of tensors (looked at the top level and under "
                                      f"{', '.join(_WRAPPER_KEYS)})")
    return OrderedDict((k[len("module."):] if k.startswith("module.") else k, v) for k, v in obj.items())


def load_backbone_weights(model: "Backbone", state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load an official-format ``state_dict`` into ``model`` strictly, or raise :class:`CheckpointMismatchError`.

    The backbone's ``convert_state_dict`` maps official key names to the model's. For a detection
    backbone (``num_classes == 0``) the classifier keys and those of stages it does not build
    (``model.unbuilt_prefixes``) are dropped first; every other key must match by name and shape.
    """
    state_dict = model.convert_state_dict(dict(state_dict))
    if not model.num_classes:
        skipped = tuple(model.classifier_prefixes) + tuple(model.unbuilt_prefixes)
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(skipped)}
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    wrong_shape = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                   for k, v in state_dict.items() if k in own and v.shape != own[k].shape]
    if missing or unexpected or wrong_shape:
        name = f"{model.family}_{model.variant}"
        lines = [f"{source} does not match {name} (num_classes={model.num_classes}):"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong_shape)):
            if items:
                shown = ", ".join(items[:8]) + (f", ... ({len(items)} in all)" if len(items) > 8 else "")
                lines.append(f"  {title}: {shown}")
        lines.append("  check that the file is the official checkpoint of this exact variant "
                     "(see `yolo-backbones list` for the variants)")
        raise CheckpointMismatchError("\n".join(lines))
    model.load_state_dict(state_dict, strict=True)
