"""Fused forms of the Mobile-Former blocks (:mod:`.model`), for a fused backbone's eager CPU inference.

Each function computes its block's reference ``forward`` (float rounding only) on the weights that
:meth:`~yolo_backbones.core.base.Backbone.fuse` folded and on the tensors that the ``prepare_*`` functions
derive from them (called by the blocks' ``fuse_()`` and held in the attributes each block declares for them):

* the dynamic ReLUs of a block: its hyper-functions merged into one :class:`FusedSlopes`, and for a single image
  the per-channel slope folded into the next conv's weights, so the widest map is read once (``prelu``);
* the bridges: the Linear layers that read the same tokens merged into one (:class:`FrozenLinear`) with their
  head masks and scales built in, and the attention written as two matrix products over the pixels of a
  channels-last map (narrow heads and a handful of tokens leave a fused attention kernel with little work);
* the lite first block: the depth-wise conv with a channel multiplier split into one plain depth-wise conv per
  copy, each read by its slice of the 1x1 conv (oneDNN has no fast channels-last kernel for the multiplier);
* residual adds and activations inside the conv / linear kernels (:mod:`~yolo_backbones.core.inference.onednn`).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..inference import onednn
from ..inference.context import capture_target, hooked
from ..inference.fuse import conv_like
from ..layers.layout import is_tracing, map_to_heads, tokens_to_heads
from .dynamic_relu import slopes
from .ncnn_bridges import global_to_local_ncnn, local_to_global_ncnn

__all__ = ["FrozenLinear", "FusedSlopes", "dynamic_relu_conv", "local_to_global", "global_block", "global_to_local",
           "lite_block", "dna_block", "dna_block3", "prepare_local_to_global", "prepare_global_to_local",
           "prepare_lite_block", "prepare_slopes", "prepare_export", "Formulation", "XNNPACK_CAPTURE",
           "EXECUTORCH_CAPTURE", "NCNN_CAPTURE", "capture_formulation", "block_formulation", "lite_block_export",
           "has_copies"]

# Mobile->Former heads up to this width use two matmuls over the pixels instead of the attention kernel.
_NARROW_HEAD = 12


class FrozenLinear(nn.Module):
    """``F.linear`` with fixed weights derived by fusing (buffers: a fused model's ``state_dict`` holds them, so a
    fused checkpoint, which the loader rebuilds from tensors, computes what was saved).

    ``forward(x)``: ``(..., in) -> (..., out)``.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


# ------------------------------------------------------------------------------------------ dynamic ReLU
def _scale_input_channels(w: torch.Tensor, groups: int, scale: torch.Tensor) -> torch.Tensor:
    """Conv weight ``w`` with input channel ``c`` multiplied by ``scale[c]`` (any ``groups``): ``conv(s * x)`` as
    weights."""
    if groups == 1:
        return w * scale.view(1, -1, 1, 1)
    ipg, opg = w.shape[1], w.shape[0] // groups
    if ipg == 1:  # depth-wise (with a channel multiplier): output o reads input o // opg
        return w * (scale if opg == 1 else scale.repeat_interleave(opg)).view(-1, 1, 1, 1)
    # Output o of group o // opg reads input channels (o // opg) * ipg + i, i < ipg.
    idx = (torch.arange(w.shape[0], device=w.device) // opg)[:, None] * ipg + torch.arange(ipg, device=w.device)
    return w * scale[idx][:, :, None, None]


def _can_fold_slopes(x: torch.Tensor, conv: nn.Sequential) -> bool:
    """Whether the dynamic ReLU before ``conv`` may be folded into its weights for this call.

    Only for one CPU image in inference without autograd (the weights become per-image), never while
    tracing / exporting (the graph must not depend on the data), and only when nothing observes the conv
    module's call (it is not called: its weights are).
    """
    first = conv[0]
    return (x.shape[0] == 1 and x.device.type == "cpu" and not torch.is_grad_enabled()
            and isinstance(first, nn.Conv2d) and first.padding_mode == "zeros" and not hooked(first)
            and not (is_tracing() or torch.compiler.is_compiling()))


def dynamic_relu_conv(x: torch.Tensor, coeffs: torch.Tensor, conv: nn.Sequential,
                      residual: torch.Tensor | None = None) -> torch.Tensor:
    """``conv(dynamic_relu(x, coeffs))`` [``+ residual``], with one pass over ``x`` instead of three where possible.

    For ``p = max(a1, a2) > 0`` the dynamic ReLU is ``p * prelu(x, min(a1, a2) / p)`` (both pieces scaled by
    ``p``), and the per-channel ``p`` goes into the input channels of the conv's weights, so the large map is
    read once by ``prelu`` instead of by two multiplications and a maximum. Used for a single image (see
    :func:`_can_fold_slopes`) when every ``p`` is positive (``a1 = 0`` and ``a2 <= 0`` make ``p = 0``); else
    the plain composition runs.

    Args:
        x: ``(B, C, H, W)`` map.
        coeffs: ``(B, 2C, 1, 1)`` from :class:`~.model.HyperFunc`.
        conv: ``Sequential`` whose first entry is the ``Conv2d`` that reads the activation (BN / shuffle may follow).
        residual: optional map added to ``conv``'s output.

    Returns:
        ``conv``'s output (plus ``residual``).
    """
    a1, a2 = slopes(coeffs)
    if _can_fold_slopes(x, conv):
        high, low = torch.maximum(a1, a2).flatten(), torch.minimum(a1, a2).flatten()
        if bool((high > 0).all()):
            return _prelu_conv(x, low / high, high, conv, residual)
    y = onednn.sequential(conv, torch.maximum(x * a1, x * a2))
    return y if residual is None else y + residual


def _prelu_conv(x: torch.Tensor, ratio: torch.Tensor, high: torch.Tensor, conv: nn.Sequential,
                residual: torch.Tensor | None = None) -> torch.Tensor:
    """``conv(high * prelu(x, ratio))`` [``+ residual``] with ``high`` folded into the conv's input channels.

    ``ratio`` and ``high`` are ``(C,)``, ``high > 0``. The residual is added by the conv's kernel when nothing
    but folded BNs follows the conv.
    """
    first, rest = conv[0], [m for m in list(conv)[1:] if not isinstance(m, nn.Identity)]
    y = onednn.conv(first, F.prelu(x, ratio), residual=None if rest else residual,
                    weight=_scale_input_channels(first.weight, first.groups, high))
    for m in rest:
        y = m(y)
    return y if residual is None or not rest else y + residual


class FusedSlopes(nn.Module):
    """The dynamic-ReLU slopes of one block's :class:`~.model.HyperFunc` s, computed together.

    Built from a block's hyper-functions, which all read the same token: their first Linears are stacked into
    one, their second Linears form one block-diagonal Linear, and the slope map
    ``a1 = 1 + 2 (h1 - 0.5) = clamp(z1 / 3 + 1, 0, 2)``, ``a2 = 2 (h2 - 0.5) = clamp(z2 / 3, -1, 1)`` (with
    ``h = hard_sigmoid(z)``) is folded into the second Linear's weights, leaving one clamp. Rows are ordered
    ``[a1 of every function, a2 of every function]``, so one ``aminmax`` gives every per-channel pair
    ``(min(a1, a2), max(a1, a2))``. The same function as the separate hyper-functions up to float rounding.

    Args:
        hypers: the block's hyper-functions (same token width and token id).

    ``forward(tokens)`` ``(1, M, d)`` -> ``None`` when some ``a1`` is 0 (the single-image fold needs
    ``max(a1, a2) > 0``; the caller then runs the plain path), else per function ``(ratio, high)``, each
    ``(C_i,)``: ``high = max(a1, a2)``, ``ratio = min(a1, a2) / high``.
    """

    def __init__(self, hypers: Sequence[nn.Module]) -> None:
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
            self.register_buffer(name, t.to(dtype))  # persistent, as FrozenLinear's

    def forward(self, tokens: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        hidden = F.relu(F.linear(tokens[:, self.token_id], self.w1, self.b1))
        slopes = torch.clamp(F.linear(hidden, self.w2, self.b2), self.lo, self.hi)[0]   # (2N,): a1 | a2
        n = slopes.shape[0] // 2
        if not float(slopes[:n].min()) > 0:
            return None
        low, high = torch.aminmax(slopes.view(2, n), dim=0)
        return list(zip((low / high).split(self.sizes), high.split(self.sizes)))


def prepare_slopes(block: nn.Module, *hypers: nn.Module) -> None:
    """Fuse-time: the block's hyper-functions (in the order of its convs) as one :class:`FusedSlopes`
    (``block.fused_slopes``)."""
    block.fused_slopes = FusedSlopes(hypers)


def _former(block: nn.Module, x: torch.Tensor, tokens: torch.Tensor, *convs: nn.Sequential
            ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]] | None]:
    """The token half of a block, ``Former(Mobile->Former(x, tokens))``, and the folded dynamic-ReLU slopes for
    ``convs`` (``None`` when they cannot be folded: more than one image, a hooked conv, a zero slope)."""
    tokens = block.global_block(block.local_global(x, tokens))
    fused = block.fused_slopes
    if fused is None or not all(_can_fold_slopes(x, c) for c in convs):
        return tokens, None
    return tokens, fused(tokens)


def dna_block(block: nn.Module, x: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:class:`~.model.DnaBlock` with the dynamic ReLUs folded into the convs that follow them."""
    tokens, slopes = _former(block, x, tokens, block.conv2, block.conv3)
    residual = x if block.use_shortcut else None
    if slopes is not None:  # single image: both slope sets at once, folded into the convs
        (r1, p1), (r2, p2) = slopes
        out = _prelu_conv(block.conv1(x), r1, p1, block.conv2)
        out = _prelu_conv(out, r2, p2, block.conv3, residual=residual)
    else:
        out = dynamic_relu_conv(block.conv1(x), block.hyper1(tokens), block.conv2)
        out = dynamic_relu_conv(out, block.hyper2(tokens), block.conv3, residual=residual)
    return block.global_local(out, tokens), tokens


def dna_block3(block: nn.Module, x: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:class:`~.model.DnaBlock3` with the dynamic ReLUs folded into the convs that follow them."""
    tokens, slopes = _former(block, x, tokens, block.conv2, block.conv4)
    if slopes is not None:
        (r1, p1), (r3, p3) = slopes
        mid = _prelu_conv(block.conv1(x), r1, p1, block.conv2)
        out = _prelu_conv(block.conv3(mid), r3, p3, block.conv4, residual=mid)
    else:
        mid = dynamic_relu_conv(block.conv1(x), block.hyper1(tokens), block.conv2)
        out = dynamic_relu_conv(block.conv3(mid), block.hyper3(tokens), block.conv4, residual=mid)
    out = block.global_local(out, tokens)
    return (out + x if block.use_shortcut else out), tokens


# ----------------------------------------------------------------------------------------------- bridges
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


def prepare_local_to_global(block: nn.Module) -> None:
    """Fuse-time: ``q`` and ``alpha`` as one Linear (``block.q_alpha``) whose gate half gives
    ``2 * hard_sigmoid(z) = clamp(z / 3 + 1, 0, 2)``.

    For heads of at most ``_NARROW_HEAD`` channels the query half holds every head's masked, scaled queries
    (``heads * C`` outputs) for :func:`_attend_narrow_heads`.
    """
    h, C = block.num_heads, block.q.out_features
    with torch.no_grad():
        a = block.alpha[0]
        wq, bq = block.q.weight.double(), block.q.bias.double()
        if C // h <= _NARROW_HEAD:
            scale = _head_mask(h, 1, C, wq.device, torch.float64) * (C // h) ** -0.5   # (h, C)
            wq, bq = (wq[None] * scale[..., None]).flatten(0, 1), (bq[None] * scale).flatten()
        w = torch.cat([wq, a.weight.double() / 3.0])
        b = torch.cat([bq, a.bias.double() / 3.0 + 1.0])
    block.q_alpha = FrozenLinear(w.to(a.weight.dtype), b.to(a.weight.dtype))


def local_to_global(block: nn.Module, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """:class:`~.model.Local2Global` from the merged query / gate Linear; narrow heads as two matrix products."""
    channels = block.proj.in_features
    q, gate = block.q_alpha(tokens).split([block.q_alpha.weight.shape[0] - channels, channels], dim=-1)
    gate = F.hardtanh(gate, 0.0, 2.0)                                        # = 2 * hard_sigmoid(alpha(tokens))
    if q.shape[-1] == channels:
        q, kv = tokens_to_heads(q, block.num_heads), map_to_heads(x, block.num_heads)
        out = F.scaled_dot_product_attention(q, kv, kv).transpose(1, 2).flatten(2)
    else:
        out = _attend_narrow_heads(x, q, block.num_heads)
    return block.layer_norm(onednn.linear(block.proj, out * gate, residual=tokens))


def _attend_narrow_heads(x: torch.Tensor, queries: torch.Tensor, heads: int) -> torch.Tensor:
    """The Mobile->Former attention as two matrix products over the pixels of a channels-last map.

    A fused attention kernel does little work per key when heads are a few channels wide (6-12 at the
    stride-4/8 maps). Here every head's queries are one row block of a block-diagonal ``(heads * M, C)``
    matrix (``queries``, ``(B, M, heads * C)``, already scaled), so the logits of all heads are one product
    with the ``(C, HW)`` pixels, the softmax runs along the pixels, and one product with the ``(HW, C)``
    pixels gives every head's output over all channels; the diagonal blocks (head ``h``'s rows and channels)
    are the result ``(B, M, C)``.
    """
    (B, M, _), C = queries.shape, x.shape[1]
    rows = queries.view(B, M, heads, C).transpose(1, 2).reshape(B, heads * M, C)
    pixels = x.permute(0, 2, 3, 1).flatten(1, 2)                          # (B, HW, C), a view
    weights = torch.bmm(rows, pixels.transpose(1, 2)).softmax(dim=-1)    # (B, h*M, HW)
    out = torch.bmm(weights, pixels).view(B, heads, M, heads, C // heads)  # (B, h, M, h, C/h)
    return torch.diagonal(out, dim1=1, dim2=3).permute(0, 1, 3, 2).reshape(B, M, C)


def global_block(block: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """:class:`~.model.GlobalBlock` with the residual adds and the GELU inside the Linear kernels."""
    q = tokens_to_heads(block.q(tokens), block.num_heads)     # (B, h, M, d/h)
    kv = tokens_to_heads(tokens, block.num_heads)
    out = F.scaled_dot_product_attention(q, kv, kv).transpose(1, 2).flatten(2)  # (B, M, d)
    tokens = block.layer_norm(onednn.linear(block.channel_mlp, out, residual=tokens))
    if onednn.activation_name(block.ffn[1]) == "gelu":
        hidden = onednn.linear(block.ffn[0], tokens, act="gelu")
    else:
        hidden = block.ffn[1](block.ffn[0](tokens))
    return block.ffn_norm(onednn.linear(block.ffn[2], hidden, residual=tokens))


def prepare_global_to_local(block: nn.Module) -> None:
    """Fuse-time: one Linear (``block.keys_values``) giving every head's masked, scaled keys and masked values
    (``(2 * heads * C, d)``; rows ``(kind, head, channel)``) for :func:`global_to_local`."""
    h, C = block.num_heads, block.k.out_features
    with torch.no_grad():
        mask = _head_mask(h, 1, C, block.k.weight.device, torch.float64)   # (h, C)
        scales = torch.stack([mask * (C // h) ** -0.5, mask])              # (2, h, C)
        w = torch.stack([block.k.weight.double(), block.proj.weight.double()])[:, None] * scales[..., None]
        b = torch.stack([block.k.bias.double(), block.proj.bias.double()])[:, None] * scales
    dtype = block.k.weight.dtype
    block.keys_values = FrozenLinear(w.flatten(0, 2).to(dtype), b.flatten().to(dtype))


def global_to_local(block: nn.Module, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """:class:`~.model.Global2Local` as two matrix products over the pixels of a channels-last map.

    Each pixel attends to only ``M`` (3-6) tokens, which leaves a fused attention kernel with almost no work per
    query. Here the logits of all heads are one product of a block-diagonal ``(heads * M, C)`` key matrix (head
    ``h``'s keys meet only head ``h``'s channels, from ``block.keys_values``) with the ``(C, HW)`` pixel matrix,
    the softmax runs over each head's ``M`` rows (a non-last dim, so it vectorises over the pixels), and one
    product with the block-diagonal value matrix also adds the residual (``baddbmm``).
    """
    h, (B, M, _) = block.num_heads, tokens.shape
    kv = block.keys_values(tokens).view(B, M, 2, h, -1).permute(2, 0, 3, 1, 4).reshape(2, B, h * M, -1)
    keys, values = kv[0], kv[1]                                          # (B, h*M, C) each
    pixels = x.permute(0, 2, 3, 1).flatten(1, 2)                          # (B, HW, C), a view
    logits = torch.bmm(keys, pixels.transpose(1, 2))                      # (B, h*M, HW)
    weights = logits.unflatten(1, (h, -1)).softmax(dim=2).flatten(1, 2)   # softmax over each head's M
    out = torch.baddbmm(pixels, weights.transpose(1, 2), values)          # x + attention, (B, HW, C)
    return out.reshape_as(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


# ------------------------------------------------------------------------------------------- lite block
def prepare_lite_block(block: nn.Module) -> None:
    """Fuse-time: for a stride-1 depth-wise conv with a channel multiplier and a dense 1x1 (BNs folded, ReLU6
    between), one ``(depth-wise conv, 1x1 slice)`` pair per copy (``block.split``, see :func:`lite_block`);
    ``None`` where the split does not apply."""
    dw, act, shuffle, pw = block.conv[0], block.conv[2], block.conv[3], block.conv[4]
    mult = dw.out_channels // dw.in_channels
    block.split = None
    if not (tuple(dw.stride) == (1, 1) and mult > 1 and pw.groups == 1 and isinstance(shuffle, nn.Identity)
            and onednn.activation_name(act) == "relu6" and all(isinstance(block.conv[i], nn.Identity) for i in (1, 5))):
        return
    c = dw.in_channels
    block.split = nn.ModuleList(nn.ModuleList([
        conv_like(dw, dw.weight[j::mult], dw.bias[j::mult], out_channels=c, groups=c),
        conv_like(pw, pw.weight[:, j::mult], pw.bias if j == 0 else None, in_channels=c)]) for j in range(mult))


def lite_block(block: nn.Module, x: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:class:`~.model.LiteBlock`; with ``block.split``, copy ``j`` of every channel as its own depth-wise conv.

    Since the ReLU6 acts per channel and the 1x1 conv is linear, ``1x1(relu6(dw(x)))`` is the sum over ``j`` of
    ``1x1_j(relu6(dw_j(x)))``, where ``dw_j`` makes output ``c * e1 + j`` of input ``c``; the sum, and the
    shortcut, are added inside the 1x1 kernels.
    """
    split = block.split
    if split is None or not all(onednn.fusable(m, x) for pair in split for m in pair):
        out = block.conv(x)
        return (out + x if block.use_shortcut else out), tokens
    out = x if block.use_shortcut else None
    for dw, pw in split:
        y = onednn.conv(dw, x, "relu6")
        out = onednn.conv(pw, y) if out is None else onednn.conv(pw, y, residual=out)
    return out, tokens


# ------------------------------------------------------------------------------------ export formulations
# While ``torch.export`` captures a fused backbone (:func:`export_capture`), its blocks run the formulations
# below instead of the reference math: the same functions (float rounding only) in far fewer operators. The
# converters (litert-torch, ExecuTorch) lower every reshape / transpose / slice / small elementwise op
# of the reference code to an operator of its own, and on a handful of tokens the per-operator overhead is all
# the cost (Mobile-Former-52M at 320x320: 1304 LiteRT operators, 348 of them RESHAPE, 119 TRANSPOSE). Ideas:
#
# * per-head work on the ``M`` tokens as block-diagonal masked matrices: a head's queries (or keys) meet only its
#   own channels, so the logits of every head are one batched product with the pixels (or tokens) and a constant
#   0/1 (and scale) mask; the per-head outputs are one product back, masked, and summed over the heads with one
#   reduction. No per-head reshapes or transposes of the maps;
# * pixels as ``(B, H * W, C)`` from the channels-last view of the map, which the converters' NHWC layout makes
#   a plain reshape (the reference's ``(B, heads, HW, C / heads)`` needed two transposes of the whole map);
# * every dynamic-ReLU slope of a block from the block's :class:`FusedSlopes` (one MLP and one clamp);
# * a depth-wise conv with a channel multiplier (lite block, DnaBlock3) as one plain depth-wise conv per copy,
#   concatenated copy-major, with the slopes and the next 1x1 conv's weights in that channel order;
# * the Mobile->Former gate ``2 * hard_sigmoid(z)`` as ``relu6(z + 3)`` with the ``1 / 3`` in the projection;
# * LayerNorm's mean and variance as products with a ``(1, d)`` row of ``1 / d``: two small ``FULLY_CONNECTED``
#   operators instead of means and reshapes (a ``(d, d)`` centring matrix read 147 kB of weights per norm at
#   ``d = 192``: 33 of them cost Mobile-Former-294M ~2 % on LiteRT);
# * a Mobile->Former bridge on a large map sums its weighted pixels in 8 row blocks (:func:`_pixel_sums`).
#
# Every matrix product keeps its right operand untransposed (see :func:`_rows_t`), so that none becomes a
# ``FULLY_CONNECTED`` operator with run-time weights, which LiteRT's XNNPACK delegate does not take.
# The constants they use are non-persistent buffers made by :func:`prepare_export` at fuse time (they are not in
# the fused ``state_dict``; a model without them, e.g. fused by an older version, exports the reference math).
# A pnnx capture for NCNN takes part of them (:data:`NCNN_CAPTURE`: the copies and fused slopes, bridges of its own).
def _register_export(module: nn.Module, name: str, tensor: torch.Tensor) -> None:
    module.register_buffer(name, tensor.contiguous(), persistent=False)


def _heads_mask(heads: int, channels: int, scale: float = 1.0) -> torch.Tensor:
    """``(heads, channels)`` float64 mask: ``scale`` where the channel belongs to the head, else 0."""
    return _head_mask(heads, 1, channels, torch.device("cpu"), torch.float64) * scale


def _rows_mask(heads: int, tokens: int, channels: int, scale: float = 1.0) -> torch.Tensor:
    """``(heads * tokens, channels)`` mask of :func:`_head_mask` times ``scale``, float64."""
    return _head_mask(heads, tokens, channels, torch.device("cpu"), torch.float64) * scale


def _prepare_layer_norm(norm: nn.LayerNorm) -> None:
    """``norm.export_mean``: ``(1, d)`` rows of ``1 / d`` (the mean and the variance as matrix products; ``eps`` is
    the variance's bias, ``norm.export_eps``)."""
    d = norm.normalized_shape[-1]
    dtype, device = norm.weight.dtype if norm.weight is not None else torch.float32, _device(norm)
    _register_export(norm, "export_mean", torch.full((1, d), 1.0 / d, dtype=dtype, device=device))
    _register_export(norm, "export_eps", torch.full((1,), norm.eps, dtype=dtype, device=device))


def _device(module: nn.Module) -> torch.device:
    return next(iter([*module.parameters(), *module.buffers()]), torch.empty(0)).device


def layer_norm_export(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """``norm(x)`` over the last dim as ``c = x - x @ (1/d)``, ``c * rsqrt(c^2 @ (1/d) + eps)`` [``* w + b``]."""
    mean = getattr(norm, "export_mean", None)
    if mean is None or len(norm.normalized_shape) != 1:
        return norm(x)
    c = x - F.linear(x, mean)
    y = c * torch.rsqrt(F.linear(c * c, mean, norm.export_eps))
    if norm.weight is not None:
        y = y * norm.weight
    return y + norm.bias if norm.bias is not None else y


def _head_rows(x: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """``(B, M, C) -> (B, heads * M, C)``: row ``h * M + m`` is ``x[:, m] * masks[h]`` (``masks``: ``(heads, 1, C)``),
    one broadcast product (no concatenation: ExecuTorch's XNNPACK partitioner refuses one of a tensor with itself)."""
    B, M, C = x.shape  # views, not unsqueeze / flatten: ExecuTorch's partitioner takes those only as view_copy
    return (x.view(B, 1, M, C) * masks).view(B, -1, C)


def _sum_heads(rows: torch.Tensor, heads: int) -> torch.Tensor:
    """``(B, heads * M, C) -> (B, M, C)``: the sum of the heads' row blocks."""
    B, HM, C = rows.shape
    return rows.view(B, heads, HM // heads, C).sum(dim=1)


def _pixels(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W) -> (B, H * W, C)`` through the channels-last view (NHWC in the converters' layout)."""
    return x.permute(0, 2, 3, 1).flatten(1, 2)


def prepare_export(model: nn.Module, num_tokens: int) -> None:
    """Fuse-time: the constants of the export formulations for every bridge, Former, LayerNorm and channel
    multiplier of ``model`` (a Mobile-Former with ``num_tokens`` global tokens), as non-persistent buffers."""
    from .model import DnaBlock3, Global2Local, GlobalBlock, LiteBlock, Local2Global  # circular import

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                _prepare_layer_norm(m)
            elif isinstance(m, Local2Global):
                _prepare_local_to_global_export(m, num_tokens)
            elif isinstance(m, Global2Local):
                _prepare_global_to_local_export(m, num_tokens)
            elif isinstance(m, GlobalBlock):
                _prepare_global_block_export(m, num_tokens)
            elif isinstance(m, DnaBlock3):
                _prepare_dna_block3_export(m)
            elif isinstance(m, LiteBlock):
                _prepare_lite_block_export(m)


def _copy_major(channels: int, mult: int) -> torch.Tensor:
    """Channel ``c * mult + j`` of a depth-wise conv with multiplier ``mult`` at position ``j * channels + c``:
    ``order[new] = old``."""
    return torch.arange(channels * mult).view(channels, mult).T.reshape(-1)


# LiteRT's XNNPACK delegate takes a concatenation of at most 4 inputs (a larger one runs outside it and cuts
# the graph; litert-torch merges nested concatenations back into one), so the XNNPACK captures split at most 4.
_MAX_COPIES = 4


def _prepare_copies(dw: nn.Conv2d, pw: nn.Conv2d) -> torch.Tensor | None:
    """For a depth-wise conv with a channel multiplier whose output a dense 1x1 conv reads through per-channel
    operations (BNs folded): each copy's plain depth-wise weights (``dw.export_copy{j}_weight`` / ``_bias``) and
    the 1x1 weights in copy-major input order (``pw.export_copy_major_weight``). Returns the order, or None
    where it does not apply (no multiplier, grouped 1x1)."""
    mult = dw.out_channels // dw.in_channels
    if not (mult > 1 and dw.groups == dw.in_channels and dw.bias is not None and pw.bias is not None
            and pw.groups == 1 and pw.kernel_size == (1, 1)):
        return None
    for j in range(mult):
        _register_export(dw, f"export_copy{j}_weight", dw.weight[j::mult])
        _register_export(dw, f"export_copy{j}_bias", dw.bias[j::mult])
    order = _copy_major(dw.in_channels, mult)
    _register_export(pw, "export_copy_major_weight", pw.weight[:, order.to(pw.weight.device)])
    return order


def _only_convs(*seqs: nn.Sequential) -> bool:
    """Whether every entry after the first of each ``Sequential`` is an ``Identity`` (BN folded, no shuffle)."""
    return all(isinstance(m, nn.Identity) for seq in seqs for m in list(seq)[1:])


def _prepare_lite_block_export(block: nn.Module) -> None:
    """The lite block's depth-wise conv as copies (:func:`_prepare_copies`), without channel shuffle."""
    if all(isinstance(block.conv[i], nn.Identity) for i in (1, 3, 5)):
        _prepare_copies(block.conv[0], block.conv[4])


def _register_slope_rows(fused: FusedSlopes, prefix: str, orders: Sequence[torch.Tensor | None]) -> None:
    """``fused``'s rows with each function's channels in ``orders`` (None: unchanged) as ``<prefix>w2`` /
    ``b2`` / ``lo`` / ``hi``; nothing when every order is None."""
    if all(order is None for order in orders):
        return
    n, start, rows = sum(fused.sizes), 0, []
    for size, order in zip(fused.sizes, orders):
        rows.append(start + (torch.arange(size) if order is None else order))
        start += size
    rows = torch.cat(rows)
    rows = torch.cat([rows, rows + n]).to(fused.w2.device)  # the a1 rows, then the a2 rows
    for name in ("w2", "b2", "lo", "hi"):
        _register_export(fused, f"{prefix}{name}", getattr(fused, name)[rows])


def _prepare_dna_block3_export(block: nn.Module) -> None:
    """Both depth-wise convs of a :class:`~.model.DnaBlock3` as copies (:func:`_prepare_copies`), and the
    block's :class:`FusedSlopes` rows in the copy-major order of the XNNPACK captures (``export_w2`` / ``_b2`` /
    ``_lo`` / ``_hi``: convs of at most :data:`_MAX_COPIES` copies split) and, where it differs, of the NCNN
    capture (``export_ncnn_*``: every conv split)."""
    fused = block.fused_slopes
    if fused is None:
        return
    pairs = ((block.conv1, block.conv2), (block.conv3, block.conv4))
    orders = [_prepare_copies(dw[0], pw[0]) if _only_convs(dw, pw) else None for dw, pw in pairs]
    xnnpack = [order if has_copies(dw[0]) else None for order, (dw, _) in zip(orders, pairs)]
    _register_slope_rows(fused, "export_", xnnpack)
    if any(a is not b for a, b in zip(orders, xnnpack)):
        _register_slope_rows(fused, "export_ncnn_", orders)


def _prepare_local_to_global_export(block: nn.Module, M: int) -> None:
    """``export_alpha``: the gate Linear with ``+ 3`` in its bias (``2 * hard_sigmoid(z) = relu6(z + 3) / 3``);
    ``export_proj``: the projection with that ``1 / 3`` in its weight; ``export_rows_t`` ``(C, h, 1)``: head mask
    times scale (transposed, for :func:`_rows_t`), ``export_rows`` ``(h, 1, C)`` the same for :func:`_head_rows`;
    ``export_mask`` ``(h * M, C)``: 0/1."""
    h, C = block.num_heads, block.q.out_features
    a, like = block.alpha[0], block.q.weight
    _register_export(block, "export_alpha_bias", (a.bias.double() + 3.0).to(like))
    _register_export(block, "export_proj_weight", (block.proj.weight.double() / 3.0).to(like))
    _register_export(block, "export_rows_t", _heads_mask(h, C, (C // h) ** -0.5).T[:, :, None].to(like))
    _register_export(block, "export_rows", _heads_mask(h, C, (C // h) ** -0.5)[:, None].to(like))
    _register_export(block, "export_mask", _rows_mask(h, M, C).to(like))


def _rows_t(x: torch.Tensor, masks_t: torch.Tensor) -> torch.Tensor:
    """``(B, M, C) -> (B, C, heads * M)``: the block-diagonal matrix of :func:`_head_rows`, transposed
    (``masks_t``: ``(C, heads, 1)``). The transpose comes before the masking: converters (litert-torch) fold a
    transpose that feeds a matrix product into a ``FULLY_CONNECTED`` operator with run-time weights, which
    XNNPACK does not take (the graph would be cut into another delegate partition at each one)."""
    B, M, C = x.shape
    return (x.transpose(1, 2).view(B, C, 1, M) * masks_t).view(B, C, -1)


# A product reducing over at least this many pixels is split into row blocks (see _pixel_sums).
_SPLIT_MIN_PIXELS, _SPLIT_BLOCKS = 4096, 8


def _pixel_sums(weights: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """``weights @ pixels``: ``(B, R, HW) x (B, HW, C) -> (B, R, C)``; for ``HW >= 4096`` as the sum of 8 products
    over row blocks of the pixels, one batched product. XNNPACK splits a matrix product's work over output tiles
    only, and the ``R x C`` output (12 x 16-24 here) is one or two tiles: on LiteRT with 2 threads the product over a
    160x160 or 80x80 map ran 2-2.7x slower than the 8-block form, over 40x40 and smaller maps as fast."""
    B, R, HW = weights.shape
    k = _SPLIT_BLOCKS
    if HW < _SPLIT_MIN_PIXELS or HW % k:
        return torch.bmm(weights, pixels)
    blocks = weights.view(B, R, k, HW // k).transpose(1, 2).reshape(B * k, R, HW // k)
    return torch.bmm(blocks, pixels.reshape(B * k, HW // k, -1)).view(B, k, R, -1).sum(dim=1)


def local_to_global_export(block: nn.Module, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """:class:`~.model.Local2Global` in few operators (see the section comment): the logits of every head as one
    product of the pixels with the block-diagonal queries, a softmax over the pixels, one product back; the head
    blocks summed, gated and projected."""
    pixels = _pixels(x)                                                            # (B, HW, C)
    logits = torch.bmm(pixels, _rows_t(block.q(tokens), block.export_rows_t))      # (B, HW, hM)
    return _attended_tokens(block, tokens, logits.transpose(1, 2).softmax(dim=-1), pixels)


def _attended_tokens(block: nn.Module, tokens: torch.Tensor, weights: torch.Tensor, pixels: torch.Tensor
                     ) -> torch.Tensor:
    """The Mobile->Former result from its attention ``weights`` ``(B, heads * M, HW)`` over the ``(B, HW, C)``
    ``pixels``: the weighted pixels, the head blocks summed, gated, projected, added to ``tokens`` and normed."""
    out = _sum_heads(_pixel_sums(weights, pixels) * block.export_mask, block.num_heads)  # (B, M, C)
    gate = F.relu6(F.linear(tokens, block.alpha[0].weight, block.export_alpha_bias))  # 3 * (2 * hard_sigmoid)
    out = F.linear(out * gate, block.export_proj_weight, block.proj.bias)
    return layer_norm_export(block.layer_norm, tokens + out)


def _prepare_global_block_export(block: nn.Module, M: int) -> None:
    """``export_rows_t`` ``(d, h, 1)``: the Former's head mask times the attention scale (transposed);
    ``export_mask`` ``(h * M, d)``: 0/1."""
    h, d = block.num_heads, block.q.out_features
    _register_export(block, "export_rows_t", _heads_mask(h, d, (d // h) ** -0.5).T[:, :, None].to(block.q.weight))
    _register_export(block, "export_mask", _rows_mask(h, M, d).to(block.q.weight))


def global_block_export(block: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """:class:`~.model.GlobalBlock` with the per-head attention among the tokens as block-diagonal products."""
    h = block.num_heads
    logits = torch.bmm(tokens, _rows_t(block.q(tokens), block.export_rows_t))     # (B, M, hM): key x query
    weights = logits.transpose(1, 2).softmax(dim=-1)                              # (B, hM, M)
    out = _sum_heads(torch.bmm(weights, tokens) * block.export_mask, h)           # (B, M, d)
    tokens = layer_norm_export(block.layer_norm, tokens + block.channel_mlp(out))
    return layer_norm_export(block.ffn_norm, tokens + block.ffn(tokens))


def _prepare_global_to_local_export(block: nn.Module, M: int) -> None:
    """``export_keys`` ``(h, 1, C)``: head mask times scale; ``export_values`` ``(h, 1, C)``: head mask (for
    :func:`_head_rows`)."""
    h, C = block.num_heads, block.k.out_features
    _register_export(block, "export_keys", _heads_mask(h, C, (C // h) ** -0.5)[:, None].to(block.k.weight))
    _register_export(block, "export_values", _heads_mask(h, C)[:, None].to(block.k.weight))


def global_to_local_export(block: nn.Module, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """:class:`~.model.Global2Local` with block-diagonal keys and values: logits of all heads in one product with
    the ``(C, HW)`` pixels, a softmax over each head's ``M`` tokens, and one product (plus the residual) back to
    the ``(HW, C)`` pixels.

    The logits are laid out ``(heads, M, HW)``, so the softmax runs along a non-last dim of long rows, spelled as
    a max, exp, sum and division that vectorise over the pixels (ExecuTorch's XNNPACK partitioner takes those, not
    a softmax over a non-last dim): a softmax over the last
    dim of ``(HW, heads, M)`` runs XNNPACK's softmax on ``HW * heads`` rows of ``M`` = 3-6 values, ~0.4 ms for an
    80x80 map, 5x the whole rest of the bridge. Reading the map in NCHW order costs the converters one transpose
    of it; the result is written back channels-last (an NCHW result would make the next bridge's product read a
    transposed map, which litert-torch turns into a ``FULLY_CONNECTED`` with run-time weights).
    """
    B, C, H, W = x.shape
    weights, values = _token_weights(block, x, tokens)
    out = _pixels(x) + torch.bmm(weights.transpose(1, 2), values)                 # (B, HW, C)
    return out.view(B, H, W, C).permute(0, 3, 1, 2)


def _token_weights(block: nn.Module, x: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The Former->Mobile attention weights ``(B, heads * M, HW)`` (softmax over each head's tokens) and the
    block-diagonal values ``(B, heads * M, C)``."""
    h = block.num_heads
    (B, M, _), (H, W) = tokens.shape, x.shape[2:]
    keys = _head_rows(block.k(tokens), block.export_keys)                          # (B, hM, C)
    logits = torch.bmm(keys, x.flatten(2)).view(B, h, M, H * W)                    # (B, h, M, HW)
    e = torch.exp(logits - torch.max(logits, dim=2, keepdim=True).values)         # softmax over the M tokens
    weights = (e / e.sum(dim=2, keepdim=True)).view(B, h * M, H * W)
    return weights, _head_rows(block.proj(tokens), block.export_values)


# ExecuTorch's XNNPACK delegate keeps maps channels-last and runs every permute and every NCHW view of one as a
# transpose: _pixels (a free view on LiteRT) costs it two, and the Former->Mobile bridge above five per block.
# These bridges read the map once as (C, HW) and write the Former->Mobile result in NCHW (one transpose back).
# Mobile-Former-294M detector at 320x320: 205 -> 156 transposes, ~5 % faster on ExecuTorch. On LiteRT their
# products with a transposed operand would leave XNNPACK (see _rows_t).


def local_to_global_nchw(block: nn.Module, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """:func:`local_to_global_export` with the logits of all heads as ``(heads * M, HW)`` from the NCHW pixels."""
    pixels = x.flatten(2)                                                           # (B, C, HW)
    weights = torch.bmm(_head_rows(block.q(tokens), block.export_rows), pixels).softmax(dim=-1)  # (B, hM, HW)
    return _attended_tokens(block, tokens, weights, pixels.transpose(1, 2))


def global_to_local_nchw(block: nn.Module, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """:func:`global_to_local_export` with the result as ``(C, HW)``: the values' transpose times the weights."""
    weights, values = _token_weights(block, x, tokens)
    return x + torch.bmm(values.transpose(1, 2), weights).view(x.shape)


def slopes_export(fused: FusedSlopes, tokens: torch.Tensor, rows: Sequence[str] = ("export_",)
                  ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every dynamic-ReLU slope pair ``(a1, a2)`` of a block, ``(B, C_i, 1, 1)`` each, from its :class:`FusedSlopes`
    (one MLP and one clamp for the block instead of one hyper-function and its arithmetic per activation), its rows
    from the first buffer prefix of ``rows`` that ``fused`` has (the channel order of the capture's convs, see
    :func:`_prepare_dna_block3_export`), else in their own order."""
    hidden = F.relu(F.linear(tokens[:, fused.token_id], fused.w1, fused.b1))
    prefix = next((p for p in rows if hasattr(fused, f"{p}w2")), "")
    w2, b2, lo, hi = (getattr(fused, f"{prefix}{n}") for n in ("w2", "b2", "lo", "hi"))
    # clamp to the per-row [lo, hi] as maximum / minimum: pnnx cannot convert a clamp with tensor bounds
    s = torch.minimum(torch.maximum(F.linear(hidden, w2, b2), lo), hi)  # (B, 2N): a1 | a2
    s = s[:, :, None, None]
    n = s.shape[1] // 2
    out, start = [], 0
    for c in fused.sizes:
        out.append((s[:, start:start + c], s[:, n + start:n + start + c]))
        start += c
    return out


def export_capture() -> bool:
    """Whether the XNNPACK export formulations run: while ``torch.export`` captures the model (litert-torch,
    ExecuTorch)."""
    return torch.compiler.is_exporting()


class Formulation(NamedTuple):
    """The formulation a graph capture of a fused block takes: its bridges and Former (functions of the module
    and its inputs), the most copies a depth-wise conv with a channel multiplier is split into (None: any) and the
    buffer prefixes of the matching slope rows (:func:`slopes_export`)."""
    local_to_global: Callable[..., torch.Tensor]
    global_block: Callable[..., torch.Tensor]
    global_to_local: Callable[..., torch.Tensor]
    max_copies: int | None
    slope_rows: tuple[str, ...]


def _reference_former(block: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    return block(tokens)


# torch.export for LiteRT (litert-torch): everything above, for XNNPACK; ExecuTorch swaps in the NCHW bridges.
XNNPACK_CAPTURE = Formulation(local_to_global_export, global_block_export, global_to_local_export, _MAX_COPIES,
                              ("export_",))
# ExecuTorch: the same with the NCHW bridges.
EXECUTORCH_CAPTURE = XNNPACK_CAPTURE._replace(local_to_global=local_to_global_nchw,
                                              global_to_local=global_to_local_nchw)
# pnnx (NCNN): ncnn has LayerNorm and attention layers of its own and ran the XNNPACK formulation 2x slower; it
# takes the copies (all of them), the fused slopes and permute-free bridges (:mod:`.ncnn_bridges`). Mobile-Former-
# 294M detector at 320x320: 36 -> 28 ms (docs/deployment.md).
NCNN_CAPTURE = Formulation(local_to_global_ncnn, _reference_former, global_to_local_ncnn, None,
                           ("export_ncnn_", "export_"))


def capture_formulation() -> Formulation | None:
    """The formulation of the graph capture running now: :data:`XNNPACK_CAPTURE` under ``torch.export``
    (:data:`EXECUTORCH_CAPTURE` for ExecuTorch, ``capture_target() == "executorch"``), :data:`NCNN_CAPTURE` in a
    TorchScript trace for NCNN (``capture_target() == "ncnn"``), else None (the reference math: eager, ONNX, Core
    ML)."""
    if export_capture():
        return EXECUTORCH_CAPTURE if capture_target() == "executorch" else XNNPACK_CAPTURE
    if torch.jit.is_tracing() and capture_target() == "ncnn":
        return NCNN_CAPTURE
    return None


def block_formulation(block: nn.Module) -> Formulation | None:
    """:func:`capture_formulation` for a fused block with tokens (its slopes fused at fuse time and the export
    constants made by :func:`prepare_export`), else None."""
    form = capture_formulation()
    if form is None or getattr(block, "fused_slopes", None) is None or not hasattr(block.local_global,
                                                                                   "export_rows_t"):
        return None
    return form


def lite_block_export(block: nn.Module, x: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:class:`~.model.LiteBlock` in its export formulation (the depth-wise conv as copies, :func:`_copies`); only
    for a block :func:`prepare_export` made copies for (:func:`has_copies` of ``block.conv[0]``)."""
    dw, act, pw = block.conv[0], block.conv[2], block.conv[4]
    out = F.conv2d(_copies(dw, x, act), pw.export_copy_major_weight, pw.bias)
    return (out + x if block.use_shortcut else out), tokens


def _former_export(block: nn.Module, x: torch.Tensor, tokens: torch.Tensor, form: Formulation
                   ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
    """The token half of a block in ``form`` and the block's dynamic-ReLU slopes."""
    tokens = form.global_block(block.global_block, form.local_to_global(block.local_global, x, tokens))
    return tokens, slopes_export(block.fused_slopes, tokens, form.slope_rows)


def dna_block_export(block: nn.Module, x: torch.Tensor, tokens: torch.Tensor,
                     form: Formulation = XNNPACK_CAPTURE) -> tuple[torch.Tensor, torch.Tensor]:
    """:class:`~.model.DnaBlock` in the export formulation ``form``."""
    tokens, ((a1, a2), (b1, b2)) = _former_export(block, x, tokens, form)
    y = block.conv1(x)
    y = block.conv2(torch.maximum(y * a1, y * a2))
    out = block.conv3(torch.maximum(y * b1, y * b2))
    if block.use_shortcut:
        out = out + x
    return form.global_to_local(block.global_local, out, tokens), tokens


def _copies(dw: nn.Conv2d, x: torch.Tensor, act: nn.Module | None = None) -> torch.Tensor:
    """``act(dw(x))`` with its output channels in copy-major order (see :func:`_prepare_copies`): one plain depth-wise
    conv per copy (``act`` on each, where the converters fuse it into the conv), concatenated. XNNPACK runs a
    depth-wise conv with a channel multiplier as a grouped convolution, 2-3x slower than plain depth-wise convs of
    the same work."""
    copies = [F.conv2d(x, getattr(dw, f"export_copy{j}_weight"), getattr(dw, f"export_copy{j}_bias"), dw.stride,
                       dw.padding, dw.dilation, dw.in_channels) for j in range(dw.out_channels // dw.in_channels)]
    return torch.cat(copies if act is None else [act(c) for c in copies], dim=1)


def has_copies(dw: nn.Conv2d, max_copies: int | None = _MAX_COPIES) -> bool:
    """Whether :func:`prepare_export` split the depth-wise conv ``dw`` into copies (:func:`_prepare_copies`) and a
    capture splitting at most ``max_copies`` (None: any) takes them."""
    return hasattr(dw, "export_copy0_weight") and (max_copies is None
                                                   or dw.out_channels // dw.in_channels <= max_copies)


def _dw_pw_copies(dw_seq: nn.Sequential, pw_seq: nn.Sequential, x: torch.Tensor,
                  between: Callable[[torch.Tensor], torch.Tensor], max_copies: int | None) -> torch.Tensor:
    """``pw_seq(between(dw_seq(x)))``, the depth-wise conv as :func:`_copies` (and the 1x1 weights in their
    channel order) where :func:`has_copies`; ``between`` acts per channel in that order."""
    dw = dw_seq[0]
    if not has_copies(dw, max_copies):
        return pw_seq(between(dw_seq(x)))
    pw = pw_seq[0]
    return F.conv2d(between(_copies(dw, x)), pw.export_copy_major_weight, pw.bias)


def dna_block3_export(block: nn.Module, x: torch.Tensor, tokens: torch.Tensor,
                      form: Formulation = XNNPACK_CAPTURE) -> tuple[torch.Tensor, torch.Tensor]:
    """:class:`~.model.DnaBlock3` in the export formulation ``form`` (depth-wise convs with multipliers as
    copies)."""
    tokens, ((a1, a2), (b1, b2)) = _former_export(block, x, tokens, form)
    mid = _dw_pw_copies(block.conv1, block.conv2, x, lambda y: torch.maximum(y * a1, y * a2), form.max_copies)
    out = _dw_pw_copies(block.conv3, block.conv4, mid, lambda y: torch.maximum(y * b1, y * b2), form.max_copies)
    out = form.global_to_local(block.global_local, mid + out, tokens)
    return (out + x if block.use_shortcut else out), tokens
