"""Strided conv + BatchNorm pieces of the EfficientFormer stems and downsamplings."""
from __future__ import annotations

from torch import nn
import torch

from ..fuse import fuse_pair
from . import onednn
from .norms import SafeBatchNorm2d


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
        if isinstance(self.norm, nn.Identity):  # folded: the plain conv, on the fused kernel in inference
            return onednn.conv(self.proj, x)
        return self.norm(self.proj(x))

    def fuse_(self) -> None:
        """Inference fold (see :mod:`yolo_backbones.core.fuse`): ``proj -> norm`` becomes one conv, norm -> Identity."""
        fuse_pair(self, "proj", "norm")
