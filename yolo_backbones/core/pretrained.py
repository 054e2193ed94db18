"""Loading ImageNet weights into a backbone: official or timm checkpoint keys, strict, whatever was pruned."""
from __future__ import annotations

import os
from typing import ClassVar

import torch

from .weights.sources import locate_weights, read_weights_file
from .weights.state_dict import load_backbone_weights


class PretrainedWeights:
    """Checkpoint loading of a :class:`~yolo_backbones.core.base.Backbone` (a mixin of it)."""

    # Prefixes of state_dict keys of the final classification layer(s): absent when ``num_classes == 0``.
    classifier_prefixes: ClassVar[tuple[str, ...]] = ("head.",)

    def official_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """An official-format copy of a checkpoint's ``state_dict`` (identity unless a family reads other formats)."""
        return state_dict

    def convert_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A checkpoint's ``state_dict`` with this model's keys: official names (:meth:`official_state_dict`), without
        the classifier keys when the model has no classifier and without the keys of pruned modules
        (:meth:`~yolo_backbones.core.features.FeatureContract.pruned_modules`)."""
        state_dict = self.official_state_dict(state_dict)
        skipped = tuple(f"{name}." for name in self.pruned_modules())
        if not self.num_classes:
            skipped += tuple(self.classifier_prefixes)
        return {k: v for k, v in state_dict.items() if not k.startswith(skipped)} if skipped else state_dict

    def load_pretrained(self, weights: str | os.PathLike) -> PretrainedWeights:
        """Load ImageNet weights strictly: a file path or a weights name such as ``"imagenet"``; returns ``self``.

        Names are resolved by :mod:`yolo_backbones.core.weights.sources` (local folders, the Hugging Face
        cache, then a download when allowed). Every key this model has must be in the file, with its shape.
        """
        found = locate_weights(f"{self.family}_{self.variant}", weights)
        state_dict = read_weights_file(found.path)  # pickles go through the restricted loader
        load_backbone_weights(self, state_dict, source=str(found.path))
        self.train(self.training)  # re-derive caches computed from the loaded parameters
        return self
