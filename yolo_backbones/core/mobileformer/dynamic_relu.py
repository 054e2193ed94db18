"""Mobile-Former's dynamic ReLU: two linear pieces per channel whose slopes come from a global token."""
from __future__ import annotations

import torch

from ..inference.context import is_tracing

__all__ = ["slopes", "dynamic_relu"]


def slopes(coeffs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic-ReLU slopes ``a1 = 1 + 2 (h1 - 0.5)`` in ``[0, 2]`` and ``a2 = 2 (h2 - 0.5)`` in ``[-1, 1]``,
    ``(B, C, 1, 1)`` each, of ``(B, 2C, 1, 1)`` coefficients."""
    h1, h2 = coeffs.chunk(2, dim=1)
    return (h1 - 0.5) * 2.0 + 1.0, (h2 - 0.5) * 2.0


def dynamic_relu(x: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """Dynamic ReLU with two linear pieces per channel: ``max(a1 * x, a2 * x)``.

    Args:
        x: feature map ``(B, C, H, W)``.
        coeffs: ``(B, 2C, 1, 1)`` values in ``[0, 1]`` from :class:`~.model.HyperFunc`; the first half gives
            ``a1 = 1 + 2 (h - 0.5)`` in ``[0, 2]``, the second ``a2 = 2 (h - 0.5)`` in ``[-1, 1]``. With the
            reference initialisation ``h = 0.5``, i.e. the function starts as a plain ReLU.

    Returns:
        ``(B, C, H, W)``.
    """
    a1, a2 = slopes(coeffs)
    if torch.is_grad_enabled() and (x.requires_grad or a1.requires_grad or a2.requires_grad) and not is_tracing():
        return _DynamicReLU.apply(x, a1, a2)  # exporters get the plain ops below (an autograd.Function won't convert)
    return torch.maximum(x * a1, x * a2)


class _DynamicReLU(torch.autograd.Function):
    """``max(a1 * x, a2 * x)`` that keeps only ``x`` (and the small slopes) for backward.

    Autograd through the plain expression keeps ``x``, ``a1 * x`` and ``a2 * x``: three maps of the block's
    widest (expanded) width. Here backward recomputes the two products instead; the gradients follow
    ``torch.maximum``'s rule (a tie splits the gradient in halves).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, a1: torch.Tensor, a2: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, a1, a2)
        return torch.maximum(x * a1, x * a2)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, a1, a2 = ctx.saved_tensors
        p, q = x * a1, x * a2
        shared = torch.where(p == q, grad / 2, grad)
        g1, g2 = shared.masked_fill(p < q, 0), shared.masked_fill(p > q, 0)
        del p, q, shared
        grad_x = g1 * a1 + g2 * a2 if ctx.needs_input_grad[0] else None
        grad_a1 = (g1 * x).sum_to_size(a1.shape) if ctx.needs_input_grad[1] else None
        grad_a2 = (g2 * x).sum_to_size(a2.shape) if ctx.needs_input_grad[2] else None
        return grad_x, grad_a1, grad_a2
