"""Building blocks shared by several backbones.

Every block here is used by more than one backbone file; a block used by one backbone only
lives in that backbone's file. Norm layers subclass the ``torch.nn`` norms on purpose: YOLOv5's
``smart_optimizer`` exempts ``nn.*Norm*`` weights from weight decay by ``isinstance``.
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel dimension of a ``(B, C, H, W)`` tensor; returns ``(B, C, H, W)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Mlp(nn.Module):
    """Token MLP ``Linear -> act -> Linear`` on ``(B, N, C)``; returns ``(B, N, out_features)``."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int | None = None,
                 act_layer: type[nn.Module] = nn.GELU, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, out_features or in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class ConvMlp(nn.Module):
    """Channel MLP with 1x1 convolutions on ``(B, C, H, W)``; returns ``(B, out_features, H, W)``."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int | None = None,
                 act_layer: type[nn.Module] = nn.GELU, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(in_features, hidden_features, 1)
        self.act = act_layer()
        self.fc2 = nn.Conv2d(hidden_features, out_features or in_features, 1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class DropPath(nn.Module):
    """Stochastic depth: zeroes whole samples of a residual branch in training; identity in eval."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


# ------------------------------------------------------------------ EfficientFormer v1 and v2


class SafeBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` that also accepts a training batch holding one value per channel.

    ``nn.BatchNorm2d`` raises in training mode when ``B * H * W == 1``: batch statistics of a single
    value are undefined. YOLOv5 measures FLOPs with a batch-1 ``stride x stride`` (32x32) input while
    the model is in training mode, which leaves a 1x1 map at stride 32. For exactly that case this
    layer normalises with its running statistics and leaves them untouched (eval-mode behaviour);
    any other input is handled exactly like ``nn.BatchNorm2d``. State-dict keys are unchanged.

    Being a subclass, YOLOv5's optimizer grouping (``isinstance`` on ``nn.*Norm*``) still exempts its
    weight from decay, while ``initialize_weights`` (``type(m) is nn.BatchNorm2d``) leaves its eps and
    momentum at the pretrained values.

    Takes and returns ``(B, C, H, W)``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.running_mean is not None and x.numel() == x.shape[1]:  # B * H * W == 1
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


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
        query_stride: ``s``, stride of the query grid on the key grid (1 or 2).
    """

    def __init__(self, num_heads: int, resolution: int, query_stride: int = 1) -> None:
        super().__init__()
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
            table = F.interpolate(table.unsqueeze(0).float(), size=tuple(k_hw), mode="bicubic",
                                  align_corners=True).squeeze(0)
        return table.flatten(1)[:, index].to(dtype)

    def attention_bias(self, q_hw: tuple[int, int], k_hw: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
        """Bias ``(num_heads, Hq * Wq, Hk * Wk)`` in ``dtype`` for a query grid ``q_hw`` and key grid ``k_hw``."""
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

    def train(self, mode: bool = True) -> "OffsetBiasAttention":
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


def conv3x3_s2_bn(in_chans: int, out_chans: int) -> tuple[nn.Conv2d, SafeBatchNorm2d]:
    """The ``conv3x3 s2 (bias)`` and BN of an EfficientFormer stride-2 downsampling, as a pair.

    Maps ``(B, in_chans, H, W)`` to ``(B, out_chans, ceil(H / 2), ceil(W / 2))`` when applied in order.
    The caller registers them under its own (official) key names.
    """
    return nn.Conv2d(in_chans, out_chans, kernel_size=3, stride=2, padding=1), SafeBatchNorm2d(out_chans)


def conv_bn_stem(in_chans: int, out_chans: int, act_layer: type[nn.Module]) -> nn.Sequential:
    """Stride-4 stem: ``[conv3x3 s2 -> BN -> act] x 2`` (the first conv has ``out_chans // 2`` channels).

    Returns an ``nn.Sequential`` whose indices (convs 0 / 3, norms 1 / 4) give the EfficientFormer
    state-dict keys ``patch_embed.{0,1,3,4}``. Maps ``(B, in_chans, H, W)`` to
    ``(B, out_chans, ceil(H / 4), ceil(W / 4))``.

    ``act_layer`` may be set in place by YOLOv5 (``nn.ReLU``): it only ever sees a BatchNorm output that
    nothing else reads, so that is safe.
    """
    return nn.Sequential(*conv3x3_s2_bn(in_chans, out_chans // 2), act_layer(),
                         *conv3x3_s2_bn(out_chans // 2, out_chans), act_layer())


class ConvBnMlp(nn.Module):
    """Channel MLP ``1x1 conv -> BN -> GELU [-> dw3x3 -> BN -> GELU] -> 1x1 conv -> BN`` on ``(B, C, H, W)``.

    The MLP of the EfficientFormer Meta4D block (v1) and, with ``mid_conv=True``, the inverted-residual
    MLP of the EfficientFormerV2 blocks (a depth-wise 3x3 conv on the hidden map).

    Args:
        in_features: input (and output) channels.
        hidden_features: hidden channels.
        drop: dropout on the hidden map (before the last conv) and at the end.
        mid_conv: add the depth-wise 3x3 conv + BN + GELU on the hidden map (keys ``mid``, ``mid_norm``).

    Returns ``(B, in_features, H, W)``.
    """

    def __init__(self, in_features: int, hidden_features: int, drop: float = 0.0, mid_conv: bool = False) -> None:
        super().__init__()
        # Registration order (fc1, fc2, [mid, mid_norm,] norm1, norm2) follows the official state_dict order.
        self.fc1 = nn.Conv2d(in_features, hidden_features, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden_features, in_features, 1)
        self.drop = nn.Dropout(drop)
        for conv in (self.fc1, self.fc2):  # reference init of the 1x1 convs (the mid conv keeps the torch default)
            nn.init.trunc_normal_(conv.weight, std=0.02)
            nn.init.zeros_(conv.bias)
        if mid_conv:
            self.mid = nn.Conv2d(hidden_features, hidden_features, 3, padding=1, groups=hidden_features)
            self.mid_norm = SafeBatchNorm2d(hidden_features)
        else:
            self.mid = self.mid_norm = None
        self.norm1 = SafeBatchNorm2d(hidden_features)
        self.norm2 = SafeBatchNorm2d(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.fc1(x)))
        if self.mid is not None:
            x = self.act(self.mid_norm(self.mid(x)))
        x = self.drop(x)
        return self.drop(self.norm2(self.fc2(x)))

    def fuse_(self) -> None:
        """Inference fold (see :mod:`yolo_backbones.fuse`): each ``conv -> BN`` pair becomes one conv, BN -> Identity."""
        from .fuse import fuse_pair

        for conv, norm in (("fc1", "norm1"), ("mid", "mid_norm"), ("fc2", "norm2")):
            fuse_pair(self, conv, norm)


class LayerScaleBlock(nn.Module):
    """Residual block pair with per-channel layer scales, the skeleton of the EfficientFormer v1 / v2 blocks.

    ``x + drop_path(ls1 * token_mixer(norm1(x)))`` (only if there is a token mixer), then
    ``x + drop_path(ls2 * mlp(norm2(x)))``; the norms are optional (identity when ``norm_layer`` is
    ``None``). Subclasses build the branches and pass them in; the token mixer is built first (so the
    random initialisation follows the reference order).

    Args:
        dim: channels.
        token_mixer: first residual branch, or ``None`` for an MLP-only block (no ``layer_scale_1``).
        mlp: second residual branch.
        drop_path: stochastic-depth rate of both residual branches.
        layer_scale_init_value: initial value of the layer scales.
        scale_shape: trailing shape of the layer scales: ``()`` gives ``(dim,)`` (channels-last input),
            ``(1, 1)`` gives ``(dim, 1, 1)`` (``(B, dim, H, W)`` input).
        norm_layer: pre-norm class (``norm1`` / ``norm2``, called with ``dim``), or ``None``.

    Registration order (``norm1``, ``token_mixer``, ``norm2``, ``mlp``, ``drop_path``, ``layer_scale_1``,
    ``layer_scale_2``) follows the official state_dicts. Takes and returns a tensor of the input's shape.

    Fusing (:meth:`fuse_`, inference only): a subclass names in ``layer_scale_targets`` the last layer
    (a conv / linear, relative path) of each branch, after which the branch does nothing but eval-mode
    dropout or already folded BNs; its layer scale is then folded into that layer's output channels and
    set to ``None`` (a ``None`` layer scale is skipped in ``forward``).
    """

    # (token-mixer target, MLP target): dotted paths inside the block, or None where no exact fold exists.
    layer_scale_targets: tuple[str | None, str | None] = (None, None)

    def __init__(self, dim: int, token_mixer: nn.Module | None, mlp: nn.Module, drop_path: float,
                 layer_scale_init_value: float, scale_shape: tuple[int, ...] = (),
                 norm_layer: type[nn.Module] | None = None) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim) if norm_layer is not None and token_mixer is not None else None
        self.token_mixer = token_mixer
        self.norm2 = norm_layer(dim) if norm_layer is not None else None
        self.mlp = mlp
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        shape = (dim, *scale_shape)
        self.layer_scale_1 = None if token_mixer is None else nn.Parameter(torch.full(shape, layer_scale_init_value))
        self.layer_scale_2 = nn.Parameter(torch.full(shape, layer_scale_init_value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.token_mixer is not None:
            y = x if self.norm1 is None else self.norm1(x)
            x = x + self.drop_path(scaled(self.layer_scale_1, self.token_mixer(y)))
        y = x if self.norm2 is None else self.norm2(x)
        return x + self.drop_path(scaled(self.layer_scale_2, self.mlp(y)))

    def fuse_(self) -> None:
        """Fold the layer scales into the last layer of their branch where ``layer_scale_targets`` names one."""
        from .fuse import scale_output_channels

        for name, target in zip(("layer_scale_1", "layer_scale_2"), self.layer_scale_targets):
            branch = self.token_mixer if name == "layer_scale_1" else self.mlp
            # Only once the branch's BNs are folded (children are fused first): a BN after the target would
            # not commute with the scale.
            if target is not None and getattr(self, name) is not None and not any(
                    isinstance(m, nn.modules.batchnorm._BatchNorm) for m in branch.modules()):
                scale_output_channels(self.get_submodule(target), getattr(self, name))
                setattr(self, name, None)


def scaled(scale: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """``scale * x``, or ``x`` when the layer scale was folded away (``None``) by fusing."""
    return x if scale is None else scale * x


class ConvBnDownsample(nn.Module):
    """Stride-2 downsampling between stages: ``conv3x3 s2 (bias) -> BN`` (keys ``proj.*``, ``norm.*``).

    Args:
        in_chans: input channels.
        out_chans: output channels.

    Maps ``(B, in_chans, H, W)`` to ``(B, out_chans, ceil(H / 2), ceil(W / 2))``.
    """

    def __init__(self, in_chans: int, out_chans: int) -> None:
        super().__init__()
        self.proj, self.norm = conv3x3_s2_bn(in_chans, out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))

    def fuse_(self) -> None:
        """Inference fold (see :mod:`yolo_backbones.fuse`): ``proj -> norm`` becomes one conv, norm -> Identity."""
        from .fuse import fuse_pair

        fuse_pair(self, "proj", "norm")
