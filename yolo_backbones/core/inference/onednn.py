"""Fused oneDNN kernels for eager CPU inference: a conv / linear layer, its activation and a residual add in one pass.

In eager mode every activation and residual add is a separate pass over a feature map; on a CPU these
passes are memory-bound and cost as much as the convolutions of the wide, high-resolution maps of these
backbones (e.g. the GELU after a 4x-expanding 1x1 conv at stride 4). PyTorch ships oneDNN kernels that
apply such element-wise "post-ops" while the conv / linear result is still in cache
(``torch.ops.mkldnn._convolution_pointwise`` / ``_linear_pointwise``). :func:`conv` and :func:`linear` call
them where that is safe (:func:`fusable`: inside a fused backbone's eager inference, see
:mod:`~yolo_backbones.core.inference.context`, module in eval mode, float32 CPU weights, channels-last maps, no
hooks on the module) and run the plain ``torch.nn`` modules otherwise, so the function is the same either way
(float rounding only).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .context import dispatch_mode_active, fused_inference, hooked

__all__ = ["ACTIVATIONS", "activation_name", "conv", "fusable", "linear", "sequential"]

# Activation name -> (plain function, oneDNN post-op attribute, its scalars, its algorithm).
ACTIVATIONS: dict[str | None, tuple[Callable[[torch.Tensor], torch.Tensor], str, list, str | None]] = {
    None: (lambda t: t, "none", [], None),
    "gelu": (F.gelu, "gelu", [], "none"),  # exact (erf) GELU, as nn.GELU()
    "relu": (F.relu, "relu", [], None),
    "relu6": (F.relu6, "hardtanh", [0.0, 6.0], None),
}

# A call of the fused oneDNN operators costs some 25-70 us more than the plain ``F.conv2d`` / ``F.linear`` (it builds
# its oneDNN objects on every call; measured on 2 threads of a Xeon with torch 2.x, eager, batch 1). The fused call
# therefore runs only where it saves a pass over a large map: a conv with an activation, a conv + residual add
# with at least this many output values, a linear layer over at least this many rows (tokens). Below, and for
# a conv with nothing to fuse, the plain ops are faster (Mobile-Former: 1x1 / depth-wise convs without
# post-op, residual adds at strides 8-32, the 3-6 global tokens).
_MIN_FUSED_RESIDUAL = 1 << 19
_MIN_FUSED_ROWS = 128


def fusable(module: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``module``'s call on ``x`` may run on a fused kernel (the conditions of the module docstring)."""
    w = module.weight
    return (not module.training and w.dtype == torch.float32 and w.device.type == "cpu" and not hooked(module)
            and fused_inference(x) and not dispatch_mode_active())  # a mode entered inside the forward sees plain ops


def conv(module: nn.Conv2d, x: torch.Tensor, act: str | None = None, residual: torch.Tensor | None = None,
         weight: torch.Tensor | None = None) -> torch.Tensor:
    """``act(module(x))``, or ``module(x) + residual``: one fused kernel in CPU inference, else the plain ops.

    Args:
        module: a ``Conv2d``.
        x: ``(B, C_in, H, W)``; the fused kernel is used for channels-last input.
        act: ``None``, ``"gelu"``, ``"relu"`` or ``"relu6"``, applied to the conv output. Give an activation or
            a residual, not both (the backbones add residuals to linear branch ends only).
        residual: ``(B, C_out, H', W')`` added to the conv output.
        weight: use this weight instead of ``module.weight`` (same shape; e.g. with per-image scaled input
            channels), with the module's bias and geometry.

    Returns:
        ``(B, C_out, H', W')``, channels-last when fused.
    """
    if act is not None and residual is not None:
        raise ValueError("give either an activation or a residual to fuse, not both")
    fused = (not isinstance(module.padding, str) and module.padding_mode == "zeros" and fusable(module, x)
             and x.is_contiguous(memory_format=torch.channels_last)
             and (residual is None or (residual.dim() == 4 and residual.dtype == x.dtype)))
    if not fused or (act is None and (residual is None or residual.numel() < _MIN_FUSED_RESIDUAL)):
        if weight is None:
            y = module(x)
        else:
            y = F.conv2d(x, weight, module.bias, module.stride, module.padding, module.dilation, module.groups)
        if residual is None:
            return ACTIVATIONS[act][0](y)
        # In fused inference y is a fresh map nobody else holds: add in place (no new map).
        return y.add_(residual) if fused and y.shape == residual.shape else y + residual
    args = (module.weight if weight is None else weight, module.bias, list(module.padding), list(module.stride),
            list(module.dilation), module.groups)
    if residual is not None:
        return torch.ops.mkldnn._convolution_pointwise.binary(
            x, residual.contiguous(memory_format=torch.channels_last), *args, "add", None, None, [], None)
    _, attr, scalars, algorithm = ACTIVATIONS[act]
    return torch.ops.mkldnn._convolution_pointwise(x, *args, attr, scalars, algorithm)


def activation_name(module: nn.Module) -> str | None:
    """The :data:`ACTIVATIONS` key computing ``module``, or ``None`` if it is not a fusable activation."""
    if isinstance(module, nn.GELU) and module.approximate == "none":
        return "gelu"
    if isinstance(module, nn.ReLU):
        return "relu"
    if isinstance(module, nn.ReLU6) or (isinstance(module, nn.Hardtanh)
                                        and (module.min_val, module.max_val) == (0.0, 6.0)):
        return "relu6"
    return None


def sequential(seq: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """Run the entries of ``seq`` on ``x``, each ``Conv2d`` and the activation right after it as one :func:`conv`
    call where that fuses (``nn.Identity`` entries, e.g. BNs folded by fusing, are skipped); other entries run as
    they are."""
    mods = [m for m in seq if not isinstance(m, nn.Identity)]
    i = 0
    while i < len(mods):
        m, act = mods[i], activation_name(mods[i + 1]) if i + 1 < len(mods) else None
        if (isinstance(m, nn.Conv2d) and act is not None and not hooked(mods[i + 1]) and fusable(m, x)
                and x.is_contiguous(memory_format=torch.channels_last)):
            x = conv(m, x, act)
            i += 2
        else:
            x = m(x)
            i += 1
    return x


def linear(module: nn.Linear, x: torch.Tensor, act: str | None = None, residual: torch.Tensor | None = None
           ) -> torch.Tensor:
    """``act(module(x))``, or ``module(x) + residual``, on ``(..., C_in)`` tokens: one fused kernel in CPU
    inference, else the plain ops. Returns ``(..., C_out)``."""
    if act is not None and residual is not None:
        raise ValueError("give either an activation or a residual to fuse, not both")
    if x.numel() < _MIN_FUSED_ROWS * module.in_features or not fusable(module, x):
        y = module(x)
        return ACTIVATIONS[act][0](y) if residual is None else y + residual
    if residual is not None:
        if residual.shape != (*x.shape[:-1], module.out_features) or residual.dtype != x.dtype:
            return module(x) + residual
        return torch.ops.mkldnn._linear_pointwise.binary(x, residual.contiguous(), module.weight, module.bias, "add")
    _, attr, scalars, algorithm = ACTIVATIONS[act]
    return torch.ops.mkldnn._linear_pointwise(x, module.weight, module.bias, attr, scalars, algorithm)
