"""EfficientFormerV2: a 4-D (all-convolutional-layout) hybrid with attention in the last two stages.

Paper: "Rethinking Vision Transformers for MobileNet Size and Speed", Li et al., ICCV 2023
(https://arxiv.org/abs/2212.08059). Reference code: github.com/snap-research/EfficientFormer
(``models/efficientformer_v2.py``; detection variant ``detection/backbonev2.py``).

Architecture (4 stages, strides 4 / 8 / 16 / 32; BatchNorm and GELU everywhere):

* Stem: ``[conv3x3 s2 -> BN -> GELU] x 2``; stages 0->1 and 1->2 downsample with ``conv3x3 s2 -> BN``.
* **FFN** blocks: ``x + ls2 * Mlp(x)``, Mlp = ``1x1 -> BN -> GELU -> dw3x3 -> BN -> GELU -> 1x1 -> BN``
  with a per-block expansion ratio (config table below).
* The last ``vit_num`` blocks of stages 2 and 3 are **AttnFFN** blocks: ``x + ls1 * Attention4D(x)``
  before the FFN. Attention4D (8 heads, key dim 32, value dim 128) uses 1x1 conv + BN projections,
  a depth-wise "local value" branch, a learned offset bias and *talking heads* (1x1 convs across the
  heads before and after the softmax). In stage 2 (stride 16) it runs on a stride-32 copy of the map
  (depth-wise conv s2 + BN) and its output is upsampled x2 bilinearly.
* Stage 2->3 downsampling is ``conv3x3 s2 -> BN`` **plus** an attention downsampling
  (Attention4DDownsample: stride-2 "local-global" queries attend to all stride-16 keys; 8 heads of key
  dim 16 and value dim 64).
* Classifier: final BatchNorm, global mean, ``head`` and ``dist_head`` whose logits are averaged.

State-dict keys and shapes equal the official ones (``patch_embed.*``, ``network.{i}.*``, ``norm``,
``head``, ``dist_head``), so official checkpoints (weights under ``'model'``) load with identity key
mapping; timm-format checkpoints (``stem.*``, ``stages.*``, layer scales of shape ``(C,)``) are
converted by :meth:`EfficientFormerV2.convert_state_dict`. Differences from the reference code:

* **Any input size.** The reference bakes a 224x224 input into every attention: bias index buffers and
  reshapes to 7x7 / 14x14 grids. Here all reshapes use the runtime grid and the pretrained offset
  tables, indexed by the token offset ``(|dy|, |dx|)`` -- (heads, 7, 7) for Attention4D, (heads, 14, 14)
  for the downsampling attention, whose stride-2 queries see key offsets up to 13 on the 14x14
  stride-16 grid -- are resized with bicubic interpolation (``align_corners=True``: offset 0 and the
  largest offset keep their trained values; each axis separately, so non-square grids work) to the
  runtime key grid and gathered per offset (see :class:`~yolo_backbones.core.layers.OffsetBiasAttention`).
  At 224x224 the biases are bit-identical to the reference ones. The result is cached per grid size /
  device / dtype in inference only; ``.to()`` / ``.half()``, ``train()`` / ``eval()`` and
  ``load_state_dict`` clear the cache and ``deepcopy`` / pickling do not copy it. The stride-2
  attention of stage 2 upsamples back to the exact input size, so odd stride-16 maps work too (the
  reference needs them even); ``input_multiple`` is 1.
* The ``AvgPool2d(1, 2)`` subsampling of the downsampling queries is written as strided slicing (the
  same values). Both attentions are written out (softmax of biased logits): Attention4D's talking heads
  mix the heads between ``q @ k`` and the softmax and again after it, which a fused attention kernel
  cannot express, and the downsampling attention's value dim (64) differs from its key dim (16), which
  PyTorch's fused CPU kernel does not take. The talking heads are computed as ``heads x heads`` matrix
  products over the attention maps (the same function as the reference 1x1 convs, same weights).
* BatchNorms are :class:`~yolo_backbones.core.layers.SafeBatchNorm2d` (batch-1 1x1 maps work in training,
  e.g. the stride-32 map of YOLOv5's 32x32 FLOPs probe).
* Detection mode (``features_only=True``) has no ``head`` / ``dist_head``; it returns the outputs of the
  stages in ``out_indices`` (strides 4 / 8 / 16 / 32). Stages after the last requested one are not
  built, so every parameter is used.
* **Output norms: none are added.** The official v2 detection backbone returns the raw stage outputs
  (its output-norm code is commented out). Here the stride-4/8/16 outputs are raw too and the stride-32
  output keeps the final pretrained BatchNorm ``norm`` (the normalisation it had in the classifier);
  YOLOv5's neck starts with Conv + BatchNorm layers, so no new norm layers are needed.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpointing import recompute_in_backward
from ..inference.context import fused_inference
from ..inference.fuse import fuse_pair
from ..layers import (
    ConvBnMlp,
    ConvSequential,
    LayerScaleBlock,
    OffsetBiasAttention,
    SafeBatchNorm2d,
    biased_scores,
    conv3x3_s2_bn,
    heads_to_map,
    map_to_heads,
    mix_heads,
    softmax_attention,
)
from ..layers.layout import subsample
from ..registry import register
from . import fused
from .base import TIMM_LAYER_SCALE_RULE, EfficientFormerBase, apply_rules, rename_timm_keys, stage_blocks

__all__ = ["EfficientFormerV2", "Attention4D", "Attention4DDownsample", "AttnDownsample", "LGQuery",
           "ConvMlpMid", "FFN", "AttnFFN"]

# Variant table from the official `efficientformerv2_{s0,s1,s2,l}` constructors. ``mlp_ratios[i][j]`` is the
# expansion ratio of block j of stage i; ``vit_num`` is the number of AttnFFN blocks at the end of stages 2
# and 3. ``ref_drop_path`` is the stochastic depth the official recipe trains with (pass it as
# ``drop_path_rate`` to reproduce ImageNet training; the constructor default is 0).
EFFICIENTFORMERV2_CFGS: dict[str, dict[str, Any]] = {
    "s0": dict(depths=(2, 2, 6, 4), embed_dims=(32, 48, 96, 176), vit_num=2, ref_drop_path=0.0,
               mlp_ratios=((4, 4), (4, 4), (4, 3, 3, 3, 4, 4), (4, 3, 3, 4))),
    "s1": dict(depths=(3, 3, 9, 6), embed_dims=(32, 48, 120, 224), vit_num=2, ref_drop_path=0.0,
               mlp_ratios=((4,) * 3, (4,) * 3, (4, 4, 3, 3, 3, 3, 4, 4, 4), (4, 4, 3, 3, 4, 4))),
    "s2": dict(depths=(4, 4, 12, 8), embed_dims=(32, 64, 144, 288), vit_num=4, ref_drop_path=0.02,
               mlp_ratios=((4,) * 4, (4,) * 4, (4, 4, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4), (4, 4, 3, 3, 3, 3, 4, 4))),
    "l": dict(depths=(5, 5, 15, 10), embed_dims=(40, 80, 192, 384), vit_num=6, ref_drop_path=0.1,
              mlp_ratios=((4,) * 5, (4,) * 5, (4, 4, 4, 4, 3, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4),
                          (4, 4, 4, 3, 3, 3, 3, 4, 4, 4))),
}

_LAYER_SCALE_INIT = 1e-5
# Sides of the key grids the biases were trained on (224x224 input): 7 for Attention4D (stride 32, also
# in stage 2 after its stride-2 conv) and 14 for the downsampling attention (stride-16 keys).
_ATTN_RESOLUTION = 7
_DOWN_ATTN_RESOLUTION = 14


def _conv_bn(in_chans: int, out_chans: int, kernel_size: int = 1, stride: int = 1, groups: int = 1
             ) -> ConvSequential:
    """``Conv2d (bias) -> BN`` as a :class:`~yolo_backbones.core.layers.ConvSequential` (keys ``0.*``, ``1.*`` as in
    the reference)."""
    return ConvSequential(
        nn.Conv2d(in_chans, out_chans, kernel_size, stride=stride, padding=kernel_size // 2, groups=groups),
        SafeBatchNorm2d(out_chans))


class Attention4D(OffsetBiasAttention):
    """Multi-head attention on a map with talking heads, a local value branch and an offset bias.

    Args:
        dim: input / output channels.
        key_dim: query/key dim per head (softmax scale ``key_dim ** -0.5``).
        num_heads: heads.
        attn_ratio: value dim per head = ``attn_ratio * key_dim``.
        resolution: side of the (post-stride) token grid the biases were trained on (7).
        stride: ``2`` to attend on a stride-2 copy of the input (depth-wise conv s2 + BN) and upsample
            the result back to the input size; ``None`` for full-resolution attention.

    Takes and returns ``(B, dim, H, W)``.
    """

    def __init__(self, dim: int, key_dim: int = 32, num_heads: int = 8, attn_ratio: int = 4,
                 resolution: int = _ATTN_RESOLUTION, stride: int | None = None) -> None:
        super().__init__(num_heads, resolution, key_dim, attn_ratio)
        # Registration order follows the official state_dict.
        self.stride_conv = _conv_bn(dim, dim, 3, stride=stride, groups=dim) if stride else None
        self.q = _conv_bn(dim, key_dim * num_heads)
        self.k = _conv_bn(dim, key_dim * num_heads)
        self.v = _conv_bn(dim, self.val_attn_dim)
        self.v_local = _conv_bn(self.val_attn_dim, self.val_attn_dim, 3, groups=self.val_attn_dim)
        self.talking_head1 = nn.Conv2d(num_heads, num_heads, 1)
        self.talking_head2 = nn.Conv2d(num_heads, num_heads, 1)
        self.proj = nn.Sequential(nn.GELU(), nn.Conv2d(self.val_attn_dim, dim, 1), SafeBatchNorm2d(dim))

    accepts_residual = True  # see LayerScaleBlock

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """``Attention4D(x)``, or ``residual + Attention4D(x)``."""
        if fused_inference(x):
            return fused.attention4d(self, x, residual)
        out = self.proj(self.attention_map(x, self.attend))
        return out if residual is None else residual + out

    def attention_map(self, x: torch.Tensor, attend: Callable[..., torch.Tensor]) -> torch.Tensor:
        """Everything before the output projection: ``(B, dim, H, W)`` -> ``(B, heads * dv, H, W)``.

        ``attend(hw, q, k, v)`` is :meth:`attend` (or its fused form) on the ``hw`` grid of the attention.
        """
        H, W = x.shape[-2:]
        if self.stride_conv is not None:
            x = self.stride_conv(x)
        # Channels of each projection are grouped per head: (B, heads * d, h, w) -> (B, heads, N, d) views.
        q, k = map_to_heads(self.q(x), self.num_heads), map_to_heads(self.k(x), self.num_heads)
        v = self.v(x)
        v_local = self.v_local(v)
        # Training keeps q, k, v for backward and recomputes the four attention matrices there.
        out = recompute_in_backward(partial(attend, x.shape[-2:]), q, k, map_to_heads(v, self.num_heads))
        out = heads_to_map(out, v_local) + v_local
        if self.stride_conv is not None:
            # Same as the reference nn.Upsample(scale_factor=2, bilinear) when H, W are even; an explicit
            # size also restores odd H, W exactly.
            out = F.interpolate(out, size=(H, W), mode="bilinear", align_corners=False)
        return out

    def attend(self, hw: tuple[int, int], q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               scores: Callable[..., torch.Tensor] = biased_scores, mix: Callable[..., torch.Tensor] = mix_heads
               ) -> torch.Tensor:
        """Talking-heads softmax attention of ``(B, heads, N, d)`` queries/keys/values on an ``hw`` grid ->
        ``(B, heads, N, dv)``.

        Explicit: the talking heads (1x1 convs over the head axis) act on the logits and on the probabilities,
        so ``scaled_dot_product_attention`` cannot be used here. ``scores`` / ``mix`` are
        :func:`~yolo_backbones.core.layers.biased_scores` / :func:`~yolo_backbones.core.layers.mix_heads` (or
        their fused forms).
        """
        attn = scores(q, k, self.attention_bias(hw, hw, q.dtype), self.scale)
        attn = mix(mix(attn, self.talking_head1).softmax(dim=-1), self.talking_head2)
        return torch.matmul(attn, v)


class LGQuery(nn.Module):
    """Local-global query of the downsampling attention: ``proj(dw3x3 s2 (x) + x[::2, ::2])``.

    Args:
        in_dim: input channels.
        out_dim: query channels (``heads * key_dim``).

    Maps ``(B, in_dim, H, W)`` to ``(B, out_dim, ceil(H / 2), ceil(W / 2))``.
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        # `local` is a one-conv Sequential (key `local.0`) and has no BN, as in the reference.
        self.local = nn.Sequential(nn.Conv2d(in_dim, in_dim, 3, stride=2, padding=1, groups=in_dim))
        self.proj = _conv_bn(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if fused_inference(x):
            return fused.lg_query(self, x)
        # subsample(x, 2) is the reference AvgPool2d(kernel 1, stride 2): same values, ceil(H / 2) rows.
        return self.proj(self.local(x) + subsample(x, 2))


class Attention4DDownsample(OffsetBiasAttention):
    """Stride-2 attention: ``ceil(H/2) x ceil(W/2)`` local-global queries attend to all ``H x W`` keys.

    Args:
        dim: input channels.
        out_dim: output channels.
        key_dim: query/key dim per head.
        num_heads: heads.
        attn_ratio: value dim per head = ``attn_ratio * key_dim``.
        resolution: side of the key grid the biases were trained on (14). The bias of query ``(i, j)``
            and key ``(y, x)`` is indexed by ``(|2i - y|, |2j - x|)``: queries sit on every other key.

    Maps ``(B, dim, H, W)`` to ``(B, out_dim, ceil(H / 2), ceil(W / 2))``.
    """

    def __init__(self, dim: int, out_dim: int, key_dim: int = 16, num_heads: int = 8, attn_ratio: int = 4,
                 resolution: int = _DOWN_ATTN_RESOLUTION) -> None:
        super().__init__(num_heads, resolution, key_dim, attn_ratio, query_stride=2)
        self.q = LGQuery(dim, key_dim * num_heads)
        self.k = _conv_bn(dim, key_dim * num_heads)
        self.v = _conv_bn(dim, self.val_attn_dim)
        self.v_local = _conv_bn(self.val_attn_dim, self.val_attn_dim, 3, stride=2, groups=self.val_attn_dim)
        self.proj = nn.Sequential(nn.GELU(), nn.Conv2d(self.val_attn_dim, out_dim, 1), SafeBatchNorm2d(out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if fused_inference(x):
            return fused.attention4d_downsample(self, x)
        return self.proj(self.attention_map(x, softmax_attention))

    def attention_map(self, x: torch.Tensor, attend: Callable[..., torch.Tensor]) -> torch.Tensor:
        """Everything before the output projection: ``(B, dim, H, W)`` -> ``(B, heads * dv, ceil(H/2), ceil(W/2))``.

        ``attend(q, k, v, bias, scale)`` is :func:`~yolo_backbones.core.layers.softmax_attention` (or its fused form).
        """
        H, W = x.shape[-2:]
        q = self.q(x)
        hq, wq = q.shape[-2:]
        q = map_to_heads(q, self.num_heads)  # (B, heads, Nq, kd)
        k = map_to_heads(self.k(x), self.num_heads)  # (B, heads, N, kd)
        v = self.v(x)
        v_local = self.v_local(v)  # (B, heads * vd, hq, wq)
        v = map_to_heads(v, self.num_heads)  # (B, heads, N, vd)
        bias = self.attention_bias((hq, wq), (H, W), q.dtype)  # (heads, Nq, N)
        out = attend(q, k, v, bias, self.scale)  # (B, heads, Nq, vd)
        return heads_to_map(out, v_local) + v_local


class AttnDownsample(nn.Module):
    """Stage 2->3 downsampling: ``BN(conv3x3 s2 (x)) + Attention4DDownsample(x)``.

    The conv + BN of :class:`~yolo_backbones.core.layers.ConvBnDownsample` (same arguments and output shape)
    under the official keys ``conv`` / ``bn``, plus the attention branch ``attn``.
    """

    def __init__(self, in_chans: int, out_chans: int) -> None:
        super().__init__()
        self.attn = Attention4DDownsample(in_chans, out_chans)  # registered first, as in the reference
        self.conv, self.bn = conv3x3_s2_bn(in_chans, out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if fused_inference(x):
            return fused.attn_downsample(self, x)
        return self.bn(self.conv(x)) + self.attn(x)

    def fuse_(self) -> None:
        """Inference fold (see :mod:`~yolo_backbones.core.inference.fuse`): ``conv -> bn`` becomes one conv, ``bn``
        an ``nn.Identity``."""
        fuse_pair(self, "conv", "bn")


class ConvMlpMid(ConvBnMlp):
    """Inverted-residual MLP: ``1x1 -> BN -> GELU -> dw3x3 -> BN -> GELU -> 1x1 -> BN`` on ``(B, C, H, W)``.

    :class:`~yolo_backbones.core.layers.ConvBnMlp` with its depth-wise ``mid`` conv.

    Args:
        in_features: input (and output) channels.
        hidden_features: hidden channels.
        drop: dropout before the last conv and at the end.

    Returns ``(B, in_features, H, W)``.
    """

    def __init__(self, in_features: int, hidden_features: int, drop: float = 0.0) -> None:
        super().__init__(in_features, hidden_features, drop=drop, mid_conv=True)


class FFN(LayerScaleBlock):
    """Conv FFN block ``x + ls2 * ConvMlpMid(x)`` with a ``(dim, 1, 1)`` layer scale.

    Arguments as :class:`AttnFFN` (without ``stride``). Takes and returns ``(B, dim, H, W)``.
    Fusing folds ``ls2`` into ``mlp.fc2`` (after ``mlp.norm2``).
    """

    layer_scale_targets = (None, "mlp.fc2")

    def __init__(self, dim: int, mlp_ratio: float = 4.0, drop: float = 0.0, drop_path: float = 0.0,
                 layer_scale_init_value: float = _LAYER_SCALE_INIT) -> None:
        super().__init__(dim, None, ConvMlpMid(dim, int(dim * mlp_ratio), drop=drop), drop_path,
                         layer_scale_init_value, scale_shape=(1, 1))


class AttnFFN(LayerScaleBlock):
    """Attention + FFN block: ``x + ls1 * Attention4D(x)``, then ``x + ls2 * ConvMlpMid(x)``.

    Args:
        dim: channels.
        mlp_ratio: hidden width of the MLP relative to ``dim``.
        drop: dropout in the MLP.
        drop_path: stochastic-depth rate of both branches.
        layer_scale_init_value: initial layer-scale value (shape ``(dim, 1, 1)``).
        stride: attention stride (2 in stage 2, ``None`` in stage 3), see :class:`Attention4D`.

    Takes and returns ``(B, dim, H, W)`` (forward: :class:`~yolo_backbones.core.layers.LayerScaleBlock`).
    Fusing folds ``ls1`` into the attention's output conv ``token_mixer.proj.1`` (after its BN) and ``ls2``
    into ``mlp.fc2``.
    """

    layer_scale_targets = ("token_mixer.proj.1", "mlp.fc2")

    def __init__(self, dim: int, mlp_ratio: float = 4.0, drop: float = 0.0, drop_path: float = 0.0,
                 layer_scale_init_value: float = _LAYER_SCALE_INIT, stride: int | None = None) -> None:
        super().__init__(dim, Attention4D(dim, stride=stride), ConvMlpMid(dim, int(dim * mlp_ratio), drop=drop),
                         drop_path, layer_scale_init_value, scale_shape=(1, 1))


def _stage(dim: int, index: int, cfg: dict[str, Any], drop_path_rate: float) -> nn.Sequential:
    """Blocks of stage ``index``: FFN blocks; in stages 2 and 3 the last ``vit_num`` are AttnFFN."""
    blocks: list[nn.Module] = []
    for j, dpr, is_attn in stage_blocks(cfg, index, (2, 3), drop_path_rate):
        ratio = cfg["mlp_ratios"][index][j]
        if is_attn:
            blocks.append(AttnFFN(dim, ratio, drop_path=dpr, stride=2 if index == 2 else None))
        else:
            blocks.append(FFN(dim, ratio, drop_path=dpr))
    return nn.Sequential(*blocks)


_TIMM_STEM = {"conv1.conv": "0", "conv1.bn": "1", "conv2.conv": "3", "conv2.bn": "4"}
# timm wraps each conv+BN pair as `.conv` / `.bn` submodules where the reference uses Sequential indices.
_TIMM_BLOCK_RULES = (
    (r"^mlp\.fc1\.conv\.", "mlp.fc1."), (r"^mlp\.fc1\.bn\.", "mlp.norm1."),
    (r"^mlp\.mid\.conv\.", "mlp.mid."), (r"^mlp\.mid\.bn\.", "mlp.mid_norm."),
    (r"^mlp\.fc2\.conv\.", "mlp.fc2."), (r"^mlp\.fc2\.bn\.", "mlp.norm2."),
    (r"^token_mixer\.(q|k|v|v_local|stride_conv)\.conv\.", r"token_mixer.\1.0."),
    (r"^token_mixer\.(q|k|v|v_local|stride_conv)\.bn\.", r"token_mixer.\1.1."),
    (r"^token_mixer\.proj\.conv\.", "token_mixer.proj.1."), (r"^token_mixer\.proj\.bn\.", "token_mixer.proj.2."),
    TIMM_LAYER_SCALE_RULE,
)
_TIMM_DOWN_ATTN_RULES = (
    (r"^q\.local\.", "q.local.0."), (r"^q\.proj\.conv\.", "q.proj.0."), (r"^q\.proj\.bn\.", "q.proj.1."),
    (r"^(k|v|v_local)\.conv\.", r"\1.0."), (r"^(k|v|v_local)\.bn\.", r"\1.1."),
    (r"^proj\.conv\.", "proj.1."), (r"^proj\.bn\.", "proj.2."),
)


def _timm_downsample(stage: int, rest: str) -> str | None:
    if m := re.match(r"conv\.(conv|bn)\.(.*)", rest):
        name = ({"conv": "conv", "bn": "bn"} if stage == 3 else {"conv": "proj", "bn": "norm"})[m[1]]
        return f"{name}.{m[2]}"
    if m := re.match(r"attn\.(.*)", rest):
        return f"attn.{apply_rules(m[1], _TIMM_DOWN_ATTN_RULES)}"
    return None


def timm_to_official(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a timm-format EfficientFormerV2 state_dict to official names and shapes.

    ``stem.conv{1,2}.{conv,bn}`` -> ``patch_embed.{0,1,3,4}``; ``stages.i.downsample.conv.{conv,bn}`` ->
    ``network.{2i-1}.{proj,norm}`` (``network.5.{conv,bn}`` for the attention downsampling, whose
    ``attn.*`` keys go to ``network.5.attn.*``); ``stages.i.blocks.j`` -> ``network.{2i}.j``; the
    ``.conv`` / ``.bn`` wrappers become the reference Sequential indices / names; layer scales
    ``ls{1,2}.gamma`` ``(C,)`` -> ``layer_scale_{1,2}`` ``(C, 1, 1)``; ``head_dist`` -> ``dist_head``.
    """
    return rename_timm_keys(state_dict, _TIMM_STEM, _timm_downsample, _TIMM_BLOCK_RULES, layer_scale_shape=(1, 1))


@register
class EfficientFormerV2(EfficientFormerBase):
    """EfficientFormerV2-S0 / S1 / S2 / L: an ImageNet classifier, pooled features or a 4-stage feature extractor.

    ``variant`` is ``"s0"`` (default), ``"s1"``, ``"s2"`` or ``"l"``; the other arguments are those of
    :class:`~yolo_backbones.core.efficientformer.base.EfficientFormerBase` (the official training values of
    ``drop_path_rate`` are in the config table as ``ref_drop_path``).

    A feature extractor returns ``[(B, C_i, ceil(H / s_i), ceil(W / s_i)) for i in out_indices]`` with the
    ``embed_dims`` of the variant as channels; the stride-32 map passes through the final BatchNorm
    ``norm``. Any H, W work. The classifier returns logits ``(B, num_classes)``.
    """

    family = "efficientformerv2"
    variants = EFFICIENTFORMERV2_CFGS
    default_variant = "s0"
    stem_act = nn.GELU
    norm_layer = SafeBatchNorm2d
    timm_to_official = staticmethod(timm_to_official)

    def make_downsample(self, index: int) -> nn.Module:
        """``conv3x3 s2 -> BN`` in front of stages 1 and 2; the attention downsampling in front of stage 3."""
        dims = self.cfg["embed_dims"]
        return AttnDownsample(dims[2], dims[3]) if index == 3 else super().make_downsample(index)

    def make_stage(self, index: int, drop_path_rate: float) -> nn.Sequential:
        return _stage(self.cfg["embed_dims"][index], index, self.cfg, drop_path_rate)
