"""Parity of an exported model with the PyTorch model it came from.

The measure is the largest absolute difference over each output, relative to the largest magnitude of the
PyTorch output (:func:`relative_error`); the acceptance limit is :data:`TOLERANCE` (1e-3) at FP32.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Callable

import numpy as np
import torch
from torch import nn

from .graph import flatten_outputs

__all__ = ["TOLERANCE", "ParityError", "relative_error", "reference_outputs", "compare", "check_parity"]

TOLERANCE = 1e-3


class ParityError(AssertionError):
    """An exported model's outputs differ from PyTorch's by more than the tolerance."""


def relative_error(output: np.ndarray | torch.Tensor, reference: np.ndarray | torch.Tensor) -> float:
    """``max |output - reference| / max |reference|`` (shapes must match); ``inf`` on a shape mismatch."""
    a = np.asarray(output.detach().cpu() if isinstance(output, torch.Tensor) else output, dtype=np.float64)
    b = np.asarray(reference.detach().cpu() if isinstance(reference, torch.Tensor) else reference, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    scale = float(np.abs(b).max()) if b.size else 0.0
    return float(np.abs(a - b).max() / (scale or 1.0)) if b.size else 0.0


def reference_outputs(model: nn.Module, example: torch.Tensor) -> list[torch.Tensor]:
    """PyTorch outputs of ``model`` (eval, no autograd) on ``example``, flattened to a list."""
    with torch.no_grad():
        return [t.contiguous() for t in flatten_outputs(model.eval()(example))]


def compare(outputs: Sequence[np.ndarray | torch.Tensor], references: Sequence[torch.Tensor]) -> list[float]:
    """Relative error of each output against the reference of the same index (counts must match)."""
    if len(outputs) != len(references):
        raise ParityError(f"the exported model has {len(outputs)} outputs, PyTorch {len(references)}")
    return [relative_error(o, r) for o, r in zip(outputs, references)]


def check_parity(model: nn.Module, run: Callable[[np.ndarray], list[np.ndarray]], example: torch.Tensor,
                 tolerance: float = TOLERANCE, what: str = "exported model") -> list[float]:
    """Run ``example`` through PyTorch and through ``run`` (an exported model's runner); return the errors.

    Raises :class:`ParityError` naming the worst output when an error exceeds ``tolerance``.
    """
    errors = compare(run(example.detach().cpu().float().numpy()), reference_outputs(model, example))
    worst = max(range(len(errors)), key=errors.__getitem__) if errors else None
    if worst is not None and not errors[worst] <= tolerance:
        raise ParityError(f"{what}: output {worst} differs from PyTorch by {errors[worst]:.2e} of its range "
                          f"(limit {tolerance:.0e}); all outputs: {', '.join(f'{e:.1e}' for e in errors)}")
    return errors
