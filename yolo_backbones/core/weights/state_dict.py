"""Loading an official-format state_dict into a backbone strictly, with a clear report when it does not match."""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


class CheckpointMismatchError(RuntimeError):
    """Raised when a checkpoint's keys or shapes do not fit the model it is loaded into."""


def load_backbone_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load an official-format ``state_dict`` into ``model`` strictly, or raise :class:`CheckpointMismatchError`.

    The backbone's ``convert_state_dict`` maps the checkpoint's keys to the model's and leaves out those of parts
    the model does not have (a classifier when ``num_classes == 0``, pruned stages); every other key must match
    by name and shape.
    """
    state_dict = model.convert_state_dict(dict(state_dict))
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
