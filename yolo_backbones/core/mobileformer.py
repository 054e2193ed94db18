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
from typing import Any, Sequence

import torch
from torch import nn
import torch.nn.functional as F

from .layers import SafeBatchNorm2d, onednn
from .layers.layout import heads_to_map, is_channels_last, is_tracing, map_to_heads
from .registry import register
from .runtime import single_threaded
from .base import Backbone
from .fuse import conv_like

__all__ = ["MobileFormer", "TokenLinear", "TokenLayerNorm", "ChannelShuffle", "HyperFunc", "dynamic_relu", "dynamic_relu_conv",
           "Local2Global", "GlobalBlock", "Global2Local", "LiteBlock", "DnaBlock", "DnaBlock3", "MergeClassifier"]

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
# Fused inference: Mobile->Former heads up to this width use two matmuls instead of the attention kernel.
_NARROW_HEAD = 12
# Fused inference: the bridges' attention over maps of at most this many values runs on one thread (a few
# microseconds of work per operator, less than a thread team's fork/join; see runtime.single_threaded).
_SMALL_MAP = 1 << 16


def _conv_bn(inp: int, oup: int, kernel_size: int, stride: int = 1, groups: int = 1,
             shuffle_groups: int = 1) -> nn.Sequential:
    """``Conv2d(k, stride, 'same' padding, no bias) -> BatchNorm2d [-> ChannelShuffle]`` as ``Sequential``.

    Maps ``(B, inp, H, W)`` to ``(B, oup, ceil(H / stride), ceil(W / stride))``. The conv and BN are
    entries ``0`` and ``1`` (the official key layout); the shuffle, if ``shuffle_groups > 1``, is entry 2.
    """
    layers: list[nn.Module] = [
        nn.Conv2d(inp, oup, kernel_size, stride, kernel_size // 2, groups=groups, bias=False),
        SafeBatchNorm2d(oup),
    ]
    if shuffle_groups > 1:
        layers.append(ChannelShuffle(shuffle_groups))
    return nn.Sequential(*layers)


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
    """``nn.LayerNorm`` over the global tokens ``(B, M, d)``; a distinct type for the reason given in :class:`TokenLinear`."""


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


def _slopes(coeffs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic-ReLU slopes ``a1 = 1 + 2 (h1 - 0.5)`` in ``[0, 2]`` and ``a2 = 2 (h2 - 0.5)`` in ``[-1, 1]``, ``(B, C, 1, 1)`` each."""
    h1, h2 = coeffs.chunk(2, dim=1)
    return (h1 - 0.5) * 2.0 + 1.0, (h2 - 0.5) * 2.0


def dynamic_relu(x: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """Dynamic ReLU with two linear pieces per channel: ``max(a1 * x, a2 * x)``.

    Args:
        x: feature map ``(B, C, H, W)``.
        coeffs: ``(B, 2C, 1, 1)`` values in ``[0, 1]`` from :class:`HyperFunc`; the first half gives
            ``a1 = 1 + 2 (h - 0.5)`` in ``[0, 2]``, the second ``a2 = 2 (h - 0.5)`` in ``[-1, 1]``. With the
            reference initialisation ``h = 0.5``, i.e. the function starts as a plain ReLU.

    Returns:
        ``(B, C, H, W)``.
    """
    a1, a2 = _slopes(coeffs)
    if torch.is_grad_enabled() and (x.requires_grad or a1.requires_grad or a2.requires_grad) and not is_tracing():
        return _DynamicReLU.apply(x, a1, a2)  # exporters get the plain ops below (a Python autograd.Function won't convert)
    return torch.maximum(x * a1, x * a2)


class _DynamicReLU(torch.autograd.Function):
    """``max(a1 * x, a2 * x)`` that keeps only ``x`` (and the small slopes) for backward.

    Autograd through the plain expression keeps ``x``, ``a1 * x`` and ``a2 * x``: three maps of the block's
    widest (expanded) width. Here backward recomputes the two products instead; the gradients follow
    ``torch.maximum``'s rule (a tie splits the gradient in halves).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, a1: torch.Tensor, a2: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, a1, a2)
        return torch.maximum(x * a1, x * a2)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, a1, a2 = ctx.saved_tensors
        p, q = x * a1, x * a2
        shared = torch.where(p == q, grad / 2, grad)
        g1, g2 = shared.masked_fill(p < q, 0), shared.masked_fill(p > q, 0)
        del p, q, shared
        grad_x = g1 * a1 + g2 * a2 if ctx.needs_input_grad[0] else None
        grad_a1 = (g1 * x).sum_to_size(a1.shape) if ctx.needs_input_grad[1] else None
        grad_a2 = (g2 * x).sum_to_size(a2.shape) if ctx.needs_input_grad[2] else None
        return grad_x, grad_a1, grad_a2


def _scale_input_channels(w: torch.Tensor, groups: int, scale: torch.Tensor) -> torch.Tensor:
    """Conv weight ``w`` with input channel ``c`` multiplied by ``scale[c]`` (any ``groups``): ``conv(s * x)`` as weights."""
    if groups == 1:
        return w * scale.view(1, -1, 1, 1)
    ipg, opg = w.shape[1], w.shape[0] // groups
    if ipg == 1:  # depth-wise (with a channel multiplier): output o reads input o // opg
        return w * (scale if opg == 1 else scale.repeat_interleave(opg)).view(-1, 1, 1, 1)
    # Output o of group o // opg reads input channels (o // opg) * ipg + i, i < ipg.
    idx = (torch.arange(w.shape[0], device=w.device) // opg)[:, None] * ipg + torch.arange(ipg, device=w.device)
    return w * scale[idx][:, :, None, None]


def _can_fold_slopes(x: torch.Tensor, conv: nn.Sequential) -> bool:
    """Whether :func:`dynamic_relu_conv` may fold the slopes into the conv's weights for this call.

    Only for one CPU image in inference without autograd (the weights become per-image), never while
    tracing/exporting (the graph must not depend on the data), and only when nothing observes the conv
    module's call (hooks, e.g. thop's FLOP count in YOLOv5's model summary).
    """
    first = conv[0]
    return (x.shape[0] == 1 and x.device.type == "cpu" and not torch.is_grad_enabled()
            and isinstance(first, nn.Conv2d) and first.padding_mode == "zeros"
            and not (first._forward_hooks or first._forward_pre_hooks or nn.modules.module._global_forward_hooks
                     or nn.modules.module._global_forward_pre_hooks)
            and not (is_tracing() or torch.compiler.is_compiling()))


def dynamic_relu_conv(x: torch.Tensor, coeffs: torch.Tensor, conv: nn.Sequential,
                      residual: torch.Tensor | None = None) -> torch.Tensor:
    """``conv(dynamic_relu(x, coeffs))`` [``+ residual``], with one pass over ``x`` instead of three where possible.

    For ``p = max(a1, a2) > 0`` the dynamic ReLU is ``p * prelu(x, min(a1, a2) / p)`` (both pieces scaled by
    ``p``), and the per-channel ``p`` goes into the input channels of the conv's weights, so the large map is
    read once by ``prelu`` instead of by two multiplications and a maximum. This is the same function up to
    float rounding; it is used for a single image in inference (see :func:`_can_fold_slopes`) and when every
    ``p`` is positive (``a1 = 0`` and ``a2 <= 0`` make ``p = 0``), else the plain composition runs. The
    residual add is fused into the conv's kernel when nothing but folded BNs follows the conv.

    Args:
        x: ``(B, C, H, W)`` map.
        coeffs: ``(B, 2C, 1, 1)`` from :class:`HyperFunc`.
        conv: ``Sequential`` whose first entry is the ``Conv2d`` that reads the activation (BN / shuffle may follow).
        residual: optional map added to ``conv``'s output.

    Returns:
        ``conv``'s output (plus ``residual``).
    """
    if _can_fold_slopes(x, conv):
        a1, a2 = _slopes(coeffs)
        high, low = torch.maximum(a1, a2).flatten(), torch.minimum(a1, a2).flatten()
        if bool((high > 0).all()):
            return _prelu_conv(x, low / high, high, conv, residual)
    y = onednn.sequential(conv, dynamic_relu(x, coeffs))
    return y if residual is None else y + residual


def _prelu_conv(x: torch.Tensor, ratio: torch.Tensor, high: torch.Tensor, conv: nn.Sequential,
                residual: torch.Tensor | None = None) -> torch.Tensor:
    """``conv(high * prelu(x, ratio))`` [``+ residual``] with ``high`` folded into the conv's input channels.

    The single-image form of a dynamic ReLU followed by a conv (see :func:`dynamic_relu_conv`): ``ratio`` and
    ``high`` are ``(C,)``, ``high > 0``. The residual is fused into the conv's kernel when nothing but folded
    BNs follows the conv.
    """
    first, rest = conv[0], [m for m in list(conv)[1:] if not isinstance(m, nn.Identity)]
    y = onednn.conv(first, F.prelu(x, ratio), residual=None if rest else residual,
                    weight=_scale_input_channels(first.weight, first.groups, high))
    for m in rest:
        y = m(y)
    return y if residual is None or not rest else y + residual


class FusedSlopes(nn.Module):
    """The dynamic-ReLU slopes of one block's :class:`HyperFunc` s, computed together (fused inference only).

    Built by a block's ``fuse_()`` from its hyper-functions, which all read the same token: their first
    Linears are stacked into one, their second Linears form one block-diagonal Linear, and the slope map
    ``a1 = 1 + 2 (h1 - 0.5) = clamp(z1 / 3 + 1, 0, 2)``, ``a2 = 2 (h2 - 0.5) = clamp(z2 / 3, -1, 1)`` (with
    ``h = hard_sigmoid(z)``) is folded into the second Linear's weights, leaving one clamp. Rows are ordered
    ``[a1 of every function, a2 of every function]``, so one ``aminmax`` gives every per-channel pair
    ``(min(a1, a2), max(a1, a2))``. The same function as the separate :class:`HyperFunc` s up to float rounding.

    Args:
        hypers: the block's hyper-functions (same token width and token id).

    ``forward(tokens)`` ``(1, M, d)`` -> ``None`` when some ``a1`` is 0 (the single-image fold needs
    ``max(a1, a2) > 0``; the caller then runs the plain path), else per function ``(ratio, high)``, each
    ``(C_i,)``: ``high = max(a1, a2)``, ``ratio = min(a1, a2) / high``.
    """

    def __init__(self, hypers: Sequence[HyperFunc]) -> None:
        super().__init__()
        self.token_id = hypers[0].token_id
        self.sizes = [h.hyper[2].out_features // 2 for h in hypers]
        with torch.no_grad():
            w1 = torch.cat([h.hyper[0].weight for h in hypers]).double()
            b1 = torch.cat([h.hyper[0].bias for h in hypers]).double()
            hidden = [h.hyper[0].out_features for h in hypers]
            n, k = sum(self.sizes), sum(hidden)
            w2 = torch.zeros(2 * n, k, dtype=torch.float64, device=w1.device)
            b2 = torch.zeros(2 * n, dtype=torch.float64, device=w1.device)
            row, col = 0, 0
            for h, c, j in zip(hypers, self.sizes, hidden):
                w, b = h.hyper[2].weight.double() / 3.0, h.hyper[2].bias.double() / 3.0
                for half, (dst, shift) in enumerate(((row, 1.0), (n + row, 0.0))):  # a1 rows, then a2 rows
                    w2[dst:dst + c, col:col + j] = w[half * c:(half + 1) * c]
                    b2[dst:dst + c] = b[half * c:(half + 1) * c] + shift
                row, col = row + c, col + j
            lo = torch.cat([torch.zeros(n), -torch.ones(n)]).to(w1)
            dtype = hypers[0].hyper[0].weight.dtype
        for name, t in (("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2), ("lo", lo), ("hi", lo + 2.0)):
            self.register_buffer(name, t.to(dtype), persistent=False)

    def forward(self, tokens: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        hidden = F.relu(F.linear(tokens[:, self.token_id], self.w1, self.b1))
        slopes = torch.clamp(F.linear(hidden, self.w2, self.b2), self.lo, self.hi)[0]   # (2N,): a1 | a2
        n = slopes.shape[0] // 2
        if not float(slopes[:n].min()) > 0:
            return None
        low, high = torch.aminmax(slopes.view(2, n), dim=0)
        return list(zip((low / high).split(self.sizes), high.split(self.sizes)))


def _split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``(B, N, C)`` -> ``(B, heads, N, C / heads)``; head ``h`` takes channels ``[h C/heads, (h+1) C/heads)``."""
    return x.unflatten(-1, (num_heads, -1)).transpose(1, 2)


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

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        fused = self.q_alpha is not None and is_channels_last(x) and onednn.enabled(x)
        if not fused:
            q = _split_heads(self.q(tokens), self.num_heads)                  # (B, h, M, C/h)
            kv = map_to_heads(x, self.num_heads)                             # (B, h, HW, C/h)
            out = F.scaled_dot_product_attention(q, kv, kv).transpose(1, 2).flatten(2)  # (B, M, C)
            return self.layer_norm(tokens + self.proj(out * (2.0 * self.alpha(tokens))))
        weight, bias = self.q_alpha
        channels = self.proj.in_features
        with single_threaded():  # token-only work on one thread
            q, gate = F.linear(tokens, weight, bias).split([weight.shape[0] - channels, channels], dim=-1)
            gate = F.hardtanh(gate, 0.0, 2.0)                                # = 2 * hard_sigmoid(alpha(tokens))
        with single_threaded(x.numel() <= _SMALL_MAP):
            if q.shape[-1] == channels:
                q, kv = _split_heads(q, self.num_heads), map_to_heads(x, self.num_heads)
                out = F.scaled_dot_product_attention(q, kv, kv).transpose(1, 2).flatten(2)
            else:
                out = self._attend_narrow_heads(x, q)
        with single_threaded():
            return self.layer_norm(onednn.linear(self.proj, out * gate, residual=tokens))

    def _attend_narrow_heads(self, x: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """The attention as two matrix products over the pixels of a channels-last map, for narrow heads.

        A fused attention kernel does little work per key when heads are a few channels wide (6-12 at the
        stride-4/8 maps). Here every head's queries are one row block of a block-diagonal ``(heads * M, C)``
        matrix (``queries``, ``(B, M, heads * C)`` from :meth:`fuse_`, already scaled), so the logits of all
        heads are one product with the ``(C, HW)`` pixels, the softmax runs along the pixels, and one product
        with the ``(HW, C)`` pixels gives every head's output over all channels; the diagonal blocks (head
        ``h``'s rows and channels) are the result ``(B, M, C)``.
        """
        h, (B, M, _), C = self.num_heads, queries.shape, x.shape[1]
        rows = queries.view(B, M, h, C).transpose(1, 2).reshape(B, h * M, C)
        pixels = x.permute(0, 2, 3, 1).flatten(1, 2)                          # (B, HW, C), a view
        weights = torch.bmm(rows, pixels.transpose(1, 2)).softmax(dim=-1)    # (B, h*M, HW)
        out = torch.bmm(weights, pixels).view(B, h, M, h, C // h)              # (B, h, M, h, C/h)
        return torch.diagonal(out, dim1=1, dim2=3).permute(0, 1, 3, 2).reshape(B, M, C)

    def fuse_(self) -> None:
        """Inference fold: ``q`` and ``alpha`` as one Linear whose gate half gives ``2 * hard_sigmoid(z) = clamp(z / 3 + 1, 0, 2)``.

        For heads of at most ``_NARROW_HEAD`` channels the query half holds every head's masked, scaled
        queries (``heads * C`` outputs) for :meth:`_attend_narrow_heads`.
        """
        h, C = self.num_heads, self.q.out_features
        with torch.no_grad():
            a = self.alpha[0]
            wq, bq = self.q.weight.double(), self.q.bias.double()
            if C // h <= _NARROW_HEAD:
                scale = _head_mask(h, 1, C, wq.device, torch.float64) * (C // h) ** -0.5   # (h, C)
                wq, bq = (wq[None] * scale[..., None]).flatten(0, 1), (bq[None] * scale).flatten()
            w = torch.cat([wq, a.weight.double() / 3.0])
            b = torch.cat([bq, a.bias.double() / 3.0 + 1.0])
        self.register_buffer("q_alpha_weight", w.to(a.weight.dtype), persistent=False)
        self.register_buffer("q_alpha_bias", b.to(a.weight.dtype), persistent=False)

    @property
    def q_alpha(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The fused ``(weight, bias)`` of :meth:`fuse_`, or ``None`` before fusing."""
        w = self._buffers.get("q_alpha_weight")
        return None if w is None else (w, self._buffers["q_alpha_bias"])


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
        q = _split_heads(self.q(tokens), self.num_heads)     # (B, h, M, d/h)
        kv = _split_heads(tokens, self.num_heads)            # (B, h, M, d/h)
        out = F.scaled_dot_product_attention(q, kv, kv).transpose(1, 2).flatten(2)  # (B, M, d)
        # The residual adds and the GELU run inside the Linear kernels in fused inference (onednn.linear).
        tokens = self.layer_norm(onednn.linear(self.channel_mlp, out, residual=tokens))
        if onednn.activation_name(self.ffn[1]) == "gelu":
            hidden = onednn.linear(self.ffn[0], tokens, act="gelu")
        else:
            hidden = self.ffn[1](self.ffn[0](tokens))
        return self.ffn_norm(onednn.linear(self.ffn[2], hidden, residual=tokens))


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

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled() and is_channels_last(x) and not is_tracing():
            if self._buffers.get("keys_values_weight") is not None and onednn.enabled(x):
                return self._forward_fused(x, tokens)
            return self._forward_pixels_first(x, self.k(tokens), self.proj(tokens))
        q = map_to_heads(x, self.num_heads)                     # (B, h, HW, C/h)
        k = _split_heads(self.k(tokens), self.num_heads)      # (B, h, M, C/h)
        v = _split_heads(self.proj(tokens), self.num_heads)   # (B, h, M, C/h)
        out = F.scaled_dot_product_attention(q, k, v)         # (B, h, HW, C/h)
        return x + heads_to_map(out, x)

    def _forward_pixels_first(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Inference on a channels-last map: the same attention as two matrix products over the pixels.

        Each pixel attends to only ``M`` (3-6) tokens, which leaves a fused attention kernel with almost no
        work per query. Here the logits of all heads are one product of a block-diagonal ``(heads * M, C)``
        key matrix (head ``h``'s keys meet only head ``h``'s channels) with the ``(C, HW)`` pixel matrix, the
        softmax runs over each head's ``M`` rows (a non-last dim, so it vectorises over the pixels), and one
        product with the block-diagonal value matrix also adds the residual (``baddbmm``). Same function
        (float rounding), 3-6x faster at the stride-4/8 maps.
        """
        h, M, C = self.num_heads, k.shape[1], k.shape[2]
        mask = _head_mask(h, M, C, x.device, x.dtype)                        # (h*M, C)
        keys = k.repeat(1, h, 1) * (mask * (C // h) ** -0.5)                  # (B, h*M, C), scaled
        values = v.repeat(1, h, 1) * mask                                     # (B, h*M, C)
        return self._attend(x, keys, values, h)

    def _forward_fused(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """:meth:`_forward_pixels_first` with the masked, scaled keys and values of all heads from one Linear
        (built by :meth:`fuse_`): ``(B, M, d) -> (B, M, 2, h, C)``, reordered to ``(2, B, h*M, C)``."""
        h, (B, M, _) = self.num_heads, tokens.shape
        with single_threaded():  # token-only work
            kv = F.linear(tokens, self.keys_values_weight, self.keys_values_bias)
            kv = kv.view(B, M, 2, h, -1).permute(2, 0, 3, 1, 4).reshape(2, B, h * M, -1)
        with single_threaded(x.numel() <= _SMALL_MAP):  # a small map's attention too
            return self._attend(x, kv[0], kv[1], h)

    @staticmethod
    def _attend(x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, heads: int) -> torch.Tensor:
        """``x + attention`` from the block-diagonal ``(B, heads*M, C)`` keys (scaled) and values; see above."""
        pixels = x.permute(0, 2, 3, 1).flatten(1, 2)                          # (B, HW, C), a view
        logits = torch.bmm(keys, pixels.transpose(1, 2))                      # (B, h*M, HW)
        weights = logits.unflatten(1, (heads, -1)).softmax(dim=2).flatten(1, 2)  # softmax over each head's M
        out = torch.baddbmm(pixels, weights.transpose(1, 2), values)          # x + attention, (B, HW, C)
        return out.reshape_as(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def fuse_(self) -> None:
        """Inference fold: one Linear giving every head's masked, scaled keys and masked values
        (``(2 * heads * C, d)``; rows ``(kind, head, channel)``), as :meth:`_forward_pixels_first` builds them."""
        h, C = self.num_heads, self.k.out_features
        with torch.no_grad():
            mask = _head_mask(h, 1, C, self.k.weight.device, torch.float64)   # (h, C)
            scales = torch.stack([mask * (C // h) ** -0.5, mask])              # (2, h, C)
            w = torch.stack([self.k.weight.double(), self.proj.weight.double()])[:, None] * scales[..., None]
            b = torch.stack([self.k.bias.double(), self.proj.bias.double()])[:, None] * scales
        dtype = self.k.weight.dtype
        self.register_buffer("keys_values_weight", w.flatten(0, 2).to(dtype), persistent=False)
        self.register_buffer("keys_values_bias", b.flatten().to(dtype), persistent=False)


_HEAD_MASKS: dict[tuple, torch.Tensor] = {}


def _head_mask(heads: int, tokens: int, channels: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``(heads * tokens, channels)`` 0/1 matrix: 1 where the token row and the channel belong to the same head."""
    key = (heads, tokens, channels, device, dtype)
    mask = _HEAD_MASKS.get(key)
    if mask is None:
        rows = torch.arange(heads * tokens, device=device)[:, None] // tokens
        cols = torch.arange(channels, device=device)[None, :] // (channels // heads)
        mask = _HEAD_MASKS[key] = (rows == cols).to(dtype)
    return mask


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
        self.conv = nn.Sequential(
            nn.Conv2d(inp, hidden, 3, stride, 1, groups=inp, bias=False),
            SafeBatchNorm2d(hidden),
            nn.ReLU6(),
            ChannelShuffle(inp) if group_num > 1 else nn.Identity(),
            nn.Conv2d(hidden, oup, 1, groups=group_num, bias=False),
            SafeBatchNorm2d(oup),
        )
        self.use_shortcut = stride == 1 and inp == oup

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        split = getattr(self, "split_dw", None)
        if (split is not None and is_channels_last(x) and onednn.enabled(x)
                and all(onednn._fusable(m, x) for m in (*split, *self.split_pw))):
            return self._forward_split(x), tokens
        out = onednn.sequential(self.conv, x)
        if self.use_shortcut:
            out = out + x
        return out, tokens

    def _forward_split(self, x: torch.Tensor) -> torch.Tensor:
        """Fused inference: copy ``j`` of every channel as its own depth-wise conv, each read by its slice of the 1x1.

        oneDNN has no fast kernel for a depth-wise conv with a channel multiplier in channels-last (at stride 1
        it runs several times slower than ``e1`` plain depth-wise convs). Since the ReLU6 acts per channel and
        the 1x1 conv is linear, ``1x1(relu6(dw(x)))`` is the sum over ``j`` of ``1x1_j(relu6(dw_j(x)))``, where
        ``dw_j`` makes output ``c * e1 + j`` of input ``c``; the sum, and the shortcut, are added inside the 1x1
        kernels. Same function up to float rounding.
        """
        out = x if self.use_shortcut else None
        for dw, pw in zip(self.split_dw, self.split_pw):
            y = onednn.conv(dw, x, "relu6")
            out = onednn.conv(pw, y) if out is None else onednn.conv(pw, y, residual=out)
        return out

    def fuse_(self) -> None:
        """Inference fold: for a stride-1 depth-wise conv with a channel multiplier and dense 1x1 (BNs folded,
        ReLU6 between), the per-copy convs of :meth:`_forward_split`."""
        dw, act, shuffle, pw = self.conv[0], self.conv[2], self.conv[3], self.conv[4]
        mult = dw.out_channels // dw.in_channels
        if not (tuple(dw.stride) == (1, 1) and mult > 1 and pw.groups == 1 and isinstance(shuffle, nn.Identity)
                and onednn.activation_name(act) == "relu6" and all(isinstance(self.conv[i], nn.Identity) for i in (1, 5))):
            return
        c = dw.in_channels
        self.split_dw = nn.ModuleList(
            conv_like(dw, dw.weight[j::mult], dw.bias[j::mult], out_channels=c, groups=c) for j in range(mult))
        self.split_pw = nn.ModuleList(
            conv_like(pw, pw.weight[:, j::mult], pw.bias if j == 0 else None, in_channels=c) for j in range(mult))


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

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, slopes = _former(self, x, tokens, self.conv2, self.conv3)
        residual = x if self.use_shortcut else None
        if slopes is not None:  # fused single-image inference: both slope sets at once, folded into the convs
            (r1, p1), (r2, p2) = slopes
            out = _prelu_conv(onednn.sequential(self.conv1, x), r1, p1, self.conv2)
            out = _prelu_conv(out, r2, p2, self.conv3, residual=residual)
        else:
            out = dynamic_relu_conv(onednn.sequential(self.conv1, x), self.hyper1(tokens), self.conv2)
            out = dynamic_relu_conv(out, self.hyper2(tokens), self.conv3, residual=residual)
        return self.global_local(out, tokens), tokens

    def fuse_(self) -> None:
        """Inference fold (see :mod:`yolo_backbones.core.fuse`): the two hyper-functions as one :class:`FusedSlopes`."""
        self.fused_slopes = FusedSlopes([self.hyper1, self.hyper2])


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

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, slopes = _former(self, x, tokens, self.conv2, self.conv4)
        if slopes is not None:  # fused single-image inference: both slope sets at once, folded into the convs
            (r1, p1), (r3, p3) = slopes
            mid = _prelu_conv(onednn.sequential(self.conv1, x), r1, p1, self.conv2)
            out = _prelu_conv(onednn.sequential(self.conv3, mid), r3, p3, self.conv4, residual=mid)
        else:
            mid = dynamic_relu_conv(onednn.sequential(self.conv1, x), self.hyper1(tokens), self.conv2)
            out = dynamic_relu_conv(onednn.sequential(self.conv3, mid), self.hyper3(tokens), self.conv4, residual=mid)
        out = self.global_local(out, tokens)
        if self.use_shortcut:
            out = out + x
        return out, tokens

    def fuse_(self) -> None:
        """Inference fold (see :mod:`yolo_backbones.core.fuse`): the two hyper-functions as one :class:`FusedSlopes`."""
        self.fused_slopes = FusedSlopes([self.hyper1, self.hyper3])


def _former(block: nn.Module, x: torch.Tensor, tokens: torch.Tensor, *convs: nn.Sequential
            ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]] | None]:
    """The token half of a block: ``Former(Mobile->Former(x, tokens))``, and the dynamic-ReLU slopes.

    The slopes are ``block.fused_slopes(tokens)`` when the block was fused and this call may fold them into
    ``convs`` (one CPU image, fused kernels allowed, nothing observing the convs); the token-only work then
    runs on one thread (:func:`~yolo_backbones.core.runtime.single_threaded`). Otherwise they are ``None``
    and the block computes them with its :class:`HyperFunc` s.
    """
    tokens = block.local_global(x, tokens)
    fused = getattr(block, "fused_slopes", None)
    if fused is None or not onednn.enabled(x) or not all(_can_fold_slopes(x, c) for c in convs):
        return block.global_block(tokens), None
    with single_threaded():
        tokens = block.global_block(tokens)
        return tokens, fused(tokens)


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
        self.classifier = nn.Sequential(nn.Dropout(drop_rate), nn.Linear(num_features, num_classes))

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self.conv(x))
        x = F.hardswish(x.mean(dim=(2, 3)))
        x = torch.cat([x, tokens[:, 0]], dim=1)
        x = F.hardswish(self.fc(x))
        return self.classifier(x)


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
    """Mobile-Former 508M / 294M / 214M / 151M / 96M / 52M / 26M as an ImageNet classifier or a YOLOv5 backbone.

    Args:
        variant: ``"508m"``, ``"294m"``, ``"214m"``, ``"151m"``, ``"96m"``, ``"52m"`` or ``"26m"``.
        out_indices: stages returned in detection mode (0..3 = strides 4, 8, 16, 32).
        pretrained: a weights file (official ``mobile-former-*.pth.tar``) or a weights name such as
            ``imagenet``, loaded strictly.
        num_classes: ``0`` (default) for the detection backbone, ``1000`` for the ImageNet classifier.
        in_chans: input channels.
        grad_checkpointing: recompute block activations in backward to save training memory
            (see :meth:`~yolo_backbones.core.base.Backbone.set_grad_checkpointing`).

    Detection mode returns ``[(B, C_i, ceil(H / s_i), ceil(W / s_i)) for i in out_indices]``: the
    outputs of the last block at each stride (post Former->Mobile maps, no extra norm), e.g.
    ``features[2, 4, 8, 11]`` with 40 / 72 / 176 / 240 channels for 508M. Any H, W work.

    The global tokens are **not** offered to the neck (a YOLOv5 neck consumes feature maps only);
    they still shape every returned map through the dynamic ReLUs and the Former->Mobile bridges.
    To keep every parameter in use (DDP without ``find_unused_parameters``), detection mode builds
    the blocks only up to the last tapped one and drops the classification-only final
    ``local_global`` and ``classifier``; the last built block's Former output still feeds its own
    dynamic ReLUs and Former->Mobile bridge, so it gets gradients. Nothing in detection mode applies
    BatchNorm to pooled vectors, so batch-1 training works.

    Classification mode returns logits ``(B, num_classes)`` and, like the reference, expects inputs
    already normalised with the ImageNet mean/std (detection mode normalises ``[0, 1]`` RGB itself).
    """

    family = "mobileformer"
    variants = MOBILEFORMER_CFGS
    # Every stride-2 conv pads by 1, so maps are ceil(H / s) and the attentions take any number of
    # pixels: no size constraint.
    input_multiple = 1
    classifier_prefixes = ("local_global.", "classifier.")

    def __init__(self, variant: str = "294m", out_indices: Sequence[int] = (1, 2, 3), pretrained: str | None = None,
                 *, num_classes: int = 0, in_chans: int = 3, grad_checkpointing: bool = False) -> None:
        super().__init__(variant, out_indices, num_classes, in_chans, grad_checkpointing)
        cfg = self.cfg
        num_tokens, token_dim = cfg["tokens"]
        group_num = cfg["group_num"]
        self.tap_blocks, self.stage_channels = _stage_taps(cfg)

        # Stem before tokens: the first registered parameter must be the stem conv weight.
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, cfg["stem"], 3, stride=2, padding=1, bias=False),
            SafeBatchNorm2d(cfg["stem"]),
            nn.ReLU6(),  # on a fresh BN output: safe if YOLOv5 makes it in-place
        )
        self.tokens = nn.Embedding(num_tokens, token_dim)  # the M learned global tokens (M, d)

        specs = _expand_blocks(cfg)
        # Detection mode stops after the last tapped block: later blocks would feed nothing.
        num_blocks = len(specs) if self.num_classes else self.tap_blocks[self.out_indices[-1]] + 1
        self.features = nn.ModuleList(
            _make_block(kind, inp, oup, s, e1, e2, token_dim, group_num)
            for kind, inp, oup, s, e1, e2 in specs[:num_blocks])

        if self.num_classes:
            last = specs[-1][2]
            self.local_global = Local2Global(last, token_dim)
            self.classifier = MergeClassifier(last, cfg["num_features"], self.num_classes, token_dim, group_num)

        self._init_weights()
        if pretrained:
            self.load_pretrained(pretrained)

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

    def forward_features(self, x: torch.Tensor, last_stage: int = 3) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Run the stem and the blocks up to the tap of ``last_stage``.

        Args:
            x: ``(B, in_chans, H, W)``.
            last_stage: last stage (0..3) whose map is needed.

        Returns:
            The stage maps ``[(B, C_i, ceil(H / s_i), ceil(W / s_i)) for i in 0..last_stage]`` and the
            global tokens ``(B, M, d)`` after the last block that was run.
        """
        # A copy per image (as the reference's `repeat`), not an `expand` view: a view of the parameter made
        # under no_grad still reports requires_grad, which breaks torch.utils.flop_counter's module tracker.
        tokens = self.tokens.weight[None].repeat(x.shape[0], 1, 1)
        x = self.run_block(self.stem, x, fn=lambda t: onednn.sequential(self.stem, t))
        stages: list[torch.Tensor] = []
        for i, block in enumerate(self.features[:self.tap_blocks[last_stage] + 1]):
            x, tokens = self.run_block(block, x, tokens)
            if i in self.tap_blocks:
                stages.append(x)
        return stages, tokens

    def stem_conv(self) -> tuple[nn.Module, str]:
        return self.stem, "0"

    def forward_stages(self, x: torch.Tensor, last_stage: int) -> list[torch.Tensor]:
        """Stage maps ``0..last_stage`` of a ``(B, in_chans, H, W)`` input (see :meth:`forward_features`)."""
        return self.forward_features(x, last_stage)[0]

    def forward_head(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """Final Mobile->Former bridge and :class:`MergeClassifier`.

        Takes the stride-32 map ``(B, C_4, h, w)`` and the tokens ``(B, M, d)``; returns logits ``(B, num_classes)``.
        """
        return self.classifier(x, self.local_global(x, tokens))

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)``: the classifier reads the last stage map and the tokens."""
        stages, tokens = self.forward_features(x, len(self.stage_strides) - 1)
        return self.forward_head(stages[-1], tokens)

    def convert_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Official keys are this model's keys; in detection mode, drop the blocks after the last tap.

        A detection model with ``out_indices`` ending before stage 3 does not build the last blocks,
        so their checkpoint entries (``features.{i}.*`` for ``i >= len(self.features)``) are skipped.
        """
        if self.num_classes:
            return state_dict
        n = len(self.features)

        def kept(key: str) -> bool:
            parts = key.split(".", 2)
            return not (parts[0] == "features" and len(parts) > 1 and parts[1].isdigit() and int(parts[1]) >= n)

        return {k: v for k, v in state_dict.items() if kept(k)}
