"""``Select``: the selector row that picks one feature map from a backbone's list output (any host)."""
from __future__ import annotations

import torch
from torch import nn


class Select(nn.Module):
    """Pick one feature map from a backbone's list output.

    Args:
        index: position in the backbone's returned list (``0`` is its first ``out_indices`` entry).

    ``forward(x: list[Tensor]) -> Tensor`` returns ``x[index]`` unchanged, shape ``(B, C, H, W)``.
    """

    def __init__(self, index: int = 0) -> None:
        super().__init__()
        self.index = int(index)

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        return x[self.index]

    def extra_repr(self) -> str:
        return f"index={self.index}"
