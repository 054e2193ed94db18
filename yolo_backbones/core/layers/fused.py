"""Fused forms of the shared building blocks (:mod:`yolo_backbones.core.layers`), for a fused backbone's inference.

Each function computes its block's reference ``forward`` (same function, float rounding only) on the folded
weights of a fused model: activations and residual adds inside the conv / linear kernels
(:mod:`~yolo_backbones.core.inference.onednn`), wide per-pixel chains strip by strip
(:mod:`~yolo_backbones.core.inference.tiling`), one pass instead of three for
``x + scale * y``, batch-1 attention products written into one buffer. Dropout and stochastic depth are
identities here (eval mode). A block reaches its fused form through the one early return of its ``forward``
(:func:`~yolo_backbones.core.inference.context.fused_inference`).
"""
from __future__ import annotations

import torch
from torch import nn

from ..inference import onednn, tiling
from .attention_bias import biased_scores as plain_biased_scores
from .attention_bias import mix_heads as plain_mix_heads

__all__ = ["mlp", "conv_bn_mlp", "conv_norm", "residual_branch", "layer_scale_block", "biased_scores", "mix_heads",
           "softmax_attention"]


def mlp(block: nn.Module, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
    """:class:`~yolo_backbones.core.layers.Mlp`: the activation and the residual add inside the linear kernels."""
    act = onednn.activation_name(block.act)
    if act is None:
        y = block.fc2(block.act(block.fc1(x)))
        return y if residual is None else residual + y
    return onednn.linear(block.fc2, onednn.linear(block.fc1, x, act), residual=residual)


def conv_norm(conv: nn.Conv2d, norm: nn.Module, x: torch.Tensor, act: str | None = None,
              residual: torch.Tensor | None = None) -> torch.Tensor:
    """``act(norm(conv(x)))`` [+ residual]; one fused kernel once ``norm`` is folded (``nn.Identity``)."""
    if isinstance(norm, nn.Identity):
        return onednn.conv(conv, x, act, residual)
    x = onednn.ACTIVATIONS[act][0](norm(onednn.conv(conv, x)))
    return x if residual is None else residual + x


def conv_bn_mlp(block: nn.Module, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
    """:class:`~yolo_backbones.core.layers.ConvBnMlp`: each GELU (and the residual add) inside the conv before it;
    large maps strip by strip, so the wide hidden maps stay in the cache."""
    if onednn.activation_name(block.act) != "gelu":
        return _conv_bn_mlp_plain(block, x, residual)
    if isinstance(block.norm1, nn.Identity) and (residual is None or residual.shape == x.shape):
        out = tiling.tiled_rows(x, lambda src, crop, rows: _conv_bn_mlp_rows(
            block, x[:, :, src], crop, None if residual is None else residual[:, :, rows]),
            block.fc1.out_channels, halo=0 if block.mid is None else 1)
        if out is not None:
            return out
    return _conv_bn_mlp_rows(block, x, slice(None), residual)


def _conv_bn_mlp_rows(block: nn.Module, x: torch.Tensor, crop: slice, residual: torch.Tensor | None) -> torch.Tensor:
    # Rows `crop` of the output, from input rows `x` (which include the mid conv's halo rows).
    x = conv_norm(block.fc1, block.norm1, x, "gelu")
    if block.mid is not None:
        x = conv_norm(block.mid, block.mid_norm, x, "gelu")
    return conv_norm(block.fc2, block.norm2, x[:, :, crop], residual=residual)


def _conv_bn_mlp_plain(block: nn.Module, x: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
    x = block.act(block.norm1(block.fc1(x)))
    if block.mid is not None:
        x = block.act(block.mid_norm(block.mid(x)))
    x = block.norm2(block.fc2(x))
    return x if residual is None else residual + x


def residual_branch(branch: nn.Module, scale: torch.Tensor | None, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``x + scale * branch(y)``; ``scale`` is ``None`` once fusing folded it into the branch's last layer.

    Without a scale, a branch that takes a ``residual`` argument (``accepts_residual``) adds ``x`` in its last
    kernel; with one, ``x + scale * out`` is one pass over the map (``addcmul``).
    """
    if scale is None:
        return branch(y, residual=x) if getattr(branch, "accepts_residual", False) else x + branch(y)
    out = branch(y)
    return torch.addcmul(x, scale, out) if out.dtype == x.dtype == scale.dtype else x + scale * out


def layer_scale_block(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """:class:`~yolo_backbones.core.layers.LayerScaleBlock`: both residual branches through :func:`residual_branch`."""
    if block.token_mixer is not None:
        y = x if block.norm1 is None else block.norm1(x)
        x = residual_branch(block.token_mixer, block.layer_scale_1, y, x)
    y = x if block.norm2 is None else block.norm2(x)
    return residual_branch(block.mlp, block.layer_scale_2, y, x)


def biased_scores(q: torch.Tensor, k: torch.Tensor, bias: torch.Tensor, scale: float) -> torch.Tensor:
    """:func:`~yolo_backbones.core.layers.biased_scores`; one image's logits in one pass (``baddbmm``)."""
    if q.shape[0] == 1:
        return torch.baddbmm(bias, q[0], k[0].transpose(-1, -2), alpha=scale).unsqueeze(0)
    return plain_biased_scores(q, k, bias, scale)


def mix_heads(attn: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """:func:`~yolo_backbones.core.layers.mix_heads`; one image's maps in one ``addmm``."""
    if attn.shape[0] == 1 and conv.bias is not None:
        h = attn.shape[1]
        return torch.addmm(conv.bias[:, None], conv.weight.reshape(h, h), attn.flatten(2)[0]).view(attn.shape)
    return plain_mix_heads(attn, conv)


def softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor,
                      scale: float) -> torch.Tensor:
    """:func:`~yolo_backbones.core.layers.softmax_attention`; a large single-image attention head by head.

    With an attention matrix larger than :data:`~yolo_backbones.core.inference.tiling.TILE_BYTES` (e.g. the
    400 x 1600 maps of the EfficientFormerV2 downsampling attention at 640x640), each head's logits stay in one
    reused buffer, in the cache, between the product, the softmax and the product with ``v``.
    """
    heads, nq, nk = q.shape[1], q.shape[2], k.shape[2]
    if (q.shape[0] == 1 and bias.dim() == 3 and heads * nq * nk * q.element_size() > tiling.TILE_BYTES
            and q.dtype == k.dtype == v.dtype == bias.dtype):
        out = q.new_empty(1, heads, nq, v.shape[-1])
        buf = q.new_empty(nq, nk)
        for h in range(heads):
            torch.addmm(bias[h], q[0, h], k[0, h].transpose(0, 1), alpha=scale, out=buf)
            torch.softmax(buf, dim=-1, out=buf)  # row-wise: each row is read before it is overwritten
            torch.mm(buf, v[0, h], out=out[0, h])
        return out
    return torch.matmul(biased_scores(q, k, bias, scale).softmax(dim=-1), v)
