"""Fused forms of the EfficientFormer (v1, v2) blocks, for a fused backbone's eager CPU inference.

The same functions as the blocks' ``forward`` on the folded weights (float rounding only): residual adds and
GELUs inside the conv / linear kernels (:mod:`~yolo_backbones.core.inference.onednn`), the pooling mixer's
``x + ls1 * (pool(x) - x)`` as one ``lerp`` pass, single-image attention products written in one pass
(:mod:`~yolo_backbones.core.layers.fused`).
"""
from __future__ import annotations

from functools import partial

import torch
from torch import nn

from ..inference import onednn
from ..layers import fused as layers
from ..layers.layout import subsample

__all__ = ["meta4d", "attention", "attention4d", "attention4d_downsample", "lg_query", "attn_downsample",
           "gelu_conv_norm"]


def meta4d(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """:class:`~.v1.Meta4D`: ``x + ls1 * (pool(x) - x)`` is a per-channel interpolation from ``x`` towards
    ``pool(x)`` (one ``lerp`` pass instead of three); the MLP adds its residual in its last kernel once ``ls2`` is
    folded."""
    x = torch.lerp(x, block.token_mixer.pool(x), block.layer_scale_1[:, None, None])
    ls2 = block.layer_scale_2
    return layers.residual_branch(block.mlp, None if ls2 is None else ls2[:, None, None], x, x)


def attention(block: nn.Module, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
    """:class:`~.v1.Attention`: the residual add inside the output projection's kernel."""
    B, H, W, _ = x.shape
    q, k, v = block.heads(onednn.linear(block.qkv, x))
    out = layers.softmax_attention(q, k, v, block.attention_bias((H, W), (H, W), q.dtype), block.scale)
    return onednn.linear(block.proj, out.transpose(1, 2).reshape(B, H, W, block.val_attn_dim), residual=residual)


def gelu_conv_norm(proj: nn.Sequential, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
    """``proj(x)`` [+ residual] of the ``GELU -> 1x1 conv -> BN`` output projections of the v2 attentions.

    Once the BN is folded (``nn.Identity``) the residual add runs inside the conv's kernel, and the GELU
    overwrites ``x`` (a temporary of the attention that nobody else holds).
    """
    if not isinstance(proj[2], nn.Identity):
        x = proj(x)
        return x if residual is None else residual + x
    if onednn.activation_name(proj[0]) == "gelu":
        return onednn.conv(proj[1], torch.ops.aten.gelu_(x), residual=residual)
    return onednn.conv(proj[1], proj[0](x), residual=residual)


def attention4d(block: nn.Module, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
    """:class:`~.v2.Attention4D` with the fused single-image attention products."""
    attend = partial(block.attend, scores=layers.biased_scores, mix=layers.mix_heads)
    return gelu_conv_norm(block.proj, block.attention_map(x, attend), residual)


def attention4d_downsample(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """:class:`~.v2.Attention4DDownsample`, its large attention matrices head by head."""
    return gelu_conv_norm(block.proj, block.attention_map(x, layers.softmax_attention))


def lg_query(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """:class:`~.v2.LGQuery`: the ``+ subsample(x, 2)`` added by the strided depth-wise conv's kernel."""
    return block.proj(onednn.conv(block.local[0], x, residual=subsample(x, 2)))


def attn_downsample(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """:class:`~.v2.AttnDownsample`: the attention branch added by the (BN-folded) conv's kernel."""
    if not isinstance(block.bn, nn.Identity):
        return block.bn(block.conv(x)) + block.attn(x)
    return onednn.conv(block.conv, x, residual=block.attn(x))
