"""Activation checkpointing of backbone blocks: keep only block inputs for backward, recompute the rest.

With :func:`run_block` a block's intermediate activations are not kept for the backward pass; the block's
forward runs a second time during backward (``torch.utils.checkpoint``, non-reentrant) to recreate them. Peak
training memory then holds the block boundaries plus one block's activations instead of every activation of
the backbone, for about one extra backbone forward of compute.

The recomputation must not be a second training step of the block's BatchNorms: during it,
:class:`~yolo_backbones.core.layers.SafeBatchNorm2d` normalises with the batch statistics as in the first
pass but leaves ``running_mean`` / ``running_var`` / ``num_batches_tracked`` alone (:func:`recomputing`).
Dropout and stochastic-depth masks are replayed (the RNG state is restored), so the gradients are those of
the plain forward.
"""
from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .inference.context import is_tracing

__all__ = ["run_block", "recomputing", "recompute_in_backward"]

_RECOMPUTING: contextvars.ContextVar[bool] = contextvars.ContextVar("yolo_backbones_recomputing", default=False)
# True inside a checkpointed block (first pass and recomputation): nothing there is kept for backward anyway.
_IN_CHECKPOINT: contextvars.ContextVar[bool] = contextvars.ContextVar("yolo_backbones_in_checkpoint", default=False)


def recomputing() -> bool:
    """True while a checkpointed block's forward is being re-run during backward."""
    return _RECOMPUTING.get()


@contextlib.contextmanager
def _flag(var: contextvars.ContextVar[bool]) -> Iterator[None]:
    token = var.set(True)
    try:
        yield
    finally:
        var.reset(token)


@contextlib.contextmanager
def _recompute_context() -> Iterator[None]:
    with _flag(_RECOMPUTING), _flag(_IN_CHECKPOINT):
        yield


def _contexts() -> tuple[contextlib.AbstractContextManager, contextlib.AbstractContextManager]:
    return _flag(_IN_CHECKPOINT), _recompute_context()


def run_block(block: nn.Module, *args: Any, enabled: bool = True) -> Any:
    """``block(*args)``, checkpointed when ``enabled``, ``block`` is training and autograd
    is recording.

    Args:
        block: a backbone block (or stem / downsampling layer); may return a tensor or a tuple.
        args: its inputs.
        enabled: the backbone's ``grad_checkpointing`` setting.
    """
    # Parameter-free layers (reshapes) keep nothing worth recomputing.
    if not (enabled and block.training and torch.is_grad_enabled() and next(block.parameters(), None) is not None):
        return block(*args)
    return checkpoint(block, *args, use_reentrant=False, context_fn=_contexts)


def recompute_in_backward(fn: Callable[..., torch.Tensor], *tensors: torch.Tensor) -> torch.Tensor:
    """``fn(*tensors)`` keeping only its inputs for backward; ``fn``'s intermediates are recomputed there.

    For cheap chains whose intermediates are large: BatchNorm -> GELU on wide maps, the attention matrices
    of an attention core. Same values and gradients as ``fn(*tensors)``; BatchNorm running statistics are
    updated once (see :func:`recomputing`). Plain ``fn(*tensors)`` when autograd is off or inside a block that
    is already checkpointed, and while a graph is captured for export (``is_tracing``: the recorded graph
    must not depend on grad mode, which torch.jit.trace's check run switches off).
    """
    if not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors)) or _IN_CHECKPOINT.get():
        return fn(*tensors)
    if is_tracing():
        return fn(*tensors)
    return checkpoint(fn, *tensors, use_reentrant=False, context_fn=_contexts)
