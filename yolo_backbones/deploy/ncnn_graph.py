"""Rewrites applied while pnnx captures a model, so that ncnn runs its fast kernels; outputs are unchanged.

pnnx lowers ``Linear`` on an input of more than two dims (EdgeViT's token grids ``(B, H, W, C)``, Mobile-Former's
and EfficientFormer's token sequences ``(B, N, C)``) to ``Reshape -> Gemm -> Reshape`` where the second ``Reshape``
takes its shape from another blob at run time (``6="0w,1h,1c"``). ncnn runs such a shape-expression ``Reshape``
element by element: 80 ms for one ``(6400, 144)`` map, more than the whole ``Gemm`` (EdgeViT-XXS at 320x320
spent ~85 % of its NCNN time there). :class:`NCNNFriendly` computes ``Linear`` on the flattened ``(-1, C)`` rows
and reshapes back; at the static export shape pnnx folds those shapes into plain ``Reshape`` layers (a view, no
copy, in ncnn). pnnx converts an ``nn.Linear`` module by its class without looking inside, so :func:`ncnn_friendly`
also gives the model's ``nn.Linear`` modules a subclass pnnx does not know: it then traces their ``F.linear``.
Token MLPs (:class:`~yolo_backbones.core.layers.Mlp`) run on the rows as a whole (:class:`RowsMlp`): one reshape
in and one out instead of a pair around each of their two ``Linear`` layers.
Blocks with a formulation of their own for NCNN captures take it inside :func:`ncnn_friendly` (``capturing_for
("ncnn")``: Mobile-Former, :data:`~yolo_backbones.core.mobileformer.fused.NCNN_CAPTURE`).
Same arithmetic, same outputs (tested in tests/test_edge_export.py).
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..core.inference.context import capturing_for
from ..core.layers.mlp import Mlp

__all__ = ["NCNNFriendly", "RowsMlp", "TracedLinear", "flat_linear", "ncnn_friendly"]


def flat_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear`` of ``(..., C_in)`` as ``F.linear`` of its ``(-1, C_in)`` rows; returns ``(..., C_out)``."""
    y = F.linear(x.reshape(-1, x.shape[-1]), weight, bias)
    return y.reshape(*x.shape[:-1], y.shape[-1])


class NCNNFriendly(TorchFunctionMode):
    """Torch-function mode to wrap a pnnx export in: ``F.linear`` on inputs of more than 2 dims becomes
    :func:`flat_linear` (see the module docstring); every other call runs as it is."""

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is F.linear and args and isinstance(args[0], torch.Tensor) and args[0].dim() > 2:
            return flat_linear(*args, **kwargs)  # the mode is off inside its handler: no recursion
        return func(*args, **kwargs)


class TracedLinear(nn.Linear):
    """``nn.Linear`` under another class name, so that pnnx traces its ``F.linear`` instead of converting the module
    as a whole (same parameters, same forward)."""


class RowsMlp(Mlp):
    """:class:`~yolo_backbones.core.layers.Mlp` on the ``(-1, C)`` rows of its input, reshaped back once."""

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """``Mlp(x)`` (or ``residual + Mlp(x)``) for ``x`` of shape ``(..., C)``."""
        rows = self.drop(self.fc2(self.drop(self.act(self.fc1(x.reshape(-1, x.shape[-1]))))))
        if residual is not None:  # added on the rows: pnnx may give the reshaped-back result a batch-less rank,
            rows = residual.reshape(rows.shape) + rows  # which ncnn would broadcast against the batched residual
        return rows.reshape(*x.shape[:-1], rows.shape[-1])


@contextlib.contextmanager
def ncnn_friendly(model: nn.Module) -> Iterator[nn.Module]:
    """Context for a pnnx capture of ``model`` (changed in place: give it an export copy) with the rewrites of the
    module docstring; yields ``model``."""
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = TracedLinear
        elif type(module) is Mlp:
            module.__class__ = RowsMlp
    with NCNNFriendly(), capturing_for("ncnn"):
        yield model
