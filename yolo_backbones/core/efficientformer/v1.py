"""EfficientFormer (v1): a pure-ViT-style hybrid with PoolFormer blocks and a final attention stage.

Paper: "EfficientFormer: Vision Transformers at MobileNet Speed", Li et al., NeurIPS 2022
(https://arxiv.org/abs/2206.01191). Reference code: github.com/snap-research/EfficientFormer
(``models/efficientformer.py``; detection variant ``detection/backbone.py``).

Architecture (4 stages, strides 4 / 8 / 16 / 32):

* Stem: ``[conv3x3 s2 -> BN -> ReLU] x 2``; between stages a ``conv3x3 s2 -> BN`` downsampling.
* **Meta4D** blocks on ``(B, C, H, W)`` maps (all of stages 0-2 and the start of stage 3):
  ``x + ls1 * (AvgPool3x3(x) - x)`` (pooling token mixer) then ``x + ls2 * Mlp(x)`` with a
  ``1x1 conv -> BN -> GELU -> 1x1 conv -> BN`` MLP (4x expansion).
* The last ``vit_num`` blocks of stage 3 are **Meta3D** blocks, pre-LayerNorm transformer layers:
  ``x + ls1 * Attention(LN(x))``, ``x + ls2 * Mlp(LN(x))``. The attention has 8 heads of key dim 32 and
  value dim 128 and adds a learned per-head bias indexed by the token offset ``(|dy|, |dx|)``.
  A parameter-free ``Flat`` module switches from the map to tokens before them.
* Classifier: final LayerNorm, mean over tokens, ``head`` and ``dist_head`` (distillation) Linear
  layers whose logits are averaged.

State-dict keys and shapes equal the official ones (``patch_embed.*``, ``network.{i}.*``, ``norm``,
``head``, ``dist_head``), so official checkpoints (weights under ``'model'``) load with identity key
mapping; timm-format checkpoints (``stem.*``, ``stages.*``) are converted by
:meth:`EfficientFormer.convert_state_dict`. Differences from the reference code:

* **Any input size.** The reference attention bias is gathered for a fixed 7x7 grid (224x224 input).
  Here the pretrained bias, a (heads, 7, 7) table indexed by the token offset ``(|dy|, |dx|)``, is
  resized with bicubic interpolation (``align_corners=True``: offset 0 and the largest offset keep their
  trained values) to the runtime ``h x w`` token grid, separately per axis so non-square grids work,
  and gathered with ``|dy| * w + |dx|`` (see :class:`~yolo_backbones.core.layers.OffsetBiasAttention`). At
  the 7x7 grid there is no resize and the bias is bit-identical to the reference one. The result is
  cached per grid size / device / dtype in inference only (eval mode, no autograd); the cache is
  cleared by ``.to()`` / ``.half()``, ``train()`` / ``eval()`` and ``load_state_dict`` and is not
  deep-copied or pickled. The ``attention_bias_idxs`` buffer is derived instead of stored: it is
  accepted (and checked) when a checkpoint contains it.
* ``Flat`` turns the map into a channels-last token grid ``(B, H, W, C)`` (same token order as the
  reference ``(B, N, C)`` sequence), so the stage-3 output can be turned back into a map.
* The attention is written out (``softmax(scale * q @ k^T + bias) @ v``, see
  :func:`~yolo_backbones.core.layers.softmax_attention`): its value dim (128) differs from the key dim
  (32), which PyTorch's fused CPU attention kernel does not take.
* In inference the pooling mixer's residual ``x + ls1 * (pool(x) - x)`` is computed as
  ``lerp(x, pool(x), ls1)`` (the same function, one pass over the map).
* BatchNorms are :class:`~yolo_backbones.core.layers.SafeBatchNorm2d` (batch-1 1x1 maps work in training).
* Detection mode (``features_only=True``) has no ``head`` / ``dist_head``; it returns the outputs of the
  stages in ``out_indices`` (strides 4 / 8 / 16 / 32), the stage-3 token grid reshaped back to a
  ``(B, C, H / 32, W / 32)`` map. Stages after the last requested one are pruned, so every parameter
  is used.
* **Output norms: none are added.** The official v1 detection backbone (``detection/backbone.py``) puts
  a new, randomly initialised ``GroupNorm(1, C)`` on each of its four outputs and drops the final
  ``norm``. Here the stride-4/8/16 outputs are the raw stage outputs and the stride-32 output keeps the
  final pretrained LayerNorm ``norm`` (the normalisation that output had in the classifier): YOLOv5's
  neck starts with Conv + BatchNorm layers (SPPF, Conv, C3) that normalise what they are fed, so extra
  output norms would only add untrained parameters.
"""
from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from ..inference.context import fused_inference
from ..layers import ConvBnMlp, LayerScaleBlock, Mlp, OffsetBiasAttention, scaled, softmax_attention
from ..registry import register
from . import fused
from .base import TIMM_LAYER_SCALE_RULE, EfficientFormerBase, rename_timm_keys, stage_blocks

__all__ = ["EfficientFormer", "EfficientFormerBase", "Attention", "Meta3D", "Meta4D", "Flat", "Pooling", "ConvBnMlp"]

# Variant table, exactly as the official `efficientformer_{l1,l3,l7}` constructors. ``vit_num`` is the
# number of Meta3D (attention) blocks at the end of stage 3; the other blocks are Meta4D.
EFFICIENTFORMER_CFGS: dict[str, dict[str, Any]] = {
    "l1": dict(depths=(3, 2, 6, 4), embed_dims=(48, 96, 224, 448), vit_num=1),
    "l3": dict(depths=(4, 4, 12, 6), embed_dims=(64, 128, 320, 512), vit_num=4),
    "l7": dict(depths=(6, 6, 18, 8), embed_dims=(96, 192, 384, 768), vit_num=8),
}

_MLP_RATIO = 4.0
_LAYER_SCALE_INIT = 1e-5
# Side of the token grid the attention biases were trained on (224 / 32).
_ATTN_RESOLUTION = 7


class Pooling(nn.Module):
    """PoolFormer token mixer ``AvgPool3x3(x) - x`` (padding excluded from the average).

    Takes and returns ``(B, C, H, W)``; the ``- x`` is because the block adds ``x`` back.
    """

    def __init__(self, pool_size: int = 3) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(pool_size, stride=1, padding=pool_size // 2, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x) - x


class Meta4D(LayerScaleBlock):
    """PoolFormer-style block on maps: ``x + ls1 * Pooling(x)``, then ``x + ls2 * ConvBnMlp(x)``.

    Arguments as :class:`Meta3D`; the layer scales have the reference shape ``(dim,)`` and are
    broadcast over the map. Takes and returns ``(B, dim, H, W)``. Fusing folds ``ls2`` into ``mlp.fc2``;
    ``ls1`` stays (the pooling mixer has no weights to absorb it).
    """

    layer_scale_targets = (None, "mlp.fc2")

    def __init__(self, dim: int, mlp_ratio: float = _MLP_RATIO, drop: float = 0.0, drop_path: float = 0.0,
                 layer_scale_init_value: float = _LAYER_SCALE_INIT) -> None:
        super().__init__(dim, Pooling(), ConvBnMlp(dim, int(dim * mlp_ratio), drop=drop), drop_path,
                         layer_scale_init_value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if fused_inference(x):
            return fused.meta4d(self, x)
        ls1, ls2 = map_scale(self.layer_scale_1), map_scale(self.layer_scale_2)  # None once folded by fusing
        x = x + self.drop_path(scaled(ls1, self.token_mixer(x)))
        return x + self.drop_path(scaled(ls2, self.mlp(x)))


def map_scale(scale: torch.Tensor | None) -> torch.Tensor | None:
    """A ``(C,)`` layer scale as ``(C, 1, 1)``, to broadcast over a ``(B, C, H, W)`` map (``None`` stays ``None``)."""
    return None if scale is None else scale[:, None, None]


class Flat(nn.Module):
    """Switch from a map ``(B, C, H, W)`` to a channels-last token grid ``(B, H, W, C)``.

    The reference ``Flat`` returns ``(B, H * W, C)``; keeping H and W in the shape gives the same token
    order while letting the attention know the grid and the stage output be turned back into a map.
    It has no parameters but occupies an index of the stage (so the Meta3D keys match the reference).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1)


class Attention(OffsetBiasAttention):
    """Multi-head self-attention with a learned offset bias (LeViT style), for any token grid.

    Args:
        dim: input / output channels.
        key_dim: query/key dim per head (the softmax scale is ``key_dim ** -0.5``).
        num_heads: heads.
        attn_ratio: value dim per head = ``attn_ratio * key_dim``.
        resolution: side of the token grid the biases were trained on (7).

    Takes and returns a channels-last token grid ``(B, H, W, dim)``.
    """

    def __init__(self, dim: int, key_dim: int = 32, num_heads: int = 8, attn_ratio: int = 4,
                 resolution: int = _ATTN_RESOLUTION) -> None:
        super().__init__(num_heads, resolution, key_dim, attn_ratio)
        # Per head the qkv output holds [q (key_dim), k (key_dim), v (val_dim)] consecutively, as in the reference.
        self.qkv = nn.Linear(dim, (2 * key_dim + self.val_dim) * num_heads)
        self.proj = nn.Linear(self.val_attn_dim, dim)

    accepts_residual = True  # see LayerScaleBlock

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """``Attention(x)``, or ``residual + Attention(x)``."""
        if fused_inference(x):
            return fused.attention(self, x, residual)
        B, H, W, _ = x.shape
        q, k, v = self.heads(self.qkv(x))
        x = softmax_attention(q, k, v, self.attention_bias((H, W), (H, W), q.dtype), self.scale)  # (B, heads, N, vd)
        x = self.proj(x.transpose(1, 2).reshape(B, H, W, self.val_attn_dim))
        return x if residual is None else residual + x

    def heads(self, qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values ``(B, heads, N, d)`` from the ``qkv`` projection of a ``(B, H, W, ...)`` grid."""
        B, H, W, _ = qkv.shape
        qkv = qkv.reshape(B, H * W, self.num_heads, -1).permute(0, 2, 1, 3)  # (B, heads, N, 2kd + vd)
        return qkv.split([self.key_dim, self.key_dim, self.val_dim], dim=3)


class Meta3D(LayerScaleBlock):
    """Pre-LayerNorm transformer block: ``x + ls1 * Attention(LN(x))``, then ``x + ls2 * Mlp(LN(x))``.

    Args:
        dim: channels.
        mlp_ratio: hidden width of the MLP relative to ``dim``.
        drop: dropout in the MLP.
        drop_path: stochastic-depth rate of both residual branches.
        layer_scale_init_value: initial value of the layer scales ``(dim,)``.

    Takes and returns a channels-last token grid ``(B, H, W, dim)`` (forward: :class:`LayerScaleBlock`).
    Fusing folds the layer scales into ``token_mixer.proj`` and ``mlp.fc2``.
    """

    layer_scale_targets = ("token_mixer.proj", "mlp.fc2")

    def __init__(self, dim: int, mlp_ratio: float = _MLP_RATIO, drop: float = 0.0, drop_path: float = 0.0,
                 layer_scale_init_value: float = _LAYER_SCALE_INIT) -> None:
        super().__init__(dim, Attention(dim), Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=drop),
                         drop_path, layer_scale_init_value, norm_layer=nn.LayerNorm)


def _stage(dim: int, index: int, cfg: dict[str, Any], drop_path_rate: float) -> nn.Sequential:
    """Blocks of stage ``index``: Meta4D blocks; in stage 3 the last ``vit_num`` are Meta3D after a ``Flat``."""
    blocks: list[nn.Module] = []
    for _, dpr, is_attn in stage_blocks(cfg, index, (3,), drop_path_rate):
        if is_attn and not any(isinstance(b, Flat) for b in blocks):
            blocks.append(Flat())
        blocks.append(Meta3D(dim, drop_path=dpr) if is_attn else Meta4D(dim, drop_path=dpr))
    return nn.Sequential(*blocks)


_TIMM_STEM = {"conv1": "0", "norm1": "1", "conv2": "3", "norm2": "4"}


def _timm_downsample(stage: int, rest: str) -> str | None:
    m = re.match(r"(conv|norm)\.(.*)", rest)
    return f"{'proj' if m[1] == 'conv' else 'norm'}.{m[2]}" if m else None


def timm_to_official(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a timm-format EfficientFormer state_dict (``stem.*``, ``stages.*``) to official names.

    Inverse of timm's ``checkpoint_filter_fn``: ``stem.{conv1,norm1,conv2,norm2}`` ->
    ``patch_embed.{0,1,3,4}``; ``stages.i.downsample.{conv,norm}`` -> ``network.{2i-1}.{proj,norm}``;
    ``stages.i.blocks.j`` -> ``network.{2i}.j`` (timm keeps the ``Flat`` index); ``ls{1,2}.gamma`` ->
    ``layer_scale_{1,2}``; ``head_dist`` -> ``dist_head``. Shapes are unchanged.
    """
    return rename_timm_keys(state_dict, _TIMM_STEM, _timm_downsample, (TIMM_LAYER_SCALE_RULE,))


@register
class EfficientFormer(EfficientFormerBase):
    """EfficientFormer-L1 / L3 / L7: an ImageNet classifier, pooled features or a 4-stage feature extractor.

    ``variant`` is ``"l1"`` (default), ``"l3"`` or ``"l7"``; the other arguments are those of
    :class:`~yolo_backbones.core.efficientformer.base.EfficientFormerBase`.

    A feature extractor returns ``[(B, C_i, ceil(H / s_i), ceil(W / s_i)) for i in out_indices]`` with the
    ``embed_dims`` of the variant as channels; the stride-32 map is the Meta3D token grid after the final
    LayerNorm ``norm``, reshaped to ``(B, C, h, w)``. Any H, W work (all downsampling convs round up and
    the attention bias follows the grid). The classifier returns logits ``(B, num_classes)``.
    """

    family = "efficientformer"
    variants = EFFICIENTFORMER_CFGS
    default_variant = "l1"
    stem_act = nn.ReLU
    norm_layer = nn.LayerNorm
    timm_to_official = staticmethod(timm_to_official)

    def make_stage(self, index: int, drop_path_rate: float) -> nn.Sequential:
        return _stage(self.cfg["embed_dims"][index], index, self.cfg, drop_path_rate)

    def stage_map(self, stage: int, x: torch.Tensor) -> torch.Tensor:
        """Stage 3 ends on a channels-last token grid ``(B, H, W, C)``: its map is a (channels-last) view of it."""
        return x.permute(0, 3, 1, 2) if stage == 3 else x

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        """The final LayerNorm over the channels of the stride-32 map, back to a ``(B, C_3, H_3, W_3)`` map."""
        x = self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # a channels-last view: the inference layout
        return x.contiguous(memory_format=torch.channels_last if not self.training else torch.contiguous_format)
