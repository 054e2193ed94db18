"""Row-tiled inference of per-pixel layer chains, so that their wide intermediate maps stay in the CPU cache.

An inverted-residual MLP at stride 4 of a 640x640 input (e.g. ``1x1 conv 32 -> 128, GELU, dw3x3, GELU,
1x1 conv 128 -> 32``) writes and re-reads hidden maps of 13 MB each: far more than the caches, so every
layer streams them through main memory and the chain is memory-bound. Running the same chain on
horizontal strips of the map keeps each strip's hidden maps in the cache; only the narrow input and output
go to memory. A layer reading ``k`` neighbouring rows (a ``(2k + 1) x (2k + 1)`` "same" conv) gets a
halo of ``k`` input rows on each side of a strip, and its outputs on the halo rows are discarded; at the
top and bottom of the map there is no halo and the conv's zero padding applies, as on the whole map.
Each output pixel is therefore computed from the same values by the same layers: the result equals the
untiled one (up to the float rounding of the kernels' blocking).

Tiling applies to batch-1 channels-last inference only (a row slice of such a map is again a
channels-last map, so the fused oneDNN kernels take it without copies), and only when the widest
intermediate map is larger than :data:`TILE_BYTES`.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

__all__ = ["TILE_BYTES", "row_tiles", "tiled_rows"]

# Target size of one strip's widest intermediate map: a few MB, about what the L2 + L3 share of a core
# holds, while keeping the strips few (each layer call on a strip is one more parallel region).
TILE_BYTES = 4 * 1024 * 1024


def row_tiles(height: int, row_bytes: int, multiple: int = 1, budget: int | None = None
              ) -> list[tuple[int, int]] | None:
    """Split ``height`` rows into near-equal strips ``[(r0, r1), ...]`` whose widest map is about ``budget``
    bytes (default :data:`TILE_BYTES`; ``row_bytes`` per row); strip bounds are multiples of ``multiple``.
    ``None`` when the map is at most twice the budget (one strip would do)."""
    budget = TILE_BYTES if budget is None else budget
    units = height // multiple
    if units * multiple != height or height * row_bytes <= 2 * budget:
        return None
    n = min(units, math.ceil(height * row_bytes / budget))
    if n < 2:
        return None
    bounds = [round(i * units / n) * multiple for i in range(n + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def tiled_rows(x: torch.Tensor, fn: Callable[[slice, slice, slice], torch.Tensor], hidden_channels: int,
               halo: int = 0, row_dim: int = 2, multiple: int = 1) -> torch.Tensor | None:
    """Run a per-pixel chain strip by strip over the rows of ``x``; ``None`` when tiling does not apply.

    Args:
        x: the chain's input, batch 1: a channels-last ``(1, C, H, W)`` map (``row_dim=2``) or a
            ``(1, H, W, C)`` token grid (``row_dim=1``).
        fn: ``fn(src, crop, out)`` computes output rows ``out`` (a slice of ``0..H``) from input rows ``src``
            (``out`` widened by ``halo`` rows each side, clipped to the map); ``crop`` selects the rows of
            ``out`` within ``src`` (apply it after the layers that read neighbouring rows).
        hidden_channels: channels of the widest intermediate map (sets the strip height).
        halo: rows each layer chain reads beyond a strip (``k`` for a ``(2k + 1)``-tall "same" conv).
        row_dim: the row dimension of ``x`` (and of the outputs of ``fn``).
        multiple: strip bounds are multiples of it (e.g. a stride of the chain).

    Returns:
        The strips' outputs concatenated along ``row_dim``.
    """
    if x.shape[0] != 1:
        return None
    height, width = x.shape[row_dim], x.shape[row_dim + 1]
    tiles = row_tiles(height, width * hidden_channels * x.element_size(), multiple)
    if tiles is None:
        return None
    outs = []
    for r0, r1 in tiles:
        a, b = max(0, r0 - halo), min(height, r1 + halo)
        outs.append(fn(slice(a, b), slice(r0 - a, r1 - a), slice(r0, r1)))
    return torch.cat(outs, row_dim)
