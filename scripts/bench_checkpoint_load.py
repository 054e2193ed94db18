"""Cost of the checkpoint loader (data only, models rebuilt) against plain ``torch.load(weights_only=True)``.

Builds a ~50 MB checkpoint in a temporary directory and times ``yolo_backbones.load_checkpoint`` and
``torch.load(weights_only=True)`` (with every class of the file added to torch's safe globals, so both
read the same file) interleaved, alternating which goes first. Prints per-repeat times and the median
ratio; the target is <= 1.0. Two kinds of file:

* ``--kind yolov5`` (default): a YOLOv5 training checkpoint as ``train.py`` writes it mid-training (fp16
  model and EMA, SGD momentum, options) of a YOLOv5 model whose width is grown until the file is ~``--mb``;
  the loader rebuilds both models from the stored YAML;
* ``--kind torch-nn``: nested ``torch.nn`` conv / norm / activation blocks pickled as a module (no config),
  rebuilt by the loader's generic builder.

Usage: python scripts/bench_checkpoint_load.py [--kind yolov5|torch-nn] [--repeats 10] [--mb 50]
"""
from __future__ import annotations

import argparse
import copy
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from yolo_backbones.core.weights.safe_load import load_checkpoint


def conv_block(c1: int, c2: int, k: int = 3, s: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c1, c2, k, s, k // 2, bias=False), nn.BatchNorm2d(c2), nn.SiLU())


def build_model(target_mb: float) -> nn.Module:
    """Five stages of nested conv blocks (~300 modules), widths grown until the checkpoint is ~target_mb.

    The checkpoint holds each parameter three times: fp16 model, fp16 EMA, fp32 momentum (8 bytes).
    """
    width = 32
    while True:
        stages = nn.Sequential()
        c = 3
        for mult in (1, 2, 4, 8, 8):
            c2 = width * mult
            blocks = [conv_block(c, c2, 3, 2)]
            blocks += [nn.Sequential(conv_block(c2, c2 // 2, 1), conv_block(c2 // 2, c2, 3)) for _ in range(6)]
            stages.append(nn.Sequential(*blocks))
            c = c2
        model = nn.Sequential(stages, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 80))
        mb = sum(p.numel() for p in model.parameters()) * 8 / 2**20
        if mb >= target_mb:
            return model
        width += 4


def build_checkpoint(path: Path, target_mb: float) -> int:
    model = build_model(target_mb)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.937, nesterov=True)
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    opt.step()
    # As YOLOv5's train.py writes it: half-precision model and EMA copies, optimizer state, options.
    ckpt = {"epoch": 3, "best_fitness": np.float64(0.42), "model": copy.deepcopy(model).half(),
            "ema": copy.deepcopy(model).half(), "updates": 120,
            "optimizer": opt.state_dict(), "opt": {"weights": Path("yolov5s.pt"), "epochs": 100, "batch_size": 16},
            "date": "2026-01-01T00:00:00"}
    torch.save(ckpt, path)
    return os.path.getsize(path)


def build_yolov5_checkpoint(path: Path, target_mb: float) -> int:
    """A YOLOv5 checkpoint as train.py saves it mid-training, of a yolov5s-layout model widened to ~target_mb."""
    import yaml
    import yolov5.models.yolo as yolo

    import yolo_backbones  # noqa: F401 (installs the plugin into YOLOv5)

    cfg = yaml.safe_load((Path(yolo.__file__).parent / "yolov5s.yaml").read_text())
    width = 0.25
    while True:
        cfg["width_multiple"] = width
        model = yolo.DetectionModel(copy.deepcopy(cfg), ch=3)
        if sum(p.numel() for p in model.parameters()) * 8 / 2**20 >= target_mb:
            break
        width += 0.125
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.937, nesterov=True)
    model(torch.zeros(1, 3, 64, 64))[0].sum().backward()
    opt.step()
    model.names = {i: f"class{i}" for i in range(80)}
    model.hyp = {"lr0": 0.01, "momentum": 0.937}
    ckpt = {"epoch": 3, "best_fitness": np.array([0.42]), "model": copy.deepcopy(model).half(),
            "ema": copy.deepcopy(model).half(), "updates": 120, "optimizer": opt.state_dict(),
            "opt": {"weights": "", "epochs": 100, "batch_size": 16, "save_dir": "runs/train/exp"},
            "date": "2026-01-01T00:00:00"}
    torch.save(ckpt, path)
    return os.path.getsize(path)


def model_classes(path: Path) -> list:
    """Every global the file names, resolved, for torch's weights_only allow-list."""
    import importlib

    found = []
    for name in torch.serialization.get_unsafe_globals_in_checkpoint(str(path)):
        module, _, attr = name.rpartition(".")
        found.append((getattr(importlib.import_module(module), attr), name))
    return found


def timed(fn, *args) -> float:
    gc.collect()
    t = time.perf_counter()
    out = fn(*args)
    dt = time.perf_counter() - t
    del out
    return dt


def measure(repeats: int = 10, target_mb: float = 50.0, report: bool = False, kind: str = "yolov5"
            ) -> tuple[float, float, int]:
    """Median seconds of ``load_checkpoint`` and of ``torch.load(weights_only=True)`` (the checkpoint's classes
    added to torch's safe globals) over ``repeats`` interleaved loads of a ~``target_mb`` MB checkpoint of
    ``kind``, and its size in bytes. ``report`` prints every repeat."""
    torch.set_num_threads(1)  # the copy of storages is single-threaded anyway; keeps runs comparable
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.pt"
        size = (build_yolov5_checkpoint if kind == "yolov5" else build_checkpoint)(path, target_mb)
        safe = model_classes(path) + [np.dtype, type(np.dtype("float64"))]

        def plain(p: Path):
            with torch.serialization.safe_globals(safe):
                return torch.load(p, map_location="cpu", weights_only=True)

        def unsafe(p: Path):  # for reference only: C unpickler, runs anything
            return torch.load(p, map_location="cpu", weights_only=False)

        plain(path), load_checkpoint(path, map_location="cpu")  # warm up page cache and imports
        ours, theirs, c_pickle = [], [], []
        for i in range(repeats):
            order = [(load_checkpoint, ours), (plain, theirs)]
            for fn, sink in (order if i % 2 == 0 else order[::-1]) + [(unsafe, c_pickle)]:
                sink.append(timed(fn, path) if fn is not load_checkpoint else timed(fn, path, "cpu"))
        if report:
            n_modules = len(list(load_checkpoint(path)["model"].modules()))
            print(f"{kind} checkpoint: {size / 2**20:.1f} MB, 2 x {n_modules} modules pickled, optimizer state; "
                  f"{len(safe)} globals added to torch's safe globals for weights_only=True")
            for i, (a, b) in enumerate(zip(ours, theirs)):
                print(f"  repeat {i:2d}: load_checkpoint {a * 1e3:7.1f} ms   torch.load(weights_only=True) "
                      f"{b * 1e3:7.1f} ms   ratio {a / b:.3f}   "
                      f"(unsafe C-pickle torch.load {c_pickle[i] * 1e3:6.1f} ms)")
    return statistics.median(ours), statistics.median(theirs), size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--mb", type=float, default=50.0, help="approximate checkpoint size")
    ap.add_argument("--kind", choices=("yolov5", "torch-nn"), default="yolov5")
    args = ap.parse_args()
    safe_s, plain_s, _ = measure(args.repeats, args.mb, report=True, kind=args.kind)
    print(f"median: load_checkpoint {safe_s * 1e3:.1f} ms, torch.load(weights_only=True) {plain_s * 1e3:.1f} ms; "
          f"ratio {safe_s / plain_s:.3f} (target <= 1.0)")


if __name__ == "__main__":
    main()
