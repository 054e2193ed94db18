"""Fused forms of the EdgeViT blocks (:mod:`.model`), for a fused backbone's eager CPU inference.

The same functions as the blocks' ``forward`` on the folded weights (float rounding only): each residual add and
GELU inside the conv / linear kernel before it (:mod:`~yolo_backbones.core.inference.onednn`), and large maps
strip by strip so that the 4x wide MLP maps stay in the cache (:mod:`~yolo_backbones.core.inference.tiling`).
"""
from __future__ import annotations

import torch
from torch import nn

from ..inference import onednn
from ..inference.tiling import tiled_rows
from ..layers.fused import mlp

__all__ = ["local_agg", "self_attn", "propagate"]


def local_agg(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """:class:`~.model.LocalAgg`; after the position encoding the rest runs strip by strip on large maps
    (halo of 2 rows for the 5x5 conv)."""
    x = onednn.conv(block.pos_embed, x, residual=None if block.pos_embed_has_identity else x)
    out = tiled_rows(x, lambda src, crop, rows: _local_agg_rows(block, x[:, :, src], crop),
                     block.mlp.fc1.out_channels, halo=block.attn.padding[0])
    return _local_agg_rows(block, x, slice(None)) if out is None else out


def _local_agg_rows(block: nn.Module, x: torch.Tensor, crop: slice) -> torch.Tensor:
    # Everything after the position encoding, for output rows `crop` of the input rows `x`.
    y = onednn.conv(block.attn, onednn.conv(block.conv1, block.norm1(x)))[:, :, crop]
    x = onednn.conv(block.conv2, y, residual=x[:, :, crop])
    act = onednn.activation_name(block.mlp.act)
    hidden = block.norm2(x)
    hidden = onednn.conv(block.mlp.fc1, hidden, act) if act else block.mlp.act(onednn.conv(block.mlp.fc1, hidden))
    return onednn.conv(block.mlp.fc2, hidden, residual=x)


def propagate(attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """:meth:`~.model.GlobalSparseAttn.propagate` as one broadcast multiply-add, straight into the token grid.

    ``LocalProp`` is a transposed conv with kernel = stride = r and one channel per group: it writes
    ``bias + x * w[i, j]`` to pixel ``(i, j)`` of each delegate's ``r x r`` cell, which is what this computes
    (the conv kernel is much slower for this degenerate geometry).
    """
    if attn.LocalProp is None:
        return attn.norm(x)
    B, h, w, C = x.shape
    r, weight = attn.sr_ratio, attn.LocalProp.weight  # (C, 1, r, r)
    cell = weight[:, 0].permute(1, 2, 0).reshape(1, 1, r, 1, r, C)
    bias = attn.LocalProp.bias if attn.LocalProp.bias is not None else weight.new_zeros(C)
    y = torch.addcmul(bias, x.reshape(B, h, 1, w, 1, C), cell)
    return attn.norm(y.reshape(B, h * r, w * r, C))


def self_attn(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """:class:`~.model.SelfAttn`; propagation, projection and MLP (all per token) strip by strip on large grids."""
    x = onednn.conv(block.pos_embed, x, residual=None if block.pos_embed_has_identity else x)
    x = x.permute(0, 2, 3, 1)
    attn = block.attn
    delegates = attn.attend(x, block.norm1)  # (B, H / r, W / r, C)
    r = attn.sr_ratio

    def rows_out(src: slice, crop: slice, rows: slice) -> torch.Tensor:
        # Token rows `rows` (a multiple of r) of the output.
        y = propagate(attn, delegates[:, rows.start // r:rows.stop // r])
        y = onednn.linear(attn.proj, y, residual=x[:, rows])
        return mlp(block.mlp, block.norm2(y), residual=y)

    out = tiled_rows(x, rows_out, block.mlp.fc1.out_features, row_dim=1, multiple=r)
    if out is None:
        out = rows_out(slice(None), slice(None), slice(0, x.shape[1]))
    return out.permute(0, 3, 1, 2)
