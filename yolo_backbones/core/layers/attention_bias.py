"""Attention with a learned per-head bias indexed by the token offset, resizable to any token grid."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..inference.context import is_tracing


class OffsetBiasAttention(nn.Module):
    """Base class of attention layers with a learned per-head bias indexed by the token offset ``(|dy|, |dx|)``.

    LeViT-style attention (EfficientFormer v1 and v2) keeps the parameter ``attention_biases`` of
    shape ``(num_heads, R * R)``: entry ``dy * R + dx`` is the bias between a query and a key that are
    ``dy`` rows and ``dx`` columns apart on the ``R x R`` key grid of the training resolution (``R = 7``
    at 224x224, 14 for the EfficientFormerV2 downsampling attention). The reference code gathers it with
    a fixed ``(Nq, Nk)`` index buffer, so it only runs at that one resolution.

    Here the bias is derived for the runtime grids instead:

    1. the ``(R, R)`` offset table is resized bicubically to the runtime key grid ``(Hk, Wk)`` with
       ``align_corners=True``, so offset 0 and the largest offset keep their trained values and a
       non-square grid gets its own row/column scale. The resize is skipped when ``(Hk, Wk) == (R, R)``,
       which makes the bias at the native grid bit-identical to the reference one;
    2. it is gathered with ``|s * qy - ky| * Wk + |s * qx - kx|``, where ``s`` is the query stride on the
       key grid (1 for self-attention, 2 when the queries are a stride-2 subsample of the keys; the
       query grid is then ``ceil(Hk / 2) x ceil(Wk / 2)``, so the largest offset is ``Hk - 1`` / ``Wk - 1``).

    Caching: the gathered bias is cached per ``(grids, device, dtype)`` only when it cannot carry a
    gradient (eval mode with autograd disabled, e.g. YOLOv5 validation / detection); in training, with
    autograd enabled, or while tracing/compiling it is recomputed on every call (cheap: one small
    resize and one gather). Each entry also records the parameter's version counter and storage, and
    the cache is cleared by ``train()``/``eval()``, ``_apply`` (``.to()``, ``.half()``, ``.cuda()``) and
    ``_load_from_state_dict``, so new weights or dtypes are never served from a stale entry. Caches are
    dropped when pickling/deep-copying (they hold only plain tensors without autograd history).

    Tracing (``torch.jit.trace``, the ``dynamo=False`` ONNX exporter used by YOLOv5's export.py): the
    grid sizes stay traced tensors (no ``int()``) and the resize is always recorded (an identity at the
    native grid), so an ONNX graph exported with dynamic axes derives the bias from each input's grid.

    Checkpoints of the reference implementation (and timm's v1) also hold the persistent
    ``attention_bias_idxs`` buffer: it is accepted on loading, checked against the reference geometry
    and dropped (this module derives its indices, so its own state_dict has no such key).

    Args:
        num_heads: attention heads (rows of the table).
        resolution: ``R``, the side of the native key grid the table was trained on.
        key_dim: width of each head's queries and keys (``scale = key_dim ** -0.5``).
        attn_ratio: each head's value width over ``key_dim`` (``val_dim``; all heads: ``val_attn_dim``).
        query_stride: ``s``, stride of the query grid on the key grid (1 or 2).
    """

    def __init__(self, num_heads: int, resolution: int, key_dim: int, attn_ratio: int, query_stride: int = 1
                 ) -> None:
        super().__init__()
        self.key_dim = key_dim
        self.scale = key_dim ** -0.5
        self.val_dim = int(attn_ratio * key_dim)
        self.val_attn_dim = self.val_dim * num_heads
        self.num_heads = int(num_heads)
        self.resolution = int(resolution)
        self.query_stride = int(query_stride)
        self.attention_biases = nn.Parameter(torch.zeros(self.num_heads, self.resolution * self.resolution))
        self._bias_cache: dict[tuple, tuple[tuple[int, int], torch.Tensor]] = {}
        self._index_cache: dict[tuple, torch.Tensor] = {}

    # -------------------------------------------------------------------------- bias geometry
    def bias_index(self, q_hw: tuple[int, int], k_hw: tuple[int, int],
                   device: torch.device | str | None = None) -> torch.Tensor:
        """Flat offset index ``(Hq * Wq, Hk * Wk)`` into an ``(Hk, Wk)`` offset table, rows = queries, cols = keys."""
        # The sizes may also be 0-d tensors (traced sizes, see :meth:`attention_bias`): only tensor ops use them.
        (qh, qw), (kh, kw), s = q_hw, k_hw, self.query_stride
        dy = (torch.arange(qh, device=device)[:, None] * s - torch.arange(kh, device=device)[None, :]).abs()
        dx = (torch.arange(qw, device=device)[:, None] * s - torch.arange(kw, device=device)[None, :]).abs()
        return (dy[:, None, :, None] * kw + dx[None, :, None, :]).flatten(2).flatten(0, 1)  # (Nq, Nk)

    def native_grids(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """Query and key grids ``((Hq, Wq), (Hk, Wk))`` of the resolution the table was trained on."""
        r, s = self.resolution, self.query_stride
        q = -(-r // s)  # ceil: a stride-s subsample of an r-long axis
        return (q, q), (r, r)

    def official_bias_idxs(self) -> torch.Tensor:
        """The reference ``attention_bias_idxs`` buffer ``(Nq, Nk)`` at the native grid (long, CPU)."""
        return self.bias_index(*self.native_grids())

    def _compute_bias(self, q_hw: tuple[int, int], k_hw: tuple[int, int], dtype: torch.dtype,
                      index: torch.Tensor, always_resize: bool = False) -> torch.Tensor:
        table = self.attention_biases.view(self.num_heads, self.resolution, self.resolution)
        if always_resize or tuple(k_hw) != (self.resolution, self.resolution):
            # float32: bicubic resizing is not implemented for fp16 on every device, and it is tiny.
            # [0], not squeeze(0): the ONNX exporter writes a squeeze of a traced size as an If node, which
            # OpenVINO keeps and NNCF's INT8 quantization cannot enter.
            table = F.interpolate(table.unsqueeze(0).float(), size=tuple(k_hw), mode="bicubic",
                                  align_corners=True)[0]
        return table.flatten(1)[:, index].to(dtype)

    def attention_bias(self, q_hw: tuple[int, int], k_hw: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
        """Bias ``(num_heads, Hq * Wq, Hk * Wk)`` in ``dtype`` for a query grid ``q_hw`` and key grid ``k_hw``."""
        static = self.__dict__.get(_STATIC_BIASES)
        if static is not None:  # a static-shape export: the bias is a constant of the graph (see static_biases)
            return static.serve(self, q_hw, k_hw, dtype)
        device = self.attention_biases.device
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            # TorchScript tracing (torch.jit.trace, the dynamo=False ONNX exporter): the sizes are traced
            # 0-d tensors. Keep them symbolic (no int(), no cache) and always record the resize (an
            # identity at the native grid), so the graph derives the bias from the runtime grid and an
            # export with dynamic axes is correct at every input size.
            return self._compute_bias(q_hw, k_hw, dtype, self.bias_index(q_hw, k_hw, device), always_resize=True)
        q_hw, k_hw = (int(q_hw[0]), int(q_hw[1])), (int(k_hw[0]), int(k_hw[1]))
        if torch.jit.is_scripting() or torch.compiler.is_compiling():
            # Record the computation from the parameter in the graph (no Python-side caches).
            return self._compute_bias(q_hw, k_hw, dtype, self.bias_index(q_hw, k_hw, device))
        index_key = (q_hw, k_hw, device)
        index = self._index_cache.get(index_key)
        if index is None:
            index = self._index_cache[index_key] = self.bias_index(q_hw, k_hw, device)
        p = self.attention_biases
        if self.training or (torch.is_grad_enabled() and p.requires_grad):
            return self._compute_bias(q_hw, k_hw, dtype, index)  # fresh, so gradients reach the table
        # Inference-mode tensors (weights loaded under torch.inference_mode()) have no version counter.
        key, stamp = (q_hw, k_hw, device, dtype), (-1 if p.is_inference() else p._version, p.data_ptr())
        hit = self._bias_cache.get(key)
        if hit is None or hit[0] != stamp:
            with torch.no_grad():
                hit = self._bias_cache[key] = (stamp, self._compute_bias(q_hw, k_hw, dtype, index))
        return hit[1]

    # ------------------------------------------------------------------------- cache hygiene
    def clear_bias_cache(self) -> None:
        """Forget all cached biases and indices."""
        self._bias_cache.clear()
        self._index_cache.clear()

    def train(self, mode: bool = True) -> OffsetBiasAttention:
        """Set training mode like ``nn.Module.train`` (returns ``self``) and clear the bias caches."""
        self.clear_bias_cache()
        return super().train(mode)

    def _apply(self, *args, **kwargs):  # .to(), .half(), .cuda(), ...: device/dtype change
        self.clear_bias_cache()
        return super()._apply(*args, **kwargs)

    def __getstate__(self) -> dict:
        # Pickling / deepcopy (YOLOv5 EMA and checkpoints): caches are derived data, start empty.
        state = self.__dict__.copy()
        state["_bias_cache"], state["_index_cache"] = {}, {}
        return state

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        self.clear_bias_cache()
        idxs = state_dict.pop(prefix + "attention_bias_idxs", None)
        if idxs is not None and not self.check_official_idxs(idxs):
            error_msgs.append(f"{prefix}attention_bias_idxs {tuple(idxs.shape)} does not match the offset geometry of "
                              f"this layer (expected the reference index of a {self.native_grids()[1]} key grid)")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def check_official_idxs(self, idxs: torch.Tensor) -> bool:
        """True if ``idxs`` equals the reference ``attention_bias_idxs`` buffer of this layer."""
        ref = self.official_bias_idxs()
        return tuple(idxs.shape) == tuple(ref.shape) and bool(torch.equal(idxs.detach().cpu().long(), ref))


_STATIC_BIASES = "_yolo_backbones_static_biases"


class _StaticBiases:
    """Biases recorded by one eager forward, served as constants while the same model is captured for export."""

    def __init__(self) -> None:
        self.recording = True
        self.biases: dict[tuple, torch.Tensor] = {}

    def serve(self, layer: OffsetBiasAttention, q_hw, k_hw, dtype: torch.dtype) -> torch.Tensor:
        key = ((int(q_hw[0]), int(q_hw[1])), (int(k_hw[0]), int(k_hw[1])), dtype)
        bias = self.biases.get(key)
        if bias is None:
            if not self.recording:
                raise RuntimeError(f"{type(layer).__name__}: no static attention bias for grids {key[:2]} (the "
                                   "export input has another size than the example the biases were recorded with)")
            table_hw = key[1]
            index = layer.bias_index(key[0], table_hw, layer.attention_biases.device)
            with torch.no_grad():
                bias = self.biases[key] = layer._compute_bias(key[0], table_hw, dtype, index)
        return bias


@contextlib.contextmanager
def static_biases(model: nn.Module, *example: torch.Tensor) -> Iterator[nn.Module]:
    """Within the context, every :class:`OffsetBiasAttention` of ``model`` serves its bias as a constant.

    For exports with static shapes (LiteRT, Core ML, NCNN, ExecuTorch): one eager forward of ``example``
    records the bias of each layer for the grids of that input size (the same computation as
    :meth:`OffsetBiasAttention.attention_bias`), and a graph captured within the context holds those tensors
    instead of the resize and gather (which Core ML and NCNN cannot all take). Yields ``model``. A capture at
    another input size raises RuntimeError.
    """
    layers = [m for m in model.modules() if isinstance(m, OffsetBiasAttention)]
    for layer in layers:
        layer.__dict__[_STATIC_BIASES] = _StaticBiases()
    # The recording forward must run these layers, not an eval-fusion copy of their backbone.
    fusing = {m: m.eval_fusion for m in model.modules() if isinstance(getattr(m, "eval_fusion", None), bool)}
    try:
        if layers:
            for m in fusing:
                m.eval_fusion = False
            with torch.no_grad():
                model(*example)
        for layer in layers:
            layer.__dict__[_STATIC_BIASES].recording = False
        yield model
    finally:
        for m, enabled in fusing.items():
            m.eval_fusion = enabled
        for layer in layers:
            layer.__dict__.pop(_STATIC_BIASES, None)


def biased_scores(q: torch.Tensor, k: torch.Tensor, bias: torch.Tensor, scale: float) -> torch.Tensor:
    """Attention logits ``scale * q @ k^T + bias``.

    Args:
        q: ``(B, heads, Nq, d)``; k: ``(B, heads, Nk, d)`` (any strides, e.g. views of channels-last maps).
        bias: ``(heads, Nq, Nk)``, broadcast over the batch.
        scale: softmax scale.

    Returns:
        ``(B, heads, Nq, Nk)``. The scale and the bias are applied in place to the fresh product (no extra
        buffers; autograd needs none of them).
    """
    return torch.matmul(q, k.transpose(-1, -2)).mul_(scale).add_(bias)


def mix_heads(attn: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """A ``1x1`` conv across the head axis of ``(B, heads, Nq, Nk)`` attention maps ("talking heads").

    Computed as one ``heads x heads`` matrix product over the flattened maps (the same function as
    ``conv(attn)``, without treating the ``Nq x Nk`` map as an image: no layout conversions). Exported graphs
    record the conv itself, as the paper's code writes it: quantizers and converters expect a weighted op's output
    channels where a conv or ``x @ W`` puts them, not in a ``W @ x`` product (NNCF's bias correction failed on it).
    Returns ``(B, heads, Nq, Nk)``.
    """
    if is_tracing():
        return conv(attn)
    h = attn.shape[1]
    out = torch.matmul(conv.weight.reshape(h, h), attn.flatten(2))  # (B, heads, Nq * Nk)
    # view(shape), not view_as: pnnx cannot convert view_as
    return (out if conv.bias is None else out + conv.bias[:, None]).view(attn.shape)


def softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor,
                      scale: float) -> torch.Tensor:
    """``softmax(scale * q @ k^T + bias) @ v``: ``(B, h, Nq, dk)``, ``(B, h, Nk, dk)``, ``(B, h, Nk, dv)``,
    bias ``(h, Nq, Nk)`` -> ``(B, h, Nq, dv)``.

    Written out because the value dim differs from the key dim here, which PyTorch's fused CPU attention
    kernel does not take: ``scaled_dot_product_attention`` then falls back to its reference path, which
    also makes extra passes over the attention matrix (masking of fully masked rows).
    """
    return torch.matmul(biased_scores(q, k, bias, scale).softmax(dim=-1), v)
