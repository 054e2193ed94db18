"""EdgeViT: light-weight vision transformers built from Local-Global-Local (LGL) blocks.

Paper: "EdgeViTs: Competing Light-weight CNNs on Mobile Devices with Vision Transformers",
Pan et al., ECCV 2022 (https://arxiv.org/abs/2205.03436). Reference code: github.com/saic-fi/edgevit.

Architecture (4 stages, strides 4 / 8 / 16 / 32):

* Each stage starts with a patch embedding: a non-overlapping strided conv (k4 s4 for the stem,
  k2 s2 between stages) followed by a LayerNorm over channels.
* Each stage then runs ``depth`` LGL blocks:

  - **Local aggregation** (stages 1-3 only): depth-wise conv position encoding, then a conv block
    ``1x1 -> depth-wise 5x5 -> 1x1`` and a conv MLP, both pre-BatchNorm residual branches.
  - **Global sparse attention**: depth-wise conv position encoding, then a pre-LayerNorm
    transformer layer whose attention only looks at every ``r``-th token along each axis
    ("delegate" tokens), and propagates the result back to the full grid with a depth-wise
    transposed conv (``k = s = r``). ``r`` is the per-stage ``sr_ratio`` (4, 2, 2, 1); with
    ``r == 1`` it is plain multi-head self-attention.

* A final BatchNorm2d on the stride-32 map; the classifier is global average pooling + Linear.

State-dict keys and shapes equal the official ones (``patch_embed{1..4}``, ``blocks{1..4}.{j}.LocalAgg``,
``blocks{1..4}.{j}.SelfAttn``, ``norm``, ``head``), so official-format checkpoints load strictly with
no key conversion. Differences from the reference code, none of which changes the function:

* no fixed input-size assertion: any H, W that are multiples of 32 work (square or not);
* the delegate tokens are taken by strided slicing (the reference uses ``AvgPool2d(1, r)``, a
  kernel-1 pooling, i.e. the same subsampling) and attention uses
  ``torch.nn.functional.scaled_dot_product_attention``;
* the transformer part works on a channels-last token grid ``(B, H, W, C)`` instead of a flat
  ``(B, N, C)`` sequence, so the subsampling is a slice instead of reshapes;
* the patch embedding registers its conv before its norm, so the first parameter of the model is
  the stem conv weight (YOLOv5 reads the input channel count from it).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..base import Backbone
from ..inference.context import fused_inference
from ..inference.fuse import absorb_identity, fold_affine_into_conv, fuse_bn_conv, is_foldable_bn
from ..layers import ConvMlp, DropPath, LayerNorm2d, Mlp, SafeBatchNorm2d
from ..layers.layout import is_tracing, subsample
from ..registry import register
from . import fused

__all__ = ["EdgeViT", "PatchEmbed", "LocalAgg", "GlobalSparseAttn", "SelfAttn", "LGLBlock"]

# Variant table, exactly as the official `edgevit_{xxs,xs,s}` constructors. ``num_heads`` of each
# stage is ``embed_dim // head_dim`` (e.g. XS/S stage 3: 240 // 48 = 5 heads).
EDGEVIT_CFGS: dict[str, dict[str, Any]] = {
    "xxs": dict(depths=(1, 1, 3, 2), embed_dims=(36, 72, 144, 288), head_dim=36,
                mlp_ratios=(4, 4, 4, 4), sr_ratios=(4, 2, 2, 1), qkv_bias=True),
    "xs": dict(depths=(1, 1, 3, 1), embed_dims=(48, 96, 240, 384), head_dim=48,
               mlp_ratios=(4, 4, 4, 4), sr_ratios=(4, 2, 2, 1), qkv_bias=True),
    "s": dict(depths=(1, 2, 5, 3), embed_dims=(48, 96, 240, 384), head_dim=48,
              mlp_ratios=(4, 4, 4, 4), sr_ratios=(4, 2, 2, 1), qkv_bias=True),
}

# Eps of the LayerNorms inside the transformer layer (SelfAttn.norm1/norm2); the patch-embedding
# and LocalProp LayerNorms keep the torch default 1e-5, as in the reference code.
_ATTN_LN_EPS = 1e-6


class PatchEmbed(nn.Module):
    """Non-overlapping patch embedding: ``Conv(k=p, s=p)`` then LayerNorm over channels.

    Args:
        in_chans: input channels.
        embed_dim: output channels.
        patch_size: kernel size and stride of the conv (4 for the stem, 2 between stages).

    Input ``(B, in_chans, H, W)``; output ``(B, embed_dim, H / p, W / p)``.
    """

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int) -> None:
        super().__init__()
        # `proj` is registered before `norm` so that, for the stem, the conv weight is the first parameter.
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = LayerNorm2d(embed_dim)  # eps 1e-5 as in the reference

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class LocalAgg(nn.Module):
    """Local aggregation part of an LGL block (conv only, pre-BatchNorm residual branches).

    ``x = x + dw3x3(x)``; ``x = x + conv2(dw5x5(conv1(BN(x))))``; ``x = x + ConvMlp(BN(x))``.

    Args:
        dim: channels.
        mlp_ratio: hidden width of the conv MLP relative to ``dim``.
        drop: dropout inside the MLP.
        drop_path: stochastic-depth rate of the two residual branches.

    Input and output ``(B, dim, H, W)``.

    Fusing (:meth:`fuse_`, inference only): the ``+ x`` of the position encoding goes into the centre tap
    of ``pos_embed``, and each pre-BatchNorm into the 1x1 conv that reads it (``norm1`` -> ``conv1``,
    ``norm2`` -> ``mlp.fc1``; exact because a 1x1 conv does not pad).
    """

    # True once fusing put the position encoding's "+ x" into pos_embed (an instance attribute then).
    pos_embed_has_identity: bool = False

    def __init__(self, dim: int, mlp_ratio: float = 4.0, drop: float = 0.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = SafeBatchNorm2d(dim)
        self.conv1 = nn.Conv2d(dim, dim, 1)
        self.conv2 = nn.Conv2d(dim, dim, 1)
        # Named `attn` in the reference: the depth-wise 5x5 conv acts as the local "attention".
        self.attn = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = SafeBatchNorm2d(dim)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if fused_inference(x):
            return fused.local_agg(self, x)
        x = self.pos_embed(x) if self.pos_embed_has_identity else x + self.pos_embed(x)
        x = x + self.drop_path(self.conv2(self.attn(self.conv1(self.norm1(x)))))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x

    def fuse_(self) -> None:
        """Inference folds (see :mod:`~yolo_backbones.core.inference.fuse`): position encoding and pre-norms."""
        fuse_position_encoding(self)
        for norm, owner, conv in (("norm1", self, "conv1"), ("norm2", self.mlp, "fc1")):
            if is_foldable_bn(getattr(self, norm)):
                setattr(owner, conv, fuse_bn_conv(getattr(self, norm), getattr(owner, conv)))
                setattr(self, norm, nn.Identity())


def fuse_position_encoding(block: nn.Module) -> None:
    """Put the ``+ x`` of ``x + pos_embed(x)`` into the centre tap of ``block.pos_embed`` (once)."""
    if not block.pos_embed_has_identity:
        absorb_identity(block.pos_embed)
        block.pos_embed_has_identity = True


def delegate_tokens(x: torch.Tensor, r: int) -> torch.Tensor:
    """The top-left token of every ``r x r`` cell of a ``(B, H, W, C)`` grid: ``(B, ceil(H / r), ceil(W / r), C)``."""
    if is_tracing():
        return subsample(x.permute(0, 3, 1, 2), r).permute(0, 2, 3, 1)  # as a pooling of the map (see subsample)
    return x[:, ::r, ::r, :]


class GlobalSparseAttn(nn.Module):
    """Multi-head self-attention among "delegate" tokens, propagated back to every token.

    With ``sr_ratio = r > 1``: take every r-th token along H and W, run MHSA among those
    ``(H/r)(W/r)`` tokens, upsample with a depth-wise ``ConvTranspose2d(k=r, s=r)`` ("local
    propagation") and LayerNorm; then the output projection. With ``r == 1`` it is plain MHSA.

    Args:
        dim: channels (``C``).
        num_heads: attention heads; ``dim`` must be divisible by it.
        sr_ratio: subsampling ratio ``r``; H and W of the input grid must be multiples of it.
        qkv_bias: bias in the qkv projection.
        attn_drop: dropout on the attention weights (training only).
        proj_drop: dropout after the output projection.

    Input: token grid ``(B, H, W, C)``; output ``(B, H, W, C)``.
    """

    def __init__(self, dim: int, num_heads: int, sr_ratio: int = 1, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.sr_ratio = int(sr_ratio)
        self.attn_drop = float(attn_drop)
        # Registration order (qkv, proj, LocalProp, norm) follows the reference state_dict.
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        if self.sr_ratio > 1:
            r = self.sr_ratio
            self.LocalProp = nn.ConvTranspose2d(dim, dim, kernel_size=r, stride=r, groups=dim)
            self.norm = nn.LayerNorm(dim)  # eps 1e-5 as in the reference
        else:
            self.LocalProp = None
            self.norm = nn.Identity()

    def forward(self, x: torch.Tensor, pre_norm: nn.Module | None = None) -> torch.Tensor:
        """``GSA(pre_norm(x))`` on a token grid ``(B, H, W, C)``.

        ``pre_norm`` is a per-token norm; it is applied to the delegate tokens only (the same values).
        """
        return self.proj_drop(self.proj(self.propagate(self.attend(x, pre_norm))))

    def attend(self, x: torch.Tensor, pre_norm: nn.Module | None = None) -> torch.Tensor:
        """Attention among the delegate tokens of ``pre_norm(x)``: ``(B, H, W, C)`` -> ``(B, H / r, W / r, C)``."""
        r = self.sr_ratio
        if r > 1:
            x = delegate_tokens(x, r)
        if pre_norm is not None:
            x = pre_norm(x)  # per token, so only the delegates need it
        B, h, w, C = x.shape
        # (B, h, w, 3C) -> q, k, v (B, heads, h*w, head_dim): views, at most 4-D (NCNN holds no more)
        qkv = self.qkv(x).reshape(B, h * w, 3 * C)
        q, k, v = (t.reshape(B, h * w, self.num_heads, self.head_dim).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0,
                                           scale=self.scale)
        return x.transpose(1, 2).reshape(B, h, w, C)

    def propagate(self, x: torch.Tensor) -> torch.Tensor:
        """Local propagation + norm of the delegates' results: ``(B, h, w, C)`` -> ``(B, h * r, w * r, C)``."""
        if self.LocalProp is None:
            return self.norm(x)
        # Spread every delegate's result over its r x r cell: (B, C, h, w) -> (B, C, h*r, w*r).
        return self.norm(self.LocalProp(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


class SelfAttn(nn.Module):
    """Global part of an LGL block: conv position encoding + pre-LN transformer layer.

    ``x = x + dw3x3(x)``; then, on the token grid, ``x = x + GSA(LN(x))`` and ``x = x + Mlp(LN(x))``.

    Args:
        dim: channels.
        num_heads: attention heads.
        mlp_ratio: hidden width of the MLP relative to ``dim``.
        sr_ratio: subsampling ratio of the sparse attention.
        qkv_bias: bias in the qkv projection.
        drop: dropout in the MLP and after the attention projection.
        attn_drop: dropout on the attention weights.
        drop_path: stochastic-depth rate of the two residual branches.

    Input and output ``(B, dim, H, W)``. Fusing puts the ``+ x`` of the position encoding into ``pos_embed``.
    """

    pos_embed_has_identity: bool = False  # see LocalAgg

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, sr_ratio: int = 1,
                 qkv_bias: bool = True, drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.LayerNorm(dim, eps=_ATTN_LN_EPS)
        self.attn = GlobalSparseAttn(dim, num_heads, sr_ratio=sr_ratio, qkv_bias=qkv_bias,
                                     attn_drop=attn_drop, proj_drop=drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=_ATTN_LN_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if fused_inference(x):
            return fused.self_attn(self, x)
        x = self.pos_embed(x) if self.pos_embed_has_identity else x + self.pos_embed(x)
        # Channels-last token grid so LayerNorm / Linear act on the channel dim without reshapes.
        x = x.permute(0, 2, 3, 1)
        x = x + self.drop_path(self.attn(x, pre_norm=self.norm1))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x.permute(0, 3, 1, 2)

    def fuse_(self) -> None:
        """Inference fold: the position encoding's ``+ x`` into ``pos_embed``."""
        fuse_position_encoding(self)


class LGLBlock(nn.Module):
    """Local-Global-Local block: ``LocalAgg`` (only if ``sr_ratio > 1``) followed by ``SelfAttn``.

    Args:
        dim: channels.
        num_heads: attention heads.
        mlp_ratio: MLP expansion of both parts.
        sr_ratio: subsampling ratio; the stage-4 blocks (``sr_ratio == 1``) have no LocalAgg.
        qkv_bias: bias in the qkv projection.
        drop: dropout in the MLPs / attention projection.
        attn_drop: dropout on the attention weights.
        drop_path: stochastic-depth rate (shared by both parts, as in the reference).

    Input and output ``(B, dim, H, W)``.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, sr_ratio: int = 1,
                 qkv_bias: bool = True, drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.LocalAgg = (LocalAgg(dim, mlp_ratio, drop=drop, drop_path=drop_path) if sr_ratio > 1
                         else nn.Identity())
        self.SelfAttn = SelfAttn(dim, num_heads, mlp_ratio, sr_ratio, qkv_bias=qkv_bias, drop=drop,
                                 attn_drop=attn_drop, drop_path=drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.SelfAttn(self.LocalAgg(x))


@register
class EdgeViT(Backbone):
    """EdgeViT-XXS / XS / S: an ImageNet classifier, pooled features or a 4-stage feature extractor.

    Args:
        variant: ``"xxs"``, ``"xs"`` or ``"s"``.
        out_indices: stages a feature extractor returns (0..3 = strides 4, 8, 16, 32; default 1, 2, 3).
        pretrained: a weights file, or a weights name (see `yolo-backbones list`), loaded strictly.
        features_only: build the feature extractor (see :class:`~yolo_backbones.core.base.Backbone`).
        num_classes: ``1000`` (default) for the ImageNet classifier, ``0`` for pooled features.
        in_chans: input channels.
        input_norm: normalise ``[0, 1]`` RGB input itself (YOLO backbone rows).
        drop_path_rate: stochastic depth, increased linearly from 0 over all blocks.
        grad_checkpointing: recompute block activations in backward to save training memory
            (see :meth:`~yolo_backbones.core.base.Backbone.set_grad_checkpointing`).

    A feature extractor returns ``[(B, C_i, H / s_i, W / s_i) for i in out_indices]`` with channels
    ``embed_dims`` of the variant; the stride-32 map passes through the final BatchNorm (``norm``).
    The classifier returns logits ``(B, num_classes)``. H and W must be multiples of 32.
    """

    family = "edgevit"
    variants = EDGEVIT_CFGS
    input_multiple = 32
    classifier_prefixes = ("head.",)

    def __init__(self, variant: str = "xxs", out_indices: Sequence[int] | None = None, pretrained: str | None = None,
                 *, features_only: bool = False, num_classes: int = 1000, in_chans: int = 3, input_norm: bool = False,
                 drop_path_rate: float = 0.0, grad_checkpointing: bool = False) -> None:
        super().__init__(variant, out_indices, features_only=features_only, num_classes=num_classes,
                         in_chans=in_chans, input_norm=input_norm, grad_checkpointing=grad_checkpointing)
        cfg = self.cfg
        dims, depths = cfg["embed_dims"], cfg["depths"]
        # Stem first: YOLOv5 takes the input channel count from the first parameter.
        in_dims = (in_chans,) + tuple(dims[:3])
        for s in range(4):
            setattr(self, f"patch_embed{s + 1}", PatchEmbed(in_dims[s], dims[s], patch_size=4 if s == 0 else 2))

        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()  # stochastic-depth decay rule
        for s in range(4):
            start = sum(depths[:s])
            blocks = nn.ModuleList([
                LGLBlock(dims[s], dims[s] // cfg["head_dim"], mlp_ratio=cfg["mlp_ratios"][s],
                         sr_ratio=cfg["sr_ratios"][s], qkv_bias=cfg["qkv_bias"], drop_path=dpr[start + j])
                for j in range(depths[s])])
            setattr(self, f"blocks{s + 1}", blocks)
        self.norm = SafeBatchNorm2d(dims[3])  # also takes the 1x1 map of a batch-1 32x32 FLOPs probe
        self.head = nn.Linear(dims[3], self.num_classes) if self.num_classes > 0 else nn.Identity()

        self.stage_channels = tuple(dims)
        self.apply(self._init_weights)
        self.finish_build(pretrained)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # Same scheme as the reference: truncated-normal Linear weights, zero biases, unit LayerNorms;
        # convs and BatchNorms keep the torch defaults.
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def stage_module_names(self, stage: int) -> tuple[str, ...]:
        """Stage ``i`` is ``patch_embed{i+1}`` and ``blocks{i+1}``."""
        return f"patch_embed{stage + 1}", f"blocks{stage + 1}"

    def forward_stages(self, x: torch.Tensor, last_stage: int) -> list[torch.Tensor]:
        """Run stages ``0..last_stage`` on ``(B, in_chans, H, W)``; return their ``(B, C_i, H/s_i, W/s_i)`` outputs."""
        outs: list[torch.Tensor] = []
        for s in range(last_stage + 1):
            x = self.run_block(getattr(self, f"patch_embed{s + 1}"), x)
            for blk in getattr(self, f"blocks{s + 1}"):
                x = self.run_block(blk, x)
            outs.append(x)
        return outs

    def fuse_(self) -> None:
        """With ``input_norm``: fold the input normalisation ``(x - mean) / std`` into the stem conv (k4 s4, no
        padding)."""
        if self.input_norm and not self.input_norm_folded:
            stem = self.patch_embed1
            stem.proj = fold_affine_into_conv(stem.proj, 1.0 / self.input_std.double(),
                                              -self.input_mean.double() / self.input_std.double())
            self.input_norm_folded = True

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pool + Linear: ``(B, C_4, h, w)`` -> logits ``(B, num_classes)`` (pooled features
        ``(B, C_4)`` with ``pre_logits`` or without classes)."""
        x = x.mean(dim=(2, 3))
        return x if pre_logits else self.head(x)
