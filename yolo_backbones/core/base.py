"""The interface every backbone shares, assembled from focused parts.

A backbone is one ``nn.Module`` built like a timm model, in one of three modes:

* ``num_classes > 0`` (the default, 1000): the ImageNet classifier of the paper (parameter-count parity,
  official checkpoints load strictly); ``forward`` returns logits ``(B, num_classes)``.
* ``num_classes == 0``: no classifier; ``forward`` returns the pooled features ``(B, num_features)``.
* ``features_only=True``: a feature extractor (a YOLO backbone row); ``forward`` returns a list with one map per
  entry of ``out_indices`` (stage 0 is stride 4 ... stage 3 is stride 32), each ``(B, C_i, H/s_i, W/s_i)``.

The parts: variant tables and the forward dispatch (here), the stage structure and timm's feature API
(:mod:`.features`), checkpoint loading (:mod:`.pretrained`), fusing and eval fusion
(:mod:`.inference.lifecycle`), input checks and preparation (:mod:`.input`).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from .checkpointing import run_block
from .features import FeatureContract
from .inference.lifecycle import InferenceLifecycle
from .input import IMAGENET_MEAN, IMAGENET_STD, InputHandling, InputSizeError
from .pretrained import PretrainedWeights

__all__ = ["Backbone", "InputSizeError", "IMAGENET_MEAN", "IMAGENET_STD"]


class Backbone(FeatureContract, PretrainedWeights, InferenceLifecycle, InputHandling, nn.Module):
    """Base class of all backbones.

    Subclasses set the class attributes below and those of the parts (``stage_strides``, ``final_norm_name``,
    ``head_module_names``, ``classifier_prefixes``, ``input_multiple``), build the whole model (stem first, so
    the first registered parameter is the stem convolution weight: YOLOv5 reads the input channel count from
    it), call :meth:`finish_build`, and implement :meth:`stage_module_names`, :meth:`forward_stages` and
    :meth:`forward_head`.

    Args:
        variant: key of ``cls.variants`` (case-insensitive), e.g. ``"xxs"``.
        out_indices: the stages a feature extractor returns, each in ``0..3`` (default ``(1, 2, 3)``, P3-P5);
            only with ``features_only``.
        features_only: build a feature extractor (see the module docstring); the head is pruned.
        num_classes: classes of the classifier; ``0`` for pooled features (ignored with ``features_only``).
        in_chans: input image channels.
        input_norm: the model takes ``[0, 1]`` RGB and normalises it with the ImageNet mean / std itself (the YOLO
            hosts build their backbone rows so); otherwise the input is expected normalised, as by timm.
        grad_checkpointing: recompute block activations in backward (:meth:`set_grad_checkpointing`).
    """

    family: ClassVar[str] = ""
    variants: ClassVar[dict[str, dict[str, Any]]] = {}
    # Activation checkpointing of the blocks in training (a class default, so older pickled models have it).
    grad_checkpointing: bool = False

    def __init__(self, variant: str, out_indices: Sequence[int] | int | None = None, *, features_only: bool = False,
                 num_classes: int = 1000, in_chans: int = 3, input_norm: bool = False,
                 grad_checkpointing: bool = False) -> None:
        super().__init__()
        self.grad_checkpointing = bool(grad_checkpointing)
        self.variant = self.resolve_variant(variant)
        self.cfg = self.variants[self.variant]
        self.num_classes = 0 if features_only else int(num_classes)
        self.init_features(features_only, out_indices)
        self.init_input(in_chans, input_norm)

    def finish_build(self, pretrained: str | None) -> None:
        """End of a subclass's ``__init__``: load ``pretrained`` into the whole model, then prune a feature
        extractor to the stages it returns (:meth:`prune_intermediate_layers`)."""
        if pretrained:
            self.load_pretrained(pretrained)
        if self.features_only:
            self.prune_intermediate_layers(self.out_indices, prune_head=True)

    @classmethod
    def resolve_variant(cls, variant: str) -> str:
        """Return the canonical variant key for ``variant`` or raise a ``ValueError`` listing the known ones."""
        key = str(variant).lower()
        if key not in cls.variants:
            known = ", ".join(cls.variants)
            raise ValueError(f"unknown {cls.__name__} variant {variant!r}; known variants: {known}")
        return key

    @classmethod
    def variant_channels(cls, variant: str) -> tuple[int, ...]:
        """Output channels of the four stages of ``variant``, read from the config table (no forward pass): its
        ``embed_dims`` unless a family says otherwise."""
        return tuple(cls.variants[cls.resolve_variant(variant)]["embed_dims"])

    # ------------------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> list[torch.Tensor] | torch.Tensor:
        """Feature extractor: list of the ``out_indices`` maps (stride-32 map after the final norm). Otherwise
        logits, or pooled features with ``num_classes == 0``.

        In eval mode the input is converted to channels-last (:meth:`inference_layout`), so the returned maps are
        channels-last tensors (same values; ``.contiguous()`` gives the NCHW layout if needed). An eval-mode forward
        without autograd runs a fused copy of the backbone (:meth:`set_eval_fusion`).
        """
        twin = self.eval_twin()
        if twin is not None:
            self.check_input(x)
            return twin(x)
        if self.features_only:
            return self.forward_intermediates(x, self.out_indices, norm=True, intermediates_only=True)
        self.check_input(x)
        if self.num_built_stages < len(self.stage_strides):
            raise RuntimeError(f"{type(self).__name__} was pruned to {self.num_built_stages} stages; its classifier "
                               "needs all of them (use forward_intermediates)")
        with self.kernels():
            return self.classify(self.prepare_input(x))

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` (pooled features without classes) of a prepared input (:meth:`prepare_input`)."""
        return self.forward_head(self.final_norm(self.forward_stages(x, len(self.stage_strides) - 1)[-1]))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Map the normed stride-32 output ``(B, C_3, h, w)`` to logits ``(B, num_classes)`` (or, with
        ``pre_logits`` or without classes, the pooled features)."""
        raise NotImplementedError

    def set_grad_checkpointing(self, enable: bool = True) -> Backbone:
        """Turn activation checkpointing of the blocks on or off (timm's method name); returns ``self``.

        When on, a training forward keeps only the input of each block (stem, downsampling layers and the
        blocks of every stage) for backward, and backward runs each block's forward again to recreate its
        activations (:mod:`~yolo_backbones.core.checkpointing`). The gradients and the BatchNorm statistics
        updates are those of the plain forward; the price is about one more backbone forward per training
        step. Inference is unaffected.
        """
        self.grad_checkpointing = bool(enable)
        return self

    def run_block(self, block: nn.Module, *args: Any) -> Any:
        """``block(*args)``, checkpointed in training when :attr:`grad_checkpointing` is on."""
        return run_block(block, *args, enabled=self.grad_checkpointing)

    def extra_repr(self) -> str:
        mode = f"features_only=True, out_indices={list(self.out_indices)}" if self.features_only else \
            f"num_classes={self.num_classes}"
        return f"variant={self.variant!r}, {mode}" + (", grad_checkpointing=True" if self.grad_checkpointing else "")
