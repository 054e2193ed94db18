#!/usr/bin/env python
"""Benchmark detectors built from model YAMLs: parameters, GFLOPs and CPU latency, with ratios to YOLOv5n/s.

All models are measured in the same process and run, so the latency ratios against YOLOv5n and
YOLOv5s (built from the PyPI package's own YAMLs) are comparable even on a noisy machine.

* params: all parameters of the detector (80 classes).
* GFLOPs: ``torch.utils.flop_counter`` at ``--img`` (counts convolutions, matmuls and attention,
  which YOLOv5's thop-based figure misses for transformer blocks), fused model, batch 1.
* latency: median wall time of ``--runs`` eval forwards at batch 1 after ``--warmup`` runs, fused
  model, FP32, ``--threads`` CPU threads.

Usage:
    python scripts/benchmark.py                      # every YAML in models/ plus yolov5n/s, 640x640
    python scripts/benchmark.py --models yolov5_edgevit.yaml --img 320 --runs 20
    python scripts/benchmark.py --markdown results.md
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yolo_backbones  # noqa: E402,F401  (installs the plugin)
from yolo_backbones.resources import MODELS_DIR  # noqa: E402


def build_detector(cfg_path: Path) -> torch.nn.Module:
    """Build a fused, eval-mode YOLOv5 DetectionModel from a YAML path (quietly)."""
    from yolov5.models.yolo import Model
    from yolov5.utils.general import LOGGER

    cfg = yaml.safe_load(cfg_path.read_text())
    level = LOGGER.level
    LOGGER.setLevel("ERROR")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            model = Model(copy.deepcopy(cfg)).eval()
            model.fuse()
    finally:
        LOGGER.setLevel(level)
    return model


def count_gflops(model: torch.nn.Module, img: int) -> float:
    """FLOPs (multiply and add counted separately) of one forward at ``img x img``, in G."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, img, img))
    return counter.get_total_flops() / 1e9


def measure_latency_ms(model: torch.nn.Module, img: int, warmup: int, runs: int) -> float:
    """Median milliseconds of a batch-1 FP32 forward at ``img x img``."""
    x = torch.rand(1, 3, img, img)
    times = []
    with torch.no_grad():
        for k in range(warmup + runs):
            t0 = time.perf_counter()
            model(x)
            if k >= warmup:
                times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def baseline_yaml(name: str) -> Path:
    """Path of a stock YOLOv5 YAML (``yolov5n.yaml``...) inside the PyPI package."""
    import yolov5

    return Path(yolov5.__file__).parent / "models" / name


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, benchmark every model and print (and optionally write) a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", help="YAML names in models/ or paths (default: all in models/)")
    parser.add_argument("--img", type=int, default=640, help="square input size")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    names = args.models or sorted(p.name for p in MODELS_DIR.glob("*.yaml"))
    paths = [baseline_yaml("yolov5n.yaml"), baseline_yaml("yolov5s.yaml")]
    paths += [Path(n) if Path(n).exists() else MODELS_DIR / n for n in names]

    rows = []
    for path in paths:
        torch.manual_seed(0)
        model = build_detector(path)
        params = sum(p.numel() for p in model.parameters())
        gflops = count_gflops(model, args.img)
        ms = measure_latency_ms(model, args.img, args.warmup, args.runs)
        rows.append((path.stem, params, gflops, ms))
        print(f"{path.stem:28s} {params / 1e6:7.2f}M {gflops:8.2f} GFLOPs {ms:9.1f} ms", file=sys.stderr)

    ms_n, ms_s = rows[0][3], rows[1][3]
    lines = [f"| model | params (M) | GFLOPs @{args.img} | CPU latency (ms) | vs YOLOv5n | vs YOLOv5s |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, params, gflops, ms in rows:
        lines.append(f"| {name} | {params / 1e6:.2f} | {gflops:.1f} | {ms:.1f} | {ms / ms_n:.2f}x | {ms / ms_s:.2f}x |")
    lines.append(f"\n{args.img}x{args.img}, batch 1, FP32, fused, {args.threads} CPU thread(s), median of {args.runs} "
                 f"runs after {args.warmup} warm-up; torch {torch.__version__}.")
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
