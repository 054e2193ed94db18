"""Norm layers over ``(B, C, H, W)`` maps.

They subclass the ``torch.nn`` norms on purpose: YOLO optimizers exempt ``nn.*Norm*`` weights from weight
decay by ``isinstance``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpointing import recomputing


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel dimension of a ``(B, C, H, W)`` tensor; returns ``(B, C, H, W)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class SafeBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` that also accepts a training batch holding one value per channel.

    ``nn.BatchNorm2d`` raises in training mode when ``B * H * W == 1``: batch statistics of a single
    value are undefined. YOLOv5 measures FLOPs with a batch-1 ``stride x stride`` (32x32) input while
    the model is in training mode, which leaves a 1x1 map at stride 32. For exactly that case this
    layer normalises with its running statistics and leaves them untouched (eval-mode behaviour);
    any other input is handled exactly like ``nn.BatchNorm2d``. State-dict keys are unchanged.

    When a checkpointed block is recomputed during backward (:mod:`yolo_backbones.core.checkpointing`) it
    normalises with the batch statistics again but does not update the running statistics a second time.

    Being a subclass, YOLOv5's optimizer grouping (``isinstance`` on ``nn.*Norm*``) still exempts its
    weight from decay, while ``initialize_weights`` (``type(m) is nn.BatchNorm2d``) leaves its eps and
    momentum at the pretrained values.

    Takes and returns ``(B, C, H, W)``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.running_mean is not None and x.numel() == x.shape[1]:  # B * H * W == 1
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        if self.training and recomputing() and self.running_mean is not None:
            # Re-run of a checkpointed block in backward: the same batch statistics and the same autograd
            # record as the first pass (hence the running stats are passed), but momentum 0 keeps them as they
            # are (r * 1 + 0 * batch) and num_batches_tracked is not incremented again.
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, True, 0.0, self.eps)
        return super().forward(x)
