"""The YOLOv5 CNN curve: GFLOP/s of YOLOv5n/s/m interpolated in log GFLOPs, and each model's efficiency."""
from __future__ import annotations

import argparse
import math

from .results import CURVE, Result


def curve_points(results: list[Result]) -> list[tuple[float, float]]:
    """(log GFLOPs, GFLOP/s) of the YOLOv5 CNNs of :data:`CURVE` measured in this run, by GFLOPs."""
    points = [(math.log(r.gflops), r.gflops_per_s) for r in results
              if r.name in CURVE and r.gflops and r.gflops_per_s]
    return sorted(points)


def curve_gflops_per_s(points: list[tuple[float, float]], gflops: float) -> float | None:
    """GFLOP/s of a YOLOv5 CNN of ``gflops``: linear in log GFLOPs between the points, constant beyond them."""
    if not points:
        return None
    x = math.log(gflops)
    if x <= points[0][0]:
        return points[0][1]
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return points[-1][1]


def apply_curve(results: list[Result]) -> None:
    """Set each result's ``efficiency``: its GFLOP/s over the CNN curve's at its own GFLOPs."""
    points = curve_points(results)
    for r in results:
        expected = curve_gflops_per_s(points, r.gflops) if r.gflops and r.gflops_per_s else None
        r.efficiency = r.gflops_per_s / expected if expected else None


def smallest_curve_gflops(results: list[Result]) -> float | None:
    """GFLOPs of the smallest curve CNN measured in this run (None if none was)."""
    return min((r.gflops for r in results if r.name in CURVE and r.gflops), default=None)


def target_for(result: Result, results: list[Result], args: argparse.Namespace) -> float:
    """``--target-small`` for a model smaller (in GFLOPs) than every curve CNN, ``--target`` otherwise."""
    smallest = smallest_curve_gflops(results)
    return args.target_small if smallest and result.gflops and result.gflops < smallest else args.target


def is_below_target(result: Result, reference: Result | None, target: float) -> bool:
    """True when the model's efficiency (GFLOP/s over the YOLOv5 CNN curve's, see :func:`apply_curve`) is below
    ``target``. ``reference`` is unused (kept for callers)."""
    return result.efficiency is not None and result.efficiency < target
