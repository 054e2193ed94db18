"""Conv + BatchNorm pieces: the conv-first ``Sequential``, the EfficientFormer stems and downsamplings."""
from __future__ import annotations

import torch
from torch import nn

from ..inference import onednn
from ..inference.context import fused_inference
from ..inference.fuse import fuse_pair
from .norms import SafeBatchNorm2d


class ConvSequential(nn.Sequential):
    """An ``nn.Sequential`` of ``Conv2d``, norm, activation, ... entries (indices give the official keys).

    Computes exactly what ``nn.Sequential`` computes. In a fused backbone's inference each conv and the
    activation after it run as one kernel (:func:`~yolo_backbones.core.inference.onednn.sequential`); the BNs
    are folded into the convs by fusing (their entries become ``nn.Identity``).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if fused_inference(x):
            return onednn.sequential(self, x)
        return super().forward(x)


def conv3x3_s2_bn(in_chans: int, out_chans: int) -> tuple[nn.Conv2d, SafeBatchNorm2d]:
    """The ``conv3x3 s2 (bias)`` and BN of an EfficientFormer stride-2 downsampling, as a pair.

    Maps ``(B, in_chans, H, W)`` to ``(B, out_chans, ceil(H / 2), ceil(W / 2))`` when applied in order.
    The caller registers them under its own (official) key names.
    """
    return nn.Conv2d(in_chans, out_chans, kernel_size=3, stride=2, padding=1), SafeBatchNorm2d(out_chans)


def conv_bn_stem(in_chans: int, out_chans: int, act_layer: type[nn.Module]) -> ConvSequential:
    """Stride-4 stem: ``[conv3x3 s2 -> BN -> act] x 2`` (the first conv has ``out_chans // 2`` channels).

    Returns a :class:`ConvSequential` whose indices (convs 0 / 3, norms 1 / 4) give the EfficientFormer
    state-dict keys ``patch_embed.{0,1,3,4}``. Maps ``(B, in_chans, H, W)`` to
    ``(B, out_chans, ceil(H / 4), ceil(W / 4))``.

    ``act_layer`` may be set in place by YOLOv5 (``nn.ReLU``): it only ever sees a BatchNorm output that
    nothing else reads, so that is safe.
    """
    return ConvSequential(*conv3x3_s2_bn(in_chans, out_chans // 2), act_layer(),
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
        return self.norm(self.proj(x))

    def fuse_(self) -> None:
        """Inference fold (see :mod:`~yolo_backbones.core.inference.fuse`): ``proj -> norm`` becomes one conv,
        ``norm`` an ``nn.Identity``."""
        fuse_pair(self, "proj", "norm")
