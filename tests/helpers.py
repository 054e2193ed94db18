"""Helpers shared by the backbone tests: official key lists, random official-layout checkpoints, threads.

Imported as ``from helpers import ...``: ``tests/`` has no ``__init__.py``, so pytest (default "prepend"
import mode) puts this directory on ``sys.path`` whatever the working directory.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import pytest
import torch
from torch import nn

KEYS_DIR = Path(__file__).parent / "data" / "keys"
# A backbone as a YOLO backbone row builds it: a feature extractor that normalises [0, 1] RGB input itself.
DETECTION = dict(features_only=True, input_norm=True)

# Fills a tensor for one official key: (key, shape, generator) -> tensor.
Fill = Callable[[str, tuple[int, ...], torch.Generator], torch.Tensor]


@pytest.fixture(autouse=True)
def single_thread():
    """Autouse fixture of the test modules that import it: the test machine is shared, so keep torch to
    one thread during each test and restore the setting afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def key_shapes(stem: str) -> dict[str, tuple[int, ...]]:
    """Parse ``data/keys/<stem>.txt`` (``key<TAB>(d0, d1, ...)`` per line) into ``{key: shape}``, in file order."""
    shapes = {}
    for line in (KEYS_DIR / f"{stem}.txt").read_text().splitlines():
        if line.strip():
            key, shape = line.split("\t")
            shapes[key] = tuple(int(d) for d in re.findall(r"\d+", shape))
    assert shapes, f"no keys parsed from {stem}.txt"
    return shapes


def random_state_dict(shapes: dict[str, tuple[int, ...]], seed: int = 0, *, num_batches_tracked: int = 7,
                      std: float = 1.0, fill: Fill | None = None) -> dict[str, torch.Tensor]:
    """A random state_dict with exactly the keys and shapes of ``shapes`` (in that order).

    ``num_batches_tracked`` keys get that count, ``running_var`` keys ``U(0.5, 1.5)`` (positive); every
    other key gets ``fill(key, shape, generator)`` if given, else ``N(0, std**2)``. One seeded generator
    draws all values in key order, so a seed always gives the same checkpoint.
    """
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(num_batches_tracked, dtype=torch.long)
        elif key.endswith("running_var"):
            sd[key] = torch.rand(shape, generator=g) + 0.5
        elif fill is not None:
            sd[key] = fill(key, shape, g)
        else:
            sd[key] = torch.randn(shape, generator=g) * std
    return sd


def model_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """``{key: shape}`` of ``model.state_dict()``, in state_dict order."""
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def n_params(model: nn.Module) -> int:
    """Number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())
