"""What EfficientFormer (:mod:`.v1`) and EfficientFormerV2 (:mod:`.v2`) share: the model skeleton, the stage
layout rule and the conversion of timm-format checkpoints to the official key names."""
from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from ..base import Backbone
from ..layers import ConvBnDownsample, OffsetBiasAttention, conv_bn_stem
from ..weights.state_dict import CheckpointMismatchError

__all__ = ["EfficientFormerBase", "stage_blocks", "apply_rules", "rename_timm_keys", "drop_bias_idxs",
           "TIMM_LAYER_SCALE_RULE"]

TIMM_LAYER_SCALE_RULE = (r"^ls([12])\.gamma$", r"layer_scale_\1")


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


def drop_bias_idxs(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str = "checkpoint"
                   ) -> dict[str, torch.Tensor]:
    """Remove ``*.attention_bias_idxs`` buffers from ``state_dict`` after checking them against ``model``.

    The model derives these indices (:class:`OffsetBiasAttention`); a buffer that does not match the
    reference geometry of its layer raises :class:`~yolo_backbones.core.weights.state_dict.CheckpointMismatchError`.
    Keys of layers the model does not have are kept (they are reported as unexpected, or dropped
    with the classifier keys, by the loader).
    """
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
    ``dist_head`` layout, weight init, stage loop and checkpoint conversion.

    ``network`` is ``[stage0, down1, stage1, down2, stage2, down3, stage3]`` as in the reference. A
    subclass sets ``stem_act`` (activation of :func:`~yolo_backbones.core.layers.conv_bn_stem`), ``norm_layer``
    (final norm of the stride-32 output), ``timm_to_official`` (timm checkpoint renaming) and implements
    :meth:`make_stage` (and :meth:`make_downsample` if it differs from ``conv3x3 s2 -> BN``).

    Args:
        variant: a key of the subclass's config table (default ``default_variant``).
        out_indices: stages a feature extractor returns (0..3 = strides 4, 8, 16, 32; default 1, 2, 3).
        pretrained: a weights file (official or timm keys) or a weights name such as ``imagenet``, loaded strictly.
        features_only: build the feature extractor (see :class:`~yolo_backbones.core.base.Backbone`).
        num_classes: ``1000`` (default) for the ImageNet classifier (with ``head`` and ``dist_head``; their
            logits are averaged), ``0`` for pooled features.
        in_chans: input channels.
        input_norm: normalise ``[0, 1]`` RGB input itself (YOLO backbone rows).
        drop_path_rate: stochastic depth, increased linearly over all blocks (reference rule).
        grad_checkpointing: recompute block activations in backward to save training memory
            (see :meth:`~yolo_backbones.core.base.Backbone.set_grad_checkpointing`).
    """

    input_multiple = 1
    classifier_prefixes = ("head.", "dist_head.")
    head_module_names = ("head", "dist_head")
    default_variant: ClassVar[str]
    stem_act: ClassVar[type[nn.Module]]
    norm_layer: ClassVar[type[nn.Module]]
    timm_to_official: ClassVar[Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]]

    def __init__(self, variant: str | None = None, out_indices: Sequence[int] | None = None,
                 pretrained: str | None = None, *, features_only: bool = False, num_classes: int = 1000,
                 in_chans: int = 3, input_norm: bool = False, drop_path_rate: float = 0.0,
                 grad_checkpointing: bool = False) -> None:
        super().__init__(self.default_variant if variant is None else variant, out_indices,
                         features_only=features_only, num_classes=num_classes, in_chans=in_chans,
                         input_norm=input_norm, grad_checkpointing=grad_checkpointing)
        dims = self.cfg["embed_dims"]
        # Stem first: YOLOv5 takes the input channel count from the first parameter.
        self.patch_embed = conv_bn_stem(in_chans, dims[0], self.stem_act)
        network: list[nn.Module] = []
        for i in range(4):
            if i > 0:
                network.append(self.make_downsample(i))
            network.append(self.make_stage(i, drop_path_rate))
        self.network = nn.ModuleList(network)
        self.norm = self.norm_layer(dims[3])
        if self.num_classes:
            self.head = nn.Linear(dims[3], self.num_classes)
            self.dist_head = nn.Linear(dims[3], self.num_classes)

        self.stage_channels = tuple(dims)
        for m in self.modules():  # reference init of the Linear layers (convs / norms keep torch defaults)
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.finish_build(pretrained)

    def make_downsample(self, index: int) -> nn.Module:
        """Downsampling layer in front of stage ``index`` (1..3): ``conv3x3 s2 -> BN``."""
        dims = self.cfg["embed_dims"]
        return ConvBnDownsample(dims[index - 1], dims[index])

    def make_stage(self, index: int, drop_path_rate: float) -> nn.Sequential:
        """Blocks of stage ``index`` (0..3)."""
        raise NotImplementedError

    def stage_module_names(self, stage: int) -> tuple[str, ...]:
        """Stage ``i`` is ``network.{2i-1}`` (its downsampling, from stage 1 on) and ``network.{2i}``."""
        return (f"network.{2 * stage - 1}", f"network.{2 * stage}") if stage else ("network.0",)

    def stem_conv(self) -> tuple[nn.Module, str]:
        return self.patch_embed, "0"

    def stage_map(self, stage: int, x: torch.Tensor) -> torch.Tensor:
        """The output of stage ``stage`` as a ``(B, C, H, W)`` map (a stage's blocks may end on another layout)."""
        return x

    def forward_stages(self, x: torch.Tensor, last_stage: int) -> list[torch.Tensor]:
        """Run stages ``0..last_stage`` on ``(B, in_chans, H, W)``; return their ``(B, C_i, H_i, W_i)`` outputs."""
        x = self.run_block(self.patch_embed, x)
        outs: list[torch.Tensor] = []
        for i in range(last_stage + 1):
            if i > 0:
                x = self.run_block(self.network[2 * i - 1], x)
            for block in self.network[2 * i]:
                x = self.run_block(block, x)
            outs.append(self.stage_map(i, x))
        return outs

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global mean + ``head`` and ``dist_head`` (averaged): ``(B, C_3, h, w)`` -> logits ``(B, num_classes)``
        (pooled features ``(B, C_3)`` with ``pre_logits`` or without classes)."""
        x = x.mean(dim=(2, 3))
        if pre_logits or not self.num_classes:
            return x
        return (self.head(x) + self.dist_head(x)) / 2

    def official_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Map an official or timm-format checkpoint to the official key names and shapes.

        timm keys (``stem.*`` / ``stages.*``) are renamed by ``timm_to_official``; the persistent
        ``attention_bias_idxs`` buffers of both formats are checked and dropped (see :func:`drop_bias_idxs`).
        """
        if any(k.startswith(("stem.", "stages.")) for k in state_dict):
            state_dict = type(self).timm_to_official(state_dict)
        return drop_bias_idxs(self, state_dict)
