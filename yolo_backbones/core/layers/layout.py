"""Memory-layout helpers: moving between ``(B, C, H, W)`` maps and per-head token sequences in either layout.

Inference runs channels-last (see :meth:`Backbone.forward <yolo_backbones.core.base.Backbone.forward>`):
oneDNN convolutions then skip the NCHW <-> blocked reorders around every call, and a ``(B, C, H, W)``
map is already a ``(B, H, W, C)`` token grid in memory, so the switches between convolutions and
token layers are free views. Training keeps PyTorch's default (NCHW) layout. The helpers below give
the same values in both layouts and only copy where the layout requires it.
"""
from __future__ import annotations

import torch

# Re-exported: where blocks and hosts have always imported them from.
from ..inference.context import is_tracing
from ..inference.fuse import channels_last_weights

__all__ = ["is_channels_last", "map_to_heads", "heads_to_map", "tokens_to_heads", "subsample", "channels_last_weights",
           "is_tracing"]


def is_channels_last(x: torch.Tensor) -> bool:
    """True if the 4-D tensor ``x`` is laid out channels-last (and is not also plain contiguous)."""
    return x.ndim == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def map_to_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``(B, heads * d, H, W)`` -> ``(B, heads, H * W, d)`` (a view in both layouts; channel ``h * d + i`` is
    element ``i`` of head ``h``). Channels-last input gives unit stride on the last dim, as attention kernels like."""
    return x.flatten(2).unflatten(1, (num_heads, -1)).transpose(-1, -2)


def heads_to_map(y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``(B, heads, H * W, d)`` -> ``(B, heads * d, H, W)``, the inverse of :func:`map_to_heads`.

    ``like`` is a map of the result's shape whose layout the result takes: channels-last (a view when
    ``y.transpose(1, 2)`` is contiguous, as ``scaled_dot_product_attention`` returns it for channels-last
    queries) or NCHW-contiguous. Shapes are taken from ``like`` at run time, so traced graphs stay dynamic.
    """
    if is_channels_last(like):
        return y.transpose(1, 2).reshape_as(like.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    return y.transpose(-1, -2).reshape_as(like)


def tokens_to_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``(B, N, heads * d)`` -> ``(B, heads, N, d)`` (a view; channel ``h * d + i`` is element ``i`` of head ``h``)."""
    return x.unflatten(-1, (num_heads, -1)).transpose(1, 2)


def subsample(x: torch.Tensor, r: int) -> torch.Tensor:
    """Every ``r``-th pixel of a ``(B, C, H, W)`` map along H and W (the reference ``AvgPool2d(1, r)``).

    A strided view in eager mode; while a graph is captured for export the same selection as a kernel-1 pooling
    (NCNN cannot convert a strided slice). Returns ``(B, C, ceil(H / r), ceil(W / r))``.
    """
    if is_tracing():
        return torch.nn.functional.max_pool2d(x, kernel_size=1, stride=r)
    return x[:, :, ::r, ::r]
