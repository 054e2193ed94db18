"""Mobile-Former's bridges as a pnnx capture for NCNN runs them fastest (same outputs as the reference math).

The reference math gives every head its own ``(HW, C / heads)`` pixel matrix: three full-map permutes per
Former->Mobile bridge and one per Mobile->Former bridge, around ncnn's attention layer. Here the pixels stay in
the NCHW map, viewed as ``(heads, C / heads, HW)`` (ncnn: a reshape, no permute), and only the ``M`` tokens are
transposed: the logits of all heads are one batched product ``(heads, M, HW)``, the softmax runs over the pixels
(Mobile->Former) or over the tokens (Former->Mobile), and one more product gives the tokens or, directly in NCHW,
the map. Used by :data:`~.fused.NCNN_CAPTURE`; the rest of a block's capture is in :mod:`.fused`.
"""
from __future__ import annotations

import torch
from torch import nn

from ..layers.layout import tokens_to_heads

__all__ = ["local_to_global_ncnn", "global_to_local_ncnn"]


def _map_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``(B, C, H, W) -> (B, heads, C / heads, H * W)``, a view of the map."""
    B, C, H, W = x.shape
    return x.reshape(B, heads, C // heads, H * W)


def local_to_global_ncnn(block: nn.Module, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """:class:`~.model.Local2Global`: ``x`` ``(B, C, H, W)``, tokens ``(B, M, d)`` -> new tokens ``(B, M, d)``."""
    h, (B, M, _), C = block.num_heads, tokens.shape, x.shape[1]
    queries = tokens_to_heads(block.q(tokens), h) * (C // h) ** -0.5                # (B, h, M, C/h)
    pixels = _map_heads(x, h)                                                    # (B, h, C/h, HW)
    weights = torch.matmul(queries, pixels).softmax(dim=-1)                      # (B, h, M, HW)
    out = torch.matmul(weights, pixels.transpose(2, 3)).transpose(1, 2).reshape(B, M, C)
    return block.layer_norm(tokens + block.proj(out * (2.0 * block.alpha(tokens))))


def global_to_local_ncnn(block: nn.Module, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """:class:`~.model.Global2Local`: ``x`` ``(B, C, H, W)``, tokens ``(B, M, d)`` -> ``(B, C, H, W)``."""
    h, C = block.num_heads, x.shape[1]
    keys = tokens_to_heads(block.k(tokens), h) * (C // h) ** -0.5                   # (B, h, M, C/h)
    values = tokens_to_heads(block.proj(tokens), h).transpose(2, 3)                 # (B, h, C/h, M)
    weights = torch.matmul(keys, _map_heads(x, h)).softmax(dim=2)                # (B, h, M, HW)
    return x + torch.matmul(values, weights).view(x.shape)
