"""Mobile-Former: a MobileNet and a tiny transformer running in parallel, joined by two-way bridges.

Paper: "Mobile-Former: Bridging MobileNet and Transformer", Chen et al., CVPR 2022
(https://arxiv.org/abs/2108.05895). Reference code: github.com/AAboys/MobileFormer
(``mobile_former.py``, ``dna_blocks.py``). Seven variants, named by their MAdds at 224x224:
508M, 294M, 214M, 151M, 96M, 52M and 26M.

Architecture:

* **Stem**: 3x3 stride-2 conv -> BN -> ReLU6. **Global tokens**: ``M`` learned ``d``-dim vectors
  (``tokens``, an ``nn.Embedding(M, d)``), the same for every image.
* A **lite first block** (depth-wise 3x3 with a channel multiplier -> BN -> ReLU6 -> 1x1 -> BN,
  a MobileNet bottleneck without expansion) that leaves the tokens alone.
* Then a chain of **Mobile-Former blocks**, each with four parts:

  - *Mobile -> Former* (:class:`Local2Global`): the tokens attend to all pixels of the block's
    input map (the pixels are keys and values as they are, no projection), a 2-head cross attention
    whose result is gated by ``2 * hard_sigmoid(Linear(tokens))``, projected back to ``d``, added and
    post-LayerNorm'ed;
  - *Former* (:class:`GlobalBlock`): a post-norm transformer layer among the ``M`` tokens
    (4 heads; keys and values are the tokens themselves) with a 2x FFN;
  - *Mobile*: an inverted bottleneck whose activations are **dynamic ReLUs** (:func:`dynamic_relu`)
    whose per-channel slopes are computed from token 0 by a small MLP (:class:`HyperFunc`).
    :class:`DnaBlock` is ``1x1 -> dw3x3 -> 1x1`` (stride 1); :class:`DnaBlock3` is
    ``dw3x3 (stride s) -> 1x1 -> [dw3x3 -> 1x1] + skip`` and is used where the stride or the width changes;
  - *Former -> Mobile* (:class:`Global2Local`): every pixel attends to the ``M`` tokens (pixel
    features are the queries as they are; keys and values are linear maps of the tokens); the
    result is added to the map.

* **Classifier** (ImageNet only): a last ``Local2Global``, then :class:`MergeClassifier`
  (1x1 conv to ``6C`` + BN + ReLU6, average pool + h-swish, concatenated with token 0, Linear + BN1d +
  h-swish, Linear).

The 26M variant makes every 1x1 conv grouped (4 groups) and inserts channel shuffles
(:class:`ChannelShuffle`) so that information still flows between the groups.

State-dict keys and shapes equal the official ones (``tokens``, ``stem``, ``features.{i}.*``,
``local_global``, ``classifier``), so official ``.pth.tar`` checkpoints load strictly with no key
conversion. Differences from the reference code, none of which changes the function:

* the stem is registered before ``tokens``, so the first parameter of the model is the stem conv
  weight (YOLOv5 reads the input channel count from it); state_dict order does not matter for loading;
* tokens are kept batch-first ``(B, M, d)`` (the reference uses ``(M, B, d)``);
* the Linear and LayerNorm layers acting on the tokens are the subclasses :class:`TokenLinear` and
  :class:`TokenLayerNorm`, so that YOLOv5's FLOP count (a 32x32 probe scaled by pixel count) does not
  multiply their resolution-independent cost;
* all three attentions use ``torch.nn.functional.scaled_dot_product_attention``: each is a plain
  softmax attention whose scale is ``head_dim ** -0.5``, the SDPA default;
* activations applied to a tensor that is reused later (e.g. shortcuts) are functional, so
  YOLOv5 switching ``inplace=True`` on activation modules cannot corrupt a shortcut;
* only the options used by the seven released models are implemented (``gbr_type='attn'``,
  ``gbr_dynamic=[True, False, False]``, FFN in the Former, ``se_flag=[2, 0, 2, 0]``, token 0 drives
  the dynamic ReLUs, no projections of the local features in the bridges, width multiplier 1);
  dropout and stochastic depth, which are 0 in the released configurations, are left out.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..base import Backbone
from ..inference.context import fused_inference
from ..layers import ConvSequential, SafeBatchNorm2d
from ..layers.layout import heads_to_map, is_channels_last, map_to_heads, tokens_to_heads
from ..registry import register
from . import fused
from .dynamic_relu import dynamic_relu

__all__ = ["MOBILEFORMER_CFGS", "MobileFormer", "TokenLinear", "TokenLayerNorm", "ChannelShuffle", "HyperFunc",
           "dynamic_relu", "Local2Global", "GlobalBlock", "Global2Local", "LiteBlock", "DnaBlock", "DnaBlock3",
           "MergeClassifier"]

# Block lists as in the official `mobile_former_*` constructors, one row per block:
# (type, e1, c, n, s, e2) = (block class, first expansion, output channels, repeats, stride of the first
# repeat, second expansion). "DnaBlock3" is the dw-first block used where the stride or width changes,
# "DnaBlock" the pw-first one; e2 == 0 marks the lite conv-only first block. The reference rounds `c`
# with `_make_divisible(c, 4)`, which is the identity for every listed width.
_D3, _D = "DnaBlock3", "DnaBlock"
_BLOCKS_508M = (
    (_D3, 2, 24, 1, 1, 0), (_D3, 6, 40, 1, 2, 4), (_D, 3, 40, 1, 1, 3), (_D3, 6, 72, 1, 2, 4),
    (_D, 3, 72, 1, 1, 3), (_D3, 6, 128, 1, 2, 4), (_D, 4, 128, 1, 1, 4), (_D, 6, 176, 1, 1, 4),
    (_D, 6, 176, 1, 1, 4), (_D3, 6, 240, 1, 2, 4), (_D, 6, 240, 1, 1, 4), (_D, 6, 240, 1, 1, 4),
)
_BLOCKS_294M = (
    (_D3, 2, 16, 1, 1, 0), (_D3, 6, 24, 1, 2, 4), (_D, 4, 24, 1, 1, 4), (_D3, 6, 48, 1, 2, 4),
    (_D, 4, 48, 1, 1, 4), (_D3, 6, 96, 1, 2, 4), (_D, 4, 96, 1, 1, 4), (_D, 6, 128, 1, 1, 4),
    (_D, 6, 128, 1, 1, 4), (_D3, 6, 192, 1, 2, 4), (_D, 6, 192, 1, 1, 4), (_D, 6, 192, 1, 1, 4),
)
_BLOCKS_214M = (
    (_D3, 2, 12, 1, 1, 0), (_D3, 6, 20, 1, 2, 4), (_D, 3, 20, 1, 1, 4), (_D3, 6, 40, 1, 2, 4),
    (_D, 4, 40, 1, 1, 4), (_D3, 6, 80, 1, 2, 4), (_D, 4, 80, 1, 1, 4), (_D, 6, 112, 1, 1, 4),
    (_D, 6, 112, 1, 1, 4), (_D3, 6, 160, 1, 2, 4), (_D, 6, 160, 1, 1, 4), (_D, 6, 160, 1, 1, 4),
)
_BLOCKS_151M = (
    (_D3, 2, 12, 1, 1, 0), (_D3, 6, 16, 1, 2, 4), (_D, 3, 16, 1, 1, 3), (_D3, 6, 32, 1, 2, 4),
    (_D, 3, 32, 1, 1, 3), (_D3, 6, 64, 1, 2, 4), (_D, 4, 64, 1, 1, 4), (_D, 6, 88, 1, 1, 4),
    (_D, 6, 88, 1, 1, 4), (_D3, 6, 128, 1, 2, 4), (_D, 6, 128, 1, 1, 4), (_D, 6, 128, 1, 1, 4),
)
_BLOCKS_96M = (
    (_D3, 2, 12, 1, 1, 0), (_D3, 6, 16, 1, 2, 4), (_D3, 6, 32, 1, 2, 4), (_D, 3, 32, 1, 1, 3),
    (_D3, 6, 64, 1, 2, 4), (_D, 4, 64, 1, 1, 4), (_D, 6, 88, 1, 1, 4), (_D3, 6, 128, 1, 2, 4),
    (_D, 6, 128, 1, 1, 4),
)
_BLOCKS_52M = (  # also 26m
    (_D3, 3, 12, 1, 2, 0), (_D, 3, 12, 1, 1, 3), (_D3, 6, 24, 1, 2, 4), (_D, 3, 24, 1, 1, 3),
    (_D3, 6, 48, 1, 2, 4), (_D, 4, 48, 1, 1, 4), (_D, 6, 64, 1, 1, 4), (_D3, 6, 96, 1, 2, 4),
    (_D, 6, 96, 1, 1, 4),
)

# Variant table: stem channels, global tokens (M, d), classifier width, groups of the 1x1 convs, blocks.
MOBILEFORMER_CFGS: dict[str, dict[str, Any]] = {
    "508m": dict(stem=24, tokens=(6, 192), num_features=1920, group_num=1, blocks=_BLOCKS_508M),
    "294m": dict(stem=16, tokens=(6, 192), num_features=1920, group_num=1, blocks=_BLOCKS_294M),
    "214m": dict(stem=12, tokens=(6, 192), num_features=1600, group_num=1, blocks=_BLOCKS_214M),
    "151m": dict(stem=12, tokens=(6, 192), num_features=1280, group_num=1, blocks=_BLOCKS_151M),
    "96m": dict(stem=12, tokens=(4, 128), num_features=1280, group_num=1, blocks=_BLOCKS_96M),
    "52m": dict(stem=8, tokens=(3, 128), num_features=1024, group_num=1, blocks=_BLOCKS_52M),
    "26m": dict(stem=8, tokens=(3, 128), num_features=1024, group_num=4, blocks=_BLOCKS_52M),
}

# Settings shared by all released models.
_BRIDGE_HEADS = 2      # heads of Mobile->Former and Former->Mobile attention
_FORMER_HEADS = 4      # heads of the Former (the reference leaves GlobalBlock at its default of 4)
_FFN_RATIO = 2         # Former FFN width relative to d
_HYPER_REDUCTION = 4   # hidden width d / 4 of the MLP computing the dynamic-ReLU coefficients
_HEAD_EXPANSION = 6    # MergeClassifier 1x1 conv expands the last map to 6C channels


def _conv_bn(inp: int, oup: int, kernel_size: int, stride: int = 1, groups: int = 1,
             shuffle_groups: int = 1) -> ConvSequential:
    """``Conv2d(k, stride, 'same' padding, no bias) -> BatchNorm2d [-> ChannelShuffle]`` as a ``ConvSequential``.

    Maps ``(B, inp, H, W)`` to ``(B, oup, ceil(H / stride), ceil(W / stride))``. The conv and BN are
    entries ``0`` and ``1`` (the official key layout); the shuffle, if ``shuffle_groups > 1``, is entry 2.
    """
    layers: list[nn.Module] = [
        nn.Conv2d(inp, oup, kernel_size, stride, kernel_size // 2, groups=groups, bias=False),
        SafeBatchNorm2d(oup),
    ]
    if shuffle_groups > 1:
        layers.append(ChannelShuffle(shuffle_groups))
    return ConvSequential(*layers)


class TokenLinear(nn.Linear):
    """``nn.Linear`` applied to the ``M`` global tokens ``(B, M, d_in) -> (B, M, d_out)``.

    Its cost does not depend on the image size. It is a distinct type only so that FLOP counters
    keyed on exact module types (thop, used by YOLOv5's ``model_info``) skip it: YOLOv5 profiles a
    32x32 image and multiplies the count by the pixel ratio (400 for 640x640), which would report
    these per-image operations 400 times over (the 294M backbone would show 21.6 instead of 3.9
    GFLOPs). Skipped, they are simply left out (about 1 % of the backbone at 640x640).
    Parameters, keys and numerics are those of ``nn.Linear``.
    """


class TokenLayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over the global tokens ``(B, M, d)``; a distinct type for the reason given in
    :class:`TokenLinear`."""


class ChannelShuffle(nn.Module):
    """ShuffleNet channel shuffle: view ``C`` as ``(groups, C / groups)``, transpose, flatten.

    Placed between grouped convs so that the next grouped conv sees channels from every group.
    Input and output ``(B, C, H, W)``; ``C`` must be divisible by ``groups``.
    """

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = int(groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if is_channels_last(x):  # shuffle the contiguous channel axis of the (B, H, W, C) memory, stay channels-last
            y = x.permute(0, 2, 3, 1)
            return y.unflatten(3, (self.groups, -1)).transpose(3, 4).reshape_as(y).permute(0, 3, 1, 2)
        return x.unflatten(1, (self.groups, -1)).transpose(1, 2).flatten(1, 2)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


class HyperFunc(nn.Module):
    """Per-image coefficients of a dynamic ReLU, computed from one global token.

    ``token -> Linear(d, d / 4) -> ReLU -> Linear(d / 4, out_dim) -> hard-sigmoid``, values in ``[0, 1]``.

    Args:
        token_dim: token width ``d``.
        out_dim: number of coefficients (``2 * C`` for a dynamic ReLU over ``C`` channels).
        token_id: which token drives the coefficients (0 in all released models).

    Input tokens ``(B, M, d)``; output ``(B, out_dim, 1, 1)``, ready to broadcast over a feature map.
    """

    def __init__(self, token_dim: int, out_dim: int, token_id: int = 0) -> None:
        super().__init__()
        self.token_id = token_id
        hidden = token_dim // _HYPER_REDUCTION
        # The ReLU acts on a fresh Linear output, so YOLOv5 making it in-place is harmless.
        self.hyper = nn.Sequential(TokenLinear(token_dim, hidden), nn.ReLU(), TokenLinear(hidden, out_dim),
                                   nn.Hardsigmoid())

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.hyper(tokens[:, self.token_id])[:, :, None, None]


class Local2Global(nn.Module):
    """Mobile -> Former bridge: the tokens gather information from every pixel of a feature map.

    ``q = Linear(d, C)(tokens)`` in 2 heads; keys = values = the pixels of ``x`` (no projection);
    softmax over the ``H*W`` pixels; the result is multiplied by ``2 * hard_sigmoid(Linear(d, C)(tokens))``
    (the "dynamic" gate), projected to ``d``, added to the tokens and LayerNorm'ed (post-norm).

    Args:
        channels: channels ``C`` of the feature map.
        token_dim: token width ``d``.
        num_heads: attention heads (2); ``C`` must be divisible by it.

    Input ``x`` ``(B, C, H, W)`` and tokens ``(B, M, d)``; returns the new tokens ``(B, M, d)``.
    """

    def __init__(self, channels: int, token_dim: int, num_heads: int = _BRIDGE_HEADS) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.alpha = nn.Sequential(TokenLinear(token_dim, channels), nn.Hardsigmoid())
        self.q = TokenLinear(token_dim, channels)
        self.proj = TokenLinear(channels, token_dim)
        self.layer_norm = TokenLayerNorm(token_dim)
        self.register_module("q_alpha", None)  # fused form: q and alpha as one Linear (fused.prepare_local_to_global)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        if fused_inference(x):
            return fused.local_to_global(self, x, tokens)
        if fused.export_capture() and hasattr(self, "export_rows_t"):
            return fused.capture_formulation().local_to_global(self, x, tokens)
        q = tokens_to_heads(self.q(tokens), self.num_heads)               # (B, h, M, C/h)
        kv = map_to_heads(x, self.num_heads)                             # (B, h, HW, C/h)
        out = F.scaled_dot_product_attention(q, kv, kv).transpose(1, 2).flatten(2)  # (B, M, C)
        return self.layer_norm(tokens + self.proj(out * (2.0 * self.alpha(tokens))))

    def fuse_(self) -> None:
        """Inference preparation: the merged query / gate Linear of the fused form."""
        fused.prepare_local_to_global(self)


class GlobalBlock(nn.Module):
    """Former: a post-norm transformer layer among the ``M`` global tokens.

    Attention with ``q = Linear(d, d)(tokens)`` and keys = values = the tokens themselves (4 heads),
    then ``Linear(d, d)`` ("channel_mlp"), residual, LayerNorm; then FFN ``d -> 2d -> GELU -> d``,
    residual, LayerNorm.

    Args:
        token_dim: token width ``d``.
        num_heads: attention heads (4 in the released models).

    Input and output tokens ``(B, M, d)``.
    """

    def __init__(self, token_dim: int, num_heads: int = _FORMER_HEADS) -> None:
        super().__init__()
        self.num_heads = num_heads
        # Registration order (ffn, ffn_norm, q, channel_mlp, layer_norm) follows the reference state_dict.
        self.ffn = nn.Sequential(TokenLinear(token_dim, token_dim * _FFN_RATIO), nn.GELU(),
                                 TokenLinear(token_dim * _FFN_RATIO, token_dim))
        self.ffn_norm = TokenLayerNorm(token_dim)
        self.q = TokenLinear(token_dim, token_dim)
        self.channel_mlp = TokenLinear(token_dim, token_dim)
        self.layer_norm = TokenLayerNorm(token_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if fused_inference(tokens):
            return fused.global_block(self, tokens)
        if fused.export_capture() and hasattr(self, "export_rows_t"):
            return fused.global_block_export(self, tokens)
        q = tokens_to_heads(self.q(tokens), self.num_heads)     # (B, h, M, d/h)
        kv = tokens_to_heads(tokens, self.num_heads)            # (B, h, M, d/h)
        out = F.scaled_dot_product_attention(q, kv, kv).transpose(1, 2).flatten(2)  # (B, M, d)
        tokens = self.layer_norm(tokens + self.channel_mlp(out))
        return self.ffn_norm(tokens + self.ffn(tokens))


class Global2Local(nn.Module):
    """Former -> Mobile bridge: every pixel reads from the global tokens.

    Queries = the pixels of ``x`` (no projection), ``k = Linear(d, C)(tokens)``,
    ``v = Linear(d, C)(tokens)`` ("proj"), 2 heads, softmax over the ``M`` tokens; the result is added
    to ``x`` (no norm).

    Args:
        channels: channels ``C`` of the feature map.
        token_dim: token width ``d``.
        num_heads: attention heads (2); ``C`` must be divisible by it.

    Input ``x`` ``(B, C, H, W)`` and tokens ``(B, M, d)``; returns ``(B, C, H, W)``.
    """

    def __init__(self, channels: int, token_dim: int, num_heads: int = _BRIDGE_HEADS) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.k = TokenLinear(token_dim, channels)
        self.proj = TokenLinear(token_dim, channels)
        # Fused form: k and proj as one Linear (fused.prepare_global_to_local).
        self.register_module("keys_values", None)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        if fused_inference(x):
            return fused.global_to_local(self, x, tokens)
        if fused.export_capture() and hasattr(self, "export_keys"):
            return fused.capture_formulation().global_to_local(self, x, tokens)
        q = map_to_heads(x, self.num_heads)                     # (B, h, HW, C/h)
        k = tokens_to_heads(self.k(tokens), self.num_heads)     # (B, h, M, C/h)
        v = tokens_to_heads(self.proj(tokens), self.num_heads)  # (B, h, M, C/h)
        out = F.scaled_dot_product_attention(q, k, v)           # (B, h, HW, C/h)
        return x + heads_to_map(out, x)

    def fuse_(self) -> None:
        """Inference preparation: the merged key / value Linear of the fused form."""
        fused.prepare_global_to_local(self)


class LiteBlock(nn.Module):
    """Lite first block (conv only, tokens untouched): ``dw3x3 (x e1, stride s) -> BN -> ReLU6 -> 1x1 -> BN``.

    The depth-wise conv multiplies every channel ``e1`` times; with grouped 1x1 convs (26M) a
    channel shuffle spreads the ``e1`` copies of each input channel over the groups. A shortcut is
    added when stride is 1 and the width is unchanged.

    Args:
        inp, oup: input / output channels.
        stride: stride of the depth-wise conv (1 or 2).
        e1: channel multiplier of the depth-wise conv.
        group_num: groups of the 1x1 conv.

    ``forward(x, tokens)``: ``x`` ``(B, inp, H, W)`` -> ``((B, oup, H/s, W/s), tokens)``.
    """

    def __init__(self, inp: int, oup: int, stride: int, e1: int, group_num: int = 1) -> None:
        super().__init__()
        hidden = inp * e1
        # Entry indices 0..5 match the official keys `conv.{0,1,4,5}`; the ReLU6 acts on a fresh BN
        # output, so YOLOv5 making it in-place cannot touch the shortcut input.
        self.conv = ConvSequential(
            nn.Conv2d(inp, hidden, 3, stride, 1, groups=inp, bias=False),
            SafeBatchNorm2d(hidden),
            nn.ReLU6(),
            ChannelShuffle(inp) if group_num > 1 else nn.Identity(),
            nn.Conv2d(hidden, oup, 1, groups=group_num, bias=False),
            SafeBatchNorm2d(oup),
        )
        self.use_shortcut = stride == 1 and inp == oup
        self.register_module("split", None)  # fused form: per-copy depth-wise convs (fused.prepare_lite_block)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if fused_inference(x):
            return fused.lite_block(self, x, tokens)
        form = fused.capture_formulation()
        if form is not None and fused.has_copies(self.conv[0], form.max_copies):
            return fused.lite_block_export(self, x, tokens)
        out = self.conv(x)
        if self.use_shortcut:
            out = out + x
        return out, tokens

    def fuse_(self) -> None:
        """Inference preparation: the split depth-wise convs of the fused form (where they apply)."""
        fused.prepare_lite_block(self)


class DnaBlock(nn.Module):
    """Mobile-Former block with a pw-first bottleneck: ``1x1 -> dw3x3 -> 1x1`` (stride 1 in all models).

    1. ``tokens = Former(Mobile->Former(x, tokens))``.
    2. ``y = BN(1x1(x))`` -> dynamic ReLU, ``y = BN(dw3x3(y))`` -> dynamic ReLU, ``y = BN(1x1(y))``
       (hidden width ``round(inp * e1)``; coefficients from token 0 of the new tokens).
    3. ``y = y + x`` if stride 1 and ``inp == oup``.
    4. ``y = Former->Mobile(y, tokens)``.

    Args:
        inp, oup: input / output channels.
        stride: stride of the depth-wise conv.
        e1: expansion of the hidden width.
        token_dim: token width ``d``.
        group_num: groups of the 1x1 convs (each followed by a channel shuffle if > 1).

    ``forward(x, tokens)``: ``((B, inp, H, W), (B, M, d))`` -> ``((B, oup, H/s, W/s), (B, M, d))``.
    """

    def __init__(self, inp: int, oup: int, stride: int, e1: int, token_dim: int, group_num: int = 1) -> None:
        super().__init__()
        hidden = round(inp * e1)
        self.conv1 = _conv_bn(inp, hidden, 1, groups=group_num, shuffle_groups=group_num)
        self.hyper1 = HyperFunc(token_dim, 2 * hidden)
        self.conv2 = _conv_bn(hidden, hidden, 3, stride, groups=hidden)
        self.hyper2 = HyperFunc(token_dim, 2 * hidden)
        self.conv3 = _conv_bn(hidden, oup, 1, groups=group_num, shuffle_groups=group_num)
        self.local_global = Local2Global(inp, token_dim)
        self.global_block = GlobalBlock(token_dim)
        self.global_local = Global2Local(oup, token_dim)
        self.use_shortcut = stride == 1 and inp == oup
        self.register_module("fused_slopes", None)  # fused form: both slope sets at once (fused.prepare_slopes)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if fused_inference(x):
            return fused.dna_block(self, x, tokens)
        form = fused.block_formulation(self)
        if form is not None:
            return fused.dna_block_export(self, x, tokens, form)
        tokens = self.global_block(self.local_global(x, tokens))
        out = self.conv2(dynamic_relu(self.conv1(x), self.hyper1(tokens)))
        out = self.conv3(dynamic_relu(out, self.hyper2(tokens)))
        if self.use_shortcut:
            out = out + x
        return self.global_local(out, tokens), tokens

    def fuse_(self) -> None:
        """Inference preparation: the two hyper-functions as one :class:`~.fused.FusedSlopes`."""
        fused.prepare_slopes(self, self.hyper1, self.hyper2)


class DnaBlock3(nn.Module):
    """Mobile-Former block with a dw-first double bottleneck, used where the stride or the width changes.

    1. ``tokens = Former(Mobile->Former(x, tokens))``.
    2. ``y = BN(dw3x3(x))`` with channel multiplier ``e1`` and stride ``s`` -> dynamic ReLU ->
       ``r = BN(1x1(y))`` (to ``oup``, linear) -> ``y = BN(dw3x3(r))`` with multiplier ``e2`` -> dynamic ReLU
       -> ``BN(1x1(y))``, plus ``r``.
    3. ``y = Former->Mobile(y, tokens)``; ``+ x`` if stride 1 and ``inp == oup`` (never the case in
       the released models).

    Args:
        inp, oup: input / output channels.
        stride: stride of the first depth-wise conv.
        e1, e2: channel multipliers of the two depth-wise convs (relative to ``inp`` and ``oup``).
        token_dim: token width ``d``.
        group_num: groups of the 1x1 convs; if > 1 each depth-wise conv is followed by a channel
            shuffle that spreads the copies of every channel over the groups.

    ``forward(x, tokens)``: ``((B, inp, H, W), (B, M, d))`` -> ``((B, oup, H/s, W/s), (B, M, d))``.
    """

    def __init__(self, inp: int, oup: int, stride: int, e1: int, e2: int, token_dim: int,
                 group_num: int = 1) -> None:
        super().__init__()
        hidden1, hidden2 = round(inp * e1), round(oup * e2)
        grouped = group_num > 1
        self.conv1 = _conv_bn(inp, hidden1, 3, stride, groups=inp, shuffle_groups=inp if grouped else 1)
        self.hyper1 = HyperFunc(token_dim, 2 * hidden1)
        self.conv2 = _conv_bn(hidden1, oup, 1, groups=group_num)
        self.conv3 = _conv_bn(oup, hidden2, 3, 1, groups=oup, shuffle_groups=oup if grouped else 1)
        self.hyper3 = HyperFunc(token_dim, 2 * hidden2)
        self.conv4 = _conv_bn(hidden2, oup, 1, groups=group_num)
        self.local_global = Local2Global(inp, token_dim)
        self.global_block = GlobalBlock(token_dim)
        self.global_local = Global2Local(oup, token_dim)
        self.use_shortcut = stride == 1 and inp == oup
        self.register_module("fused_slopes", None)  # fused form: both slope sets at once (fused.prepare_slopes)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if fused_inference(x):
            return fused.dna_block3(self, x, tokens)
        form = fused.block_formulation(self)
        if form is not None:
            return fused.dna_block3_export(self, x, tokens, form)
        tokens = self.global_block(self.local_global(x, tokens))
        mid = self.conv2(dynamic_relu(self.conv1(x), self.hyper1(tokens)))
        out = mid + self.conv4(dynamic_relu(self.conv3(mid), self.hyper3(tokens)))
        out = self.global_local(out, tokens)
        if self.use_shortcut:
            out = out + x
        return out, tokens

    def fuse_(self) -> None:
        """Inference preparation: the two hyper-functions as one :class:`~.fused.FusedSlopes`."""
        fused.prepare_slopes(self, self.hyper1, self.hyper3)


def _make_block(kind: str, inp: int, oup: int, stride: int, e1: int, e2: int, token_dim: int,
                group_num: int) -> nn.Module:
    """Build one entry of a block list (``e2 == 0`` or ``e1 == 1`` means the lite conv-only block)."""
    if e1 == 1 or e2 == 0:
        return LiteBlock(inp, oup, stride, e1, group_num)
    if kind == "DnaBlock3":
        return DnaBlock3(inp, oup, stride, e1, e2, token_dim, group_num)
    if kind == "DnaBlock":
        return DnaBlock(inp, oup, stride, e1, token_dim, group_num)
    raise ValueError(f"unknown Mobile-Former block type {kind!r}")


class MergeClassifier(nn.Module):
    """ImageNet head merging the last feature map with global token 0.

    ``[ChannelShuffle ->] 1x1 conv (C -> 6C) -> BN -> ReLU6 -> global average pool -> h-swish``,
    concatenated with token 0, then ``Linear -> BN1d -> h-swish -> Dropout -> Linear``.

    Args:
        inp: channels ``C`` of the last feature map.
        num_features: width of the hidden fully connected layer (e.g. 1920 for 508M).
        num_classes: number of classes.
        token_dim: token width ``d``.
        group_num: groups of the 1x1 conv (preceded by a channel shuffle if > 1).
        drop_rate: dropout before the last Linear.

    ``forward(x, tokens)``: ``(B, C, h, w)`` and ``(B, M, d)`` -> logits ``(B, num_classes)``.
    """

    def __init__(self, inp: int, num_features: int, num_classes: int, token_dim: int, group_num: int = 1,
                 drop_rate: float = 0.0) -> None:
        super().__init__()
        hidden = inp * _HEAD_EXPANSION
        self.conv = nn.Sequential(
            ChannelShuffle(group_num) if group_num > 1 else nn.Identity(),
            nn.Conv2d(inp, hidden, 1, groups=group_num, bias=False),
            SafeBatchNorm2d(hidden),
        )
        # h-swish is applied functionally in forward (keys `fc.0`, `fc.1` as in the reference).
        self.fc = nn.Sequential(nn.Linear(hidden + token_dim, num_features), nn.BatchNorm1d(num_features))
        # num_classes 0: the pooled features (no last Linear), as timm's num_classes=0.
        self.classifier = nn.Sequential(nn.Dropout(drop_rate),
                                        nn.Linear(num_features, num_classes) if num_classes else nn.Identity())

    def forward(self, x: torch.Tensor, tokens: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = F.relu6(self.conv(x))
        x = F.hardswish(x.mean(dim=(2, 3)))
        x = torch.cat([x, tokens[:, 0]], dim=1)
        x = F.hardswish(self.fc(x))
        return x if pre_logits else self.classifier(x)


def _expand_blocks(cfg: dict[str, Any]) -> list[tuple[str, int, int, int, int, int]]:
    """Unroll a block list into ``(kind, inp, oup, stride, e1, e2)`` per block (repeats have stride 1)."""
    specs = []
    inp = cfg["stem"]
    for kind, e1, c, n, s, e2 in cfg["blocks"]:
        for i in range(n):
            specs.append((kind, inp, c, s if i == 0 else 1, e1, e2))
            inp = c
    return specs


def _stage_taps(cfg: dict[str, Any]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Index of the last block at stride 4 / 8 / 16 / 32 (the feature taps) and its output channels."""
    taps: dict[int, tuple[int, int]] = {}
    stride = 2  # after the stem
    for i, (_, _, oup, s, _, _) in enumerate(_expand_blocks(cfg)):
        stride *= s
        taps[stride] = (i, oup)
    return tuple(taps[s][0] for s in (4, 8, 16, 32)), tuple(taps[s][1] for s in (4, 8, 16, 32))


@register
class MobileFormer(Backbone):
    """Mobile-Former 508M / 294M / 214M / 151M / 96M / 52M / 26M: an ImageNet classifier, pooled features or a
    4-stage feature extractor.

    Args:
        variant: ``"508m"``, ``"294m"``, ``"214m"``, ``"151m"``, ``"96m"``, ``"52m"`` or ``"26m"``.
        out_indices: stages a feature extractor returns (0..3 = strides 4, 8, 16, 32; default 1, 2, 3).
        pretrained: a weights file (official ``mobile-former-*.pth.tar``) or a weights name such as
            ``imagenet``, loaded strictly.
        features_only: build the feature extractor (see :class:`~yolo_backbones.core.base.Backbone`).
        num_classes: ``1000`` (default) for the ImageNet classifier, ``0`` for the pooled features (the classifier's
            hidden layer, ``num_features`` wide).
        in_chans: input channels.
        input_norm: normalise ``[0, 1]`` RGB input itself (YOLO backbone rows).
        grad_checkpointing: recompute block activations in backward to save training memory
            (see :meth:`~yolo_backbones.core.base.Backbone.set_grad_checkpointing`).

    A feature extractor returns ``[(B, C_i, ceil(H / s_i), ceil(W / s_i)) for i in out_indices]``: the
    outputs of the last block at each stride (post Former->Mobile maps, no extra norm), e.g.
    ``features[2, 4, 8, 11]`` with 40 / 72 / 176 / 240 channels for 508M. Any H, W work.

    The global tokens are **not** offered to the neck (a YOLOv5 neck consumes feature maps only);
    they still shape every returned map through the dynamic ReLUs and the Former->Mobile bridges.
    To keep every parameter in use (DDP without ``find_unused_parameters``), a feature extractor is pruned
    after the last tapped block and has no classification-only final ``local_global`` and ``classifier``;
    the last block's Former output still feeds its own dynamic ReLUs and Former->Mobile bridge, so it gets
    gradients. Nothing in a feature extractor applies BatchNorm to pooled vectors, so batch-1 training works.

    The classifier returns logits ``(B, num_classes)``; its head reads the last map and the global tokens
    (:meth:`forward_head`).
    """

    family = "mobileformer"
    variants = MOBILEFORMER_CFGS
    # Every stride-2 conv pads by 1, so maps are ceil(H / s) and the attentions take any number of
    # pixels: no size constraint.
    input_multiple = 1
    final_norm_name = None
    head_module_names = ("local_global", "classifier")
    classifier_prefixes = ("classifier.classifier.",)

    def __init__(self, variant: str = "294m", out_indices: Sequence[int] | None = None, pretrained: str | None = None,
                 *, features_only: bool = False, num_classes: int = 1000, in_chans: int = 3, input_norm: bool = False,
                 grad_checkpointing: bool = False) -> None:
        super().__init__(variant, out_indices, features_only=features_only, num_classes=num_classes,
                         in_chans=in_chans, input_norm=input_norm, grad_checkpointing=grad_checkpointing)
        cfg = self.cfg
        num_tokens, token_dim = cfg["tokens"]
        group_num = cfg["group_num"]
        self.tap_blocks, self.stage_channels = _stage_taps(cfg)

        # Stem before tokens: the first registered parameter must be the stem conv weight.
        self.stem = ConvSequential(
            nn.Conv2d(in_chans, cfg["stem"], 3, stride=2, padding=1, bias=False),
            SafeBatchNorm2d(cfg["stem"]),
            nn.ReLU6(),  # on a fresh BN output: safe if YOLOv5 makes it in-place
        )
        self.tokens = nn.Embedding(num_tokens, token_dim)  # the M learned global tokens (M, d)

        specs = _expand_blocks(cfg)
        self.features = nn.ModuleList(
            _make_block(kind, inp, oup, s, e1, e2, token_dim, group_num) for kind, inp, oup, s, e1, e2 in specs)
        last = specs[-1][2]
        self.local_global = Local2Global(last, token_dim)
        self.classifier = MergeClassifier(last, cfg["num_features"], self.num_classes, token_dim, group_num)

        self._init_weights()
        self.finish_build(pretrained)

    def _init_weights(self) -> None:
        # Same scheme as the reference: He-normal convs (fan-out), unit BN2d, N(0, 0.01) Linear weights with
        # zero biases (so every dynamic ReLU starts as a ReLU and every alpha gate at 1); tokens ~ N(0, 1).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    @classmethod
    def variant_channels(cls, variant: str) -> tuple[int, ...]:
        """Output channels at strides 4 / 8 / 16 / 32 of ``variant`` (e.g. ``(40, 72, 176, 240)`` for 508M)."""
        return _stage_taps(cls.variants[cls.resolve_variant(variant)])[1]

    def stage_module_names(self, stage: int) -> tuple[str, ...]:
        """Stage ``i`` is the blocks after the previous stage's tap up to its own tap, ``features.{j}``."""
        first = self.tap_blocks[stage - 1] + 1 if stage else 0
        return tuple(f"features.{j}" for j in range(first, self.tap_blocks[stage] + 1))

    def run_blocks(self, x: torch.Tensor, last_stage: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Run the stem and the blocks up to the tap of ``last_stage``.

        Args:
            x: ``(B, in_chans, H, W)``, prepared (see ``input_norm``).
            last_stage: last stage (0..3) whose map is needed.

        Returns:
            The stage maps ``[(B, C_i, ceil(H / s_i), ceil(W / s_i)) for i in 0..last_stage]`` and the
            global tokens ``(B, M, d)`` after the last block that was run.
        """
        # A copy per image (as the reference's `repeat`), not an `expand` view: a view of the parameter made
        # under no_grad still reports requires_grad, which breaks torch.utils.flop_counter's module tracker.
        tokens = self.tokens.weight[None].repeat(x.shape[0], 1, 1)
        x = self.run_block(self.stem, x)
        stages: list[torch.Tensor] = []
        for i, block in enumerate(self.features[:self.tap_blocks[last_stage] + 1]):
            x, tokens = self.run_block(block, x, tokens)
            if i in self.tap_blocks:
                stages.append(x)
        return stages, tokens

    def stem_conv(self) -> tuple[nn.Module, str]:
        return self.stem, "0"

    def fuse_(self) -> None:
        """Inference preparation (after the blocks'): the constants of the export formulations
        (:func:`~.fused.prepare_export`), which graph captures of the fused model use."""
        fused.prepare_export(self, self.cfg["tokens"][0])

    def forward_stages(self, x: torch.Tensor, last_stage: int) -> list[torch.Tensor]:
        """Stage maps ``0..last_stage`` of a prepared ``(B, in_chans, H, W)`` input (see :meth:`run_blocks`)."""
        return self.run_blocks(x, last_stage)[0]

    def forward_head(self, x: torch.Tensor, tokens: torch.Tensor,  # type: ignore[override]
                     pre_logits: bool = False) -> torch.Tensor:
        """Final Mobile->Former bridge and :class:`MergeClassifier`: the stride-32 map ``(B, C_4, h, w)`` and the
        tokens ``(B, M, d)`` -> logits ``(B, num_classes)`` (the pooled ``(B, num_features)`` with ``pre_logits``
        or without classes)."""
        return self.classifier(x, self.local_global(x, tokens), pre_logits)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` (pooled features without classes): the head reads the last map and the tokens."""
        stages, tokens = self.run_blocks(x, len(self.stage_strides) - 1)
        return self.forward_head(stages[-1], tokens)
