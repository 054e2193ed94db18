"""The host's ``BaseModel.fuse()`` / ``is_fused()`` extended to the plugin's backbones (any host)."""
from __future__ import annotations

from typing import Any, Callable

from torch import nn

from ...core.base import Backbone
from ...core.layers.layout import channels_last_weights


def backbones_of(model: nn.Module) -> list[Backbone]:
    """Every :class:`Backbone` inside ``model``."""
    return [m for m in model.modules() if isinstance(m, Backbone)]


def make_fuse(original: Callable[..., nn.Module],
              fold_host: Callable[[nn.Module], None] | None = None) -> Callable[..., nn.Module]:
    """Wrap a host's ``BaseModel.fuse(self, ...)`` (its Conv + BN folds, then a model summary).

    Every :class:`Backbone` in the model is fused first (:meth:`Backbone.fuse`: its Conv+BN pairs and other
    exact re-parameterisations); in a model with a backbone, ``fold_host(model)`` may then do some of the
    host's own folds more precisely; then the original runs with the caller's arguments, so the printed
    summary is that of the fully fused model. Finally the neck's weights are laid out channels-last, the
    layout the fused backbones hand over, so its convolutions do not reorder them on every call (stock
    models are left as they are). Idempotent like the original. As in the hosts, a fused model is for
    inference (val / predict / export), not for training.
    """

    def fuse(self: nn.Module, *args: Any, **kwargs: Any) -> nn.Module:
        backbones = backbones_of(self)
        for m in backbones:
            m.fuse()
        if backbones and fold_host is not None:
            fold_host(self)
        fused = original(self, *args, **kwargs)
        if backbones:
            channels_last_weights(fused if isinstance(fused, nn.Module) else self)
        return fused

    fuse.__wrapped__ = original
    fuse.__doc__ = original.__doc__
    return fuse


def make_is_fused(original: Callable[[nn.Module], bool]) -> Callable[[nn.Module], bool]:
    """Wrap a host's ``BaseModel.is_fused()``: also ``False`` while a backbone is not fused yet."""

    def is_fused(self: nn.Module) -> bool:
        return original(self) and all(getattr(m, "fused", False) for m in backbones_of(self))

    is_fused.__wrapped__ = original
    return is_fused
