"""The interface every backbone shares: variant tables, stage metadata, input checks, output selection.

A backbone is one ``nn.Module`` that serves two roles:

* ``num_classes > 0``: the ImageNet classifier of the paper (used for parameter-count parity and to
  load official checkpoints with ``strict=True``); ``forward`` returns logits ``(B, num_classes)``.
* ``num_classes == 0``: a YOLOv5 layer; ``forward`` returns a list of feature maps, one per entry
  of ``out_indices`` (stage 0 is stride 4 ... stage 3 is stride 32), each ``(B, C_i, H/s_i, W/s_i)``.
"""
from __future__ import annotations

import math
import os
from typing import Any, ClassVar, Sequence

import torch
from torch import nn

from .layers.layout import is_tracing

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class InputSizeError(ValueError):
    """Raised when an input image size cannot be processed by a backbone."""


class Backbone(nn.Module):
    """Base class of all backbones: validates arguments and exposes channel/stride metadata.

    Subclasses set the class attributes below, build their layers (stem first, so the first
    registered parameter is the stem convolution weight: YOLOv5 reads the input channel count
    from it), and implement :meth:`forward_stages` and, for classification, :meth:`forward_head`.

    Args:
        variant: key of ``cls.variants`` (case-insensitive), e.g. ``"xxs"``.
        out_indices: stages to return in detection mode, each in ``0..3``.
        num_classes: ``0`` for a detection backbone, ``>0`` for the ImageNet classifier.
        in_chans: input image channels.
    """

    family: ClassVar[str] = ""
    variants: ClassVar[dict[str, dict[str, Any]]] = {}
    stage_strides: ClassVar[tuple[int, ...]] = (4, 8, 16, 32)
    # Sides of the input must be multiples of this (1 means any size works).
    input_multiple: ClassVar[int] = 32
    # Prefixes of state_dict keys that belong to the classifier only.
    classifier_prefixes: ClassVar[tuple[str, ...]] = ("head.",)
    # Set on an instance by fuse() when the input normalisation was folded into the stem conv: all of it
    # (a stem conv without padding), or only the division by the std (see input_scale_folded).
    input_norm_folded: bool = False
    input_scale_folded: bool = False
    # Activation checkpointing of the blocks in training (a class default, so older pickled models have it).
    grad_checkpointing: bool = False
    # Eval-mode forwards run a fused copy (see core/eval_fusion.py); a class default like grad_checkpointing.
    eval_fusion: bool = True

    def __init__(self, variant: str, out_indices: Sequence[int] = (1, 2, 3), num_classes: int = 0,
                 in_chans: int = 3, grad_checkpointing: bool = False) -> None:
        super().__init__()
        self.grad_checkpointing = bool(grad_checkpointing)
        self.variant = self.resolve_variant(variant)
        self.cfg = self.variants[self.variant]
        self.num_classes = int(num_classes)
        self.in_chans = int(in_chans)
        self.out_indices = self._check_out_indices(out_indices)
        # Set by the subclass once the stages are known.
        self.stage_channels: tuple[int, ...] = ()
        # Checkpoint key prefixes of parts a detection backbone does not build (stages after the last
        # returned one); their weights are skipped when an ImageNet checkpoint is loaded.
        self.unbuilt_prefixes: tuple[str, ...] = ()
        # YOLOv5 feeds RGB in [0, 1]; ImageNet weights expect mean/std-normalised input.
        # Non-persistent so state_dicts stay identical to the official ones.
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if in_chans == 3 else ((0.0,) * in_chans, (1.0,) * in_chans)
        self.register_buffer("input_mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("input_std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    # ----------------------------------------------------------------------------- metadata
    @classmethod
    def resolve_variant(cls, variant: str) -> str:
        """Return the canonical variant key for ``variant`` or raise a ``ValueError`` listing the known ones."""
        key = str(variant).lower()
        if key not in cls.variants:
            known = ", ".join(cls.variants)
            raise ValueError(f"unknown {cls.__name__} variant {variant!r}; known variants: {known}")
        return key

    def _check_out_indices(self, out_indices: Sequence[int] | int) -> tuple[int, ...]:
        if isinstance(out_indices, int):
            out_indices = [out_indices]
        indices = tuple(int(i) for i in out_indices)
        n = len(self.stage_strides)
        if not indices or any(i < 0 or i >= n for i in indices) or list(indices) != sorted(set(indices)):
            raise ValueError(
                f"{type(self).__name__} out_indices {list(out_indices)} are invalid: give increasing stage "
                f"indices in 0..{n - 1} (strides {'/'.join(map(str, self.stage_strides))}), e.g. [1, 2, 3] for P3-P5")
        return indices

    @classmethod
    def variant_channels(cls, variant: str) -> tuple[int, ...]:
        """Output channels of the four stages of ``variant``, read from the config table (no forward pass)."""
        raise NotImplementedError

    @property
    def out_channels(self) -> list[int]:
        """Channels of each returned feature map, in ``out_indices`` order."""
        return [self.stage_channels[i] for i in self.out_indices]

    @property
    def out_strides(self) -> list[int]:
        """Stride of each returned feature map, in ``out_indices`` order."""
        return [self.stage_strides[i] for i in self.out_indices]

    # ------------------------------------------------------------------------- checkpointing
    def set_grad_checkpointing(self, enable: bool = True) -> "Backbone":
        """Turn activation checkpointing of the blocks on or off (timm's method name); returns ``self``.

        When on, a training forward keeps only the input of each block (stem, downsampling layers and the
        blocks of every stage) for backward, and backward runs each block's forward again to recreate its
        activations (:mod:`~yolo_backbones.core.checkpointing`). The gradients and the BatchNorm statistics
        updates are those of the plain forward; the price is about one more backbone forward per training
        step. Inference is unaffected.
        """
        self.grad_checkpointing = bool(enable)
        return self

    def set_eval_fusion(self, enable: bool = True) -> "Backbone":
        """Let eval-mode forwards without autograd run a fused copy of this backbone (on by default); returns ``self``.

        The copy computes the same outputs (within the fusion tolerance, < 1e-4) on fused layers; it is built
        on first use and rebuilt whenever a parameter or buffer changes (:mod:`~yolo_backbones.core.eval_fusion`).
        Turn it off to run the module's own layers in eval mode, e.g. to compare them with a fused model.
        """
        from .eval_fusion import drop_twin

        self.eval_fusion = bool(enable)
        if not enable:
            drop_twin(self)
        return self

    def train(self, mode: bool = True) -> "Backbone":
        """``nn.Module.train``; entering training mode also frees the eval-fusion copy. Returns ``self``."""
        if mode:
            from .eval_fusion import drop_twin

            drop_twin(self)
        return super().train(mode)

    def _apply(self, *args, **kwargs):  # .to(), .half(), .cuda(), ...: the eval-fusion copy would be stale
        from .eval_fusion import drop_twin

        drop_twin(self)
        return super()._apply(*args, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        # Pickles and deep copies (YOLOv5 checkpoints, EMA) never carry the eval-fusion copy: it is derived data.
        from .eval_fusion import TWIN_ATTRIBUTE

        state = super().__getstate__()
        state.pop(TWIN_ATTRIBUTE, None)
        return state

    def run_block(self, block: nn.Module, *args, fn=None):
        """``block(*args)`` (or ``fn(*args)``), checkpointed in training when :attr:`grad_checkpointing` is on."""
        from .checkpointing import run_block

        return run_block(block, *args, enabled=self.grad_checkpointing, fn=fn)

    # ------------------------------------------------------------------------------ forward
    def check_input(self, x: torch.Tensor) -> None:
        """Raise :class:`InputSizeError` unless ``x`` is ``(B, in_chans, H, W)`` with H, W multiples of ``input_multiple``."""
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise InputSizeError(f"{type(self).__name__} expects a (B, {self.in_chans}, H, W) tensor, got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        k = self.input_multiple
        if k > 1 and (h % k or w % k):
            raise InputSizeError(
                f"{type(self).__name__}-{self.variant.upper()} needs image sides that are multiples of {k}, got "
                f"{h}x{w}; use an --img-size that is a multiple of {k} (YOLOv5 letterboxing then pads to it)")

    def forward_stages(self, x: torch.Tensor, last_stage: int) -> list[torch.Tensor]:
        """Run stages ``0..last_stage`` on a ``(B, C, H, W)`` input; return their ``(B, C_i, H_i, W_i)`` outputs."""
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Map the last stage output ``(B, C_4, h, w)`` to logits ``(B, num_classes)``."""
        raise NotImplementedError

    def inference_layout(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` laid out channels-last in inference (eval mode), unchanged in training.

        Channels-last is the fast layout on CPU (oneDNN convolutions without reorders, free switches between
        maps and token grids, see :mod:`~yolo_backbones.core.layers.layout`); every layer computes the same
        values in both layouts. Training keeps PyTorch's default layout.
        """
        return x if self.training else x.contiguous(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor] | torch.Tensor:
        """Detection mode: list of the ``out_indices`` feature maps. Classification mode: logits.

        In eval mode the input is converted to channels-last (:meth:`inference_layout`), so the returned maps
        are channels-last tensors (same values; ``.contiguous()`` gives the NCHW layout if needed). A fused
        backbone runs its conv / linear layers on fused CPU kernels (see :meth:`kernels`). An eval-mode forward
        without autograd runs a fused copy of the backbone instead (:meth:`set_eval_fusion`).
        """
        self.check_input(x)
        twin = self.eval_twin()
        if twin is not None:
            return twin(x)
        with self.kernels():
            if self.num_classes:
                return self.classify(self.inference_layout(x))
            stages = self.forward_stages(self.normalize_input(x), self.out_indices[-1])
        return [stages[i] for i in self.out_indices]

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Classification mode: logits ``(B, num_classes)`` of a ``(B, in_chans, H, W)`` input (ImageNet-normalised,
        in the :meth:`inference_layout`); runs all stages and :meth:`forward_head`."""
        return self.forward_head(self.forward_stages(x, len(self.stage_strides) - 1)[-1])

    def eval_twin(self) -> "Backbone | None":
        """The fused copy an eval-mode forward delegates to now, or None to run this module's own layers."""
        from .eval_fusion import eval_twin

        return eval_twin(self)

    def normalize_input(self, x: torch.Tensor) -> torch.Tensor:
        """Detection mode: ``(x - mean) / std`` of ``[0, 1]`` RGB input, in the :meth:`inference_layout`.

        Whatever :meth:`fuse` folded into the stem conv is skipped; with only the mean left, inference does the
        layout change and the subtraction in one pass.
        """
        if self.input_norm_folded:
            return self.inference_layout(x)
        if not self.input_scale_folded:
            return (self.inference_layout(x) - self.input_mean) / self.input_std
        if self.training or is_tracing():
            return self.inference_layout(x) - self.input_mean
        out = torch.empty(x.shape, dtype=torch.result_type(x, self.input_mean), device=x.device,
                          memory_format=torch.channels_last)
        return torch.sub(x, self.input_mean, out=out)

    def stem_conv(self) -> tuple[nn.Module, str] | None:
        """``(parent, name)`` of the conv that reads the normalised input, for :meth:`fuse` to fold ``1 / std``
        into (exact for any padding); ``None`` if the subclass folds the normalisation itself."""
        return None

    def kernels(self):
        """Context for this backbone's forward: fused CPU inference kernels once :meth:`fuse` ran
        (:mod:`~yolo_backbones.core.layers.onednn`), the plain ``torch`` ops before."""
        from .layers import onednn

        return onednn.allowed(getattr(self, "fused", False))

    # ------------------------------------------------------------------------------- fusing
    def fuse(self) -> "Backbone":
        """Fold BatchNorms and other exact re-parameterisations in place for inference; returns ``self``.

        See :mod:`yolo_backbones.core.fuse`: ``Conv2d -> BN`` pairs in ``nn.Sequential`` containers plus the
        patterns each block declares in its ``fuse_()`` method; the outputs stay equal to the unfused
        eval-mode outputs (float rounding only), at any input size. BNs are folded with their running
        statistics, so the fused backbone is for inference only (not for training). Its 4-D weights are
        then laid out channels-last, the inference layout (see :meth:`inference_layout`), and the process's
        allocator is tuned for repeated forwards (:func:`~yolo_backbones.core.runtime.tune_cpu_allocator`;
        ``YOLO_BACKBONES_MALLOC_TUNING=0`` disables it). Idempotent.
        YOLOv5's ``model.fuse()`` calls this through the YOLOv5 patch.
        """
        from .eval_fusion import drop_twin
        from .fuse import fuse_backbone, scale_input_channels
        from .runtime import tune_cpu_allocator

        drop_twin(self)
        fuse_backbone(self)
        stem = None if self.num_classes or self.input_norm_folded or self.input_scale_folded else self.stem_conv()
        if stem is not None:
            parent, name = stem
            setattr(parent, name, scale_input_channels(getattr(parent, name), 1.0 / self.input_std.double()))
            self.input_scale_folded = True
        tune_cpu_allocator()  # inference from here on: stop glibc re-faulting freed activations every forward
        # Inference layout for the weights too: convolutions then run channels-last without a per-call
        # weight reorder (the input is converted in forward, see inference_layout).
        from .layers.layout import channels_last_weights

        return channels_last_weights(self)

    # ---------------------------------------------------------------------------- weights
    def convert_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Map an official checkpoint's keys to this model's keys (identity unless a subclass differs)."""
        return state_dict

    def load_pretrained(self, weights: str | os.PathLike) -> "Backbone":
        """Load ImageNet weights strictly: a file path or a weights name such as ``"imagenet"``; returns ``self``.

        Names are resolved by :mod:`yolo_backbones.core.weights.sources` (local folders, the Hugging Face
        cache, then a download when allowed). In detection mode the classifier keys are skipped.
        """
        from .weights.sources import locate_weights, read_weights_file
        from .weights.state_dict import load_backbone_weights

        found = locate_weights(f"{self.family}_{self.variant}", weights)
        state_dict = read_weights_file(found.path)  # pickles go through the restricted loader
        load_backbone_weights(self, state_dict, source=str(found.path))
        self.train(self.training)  # re-derive caches computed from the loaded parameters
        return self

    def require_input_multiple(self, multiple: int) -> None:
        """Also require input sides that are multiples of ``multiple`` (a host's neck may need more than the backbone)."""
        self.input_multiple = math.lcm(self.input_multiple, int(multiple))

    def extra_repr(self) -> str:
        text = f"variant={self.variant!r}, out_indices={list(self.out_indices)}, num_classes={self.num_classes}"
        return text + (", grad_checkpointing=True" if self.grad_checkpointing else "")
