"""CNN curves: GFLOP/s of stock YOLO CNNs interpolated in log GFLOPs, one curve per engine, and each model's
efficiency against the curve of its engine.

The eager curve is YOLOv5n/s/m (:data:`~.results.CURVE`); an exported engine's curve is made of the CNNs of its
``curve`` (:class:`~.engines.Engine`) exported and run the same way in the same run.
"""
from __future__ import annotations

import argparse
import math
from collections.abc import Sequence

from .results import CURVE, Result


def gflops_per_s(result: Result, key: str | None = None) -> float | None:
    """The model's GFLOP/s on the engine whose latency field is ``key`` (None: eager, ``result.gflops_per_s``)."""
    if key is None:
        return result.gflops_per_s
    latency = getattr(result, key)
    return result.gflops / (latency / 1000) if result.gflops and latency else None


def curve_points(results: list[Result], names: Sequence[str] = CURVE, key: str | None = None
                 ) -> list[tuple[float, float]]:
    """(log GFLOPs, GFLOP/s) of the CNNs ``names`` measured in this run on the engine ``key`` (None: eager), by
    GFLOPs."""
    points = [(math.log(r.gflops), gflops_per_s(r, key)) for r in results
              if r.name in names and r.gflops and gflops_per_s(r, key)]
    return sorted(points)


def curve_gflops_per_s(points: list[tuple[float, float]], gflops: float) -> float | None:
    """GFLOP/s of a CNN of ``gflops`` on the curve: linear in log GFLOPs between the points, constant beyond them."""
    if not points:
        return None
    x = math.log(gflops)
    if x <= points[0][0]:
        return points[0][1]
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0) if x1 > x0 else max(y0, y1)
    return points[-1][1]


def efficiencies(results: list[Result], names: Sequence[str] = CURVE, key: str | None = None
                 ) -> dict[str, float | None]:
    """Each model's GFLOP/s on engine ``key`` over the curve of ``names`` on that engine at its own GFLOPs."""
    points = curve_points(results, names, key)
    out: dict[str, float | None] = {}
    for r in results:
        own = gflops_per_s(r, key) if r.gflops else None
        expected = curve_gflops_per_s(points, r.gflops) if own else None
        out[r.name] = own / expected if expected else None
    return out


def apply_curve(results: list[Result]) -> None:
    """Set each result's ``efficiency``: its eager GFLOP/s over the YOLOv5 n/s/m curve's at its own GFLOPs."""
    for r, value in zip(results, efficiencies(results).values()):
        r.efficiency = value


def apply_engine_curves(results: list[Result], engines: Sequence) -> None:
    """Set each exported engine's efficiency field (``engine.efficiency_key``) against the engine's own curve."""
    for engine in engines:
        if engine.efficiency_key and engine.runner is not None:
            for r, value in zip(results, efficiencies(results, engine.curve, engine.key).values()):
                setattr(r, engine.efficiency_key, value)


def smallest_curve_gflops(results: list[Result], names: Sequence[str] = CURVE) -> float | None:
    """GFLOPs of the smallest CNN of ``names`` measured in this run (None if none was)."""
    return min((r.gflops for r in results if r.name in names and r.gflops), default=None)


def target_for(result: Result, results: list[Result], args: argparse.Namespace,
               names: Sequence[str] = CURVE) -> float:
    """``--target-small`` for a model smaller (in GFLOPs) than every CNN of the curve ``names``, ``--target``
    otherwise."""
    smallest = smallest_curve_gflops(results, names)
    return args.target_small if smallest and result.gflops and result.gflops < smallest else args.target


def is_below_target(result: Result, reference: Result | None, target: float,
                    efficiency_key: str = "efficiency") -> bool:
    """True when the model's efficiency (field ``efficiency_key``: eager by default, see :func:`apply_curve`) is
    below ``target``. ``reference`` is unused (kept for callers)."""
    value = getattr(result, efficiency_key)
    return value is not None and value < target
