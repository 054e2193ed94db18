"""A backbone's inference lifecycle: ``fuse()``, the eval-fusion twin, and the context its forward runs in."""
from __future__ import annotations

import contextlib
from typing import Any

from torch import nn

from .context import fused_forward
from .eval_fusion import TWIN_ATTRIBUTE, drop_twin, eval_twin
from .fuse import channels_last_weights, fuse_backbone, scale_input_channels
from .runtime import tune_if_requested


class InferenceLifecycle:
    """Fusing and eval fusion of a :class:`~yolo_backbones.core.base.Backbone` (a mixin of it).

    The eval-fusion copy (:mod:`.eval_fusion`) is derived data: entering training mode, ``.to()`` / ``.half()``
    and ``fuse()`` drop it, and pickles or deep copies never carry it.
    """

    # Eval-mode forwards run a fused copy (see eval_fusion); a class default, so older pickled models have it.
    eval_fusion: bool = True
    # Set by fuse(); `fused_forms` only by this version's fuse(), which prepares the blocks' fused forms (a model
    # fused by an older version runs its folded layers on the reference code).
    fused: bool = False
    fused_forms: bool = False

    def set_eval_fusion(self, enable: bool = True) -> InferenceLifecycle:
        """Let eval-mode forwards without autograd run a fused copy of this backbone (on by default); returns ``self``.

        The copy computes the same outputs (within the fusion tolerance, < 1e-4) on fused layers; it is built on
        first use and rebuilt whenever a parameter or buffer changes
        (:mod:`~yolo_backbones.core.inference.eval_fusion`).
        Turn it off to run the module's own layers in eval mode, e.g. to compare them with a fused model.
        """
        self.eval_fusion = bool(enable)
        if not enable:
            drop_twin(self)
        return self

    def eval_twin(self) -> nn.Module | None:
        """The fused copy an eval-mode forward delegates to now, or None to run this module's own layers."""
        return eval_twin(self)

    def train(self, mode: bool = True) -> InferenceLifecycle:
        """``nn.Module.train``; entering training mode also frees the eval-fusion copy. Returns ``self``."""
        if mode:
            drop_twin(self)
        return super().train(mode)

    def _apply(self, *args, **kwargs):  # .to(), .half(), .cuda(), ...: the eval-fusion copy would be stale
        drop_twin(self)
        return super()._apply(*args, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        # Pickles and deep copies (YOLOv5 checkpoints, EMA) never carry the eval-fusion copy: it is derived data.
        state = super().__getstate__()
        state.pop(TWIN_ATTRIBUTE, None)
        return state

    def kernels(self) -> contextlib.AbstractContextManager:
        """Context of this backbone's forward: the blocks' fused forms run inside it once :meth:`fuse` prepared them
        (:mod:`~yolo_backbones.core.inference.context`), the reference layers otherwise."""
        return fused_forward(self.fused_forms and not self.training)

    def stem_conv(self) -> tuple[nn.Module, str] | None:
        """``(parent, name)`` of the conv that reads the normalised input, for :meth:`fuse` to fold ``1 / std``
        into (exact for any padding); ``None`` if the subclass folds the normalisation itself."""
        return None

    def fuse(self) -> InferenceLifecycle:
        """Fold BatchNorms and other exact re-parameterisations in place for inference; returns ``self``.

        See :mod:`yolo_backbones.core.inference.fuse`: ``Conv2d -> BN`` pairs in ``nn.Sequential`` containers plus
        the patterns each block declares in its ``fuse_()`` method (which also prepares the block's fused form);
        the outputs stay equal to the unfused eval-mode outputs (float rounding only), at any input size. BNs
        are folded with their running statistics, so the fused backbone is for inference only (not for
        training). Its 4-D weights are then laid out channels-last, the inference layout. Idempotent.
        ``YOLO_BACKBONES_MALLOC_TUNING=1`` also tunes the process's allocator
        (:mod:`~yolo_backbones.core.inference.runtime`). The hosts' ``model.fuse()`` calls this.
        """
        drop_twin(self)
        if not self.fused:
            fuse_backbone(self)
            self.fused_forms = True
        stem = self.stem_conv() if self.input_norm and not (self.input_norm_folded or self.input_scale_folded) else None
        if stem is not None:
            parent, name = stem
            setattr(parent, name, scale_input_channels(getattr(parent, name), 1.0 / self.input_std.double()))
            self.input_scale_folded = True
        tune_if_requested()
        # Inference layout for the weights too: convolutions then run channels-last without a per-call weight
        # reorder (the input is converted in forward, see inference_layout).
        return channels_last_weights(self)
