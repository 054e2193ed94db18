"""What a backbone does with its input: size checks, the inference layout and the optional input normalisation."""
from __future__ import annotations

import math
from typing import ClassVar

import torch

from .layers.layout import is_tracing

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class InputSizeError(ValueError):
    """Raised when an input image size cannot be processed by a backbone."""


class InputHandling:
    """Input checks and preparation of a :class:`~yolo_backbones.core.base.Backbone` (a mixin of it).

    ``input_norm`` (a constructor option, set by the YOLO hosts for their backbone rows): the model takes RGB in
    ``[0, 1]``, as YOLO feeds it, and applies the ImageNet mean / std itself; without it the input is expected
    ImageNet-normalised already, as by the reference models and timm.
    """

    # Sides of the input must be multiples of this (1 means any size works).
    input_multiple: ClassVar[int] = 32
    # Set on an instance by fuse() when the input normalisation was folded into the stem conv: all of it
    # (a stem conv without padding), or only the division by the std (see input_scale_folded).
    input_norm_folded: bool = False
    input_scale_folded: bool = False

    def init_input(self, in_chans: int, input_norm: bool) -> None:
        """Record the input options (called by ``Backbone.__init__``)."""
        self.in_chans = int(in_chans)
        self._input_norm = bool(input_norm)
        # Non-persistent buffers, so state_dicts stay identical to the official ones.
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if in_chans == 3 else ((0.0,) * in_chans, (1.0,) * in_chans)
        self.register_buffer("input_mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("input_std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    @property
    def input_norm(self) -> bool:
        """Whether the model normalises ``[0, 1]`` RGB input itself (see the class docstring)."""
        mode = self.__dict__.get("_input_norm")
        # Models pickled by 0.2 and earlier store no such option: their detection backbones (num_classes 0) normalised.
        return self.num_classes == 0 if mode is None else mode

    def check_input(self, x: torch.Tensor) -> None:
        """Raise :class:`InputSizeError` unless ``x`` is ``(B, in_chans, H, W)`` with H, W multiples of
        ``input_multiple``."""
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise InputSizeError(f"{type(self).__name__} expects a (B, {self.in_chans}, H, W) tensor, "
                                 f"got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        k = self.input_multiple
        if k > 1 and (h % k or w % k):
            raise InputSizeError(
                f"{type(self).__name__}-{self.variant.upper()} needs image sides that are multiples of {k}, got "
                f"{h}x{w}; use an --img-size that is a multiple of {k} (YOLOv5 letterboxing then pads to it)")

    def require_input_multiple(self, multiple: int) -> None:
        """Also require input sides that are multiples of ``multiple`` (a host's neck may need more than the
        backbone)."""
        self.input_multiple = math.lcm(self.input_multiple, int(multiple))

    def inference_layout(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` laid out channels-last in inference (eval mode), unchanged in training.

        Channels-last is the fast layout on CPU (oneDNN convolutions without reorders, free switches between
        maps and token grids, see :mod:`~yolo_backbones.core.layers.layout`); every layer computes the same
        values in both layouts. Training keeps PyTorch's default layout.
        """
        return x if self.training else x.contiguous(memory_format=torch.channels_last)

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        """The input the first layer reads: in the :meth:`inference_layout`, ImageNet-normalised if ``input_norm``.

        Whatever :meth:`~yolo_backbones.core.inference.lifecycle.InferenceLifecycle.fuse` folded into the stem
        conv is skipped; with only the mean left, inference does the layout change and the subtraction in one pass.
        """
        if not self.input_norm or self.input_norm_folded:
            return self.inference_layout(x)
        if not self.input_scale_folded:
            return (self.inference_layout(x) - self.input_mean) / self.input_std
        if self.training or is_tracing():  # mean first: a broadcast over the 3-channel axis of NHWC is slow (XNNPACK)
            return self.inference_layout(x - self.input_mean)
        out = torch.empty(x.shape, dtype=torch.result_type(x, self.input_mean), device=x.device,
                          memory_format=torch.channels_last)
        return torch.sub(x, self.input_mean, out=out)
