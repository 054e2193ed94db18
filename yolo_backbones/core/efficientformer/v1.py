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
* Detection mode (``num_classes=0``) has no ``head`` / ``dist_head``; it returns the outputs of the
  stages in ``out_indices`` (strides 4 / 8 / 16 / 32), the stage-3 token grid reshaped back to a
  ``(B, C, H / 32, W / 32)`` map. Stages after the last requested one are not built, so every parameter
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
from typing import Any, Callable, ClassVar, Iterator, Sequence

import torch
from torch import nn
import torch.nn.functional as F

from ..layers import (ConvBnDownsample, ConvBnMlp, LayerScaleBlock, Mlp, OffsetBiasAttention, conv_bn_stem, onednn,
                      scaled, softmax_attention)
from ..layers.layer_scale import residual_branch
from ..layers.layout import is_tracing
from ..registry import register
from ..base import Backbone

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
        ls1, ls2 = self.layer_scale_1, self.layer_scale_2  # None once folded by fusing
        if not torch.is_grad_enabled() and ls1 is not None and ls1.dtype == x.dtype and not is_tracing():
            # Inference: x + ls1 * (pool(x) - x) is a per-channel interpolation from x towards pool(x), one pass
            # (lerp) instead of three element-wise ops over the map. Not in training, where lerp would keep both
            # x and pool(x) for backward instead of their difference (lerp wants one dtype: autocast takes the
            # other path).
            x = torch.lerp(x, self.token_mixer.pool(x), ls1[:, None, None])
        else:
            x = x + self.drop_path(scaled(None if ls1 is None else ls1[:, None, None], self.token_mixer(x)))
        return residual_branch(self, self.mlp, None if ls2 is None else ls2[:, None, None], x, x)


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
        super().__init__(num_heads, resolution)
        self.key_dim = key_dim
        self.scale = key_dim ** -0.5
        self.val_dim = int(attn_ratio * key_dim)
        self.val_attn_dim = self.val_dim * num_heads
        # Per head the qkv output holds [q (key_dim), k (key_dim), v (val_dim)] consecutively, as in the reference.
        self.qkv = nn.Linear(dim, (2 * key_dim + self.val_dim) * num_heads)
        self.proj = nn.Linear(self.val_attn_dim, dim)

    accepts_residual = True  # see LayerScaleBlock

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """``Attention(x)``, or ``residual + Attention(x)`` (fused into ``proj`` in inference)."""
        B, H, W, _ = x.shape
        N = H * W
        qkv = onednn.linear(self.qkv, x).reshape(B, N, self.num_heads, -1).permute(0, 2, 1, 3)  # (B, heads, N, 2kd + vd)
        q, k, v = qkv.split([self.key_dim, self.key_dim, self.val_dim], dim=3)
        bias = self.attention_bias((H, W), (H, W), q.dtype)  # (heads, N, N), broadcast over the batch
        x = softmax_attention(q, k, v, bias, self.scale)  # (B, heads, N, vd)
        x = x.transpose(1, 2).reshape(B, H, W, self.val_attn_dim)
        return onednn.linear(self.proj, x, residual=residual)


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


def stage_blocks(cfg: dict[str, Any], index: int, attn_stages: Sequence[int], drop_path_rate: float
                 ) -> Iterator[tuple[int, float, bool]]:
    """``(j, drop_path, is_attn)`` for each block ``j`` of stage ``index`` (EfficientFormer v1 and v2).

    The stochastic-depth rate rises linearly with the global block index (reference rule); in the
    ``attn_stages`` the last ``cfg["vit_num"]`` blocks are attention blocks.
    """
    depths, vit_num = cfg["depths"], cfg["vit_num"]
    first = sum(depths[:index])
    for j in range(depths[index]):
        dpr = drop_path_rate * (first + j) / (sum(depths) - 1)
        yield j, dpr, index in attn_stages and j >= depths[index] - vit_num


def _stage(dim: int, index: int, cfg: dict[str, Any], drop_path_rate: float) -> nn.Sequential:
    """Blocks of stage ``index``: Meta4D blocks; in stage 3 the last ``vit_num`` are Meta3D after a ``Flat``."""
    blocks: list[nn.Module] = []
    for _, dpr, is_attn in stage_blocks(cfg, index, (3,), drop_path_rate):
        if is_attn and not any(isinstance(b, Flat) for b in blocks):
            blocks.append(Flat())
        blocks.append(Meta3D(dim, drop_path=dpr) if is_attn else Meta4D(dim, drop_path=dpr))
    return nn.Sequential(*blocks)


def apply_rules(name: str, rules: Sequence[tuple[str, str]]) -> str:
    """``name`` rewritten by the first ``(pattern, replacement)`` rule that changes it (unchanged if none does)."""
    for pattern, repl in rules:
        new = re.sub(pattern, repl, name)
        if new != name:
            return new
    return name


def rename_timm_keys(state_dict: dict[str, torch.Tensor], stem: dict[str, str],
                     downsample: Callable[[int, str], str | None], block_rules: Sequence[tuple[str, str]],
                     layer_scale_shape: tuple[int, ...] = ()) -> dict[str, torch.Tensor]:
    """Rename a timm-format EfficientFormer (v1 or v2) state_dict to the official layout.

    The renaming common to both versions (the inverse of timm's ``checkpoint_filter_fn``):
    ``stem.<name>.*`` -> ``patch_embed.<stem[name]>.*``; ``stages.i.downsample.<rest>`` ->
    ``network.{2i-1}.<downsample(i, rest)>`` (a key for which ``downsample`` returns ``None`` is kept);
    ``stages.i.blocks.j.<rest>`` -> ``network.{2i}.j.<rest renamed by block_rules>`` (see
    :func:`apply_rules`), where a 1-D layer scale is reshaped to ``(C, *layer_scale_shape)``;
    ``head_dist`` -> ``dist_head``. Other keys are kept.
    """
    stem_re = re.compile(r"stem\.(" + "|".join(map(re.escape, stem)) + r")\.(.*)")
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        new = key
        if m := stem_re.match(key):
            new = f"patch_embed.{stem[m[1]]}.{m[2]}"
        elif (m := re.match(r"stages\.(\d+)\.downsample\.(.*)", key)) and (rest := downsample(int(m[1]), m[2])):
            new = f"network.{2 * int(m[1]) - 1}.{rest}"
        elif m := re.match(r"stages\.(\d+)\.blocks\.(\d+)\.(.*)", key):
            rest = apply_rules(m[3], block_rules)
            if layer_scale_shape and rest.startswith("layer_scale_") and value.ndim == 1:
                value = value.reshape(-1, *layer_scale_shape)
            new = f"network.{2 * int(m[1])}.{m[2]}.{rest}"
        elif key.startswith("head_dist."):
            new = "dist_head." + key[len("head_dist."):]
        out[new] = value
    return out


_TIMM_STEM = {"conv1": "0", "norm1": "1", "conv2": "3", "norm2": "4"}
TIMM_LAYER_SCALE_RULE = (r"^ls([12])\.gamma$", r"layer_scale_\1")


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


def drop_bias_idxs(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str = "checkpoint"
                   ) -> dict[str, torch.Tensor]:
    """Remove ``*.attention_bias_idxs`` buffers from ``state_dict`` after checking them against ``model``.

    The model derives these indices (:class:`OffsetBiasAttention`); a buffer that does not match the
    reference geometry of its layer raises :class:`~yolo_backbones.core.weights.state_dict.CheckpointMismatchError`.
    Keys of layers the model does not have are kept (they are reported as unexpected, or dropped
    with the classifier keys, by the loader).
    """
    from ..weights.state_dict import CheckpointMismatchError

    suffix = ".attention_bias_idxs"
    out = {}
    for key, value in state_dict.items():
        if key.endswith(suffix):
            try:
                layer = model.get_submodule(key[: -len(suffix)])
            except AttributeError:
                layer = None
            if isinstance(layer, OffsetBiasAttention):
                if not layer.check_official_idxs(value):
                    raise CheckpointMismatchError(
                        f"{source}: {key} {tuple(value.shape)} is not the reference offset index of a "
                        f"{layer.native_grids()[1]} key grid; the checkpoint is not an official one of this layout")
                continue
        out[key] = value
    return out


class EfficientFormerBase(Backbone):
    """What EfficientFormer v1 and v2 share: the ``patch_embed`` / ``network`` / ``norm`` / ``head`` /
    ``dist_head`` layout, detection-mode truncation, weight init, stage loop and checkpoint conversion.

    ``network`` is ``[stage0, down1, stage1, down2, stage2, down3, stage3]`` as in the reference. A
    subclass sets ``stem_act`` (activation of :func:`~yolo_backbones.core.layers.conv_bn_stem`), ``norm_layer``
    (final norm of the stride-32 output), ``timm_to_official`` (timm checkpoint renaming) and implements
    :meth:`make_stage` (and :meth:`make_downsample` if it differs from ``conv3x3 s2 -> BN``) and
    :meth:`forward_head`. Arguments are those of the subclasses.
    """

    input_multiple = 1
    classifier_prefixes = ("head.", "dist_head.")
    stem_act: ClassVar[type[nn.Module]]
    norm_layer: ClassVar[type[nn.Module]]
    timm_to_official: ClassVar[Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]]

    def __init__(self, variant: str, out_indices: Sequence[int], pretrained: str | None, *, num_classes: int,
                 in_chans: int, drop_path_rate: float, grad_checkpointing: bool = False) -> None:
        super().__init__(variant, out_indices, num_classes, in_chans, grad_checkpointing)
        dims = self.cfg["embed_dims"]
        # Stem first: YOLOv5 takes the input channel count from the first parameter.
        self.patch_embed = conv_bn_stem(in_chans, dims[0], self.stem_act)

        # A detection model stops after the last requested stage so that no parameter goes unused.
        num_stages = 4 if self.num_classes else self.out_indices[-1] + 1
        network: list[nn.Module] = []
        for i in range(num_stages):
            if i > 0:
                network.append(self.make_downsample(i))
            network.append(self.make_stage(i, drop_path_rate))
        self.network = nn.ModuleList(network)
        if num_stages == 4:
            self.norm = self.norm_layer(dims[3])
        if self.num_classes:
            self.head = nn.Linear(dims[3], self.num_classes)
            self.dist_head = nn.Linear(dims[3], self.num_classes)
        else:
            # Checkpoint keys this detection model has no use for (dropped when loading pretrained weights).
            unused = tuple(f"network.{j}." for j in range(len(network), 7)) + (("norm.",) if num_stages < 4 else ())
            self.classifier_prefixes = type(self).classifier_prefixes + unused

        self.stage_channels = tuple(dims)
        for m in self.modules():  # reference init of the Linear layers (convs / norms keep torch defaults)
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        if pretrained:
            self.load_pretrained(pretrained)

    def make_downsample(self, index: int) -> nn.Module:
        """Downsampling layer in front of stage ``index`` (1..3): ``conv3x3 s2 -> BN``."""
        dims = self.cfg["embed_dims"]
        return ConvBnDownsample(dims[index - 1], dims[index])

    def make_stage(self, index: int, drop_path_rate: float) -> nn.Sequential:
        """Blocks of stage ``index`` (0..3)."""
        raise NotImplementedError

    @classmethod
    def variant_channels(cls, variant: str) -> tuple[int, ...]:
        """Output channels of the four stages of ``variant`` (the ``embed_dims`` of its config)."""
        return tuple(cls.variants[cls.resolve_variant(variant)]["embed_dims"])

    def stem_conv(self) -> tuple[nn.Module, str]:
        return self.patch_embed, "0"

    def stage3_output(self, x: torch.Tensor) -> torch.Tensor:
        """The stride-32 output: stage 3 after the final ``norm``, as a ``(B, C_3, H_3, W_3)`` map."""
        return self.norm(x)

    def forward_stages(self, x: torch.Tensor, last_stage: int) -> list[torch.Tensor]:
        """Run stages ``0..last_stage`` on ``(B, in_chans, H, W)``; return their ``(B, C_i, H_i, W_i)`` outputs.

        The stage-3 output passes through the final norm (:meth:`stage3_output`).
        """
        x = self.run_block(self.patch_embed, x, fn=lambda t: onednn.sequential(self.patch_embed, t))
        outs: list[torch.Tensor] = []
        for i in range(last_stage + 1):
            if i > 0:
                x = self.run_block(self.network[2 * i - 1], x)
            for block in self.network[2 * i]:
                x = self.run_block(block, x)
            if i == 3:
                x = self.stage3_output(x)
            outs.append(x)
        return outs

    def convert_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Map an official or timm-format checkpoint to this model's (official) key names and shapes.

        timm keys (``stem.*`` / ``stages.*``) are renamed by ``timm_to_official``; the persistent
        ``attention_bias_idxs`` buffers of both formats are checked and dropped (see :func:`drop_bias_idxs`).
        """
        if any(k.startswith(("stem.", "stages.")) for k in state_dict):
            state_dict = type(self).timm_to_official(state_dict)
        return drop_bias_idxs(self, state_dict)


@register
class EfficientFormer(EfficientFormerBase):
    """EfficientFormer-L1 / L3 / L7 as an ImageNet classifier or a 4-stage YOLOv5 backbone.

    Args:
        variant: ``"l1"``, ``"l3"`` or ``"l7"``.
        out_indices: stages returned in detection mode (0..3 = strides 4, 8, 16, 32).
        pretrained: a weights file (official or timm keys) or a weights name such as ``imagenet``, loaded strictly.
        num_classes: ``0`` (default) for the detection backbone, ``1000`` for the ImageNet classifier
            (with ``head`` and ``dist_head``; their logits are averaged).
        in_chans: input channels.
        drop_path_rate: stochastic depth, increased linearly over all blocks (reference rule).
        grad_checkpointing: recompute block activations in backward to save training memory
            (see :meth:`~yolo_backbones.core.base.Backbone.set_grad_checkpointing`).

    Detection mode returns ``[(B, C_i, ceil(H / s_i), ceil(W / s_i)) for i in out_indices]`` with the
    ``embed_dims`` of the variant as channels; the stride-32 map is the Meta3D token grid after the final
    LayerNorm ``norm``, reshaped to ``(B, C, h, w)``. Any H, W work (all downsampling convs round up and
    the attention bias follows the grid). Classification mode returns logits ``(B, num_classes)``.
    """

    family = "efficientformer"
    variants = EFFICIENTFORMER_CFGS
    stem_act = nn.ReLU
    norm_layer = nn.LayerNorm
    timm_to_official = staticmethod(timm_to_official)

    def __init__(self, variant: str = "l1", out_indices: Sequence[int] = (1, 2, 3), pretrained: str | None = None,
                 *, num_classes: int = 0, in_chans: int = 3, drop_path_rate: float = 0.0,
                 grad_checkpointing: bool = False) -> None:
        super().__init__(variant, out_indices, pretrained, num_classes=num_classes, in_chans=in_chans,
                         drop_path_rate=drop_path_rate, grad_checkpointing=grad_checkpointing)

    def make_stage(self, index: int, drop_path_rate: float) -> nn.Sequential:
        return _stage(self.cfg["embed_dims"][index], index, self.cfg, drop_path_rate)

    def stage3_output(self, x: torch.Tensor) -> torch.Tensor:
        """Stage 3 ends on a channels-last token grid: final LayerNorm, then back to a ``(B, C_3, H_3, W_3)`` map."""
        x = self.norm(x).permute(0, 3, 1, 2)  # a channels-last view of the token grid: the inference layout
        return x.contiguous(memory_format=torch.channels_last if not self.training else torch.contiguous_format)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Token mean + ``head`` and ``dist_head`` (averaged): ``(B, C_3, h, w)`` -> logits ``(B, num_classes)``."""
        x = x.mean(dim=(2, 3))
        return (self.head(x) + self.dist_head(x)) / 2
