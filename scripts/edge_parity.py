#!/usr/bin/env python
"""Parity of every model YAML on every edge format, through each host's own export command and loader.

For each (YAML, format) a fresh process builds the detector (seeded random weights, BatchNorm statistics
randomised so fusion is not an identity), exports it the way a user does and runs the export on its Linux
runtime through the host's loader, then compares the raw head output with the fused PyTorch model's:

* YOLOv5 YAMLs: a checkpoint, ``yolov5.export.run(include=[fmt])`` (what ``export.py --include fmt`` calls), then
  ``DetectMultiBackend`` (what ``val.py`` / ``detect.py`` load) against ``attempt_load(..., fuse=True)``;
* ultralytics YAMLs (yolo11_*, yolo26_*, yolov8_*): ``YOLO(yaml).export(format=fmt)`` (``yolo export``), then
  ``AutoBackend`` (what ``yolo val`` / ``yolo predict`` load) against the fused model.

Formats: ``litert`` (YOLOv5: ``tflite``), ``ncnn``, ``executorch``, ``mnn`` (ultralytics host only) are run;
``coreml`` has no Linux runtime: the package is converted, reloaded by coremltools and checked for non-core
operations (:func:`yolo_backbones.deploy.coreml.check_coreml`). A cell is the largest absolute difference over
the head output relative to the largest PyTorch value (limit 1e-3), or ``converts`` for Core ML, with the export
time; a failure is printed with its first error line.

Results are appended to ``--out/parity.jsonl`` as cells finish (``--resume`` skips cells already there), and the
Markdown table is written to ``--out/parity.md`` and stdout.

Usage:
    python scripts/edge_parity.py                                  # every YAML x every format at 64x64
    python scripts/edge_parity.py --models yolo11_edgevit --formats ncnn litert --img 128
    python scripts/edge_parity.py --resume --out runs/edge_parity   # continue an interrupted run
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORMATS = ("litert", "ncnn", "executorch", "mnn", "coreml")
YOLOV5_FORMAT = {"litert": "tflite"}  # YOLOv5's --include name of a format
TOLERANCE = 1e-3
CELL_TAG = "PARITY_CELL "


# ------------------------------------------------------------------------------------------- one cell
def randomize_batchnorm(model, seed: int = 0) -> None:
    """Non-trivial BatchNorm statistics (fresh models have mean 0 / var 1, which makes fusion an identity)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 1.5 + 0.5)


def first_output(y):
    """The head's main output of a model call: the first tensor/array of a (nested) tuple/list."""
    while isinstance(y, (list, tuple)):
        y = y[0]
    return y


def is_ultralytics(cfg: Path) -> bool:
    """True for the YAMLs this project writes for the ultralytics host."""
    return cfg.name.startswith(("yolo11", "yolo26", "yolov8"))


def yolov5_cell(cfg: Path, fmt: str, img: int, work: Path) -> dict:
    """Export a YOLOv5 YAML's detector with ``export.run`` and compare ``DetectMultiBackend`` with PyTorch."""
    import importlib

    import torch
    from yolov5.models.common import DetectMultiBackend
    from yolov5.models.experimental import attempt_load
    from yolov5.models.yolo import Model

    import yolo_backbones  # noqa: F401  (installs the plugin)
    from yolo_backbones.deploy.parity import relative_error

    torch.manual_seed(0)
    model = Model(str(cfg)).eval()
    randomize_batchnorm(model)
    model.names = {i: f"class{i}" for i in range(model.yaml.get("nc", 80))}
    ckpt = work / "best.pt"
    torch.save({"model": model, "epoch": -1}, ckpt)
    export = importlib.import_module("yolov5.export")
    t0 = time.perf_counter()
    files = export.run(weights=str(ckpt), include=[YOLOV5_FORMAT.get(fmt, fmt)], imgsz=[img, img])
    seconds = time.perf_counter() - t0
    if not files:
        raise RuntimeError("export.run wrote no file (see its log above)")
    if fmt == "coreml":
        return coreml_cell(Path(files[-1]), seconds)
    x = torch.rand(1, 3, img, img, generator=torch.Generator().manual_seed(1))
    reference = attempt_load(str(ckpt), device=torch.device("cpu"), inplace=True, fuse=True).eval()
    with torch.no_grad():
        expected = first_output(reference(x))
    backend = DetectMultiBackend(files[-1], device=torch.device("cpu"))
    got = first_output(backend(x))
    return {"error": relative_error(got, expected), "seconds": seconds, "shape": list(expected.shape)}


def ultralytics_cell(cfg: Path, fmt: str, img: int, work: Path) -> dict:
    """Export an ultralytics YAML's detector with ``YOLO.export`` and compare ``AutoBackend`` with PyTorch."""
    import copy

    import torch
    from ultralytics import YOLO
    from ultralytics.nn.autobackend import AutoBackend

    import yolo_backbones  # noqa: F401
    from yolo_backbones.deploy.parity import relative_error

    os.chdir(work)
    torch.manual_seed(0)
    yolo = YOLO(str(cfg))
    randomize_batchnorm(yolo.model)
    t0 = time.perf_counter()
    file = yolo.export(format=fmt, imgsz=img, device="cpu")
    seconds = time.perf_counter() - t0
    if fmt == "coreml":
        return coreml_cell(Path(file), seconds)
    x = torch.rand(1, 3, img, img, generator=torch.Generator().manual_seed(1))
    reference = copy.deepcopy(yolo.model).fuse().eval()
    with torch.no_grad():
        expected = first_output(reference(x))
    backend = AutoBackend(file, device=torch.device("cpu"))
    got = first_output(backend(x))
    return {"error": relative_error(got, expected), "seconds": seconds, "shape": list(expected.shape)}


def coreml_cell(package: Path, seconds: float) -> dict:
    """Core ML has no Linux runtime: reload the package and check that it holds only core operations."""
    from yolo_backbones.deploy.coreml import check_coreml

    ops = check_coreml(package)
    return {"converts": True, "ops": sum(ops.values()), "seconds": seconds}


def run_cell(cfg: str, fmt: str, img: int) -> int:
    """Child process: one (YAML, format) cell; prints ``PARITY_CELL <json>`` on stdout."""
    path = Path(cfg) if Path(cfg).is_file() else ROOT / "models" / cfg
    with tempfile.TemporaryDirectory(prefix="edge_parity_") as tmp:
        cell = (ultralytics_cell if is_ultralytics(path) else yolov5_cell)(path, fmt, img, Path(tmp))
    print(CELL_TAG + json.dumps(cell), flush=True)
    return 0


# ------------------------------------------------------------------------------------------- the matrix
def applies(cfg: Path, fmt: str) -> bool:
    """False for the pairs no host offers (MNN is an ultralytics target only)."""
    return fmt != "mnn" or is_ultralytics(cfg)


def measure(cfg: Path, fmt: str, img: int, threads: int, timeout: int) -> dict:
    """Run one cell in a fresh process (converters hold memory and may crash); the cell, or its error."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, str(Path(__file__).resolve()), "--_cell", str(cfg), fmt, str(img)]
    t0 = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"failed": f"timed out after {timeout} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith(CELL_TAG)]
    if done.returncode or not lines:
        errors = [line for line in (done.stderr + done.stdout).splitlines()
                  if "Error" in line or "error" in line or "failure" in line]
        return {"failed": (errors or (done.stderr.strip().splitlines() or ["no output"]))[-1].strip()[:300],
                "wall": time.perf_counter() - t0}
    return {**json.loads(lines[-1][len(CELL_TAG):]), "wall": time.perf_counter() - t0}


def cell_text(cell: dict | None) -> str:
    """Markdown text of a cell: relative error and export time, 'converts' for Core ML, or the failure."""
    if cell is None:
        return "-"
    if "failed" in cell:
        return "FAIL: " + cell["failed"][:120].replace("|", "/")
    seconds = f" ({cell['seconds']:.0f} s)" if cell.get("seconds") is not None else ""
    if cell.get("converts"):
        return f"converts, core ops only{seconds}"
    flag = "" if cell["error"] <= TOLERANCE else " **over limit**"
    return f"{cell['error']:.1e}{flag}{seconds}"


def table(cells: dict[tuple[str, str], dict], models: list[Path], formats: list[str], img: int) -> str:
    """Markdown table: one row per YAML, one column per format."""
    lines = ["| model | " + " | ".join(formats) + " |", "|---|" + "---|" * len(formats)]
    for cfg in models:
        row = [cell_text(cells.get((cfg.stem, f))) if applies(cfg, f) else "n/a" for f in formats]
        lines.append(f"| {cfg.stem} | " + " | ".join(row) + " |")
    ran = [c for c in cells.values() if "error" in c]
    worst = max((c["error"] for c in ran), default=None)
    failed = sum("failed" in c for c in cells.values())
    lines += ["", f"{img}x{img}, batch 1, float32; seeded random weights with randomised BatchNorm statistics. "
              f"Cells: max |export - PyTorch| / max |PyTorch| over the head output (limit {TOLERANCE:.0e}) and the "
              "export time on this (shared) machine; Core ML: converted, reloaded by coremltools, only core MIL ops "
              f"(no runtime on Linux). {len(ran)} cells run, worst {worst:.1e}; {failed} failed." if worst is not None
              else f"{failed} failed."]
    return "\n".join(lines) + "\n"


def resolve(names: list[str] | None) -> list[Path]:
    """YAML paths for ``names`` (stems or paths), default every YAML in models/."""
    if not names:
        return sorted((ROOT / "models").glob("*.yaml"))
    paths = []
    for name in names:
        path = Path(name) if Path(name).is_file() else ROOT / "models" / (name if name.endswith(".yaml")
                                                                           else f"{name}.yaml")
        if not path.is_file():
            raise SystemExit(f"edge_parity: no model YAML {name!r} in {ROOT / 'models'}")
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    """Run the matrix; print and write the table."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--_cell"]:
        return run_cell(argv[1], argv[2], int(argv[3]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", help="YAML names or paths (default: every YAML in models/)")
    parser.add_argument("--formats", nargs="*", default=list(FORMATS), choices=FORMATS)
    parser.add_argument("--img", type=int, default=64, help="square export size (static)")
    parser.add_argument("--threads", type=int, default=1, help="threads of each cell's process")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    parser.add_argument("--resume", action="store_true", help="skip cells already in --out/parity.jsonl")
    parser.add_argument("--out", type=Path, default=Path("runs/edge_parity"))
    args = parser.parse_args(argv)
    models = resolve(args.models)
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "parity.jsonl"
    cells: dict[tuple[str, str], dict] = {}
    if args.resume and log.is_file():
        for line in log.read_text().splitlines():
            row = json.loads(line)
            if row.get("img") == args.img:
                cells[(row["model"], row["format"])] = row["cell"]
    for cfg in models:
        for fmt in args.formats:
            if not applies(cfg, fmt) or (cfg.stem, fmt) in cells:
                continue
            cell = measure(cfg, fmt, args.img, args.threads, args.timeout)
            cells[(cfg.stem, fmt)] = cell
            with open(log, "a") as f:
                f.write(json.dumps({"model": cfg.stem, "format": fmt, "img": args.img, "cell": cell}) + "\n")
            print(f"[edge_parity] {cfg.stem} {fmt}: {cell_text(cell)}", file=sys.stderr, flush=True)
    text = table(cells, models, args.formats, args.img)
    (args.out / "parity.md").write_text(text)
    print(text)
    return 0 if all("failed" not in c and c.get("error", 0.0) <= TOLERANCE for c in cells.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
