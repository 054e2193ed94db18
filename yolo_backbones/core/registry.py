"""Name -> backbone registry: ``create("edgevit_xxs")``, ``list_backbones()``, YAML class names."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

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


def create(name: str, pretrained: str | None = None, **kwargs: Any) -> Backbone:
    """Build a backbone by registry name, as timm's ``create_model`` does; the defaults are the class's.

    Args:
        name: ``family_variant``, e.g. ``"edgevit_xxs"`` (see :func:`backbone_names`).
        pretrained: a weights file or name (e.g. ``"imagenet"``), loaded strictly into the whole model.
        kwargs: the class's keyword options: ``features_only`` (with ``out_indices``, default ``(1, 2, 3)``) for a
            feature extractor, ``num_classes`` (1000 by default; 0 for pooled features), ``in_chans``,
            ``input_norm``, ``drop_path_rate``, ``grad_checkpointing``.

    Returns:
        The backbone module (training mode, as constructed).
    """
    cls, variant = _split_name(name)
    return cls(variant, pretrained=pretrained, **kwargs)


def list_backbones() -> list[dict[str, Any]]:
    """One record per registered variant: ``name``, ``yaml_module``, ``variant``, ``strides``, ``channels``."""
    return [{"name": f"{family}_{variant}", "yaml_module": cls.__name__, "variant": variant,
             "strides": list(cls.stage_strides), "channels": list(cls.variant_channels(variant))}
            for family, cls in _FAMILIES.items() for variant in cls.variants]
