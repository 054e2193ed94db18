"""Name -> backbone registry: ``create("edgevit_xxs")``, ``list_backbones()``, YAML class names."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:  # annotations only: a runtime import would be circular (backbone modules import `register`)
    from .base import Backbone

_FAMILIES: dict[str, type[Backbone]] = {}


def register(cls: type[Backbone]) -> type[Backbone]:
    """Class decorator: make every variant of ``cls`` available as ``f"{cls.family}_{variant}"``."""
    _FAMILIES[cls.family] = cls
    return cls


def backbone_classes() -> dict[str, type[Backbone]]:
    """YAML module names (class names such as ``"EdgeViT"``) -> backbone classes."""
    return {cls.__name__: cls for cls in _FAMILIES.values()}


def backbone_names() -> list[str]:
    """All registered ``family_variant`` names, e.g. ``["edgevit_xxs", ...]``."""
    return [f"{family}_{variant}" for family, cls in _FAMILIES.items() for variant in cls.variants]


def _split_name(name: str) -> tuple[type[Backbone], str]:
    key = str(name).lower().replace("-", "_")
    family, _, variant = key.rpartition("_")
    if family not in _FAMILIES or variant not in _FAMILIES[family].variants:
        raise ValueError(f"unknown backbone {name!r}; known backbones: {', '.join(backbone_names())}")
    return _FAMILIES[family], variant


def create(name: str, num_classes: int = 1000, pretrained: str | None = None,
           out_indices: Sequence[int] = (0, 1, 2, 3), in_chans: int = 3) -> Backbone:
    """Build a backbone by registry name.

    Args:
        name: ``family_variant``, e.g. ``"edgevit_xxs"`` (see :func:`backbone_names`).
        num_classes: ``1000`` (default) builds the ImageNet classifier of the paper; ``0`` builds the
            feature extractor returning the ``out_indices`` stage maps.
        pretrained: path of an official checkpoint to load strictly.
        out_indices: stages returned in feature mode (0..3 = strides 4..32).
        in_chans: input channels.

    Returns:
        The backbone module (eval/train mode as constructed: training).
    """
    cls, variant = _split_name(name)
    model = cls(variant, out_indices=out_indices, num_classes=num_classes, in_chans=in_chans)
    if pretrained:
        model.load_pretrained(pretrained)
    return model


def list_backbones() -> list[dict[str, Any]]:
    """One record per registered variant: ``name``, ``yaml_module``, ``variant``, ``strides``, ``channels``."""
    return [{"name": f"{family}_{variant}", "yaml_module": cls.__name__, "variant": variant,
             "strides": list(cls.stage_strides), "channels": list(cls.variant_channels(variant))}
            for family, cls in _FAMILIES.items() for variant in cls.variants]
