#!/usr/bin/env python
"""Benchmark YOLOv5n/s/m and every plugin YAML on this CPU: size, FLOPs, eager/ONNX/OpenVINO latency, training.

All models are measured in one process and one run, so every figure is also given as a ratio to YOLOv5s
measured alongside it, and eager latency is timed in rounds that visit every model in turn (``--rounds``);
the ratios stay comparable even on a noisy machine.

* params: all parameters of the detector (80 classes).
* GFLOPs: ``torch.utils.flop_counter`` at ``--img`` (counts convolutions, matmuls and attention, which
  YOLOv5's thop-based figure misses for transformer blocks), fused eval model, batch 1.
* eager latency: median wall time of ``--runs`` batch-1 FP32 forwards of the fused eval model in PyTorch after
  ``--warmup`` runs, ``--threads`` CPU threads.
* ONNX latency: the same fused model (``Detect.export=True``) exported with ``torch.onnx.export`` (opset 17,
  TorchScript exporter) and run by onnxruntime's ``CPUExecutionProvider`` with ``--threads`` intra-op threads.
* OpenVINO latency: that ONNX file converted to OpenVINO IR as ``export.py --include openvino`` does and run on
  OpenVINO's CPU plugin at f32 inference precision (as val.py/detect.py do), ``--threads`` inference threads.
* training throughput: images/s of one full step (forward, YOLOv5 ``ComputeLoss``, backward, SGD step) on
  random ``--train-batch`` x ``--train-img`` images with fixed targets; median of ``--train-steps`` steps after
  one warm-up step.
* GFLOP/s: GFLOPs / eager latency.
* vs CNN curve (efficiency): the model's GFLOP/s divided by the GFLOP/s of a YOLOv5 CNN of the same GFLOPs,
  interpolated linearly in log GFLOPs between YOLOv5n/s/m measured in the same run (clamped at the ends).
  Target: every plugin model reaches at least ``--target`` (0.7); models smaller than YOLOv5n, where
  per-operator overhead dominates, at least ``--target-small`` (0.5). Models below target are flagged and
  explained (FLOP and time breakdown by op type). Below YOLOv5n the curve is flat, so the run also measures
  ``yolov5n-half`` (yolov5n.yaml at width 0.125, ~1.3 GFLOPs: a stock CNN of that size) and such a model's
  explanation gives its GFLOP/s against that CNN's. The explanation also gives the model's per-operator
  floor (its latency at 64x64, where almost no arithmetic is left) and the efficiency that caps.
* vs reference (``--reference``): how much faster the backbone's ImageNet classifier (``create(name,
  num_classes=1000)``, batch 1) is than the reference implementation with the same weights, as eval model
  (eval fusion on, the default) / fused model / eval model on its own layers (eval fusion off): timm's EfficientFormer(V2) at 224x224; the authors' EdgeViT and Mobile-Former at 640x640
  when ``--official-edgevit DIR`` / ``--official-mobileformer DIR`` point at checkouts of their repositories
  (imported from there at run time, see ``scripts/reference_models.py``).
* train mem GB (``--train-memory``): peak memory of one training step (forward, ``ComputeLoss``, backward) of
  a ``--train-memory-batch`` x ``--train-memory-img`` batch above the process's memory before the step (the
  built model), measured as peak resident memory in a fresh process per model; ``ckpt mem GB`` is the same
  with the backbone's activation checkpointing on (``set_grad_checkpointing``). Slow: off by default.
* ``--yolo11`` adds YOLO11n/s and the yolo11_* plugin YAMLs (built by ultralytics; no training column);
  ``--checkpoint-load N`` adds the safe checkpoint loader's time against ``torch.load(weights_only=True)``.
* Eager latency is timed in ``--rounds`` rounds that visit every model in turn, so drift of a shared machine
  is spread over all models.

Outputs (``--out``, default ``runs/benchmark``): ``benchmark.md`` (the table printed on stdout),
``benchmark.csv`` and ``benchmark.json`` (raw numbers and errors), ``benchmark.png`` (latency vs GFLOPs per engine, with the YOLOv5 CNN curve).
A model whose profiling fails (build, ONNX export, training step...) gets the error in its table cell; the run
continues.

Usage:
    python scripts/benchmark.py                      # every YAML in models/ plus yolov5n/s/m, 640x640
    python scripts/benchmark.py --models yolov5_edgevit.yaml --runs 30 --threads 2
    python scripts/benchmark.py --no-onnx --no-openvino --no-train --out /tmp/bench
    python scripts/benchmark.py --reference --train-memory   # also the timm ratio and training memory
    python scripts/benchmark.py --reference --official-edgevit ../edgevit --official-mobileformer ../MobileFormer
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import io
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
sys.path.insert(0, str(ROOT))

import yolo_backbones  # noqa: E402,F401  (installs the plugin)
from yolo_backbones.core.runtime import tune_cpu_allocator  # noqa: E402
from yolo_backbones.resources import MODELS_DIR  # noqa: E402

REFERENCE = "yolov5s"
BASELINES = ("yolov5n.yaml", "yolov5s.yaml", "yolov5m.yaml")
# The YOLOv5 CNNs whose GFLOP/s, interpolated in log GFLOPs, give the efficiency baseline of a model.
CURVE = ("yolov5n", "yolov5s", "yolov5m")
YOLO11_BASELINES = ("yolo11n.yaml", "yolo11s.yaml")
# A YOLOv5 CNN below the curve: yolov5n.yaml at half its width (~1.3 GFLOPs at 640), measured as a reference for
# plugin models smaller than yolov5n, where the curve is flat at yolov5n's GFLOP/s.
SMALL_CNN = ("yolov5n-half", "yolov5n.yaml", 0.125)
# Side of the tiny input whose latency is a model's per-operator floor (1 % of the FLOPs of 640x640; a multiple
# of every model's stride 32): what the forward costs when its arithmetic is almost nothing.
FLOOR_IMG = 64
# YOLOv5's default loss hyper-parameters (data/hyps/hyp.scratch-low.yaml), as in tests/test_yaml_models.py.
HYP = {"box": 0.05, "cls": 0.5, "cls_pw": 1.0, "obj": 1.0, "obj_pw": 1.0, "anchor_t": 4.0, "fl_gamma": 0.0,
       "label_smoothing": 0.0}
# Metrics of a row: (key, column header, format of the value, higher-is-better).
METRICS = (
    ("params_m", "params (M)", "{:.2f}"),
    ("gflops", "GFLOPs @{img}", "{:.2f}"),
    ("eager_ms", "eager ms", "{:.1f}"),
    ("onnx_ms", "ONNX ms", "{:.1f}"),
    ("openvino_ms", "OpenVINO ms", "{:.1f}"),
    ("train_ips", "train img/s", "{:.1f}"),
    ("gflops_per_s", "GFLOP/s", "{:.1f}"),
    ("efficiency", "vs CNN curve", "{:.2f}"),
    ("reference", "vs reference (eval / fused / own layers)", "{}"),
    ("train_mem_gb", "train mem GB", "{:.2f}"),
    ("train_mem_ckpt_gb", "ckpt mem GB", "{:.2f}"),
)
# Metrics shown without a ratio to YOLOv5s (already relative, or not numbers).
NO_RATIO = {"efficiency", "reference"}
# Op-name fragments -> category, for the explanation of models below target (first match wins).
OP_CATEGORIES = (
    ("conv", ("conv", "mkldnn_convolution")),
    ("matmul/attention", ("mm", "matmul", "linear", "addmm", "bmm", "baddbmm", "attention", "softmax", "einsum")),
    ("normalization", ("norm",)),
    ("pooling/resize", ("pool", "interpolate", "upsample")),
    ("layout/copy", ("copy", "contiguous", "permute", "transpose", "reshape", "view", "cat", "clone", "flatten",
                     "unfold", "roll", "pad", "split", "chunk", "slice", "select", "index", "stack", "expand",
                     "to_copy", "empty")),
    ("elementwise/activation", ("add", "mul", "div", "sub", "sigmoid", "silu", "gelu", "relu", "hardswish",
                                "hardsigmoid", "exp", "pow", "clamp", "tanh", "mean", "sum", "where")),
)


@dataclass
class Result:
    """Raw measurements of one model; a metric is None when skipped or failed (see ``errors``)."""

    name: str
    plugin: bool
    params_m: float | None = None
    gflops: float | None = None
    eager_ms: float | None = None
    onnx_ms: float | None = None
    openvino_ms: float | None = None
    train_ips: float | None = None
    gflops_per_s: float | None = None
    efficiency: float | None = None
    reference: str | None = None
    train_mem_gb: float | None = None
    train_mem_ckpt_gb: float | None = None
    errors: dict[str, str] = field(default_factory=dict)
    breakdown: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------------- build
@contextlib.contextmanager
def quiet():
    """Silence YOLOv5's logger and stdout (model summaries) inside the block."""
    from yolov5.utils.general import LOGGER

    level = LOGGER.level
    LOGGER.setLevel("ERROR")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        LOGGER.setLevel(level)


def is_ultralytics_yaml(cfg_path: Path) -> bool:
    """True for an ultralytics (YOLOv8/YOLO11/YOLO26) model YAML, by name or content."""
    from yolo_backbones.cli.host_choice import host_of_yaml

    return cfg_path.name.startswith(("yolo11", "yolo26", "yolov8")) or host_of_yaml(cfg_path) == "ultralytics"


def build_model(cfg_path: Path) -> torch.nn.Module:
    """Build an (unfused, train-mode) detector from a YAML path, seeded and quietly (YOLOv5 or ultralytics)."""
    torch.manual_seed(0)
    if is_ultralytics_yaml(cfg_path):
        from ultralytics.nn.tasks import DetectionModel

        with quiet():
            return DetectionModel(str(cfg_path), verbose=False)
    from yolov5.models.yolo import Model

    cfg = yaml.safe_load(cfg_path.read_text())
    with quiet():
        return Model(copy.deepcopy(cfg))


def build_detector(cfg_path: Path) -> torch.nn.Module:
    """Build a fused, eval-mode YOLOv5 DetectionModel from a YAML path (quietly)."""
    model = build_model(cfg_path).eval()
    with quiet():
        model.fuse()
    return model


def baseline_yaml(name: str) -> Path:
    """Path of a stock YOLOv5 YAML (``yolov5n.yaml``...) inside the PyPI package."""
    import yolov5

    return Path(yolov5.__file__).parent / "models" / name


def small_cnn_yaml(out: Path) -> Path:
    """Write the :data:`SMALL_CNN` model YAML (a stock YOLOv5 YAML at another width) into ``out``; returns its path."""
    name, source, width = SMALL_CNN
    cfg = yaml.safe_load(baseline_yaml(source).read_text())
    cfg["width_multiple"] = width
    path = out / f"{name}.yaml"
    path.write_text(f"# {source} with width_multiple {width} (written by scripts/benchmark.py)\n"
                    + yaml.safe_dump(cfg, sort_keys=False))
    return path


def resolve_models(names: list[str] | None, yolo11: bool = False, out: Path | None = None
                   ) -> list[tuple[Path, bool]]:
    """(YAML path, is-plugin) for the baselines then the requested plugin YAMLs (default: the yolov5_* YAMLs;
    with ``yolo11`` also YOLO11n/s and the yolo11_* YAMLs). With ``out``, the :data:`SMALL_CNN` baseline is
    written there and measured too."""
    names = names or sorted(p.name for p in MODELS_DIR.glob("yolov5_*.yaml"))
    paths = [(baseline_yaml(n), False) for n in BASELINES]
    if out is not None:
        paths.insert(0, (small_cnn_yaml(out), False))
    if yolo11:
        paths += [(Path(n), False) for n in YOLO11_BASELINES]  # resolved by ultralytics from its own cfg folder
        names = list(names) + sorted(p.name for p in MODELS_DIR.glob("yolo11_*.yaml"))
    for n in names:
        path = Path(n) if Path(n).exists() else MODELS_DIR / n
        if not path.exists() and path.suffix != ".yaml":
            path = path.with_name(path.name + ".yaml")  # a bare model name
        if not path.is_file():
            raise SystemExit(f"benchmark: no model YAML {n!r} (looked in {MODELS_DIR}); "
                             f"choose from: {', '.join(sorted(p.stem for p in MODELS_DIR.glob('*.yaml')))}")
        if path.stem not in {p.stem for p, _ in paths}:
            paths.append((path, True))
    return paths


# --------------------------------------------------------------------------------------------------------- measure
def median_time_s(fn: Callable[[], Any], warmup: int, runs: int) -> float:
    """Median wall time in seconds of ``runs`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, runs)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def attention_flop_mapping() -> dict[Any, Callable]:
    """FLOP formulas for the CPU fused-attention operator, which ``torch.utils.flop_counter`` does not count.

    On CPU ``scaled_dot_product_attention`` runs ``aten._scaled_dot_product_flash_attention_for_cpu``; the
    counter only knows the CUDA kernels, so without this mapping the attention of EdgeViT and of
    Mobile-Former's bridges would count as zero FLOPs.
    """
    from torch.utils.flop_counter import sdpa_flop_count

    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is None:
        return {}

    def flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    return {op: flops}


def count_gflops(model: torch.nn.Module, img: int) -> tuple[float, dict[str, float]]:
    """FLOPs (multiply and add counted separately) of one forward at ``img x img`` in G, and GFLOPs per op."""
    counter = FlopCounterMode(display=False, custom_mapping=attention_flop_mapping())
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, img, img))
    per_op = {str(op).split(".")[1] if "." in str(op) else str(op): n / 1e9
              for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return counter.get_total_flops() / 1e9, per_op


def depthwise_gflops(model: torch.nn.Module, img: int) -> float:
    """GFLOPs of the grouped/depthwise convolutions (groups > 1): memory-bound, few FLOPs per byte on a CPU."""
    total = 0.0

    def hook(module, _inputs, output):
        nonlocal total
        k = module.kernel_size[0] * module.kernel_size[1]
        total += 2 * output.numel() * module.in_channels // module.groups * k

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, img, img))
    finally:
        for h in handles:
            h.remove()
    return total / 1e9


def eager_latency_ms(model: torch.nn.Module, img: int, warmup: int, runs: int) -> float:
    """Median milliseconds of a batch-1 FP32 forward of an eval model at ``img x img``."""
    x = torch.rand(1, 3, img, img)
    with torch.no_grad():
        return median_time_s(lambda: model(x), warmup, runs) * 1000


def interleaved_eager_ms(models: dict[str, torch.nn.Module], img: int, warmup: int, runs: int,
                         rounds: int) -> dict[str, float]:
    """Median eager milliseconds per model, timed in ``rounds`` rounds that visit every model in turn.

    The machine's speed drifts (shared CPUs, turbo, other jobs); interleaving spreads the drift over all
    models instead of charging it to whichever ran during a slow phase.
    """
    x = torch.rand(1, 3, img, img)
    samples: dict[str, list[float]] = {name: [] for name in models}
    per_round = max(1, runs // max(1, rounds))
    with torch.no_grad():
        for name, model in models.items():
            for _ in range(warmup):
                model(x)
        for _ in range(max(1, rounds)):
            for name, model in models.items():
                for _ in range(per_round):
                    t0 = time.perf_counter()
                    model(x)
                    samples[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) * 1000 for name, t in samples.items()}


def export_onnx(model: torch.nn.Module, img: int, path: Path) -> Path:
    """Export a copy of a fused eval detector as export.py does (Detect.export=True, opset 17)."""
    model = copy.deepcopy(model).eval()
    model.model[-1].export = True
    x = torch.zeros(1, 3, img, img)
    with torch.no_grad():
        model(x)  # dry run, as export.py does (builds Detect grids)
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings and the legacy-exporter deprecation notice
            torch.onnx.export(model, x, str(path), opset_version=17, input_names=["images"],
                              output_names=["output0"], dynamo=False)
    return path


def onnx_latency_ms(model: torch.nn.Module, img: int, warmup: int, runs: int, threads: int) -> float:
    """Median milliseconds of a batch-1 onnxruntime (CPUExecutionProvider) run of the exported model."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, img, Path(tmp) / "model.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: torch.rand(1, 3, img, img).numpy()}
    return median_time_s(lambda: session.run(None, feed), warmup, runs) * 1000


def openvino_latency_ms(model: torch.nn.Module, img: int, warmup: int, runs: int, threads: int) -> float:
    """Median milliseconds of a batch-1 OpenVINO CPU inference (f32, as DetectMultiBackend runs it) of the model
    exported like ``export.py --include openvino`` (ONNX, then ``openvino.convert_model``)."""
    from yolo_backbones.deploy.openvino import compile_openvino, convert_onnx_to_openvino

    with tempfile.TemporaryDirectory() as tmp:
        xml = convert_onnx_to_openvino(export_onnx(model, img, Path(tmp) / "model.onnx"), Path(tmp) / "ov")
        compiled = compile_openvino(xml, threads=threads)
        x = torch.rand(1, 3, img, img).numpy()
        return median_time_s(lambda: compiled(x), warmup, runs) * 1000


def train_images_per_s(cfg_path: Path, batch: int, img: int, steps: int) -> float:
    """Images/s of one training step (forward, ComputeLoss, backward, SGD step); median of ``steps`` after 1 warm-up."""
    from yolov5.utils.loss import ComputeLoss

    model = build_model(cfg_path).train()
    model.hyp = HYP
    loss_fn = ComputeLoss(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.937, nesterov=True)
    images = torch.rand(batch, 3, img, img)
    boxes = [[0, 0.5, 0.5, 0.4, 0.3], [3, 0.3, 0.6, 0.2, 0.5], [7, 0.7, 0.3, 0.3, 0.2]]
    targets = torch.tensor([[i, *b] for i in range(batch) for b in boxes], dtype=torch.float32)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss, _ = loss_fn(model(images), targets)
        loss.backward()
        optimizer.step()

    return batch / median_time_s(step, 1, steps)


def op_category(name: str) -> str:
    """Category (conv, matmul/attention, ...) of an aten op name; 'other' if none matches."""
    name = name.lower().removeprefix("aten::")
    for category, fragments in OP_CATEGORIES:
        if any(f in name for f in fragments):
            return category
    return "other"


def time_breakdown(model: torch.nn.Module, img: int, runs: int = 2) -> dict[str, Any]:
    """Share of eager CPU self-time per op category and the top ops, from torch.profiler over ``runs`` forwards."""
    from torch.profiler import ProfilerActivity, profile

    x = torch.rand(1, 3, img, img)
    with torch.no_grad():
        model(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(runs):
                model(x)
    events = [(e.key, e.self_cpu_time_total) for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(t for _, t in events) or 1.0
    shares: dict[str, float] = defaultdict(float)
    for key, t in events:
        shares[op_category(key)] += t / total
    top = sorted(events, key=lambda e: -e[1])[:5]
    return {"time_share": dict(sorted(shares.items(), key=lambda kv: -kv[1])),
            "top_ops": [(k, round(t / total, 3)) for k, t in top]}


def flop_breakdown(per_op: dict[str, float], dw_gflops: float, total: float) -> dict[str, float]:
    """Share of the FLOPs in dense convs, depthwise/grouped convs and matmul/attention ops."""
    total = total or 1.0
    conv = sum(v for k, v in per_op.items() if op_category(k) == "conv")
    return {"dense conv": max(conv - dw_gflops, 0.0) / total, "depthwise/grouped conv": dw_gflops / total,
            "matmul/attention": sum(v for k, v in per_op.items() if op_category(k) == "matmul/attention") / total}


# ------------------------------------------------------------------------------------------------------- one model
def attempt(result: Result, key: str, fn: Callable[[], Any]) -> Any:
    """Run ``fn``; on failure record ``Type: message`` under ``key`` in ``result.errors``, print it, return None."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001  (one failing model/metric must not kill the run)
        message = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        result.errors[key] = message
        print(f"[benchmark] {result.name}: {key} failed: {message}", file=sys.stderr)
        traceback.print_exc(limit=3, file=sys.stderr)
        return None


def profile_eval(model: torch.nn.Module, result: Result, args: argparse.Namespace) -> None:
    """Params, GFLOPs (with FLOP mix), eager latency, GFLOP/s, time breakdown and ONNX latency of a fused model."""
    result.params_m = sum(p.numel() for p in model.parameters()) / 1e6
    counted = attempt(result, "gflops", lambda: count_gflops(model, args.img))
    if counted:
        result.gflops, per_op = counted
        dw = attempt(result, "depthwise", lambda: depthwise_gflops(model, args.img)) or 0.0
        result.breakdown["flop_share"] = flop_breakdown(per_op, dw, result.gflops)
    if not args.rounds:
        result.eager_ms = attempt(result, "eager_ms", lambda: eager_latency_ms(model, args.img, args.warmup,
                                                                              args.runs))
    if args.explain:
        result.breakdown.update(attempt(result, "breakdown", lambda: time_breakdown(model, args.img)) or {})
        floor = attempt(result, "floor_ms", lambda: eager_latency_ms(model, FLOOR_IMG, args.warmup, args.runs))
        if floor is not None:
            result.breakdown["floor_ms"] = floor
    if args.onnx:
        result.onnx_ms = attempt(result, "onnx_ms", lambda: onnx_latency_ms(model, args.img, args.warmup,
                                                                            args.runs, args.threads))
    if args.openvino:
        result.openvino_ms = attempt(result, "openvino_ms", lambda: openvino_latency_ms(
            model, args.img, args.warmup, args.runs, args.threads))


def profile_model(cfg_path: Path, plugin: bool, args: argparse.Namespace) -> tuple[Result, torch.nn.Module | None]:
    """Measure every metric of one model (eager latency too unless ``--rounds``); failures are recorded per
    metric and never raised. Returns the result and the fused model (None if it could not be built)."""
    result = Result(cfg_path.stem, plugin)
    model = attempt(result, "build", lambda: build_detector(cfg_path))
    if model is None:
        for key, *_ in METRICS:
            result.errors.setdefault(key, result.errors["build"])
        return result, None
    profile_eval(model, result, args)
    if args.train and not is_ultralytics_yaml(cfg_path):  # the training step uses YOLOv5's loss
        result.train_ips = attempt(result, "train_ips", lambda: train_images_per_s(
            cfg_path, args.train_batch, args.train_img, args.train_steps))
    if args.reference and plugin:
        result.reference = attempt(result, "reference", lambda: reference_cell(model, args))
    if args.train_memory:
        profile_train_memory(cfg_path, result, args)
    return result, model


# ------------------------------------------------------------------------------------- reference implementation
def reference_speedups(backbone: torch.nn.Module, args: argparse.Namespace, rounds: int = 5, per_round: int = 4
                       ) -> dict[str, float] | None:
    """Reference ms / our ms of the backbone's ImageNet classifier, batch 1, for three ways to run it.

    ``eval``: ``create(...).eval()`` as users run it (eval fusion on, the default); ``fused``: after ``fuse()``;
    ``own``: the eval model on its own, unfused layers (``set_eval_fusion(False)``). The reference is timm's
    EfficientFormer(V2) at 224, or the authors' EdgeViT / Mobile-Former at 640 when a checkout was given
    (:mod:`reference_models`); None when there is none. Minimum of interleaved runs (the models alternate, so
    load on the machine hits them alike); the outputs agree (checked first).
    """
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    from reference_models import ReferenceUnavailable, reference_pair

    official = {"edgevit": args.official_edgevit, "mobileformer": args.official_mobileformer}
    try:
        pair = reference_pair(backbone.family, backbone.variant, official)
    except ReferenceUnavailable as e:
        print(f"[benchmark] no reference for {backbone.family}_{backbone.variant}: {e}")
        return None
    ours, reference = pair.ours.eval(), pair.reference
    own = copy.deepcopy(ours).set_eval_fusion(False)
    models = {"eval": ours, "fused": copy.deepcopy(ours).fuse(), "own": own, "reference": reference}
    x = torch.rand(1, 3, pair.img, pair.img)
    times: dict[str, list[float]] = {key: [] for key in models}
    with torch.no_grad():
        expected = reference(x)
        for key in ("eval", "fused", "own"):
            got = models[key](x)
            if not torch.allclose(got, expected, atol=1e-3, rtol=1e-3):
                raise RuntimeError(f"{key} {pair.name} disagrees with the reference "
                                   f"(max diff {(got - expected).abs().max():.3g})")
        for _ in range(rounds):
            for m in models.values():
                m(x)  # warm-up of this round
            for key, m in models.items():
                for _ in range(per_round):
                    t0 = time.perf_counter()
                    m(x)
                    times[key].append(time.perf_counter() - t0)
    ref = min(times["reference"])
    return {key: ref / min(times[key]) for key in ("eval", "fused", "own")}


def reference_cell(detector: torch.nn.Module, args: argparse.Namespace) -> str | None:
    """The 'vs reference' cell of a detector's backbone, ``'1.41x / 1.42x / 1.15x'`` (eval / fused / own layers),
    or None when not available."""
    from yolo_backbones.core.base import Backbone

    backbone = next((m for m in detector.modules() if isinstance(m, Backbone)), None)
    speedups = reference_speedups(backbone, args) if backbone is not None else None
    if speedups is None:
        return None
    return " / ".join(f"{speedups[key]:.2f}x" for key in ("eval", "fused", "own"))


# ------------------------------------------------------------------------------------------- training memory
def profile_train_memory(cfg_path: Path, result: Result, args: argparse.Namespace) -> None:
    """Peak training-step memory of ``cfg_path`` without and (plugin models) with activation checkpointing."""
    for key, checkpointing in (("train_mem_gb", False), ("train_mem_ckpt_gb", True)):
        if checkpointing and not result.plugin:
            continue
        value = attempt(result, key, lambda: train_peak_memory_gb(
            cfg_path, args.train_memory_batch, args.train_memory_img, checkpointing, args.threads))
        setattr(result, key, value)


def train_peak_memory_gb(cfg_path: Path, batch: int, img: int, checkpointing: bool, threads: int) -> float:
    """Peak memory (GB) of one training step above the process's memory before it, in a fresh process."""
    command = [sys.executable, str(Path(__file__).resolve()), "--_train-memory-child", str(cfg_path), str(batch),
               str(img), str(int(checkpointing)), str(threads)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("PEAK_GB ")]
    if done.returncode or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"training-memory process failed ({done.returncode}): {tail}")
    return float(lines[-1].split()[1])


def resident_bytes() -> int:
    """Current resident memory of this process (Linux ``/proc/self/statm``)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def train_memory_child(cfg: str, batch: str, img: str, checkpointing: str, threads: str) -> int:
    """Child process of :func:`train_peak_memory_gb`: one training step, then ``PEAK_GB <value>`` on stdout.

    The step is forward + ``ComputeLoss`` + backward (gradients included, no optimizer state); the baseline is
    the resident memory once the model, loss and batch exist, the peak the process's peak resident memory.
    """
    import gc
    import resource

    from yolov5.utils.loss import ComputeLoss

    from yolo_backbones.core.base import Backbone

    torch.set_num_threads(int(threads))
    model = build_model(Path(cfg)).train()
    if int(checkpointing):
        for m in model.modules():
            if isinstance(m, Backbone):
                m.set_grad_checkpointing(True)
    model.hyp = HYP
    loss_fn = ComputeLoss(model)
    images = torch.rand(int(batch), 3, int(img), int(img))
    boxes = [[0, 0.5, 0.5, 0.4, 0.3], [3, 0.3, 0.6, 0.2, 0.5], [7, 0.7, 0.3, 0.3, 0.2]]
    targets = torch.tensor([[i, *b] for i in range(int(batch)) for b in boxes], dtype=torch.float32)
    gc.collect()
    before = resident_bytes()
    loss, _ = loss_fn(model(images), targets)
    loss.backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    print(f"PEAK_GB {(peak - before) / 1e9:.3f}")
    return 0


# ------------------------------------------------------------------------------------------- CNN efficiency curve
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


# --------------------------------------------------------------------------------------------------------- report
def ratio(value: float | None, reference: float | None) -> float | None:
    """value / reference, or None when either is missing or the reference is zero."""
    return value / reference if value is not None and reference else None


def is_below_target(result: Result, reference: Result | None, target: float) -> bool:
    """True when the model's efficiency (GFLOP/s over the YOLOv5 CNN curve's, see :func:`apply_curve`) is below
    ``target``. ``reference`` is unused (kept for callers)."""
    return result.efficiency is not None and result.efficiency < target


def cell(result: Result, key: str, fmt: str, reference: Result | None) -> str:
    """Table cell 'value (ratio x)', the error text if the metric failed, or '-' if it was skipped."""
    value = getattr(result, key)
    if value is None:
        error = result.errors.get(key)
        return f"error: {error[:80]}".replace("|", "/") if error else "-"
    r = None if key in NO_RATIO else ratio(value, getattr(reference, key) if reference else None)
    return fmt.format(value) + (f" ({r:.2f}x)" if r is not None else "")


def markdown_table(results: list[Result], args: argparse.Namespace) -> str:
    """The Markdown table (each figure with its ratio to YOLOv5s) plus settings and below-target sections."""
    reference = next((r for r in results if r.name == REFERENCE), None)
    headers = (["model"] + [h.format(img=args.img) for _, h, _ in METRICS]
               + [f"target >= {args.target:.2f} ({args.target_small:.2f} below {CURVE[0]})"])
    lines = ["| " + " | ".join(headers) + " |", "|---|" + "---:|" * len(METRICS) + ":---:|"]
    for res in results:
        flag = "below target" if is_below_target(res, reference, target_for(res, results, args)) else "ok"
        if not res.plugin or res.efficiency is None:
            flag = "baseline" if not res.plugin else "n/a"
        cells = [res.name] + [cell(res, k, f, reference) for k, _, f in METRICS] + [flag]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(settings_text(args))
    lines += explanation(results, reference, args)
    return "\n".join(lines) + "\n"


def cpu_name() -> str:
    """Human-readable CPU model (from /proc/cpuinfo on Linux), else platform.processor()."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def settings_text(args: argparse.Namespace) -> str:
    """One paragraph describing how the numbers were taken."""
    onnx = "onnxruntime CPUExecutionProvider (opset 17)" if args.onnx else "ONNX skipped"
    onnx += "; OpenVINO CPU, f32 inference precision" if args.openvino else "; OpenVINO skipped"
    train = (f"training: images/s of one SGD step (forward + ComputeLoss + backward + step), batch "
             f"{args.train_batch} at {args.train_img}, median of {args.train_steps} steps after 1 warm-up"
             if args.train else "training skipped")
    memory = (f" Training memory: one step (forward + ComputeLoss + backward), batch {args.train_memory_batch} at "
              f"{args.train_memory_img}, peak resident memory above the built model, a fresh process per figure; "
              f"'ckpt' with the backbone's activation checkpointing." if args.train_memory else "")
    return (f"Ratios in parentheses are to {REFERENCE} measured in the same run. Latency: {args.img}x{args.img}, "
            f"batch 1, FP32, fused eval model, median of {args.runs} runs after {args.warmup} warm-up, "
            f"{args.threads} thread(s); PyTorch eager and {onnx}. GFLOPs from torch.utils.flop_counter (CPU "
            f"fused attention included); GFLOP/s = GFLOPs / eager latency; 'vs CNN curve' = GFLOP/s over that "
            f"of {'/'.join(CURVE)} interpolated in log GFLOPs at the model's GFLOPs; {train}.{memory} "
            f"CPU: {cpu_name()}; torch {torch.__version__}.")


def describe_shares(shares: dict[str, float], limit: int = 4) -> str:
    """'a 45%, b 30%, ...' for the largest ``limit`` shares."""
    items = sorted(shares.items(), key=lambda kv: -kv[1])[:limit]
    return ", ".join(f"{k} {v:.0%}" for k, v in items if v >= 0.005)


def explain_model(res: Result, reference: Result | None, img: int) -> str:
    """One Markdown bullet on why a model's GFLOP/s is low: its FLOP mix and where its eager time goes."""
    text = (f"- **{res.name}**: {res.gflops_per_s:.1f} GFLOP/s = {res.efficiency:.2f}x the YOLOv5 CNN curve at "
            f"{res.gflops:.1f} GFLOPs.")
    flops, ref_b = res.breakdown.get("flop_share"), reference.breakdown if reference else {}
    if flops:
        text += f" FLOPs: {describe_shares(flops)}."
    if res.breakdown.get("time_share"):
        text += f" Eager time: {describe_shares(res.breakdown['time_share'])}"
        if ref_b.get("time_share"):
            text += f" ({REFERENCE}: {describe_shares(ref_b['time_share'], 3)})"
        text += "."
    if res.breakdown.get("top_ops"):
        text += " Top ops: " + ", ".join(f"{k} {v:.0%}" for k, v in res.breakdown["top_ops"][:3]) + "."
    return text + " " + likely_cause(res) + floor_text(res, img)


def small_cnn_text(res: Result, results: list[Result]) -> str:
    """For a model smaller than every curve CNN: its GFLOP/s against the :data:`SMALL_CNN` measured in this run."""
    small = next((r for r in results if r.name == SMALL_CNN[0] and r.gflops_per_s), None)
    smallest = smallest_curve_gflops(results)
    if small is None or smallest is None or not res.gflops or res.gflops >= smallest or not res.gflops_per_s:
        return ""
    share = floor_share(small)
    floor = f", {share:.0%} of its latency at the {FLOOR_IMG}x{FLOOR_IMG} floor" if share is not None else ""
    return (f" Against a YOLOv5 CNN of its own size ({small.name}: {SMALL_CNN[1]} at width {SMALL_CNN[2]}, "
            f"{small.gflops:.1f} GFLOPs, {small.gflops_per_s:.1f} GFLOP/s = {small.efficiency:.2f}x the curve{floor}) "
            f"it reaches {res.gflops_per_s / small.gflops_per_s:.2f}x.")


def floor_share(res: Result) -> float | None:
    """The model's per-operator floor (eager latency at :data:`FLOOR_IMG`) as a share of its eager latency."""
    floor = res.breakdown.get("floor_ms")
    return floor / res.eager_ms if floor is not None and res.eager_ms else None


def floor_text(res: Result, img: int) -> str:
    """The model's per-operator floor against its latency at ``img`` and the efficiency it caps, or ''.

    Subtracting the floor from the full-size latency leaves the time of arithmetic and memory traffic; the
    efficiency over that time bounds what any cut of per-operator cost (Python, dispatch, kernel set-up) can give.
    """
    share = floor_share(res)
    if share is None or res.efficiency is None or share >= 1.0:
        return ""
    return (f" Per-operator floor: at {FLOOR_IMG}x{FLOOR_IMG} input ({(FLOOR_IMG / img) ** 2:.0%} of the FLOPs) it "
            f"still takes {res.breakdown['floor_ms']:.1f} ms, {share:.0%} of its {res.eager_ms:.1f} ms; with that "
            f"cost at zero it would reach at most {res.efficiency / (1.0 - share):.2f}x the curve.")


def likely_cause(res: Result) -> str:
    """A short reading of the breakdown: which kind of op makes the model slow per FLOP."""
    flops, time_share = res.breakdown.get("flop_share", {}), res.breakdown.get("time_share", {})
    zero_flop = sum(time_share.get(k, 0.0) for k in ("layout/copy", "normalization", "elementwise/activation",
                                                       "pooling/resize", "other"))
    causes = []
    slow = sum(v for k, v in res.breakdown.get("top_ops", []) if "slow_conv" in k)
    if slow >= 0.2:
        causes.append(f"{slow:.0%} of the time is in aten::_slow_conv2d_forward, PyTorch's im2col fallback that it "
                      "picks over oneDNN for batch-1 1x1 and small-feature-map convolutions (more so with 1 thread)")
    if zero_flop >= 0.3:
        causes.append(f"{zero_flop:.0%} of the time is in ops with (almost) no counted FLOPs "
                      "(reshapes/permutes/copies, norms, element-wise): token mixing is memory-bound")
    if flops.get("depthwise/grouped conv", 0.0) >= 0.05:
        causes.append("depthwise/grouped convolutions do few FLOPs per byte moved")
    if time_share.get("matmul/attention", 0.0) > 1.5 * flops.get("matmul/attention", 1.0):
        causes.append("small attention matmuls (few tokens or channels per head) run far below GEMM peak")
    if not causes:
        causes.append("small layers (low width at batch 1) keep the CPU's GEMM kernels from reaching peak")
    return "Likely cause: " + "; ".join(causes) + "."


def explanation(results: list[Result], reference: Result | None, args: argparse.Namespace) -> list[str]:
    """Markdown section listing the plugin models below their efficiency target, with a reason each."""
    low = [r for r in results if r.plugin and is_below_target(r, reference, target_for(r, results, args))]
    lines = ["", f"### Below target (efficiency < {args.target:.2f}, < {args.target_small:.2f} below {CURVE[0]})", ""]
    if not curve_points(results):
        return lines + [f"Not evaluated: none of {'/'.join(CURVE)} has a GFLOP/s in this run."]
    if not low:
        return lines + ["None: every plugin model reaches the target."]
    return lines + [explain_model(r, reference, args.img) + small_cnn_text(r, results) for r in low]


def write_raw(results: list[Result], args: argparse.Namespace, out: Path) -> None:
    """benchmark.json (settings, raw numbers, errors, breakdowns) and benchmark.csv (one row per model)."""
    reference = next((r for r in results if r.name == REFERENCE), None)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    rows = []
    for r in results:
        row = asdict(r)
        row["below_target"] = is_below_target(r, reference, target_for(r, results, args))
        for key, *_ in METRICS:
            row[f"{key}_vs_{REFERENCE}"] = (None if key in NO_RATIO else
                                            ratio(getattr(r, key), getattr(reference, key) if reference else None))
        rows.append(row)
    meta = {"cpu": cpu_name(), "torch": torch.__version__, "settings": settings}
    (out / "benchmark.json").write_text(json.dumps({**meta, "results": rows}, indent=2, default=str))
    columns = ["name", "plugin"] + [k for k, *_ in METRICS] + [f"{k}_vs_{REFERENCE}" for k, *_ in METRICS]
    with open(out / "benchmark.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns + ["below_target", "errors"])
        for row in rows:
            errors = "; ".join(f"{k}: {v}" for k, v in row["errors"].items())
            writer.writerow([row[c] if row[c] is not None else "" for c in columns] + [row["below_target"], errors])


ENGINES = (("eager_ms", "PyTorch eager"), ("onnx_ms", "onnxruntime"), ("openvino_ms", "OpenVINO"))


def plot(results: list[Result], args: argparse.Namespace, path: Path) -> None:
    """PNG of latency vs GFLOPs (log-log), one panel per engine measured, with the YOLOv5 n/s/m CNN curve.

    YOLOv5 points are joined into the curve the efficiency is measured against; other baselines are gray,
    plugin models blue, or red when their eager efficiency is below target.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    engines = [(key, label) for key, label in ENGINES if any(getattr(r, key) and r.gflops for r in results)]
    engines = engines or ENGINES[:1]
    reference = next((r for r in results if r.name == REFERENCE), None)
    curve_names = {Path(n).stem for n in BASELINES}
    fig, axes = plt.subplots(1, len(engines), figsize=(6.5 * len(engines), 5.5), dpi=110, squeeze=False)
    for ax, (key, label) in zip(axes[0], engines):
        points = [r for r in results if r.gflops and getattr(r, key)]
        curve = sorted((r.gflops, getattr(r, key)) for r in points if r.name in curve_names)
        if len(curve) > 1:
            ax.plot(*zip(*curve), color="tab:gray", linewidth=1.5, zorder=2, label="YOLOv5 n/s/m (CNN curve)")
        for r in points:
            below = r.plugin and is_below_target(r, reference, target_for(r, results, args))
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
    fig.suptitle("Latency vs GFLOPs; gray: YOLO CNNs, blue: plugin models, red: below the eager efficiency target",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def checkpoint_load_text(repeats: int) -> str:
    """A Markdown paragraph: the safe loader's load time against ``torch.load(weights_only=True)``."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_checkpoint_load import measure

    safe_s, plain_s, size = measure(repeats)
    return (f"\nCheckpoint loading ({size / 1e6:.0f} MB, {repeats} interleaved loads each, median): safe loader "
            f"{safe_s * 1000:.0f} ms, torch.load(weights_only=True) {plain_s * 1000:.0f} ms, "
            f"ratio {safe_s / plain_s:.2f}.\n")


# ----------------------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", help="YAML names in models/ or paths (default: all in models/)")
    parser.add_argument("--img", type=int, default=640, help="square input size for GFLOPs and latency")
    parser.add_argument("--runs", type=int, default=20, help="timed runs per latency (median)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs before timing")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="CPU threads (torch and ORT)")
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--train-img", type=int, default=320)
    parser.add_argument("--train-steps", type=int, default=3, help="timed training steps (median) after 1 warm-up")
    parser.add_argument("--target", type=float, default=0.70,
                        help="minimum efficiency (GFLOP/s over the YOLOv5 n/s/m curve at the model's GFLOPs)")
    parser.add_argument("--target-small", type=float, default=0.50,
                        help="minimum efficiency of models with fewer GFLOPs than YOLOv5n")
    parser.add_argument("--reference", action="store_true",
                        help="time each backbone's ImageNet classifier against the reference implementation with the "
                             "same weights: timm's EfficientFormer(V2) at 224; EdgeViT / Mobile-Former at 640 with "
                             "--official-edgevit / --official-mobileformer")
    parser.add_argument("--official-edgevit", type=Path, default=None, metavar="DIR",
                        help="checkout of github.com/saic-fi/edgevit (for --reference; imported from there, never copied)")
    parser.add_argument("--official-mobileformer", type=Path, default=None, metavar="DIR",
                        help="checkout of github.com/AAboys/MobileFormer (for --reference)")
    parser.add_argument("--train-memory", action="store_true",
                        help="peak memory of one training step, without and with activation checkpointing (slow)")
    parser.add_argument("--train-memory-batch", type=int, default=8)
    parser.add_argument("--train-memory-img", type=int, default=640)
    parser.add_argument("--no-onnx", dest="onnx", action="store_false", help="skip the onnxruntime latency")
    parser.add_argument("--no-openvino", dest="openvino", action="store_false",
                        help="skip the OpenVINO latency")
    parser.add_argument("--no-train", dest="train", action="store_false", help="skip the training throughput")
    parser.add_argument("--no-explain", dest="explain", action="store_false",
                        help="skip the profiler time breakdown used to explain models below target")
    parser.add_argument("--rounds", type=int, default=5,
                        help="eager latency: interleave all models over this many rounds (0: one model at a time)")
    parser.add_argument("--yolo11", action="store_true", help="also YOLO11n/s and every yolo11_* plugin YAML")
    parser.add_argument("--checkpoint-load", type=int, default=0, metavar="REPEATS",
                        help="also time the safe checkpoint loader against torch.load(weights_only=True) "
                             "on a ~50 MB checkpoint, REPEATS interleaved loads each")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmark"), help="output directory")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Benchmark every model, print the Markdown table and write benchmark.{md,csv,json,png} to ``--out``."""
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--_train-memory-child":
        return train_memory_child(*sys.argv[2:7])
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    # The plugin tunes the allocator when a model is fused; do it before anything is measured, so the YOLOv5
    # baselines run with the same allocator settings as the plugin models.
    tune_cpu_allocator()
    args.out.mkdir(parents=True, exist_ok=True)
    results, models = [], {}
    for path, plugin in resolve_models(args.models, args.yolo11, args.out):
        t0 = time.perf_counter()
        res, model = profile_model(path, plugin, args)
        results.append(res)
        if model is not None:
            models[res.name] = model
        print(f"[benchmark] {res.name}: params {res.params_m} M, {res.gflops} GFLOPs, eager {res.eager_ms} ms, "
              f"onnx {res.onnx_ms} ms, train {res.train_ips} img/s ({time.perf_counter() - t0:.0f}s)",
              file=sys.stderr)
    if args.rounds:
        eager = interleaved_eager_ms(models, args.img, args.warmup, args.runs, args.rounds)
        for res in results:
            res.eager_ms = eager.get(res.name)
    for res in results:
        if res.gflops and res.eager_ms:
            res.gflops_per_s = res.gflops / (res.eager_ms / 1000)
    apply_curve(results)
    table = markdown_table(results, args)
    if args.checkpoint_load:
        table += checkpoint_load_text(args.checkpoint_load)
    print(table)
    (args.out / "benchmark.md").write_text(table)
    write_raw(results, args, args.out)
    try:
        plot(results, args, args.out / "benchmark.png")
    except Exception:  # noqa: BLE001  (the table and raw numbers are already written)
        traceback.print_exc(file=sys.stderr)
    print(f"[benchmark] wrote {args.out}/benchmark.md, .csv, .json, .png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
