"""Residual blocks with per-channel layer scales (EfficientFormer v1 / v2)."""
from __future__ import annotations

import torch
from torch import nn

from ..inference.context import fused_inference
from ..inference.fuse import scale_output_channels
from . import fused
from .drop import DropPath


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
        if fused_inference(x):
            return fused.layer_scale_block(self, x)
        if self.token_mixer is not None:
            y = x if self.norm1 is None else self.norm1(x)
            x = x + self.drop_path(scaled(self.layer_scale_1, self.token_mixer(y)))
        y = x if self.norm2 is None else self.norm2(x)
        return x + self.drop_path(scaled(self.layer_scale_2, self.mlp(y)))

    def fuse_(self) -> None:
        """Fold the layer scales into the last layer of their branch where ``layer_scale_targets`` names one."""
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
