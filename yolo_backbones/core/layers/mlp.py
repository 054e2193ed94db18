"""Two-layer MLPs: on tokens (``Linear``), on maps (``1x1 conv``) and the conv + BN MLP of EfficientFormer."""
from __future__ import annotations

import torch
from torch import nn

from ..checkpointing import recompute_in_backward
from ..inference.context import fused_inference
from ..inference.fuse import fuse_pair
from . import fused
from .norms import SafeBatchNorm2d


class Mlp(nn.Module):
    """Token MLP ``Linear -> act -> Linear`` on ``(B, N, C)``; returns ``(B, N, out_features)``."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int | None = None,
                 act_layer: type[nn.Module] = nn.GELU, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, out_features or in_features)
        self.drop = nn.Dropout(drop)

    # A residual block may hand its residual in, to be added by the last layer (one kernel in fused inference).
    accepts_residual = True

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """``Mlp(x)``, or ``residual + Mlp(x)``."""
        if fused_inference(x):
            return fused.mlp(self, x, residual)
        x = self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))
        return x if residual is None else residual + x


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

    accepts_residual = True  # see Mlp

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """``ConvBnMlp(x)``, or ``residual + ConvBnMlp(x)``."""
        if fused_inference(x):
            return fused.conv_bn_mlp(self, x, residual)
        # Training keeps the conv outputs and the last GELU output for backward; what lies between them (BN
        # outputs, the GELU output feeding the cheap depth-wise conv) is recomputed there.
        x = self.fc1(x)
        if self.mid is not None:
            x = recompute_in_backward(self._mid_norm_act, recompute_in_backward(self._norm1_act_mid, x))
        else:
            x = recompute_in_backward(self._norm1_act, x)
        x = self.drop(x)
        x = self.drop(self.norm2(self.fc2(x)))
        return x if residual is None else residual + x

    def _norm1_act(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm1(x))

    def _norm1_act_mid(self, x: torch.Tensor) -> torch.Tensor:
        return self.mid(self.act(self.norm1(x)))

    def _mid_norm_act(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.mid_norm(x))

    def fuse_(self) -> None:
        """Inference fold (see :mod:`~yolo_backbones.core.inference.fuse`): each ``conv -> BN`` pair becomes one conv,
        the BN an ``nn.Identity``."""
        for conv, norm in (("fc1", "norm1"), ("mid", "mid_norm"), ("fc2", "norm2")):
            fuse_pair(self, conv, norm)
