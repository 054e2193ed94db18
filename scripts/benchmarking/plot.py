"""The benchmark plot: latency vs GFLOPs, one panel per engine, with the YOLOv5 n/s/m CNN curve."""
from __future__ import annotations

import argparse
from pathlib import Path

from .curve import is_below_target, target_for
from .engines import ENGINES
from .results import REFERENCE, Result


def plot(results: list[Result], args: argparse.Namespace, path: Path) -> None:
    """PNG of latency vs GFLOPs (log-log), one panel per engine measured, with the engine's CNN curve.

    The CNNs of the engine's curve (YOLOv5n/s/m for eager; the engine's own for the edge engines) are joined into
    the curve the efficiency is measured against; other baselines are gray, plugin models blue, or red when their
    efficiency on that engine (eager efficiency for engines without their own) is below target.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    engines = [e for e in ENGINES if any(getattr(r, e.key) and r.gflops for r in results)] or [ENGINES[0]]
    reference = next((r for r in results if r.name == REFERENCE), None)
    fig, axes = plt.subplots(1, len(engines), figsize=(6.5 * len(engines), 5.5), dpi=110, squeeze=False)
    for ax, engine in zip(axes[0], engines):
        key, label = engine.key, engine.label
        points = [r for r in results if r.gflops and getattr(r, key)]
        curve = sorted((r.gflops, getattr(r, key)) for r in points if r.name in engine.curve)
        if len(curve) > 1:
            ax.plot(*zip(*curve), color="tab:gray", linewidth=1.5, zorder=2,
                    label=f"{'/'.join(engine.curve)} (CNN curve)")
        for r in points:
            below = r.plugin and is_below_target(r, reference, target_for(r, results, args, engine.curve),
                                                 engine.efficiency_key or "efficiency")
            color = "tab:gray" if not r.plugin else ("tab:red" if below else "tab:blue")
            ax.scatter(r.gflops, getattr(r, key), color=color, s=36, zorder=3)
            ax.annotate(r.name.removeprefix("yolov5_"), (r.gflops, getattr(r, key)), textcoords="offset points",
                        xytext=(4, 3), fontsize=7)
        if points:
            ax.set_xscale("log")
            ax.set_yscale("log")
            plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
            for axis in (ax.xaxis, ax.yaxis):
                axis.set_major_formatter(plain)
                axis.set_minor_formatter(plain)
        ax.set_xlabel(f"GFLOPs @{args.img}")
        ax.set_ylabel(f"{label} latency, batch 1 (ms)")
        ax.set_title(f"{label} ({args.threads} thread(s))", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        if len(curve) > 1:
            ax.legend(loc="upper left", fontsize=8)
    fig.suptitle("Latency vs GFLOPs; gray: YOLO CNNs, blue: plugin models, red: below the efficiency target",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
