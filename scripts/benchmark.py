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
* OpenVINO INT8 latency (``--no-int8`` skips it): that IR quantized as ``export.py --include openvino --int8`` does
  (NNCF, calibrated on the 8 embedded coco8 images at ``--img``, the FP32 exceptions of docs/int8.md), run the same
  way; ``INT8 speed-up`` = OpenVINO FP32 ms / INT8 ms of the same model. The stock CNNs are quantized the same way.
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
  (eval fusion on, the default) / fused model / eval model on its own layers (eval fusion off): timm's
  EfficientFormer(V2) at 224x224; the authors' EdgeViT and Mobile-Former at 640x640 when ``--official-edgevit
  DIR`` / ``--official-mobileformer DIR`` point at checkouts of their repositories (imported from there at run
  time, see ``scripts/reference_models.py``).
* train mem GB (``--train-memory``): peak memory of one training step (forward, ``ComputeLoss``, backward) of
  a ``--train-memory-batch`` x ``--train-memory-img`` batch above the process's memory before the step (the
  built model), measured as peak resident memory in a fresh process per model; ``ckpt mem GB`` is the same
  with the backbone's activation checkpointing on (``set_grad_checkpointing``). Slow: off by default.
* ``--edge`` adds the edge engines (LiteRT with XNNPACK, NCNN, ExecuTorch with XNNPACK; float32; converted through
  ``yolo_backbones.deploy`` as both hosts' exports do): latency of every plugin model and of YOLOv5n/s and YOLO11n/s
  converted the same way, each model's efficiency against the curve of those CNNs on the same engine ('vs CNN',
  target ``--target`` as for eager; ``yolov5n-half`` is on these curves too, so a model below YOLOv5n meets a CNN
  of its own size), and the fastest engine per model, in a second table. These are the kernels
  phones run, taking their x86 paths here: a proxy for phone latency, not a measurement of it. Off by default:
  each conversion takes tens of seconds to minutes per model and engine. ``--no-litert/--no-ncnn/--no-executorch``
  drop one. With LiteRT comes a LiteRT INT8 column (the same file quantized as ``--int8`` / ``quantize=8`` do;
  ``--no-int8`` drops it with OpenVINO INT8).
* ``--yolo11`` adds YOLO11n/s and the yolo11_* plugin YAMLs (built by ultralytics; no training column);
  ``--checkpoint-load N`` adds the safe checkpoint loader's time against ``torch.load(weights_only=True)``.
* Eager latency, and each exported engine's after it has converted every model, is timed in ``--rounds`` rounds
  that visit every model in turn, so drift of a shared machine is spread over all models.

The pieces live in ``scripts/benchmarking/`` (measuring: results, models, measure, engines, reference,
train_memory; judging and reporting: curve, report, plot); this file is the command line.

Outputs (``--out``, default ``runs/benchmark``): ``benchmark.md`` (the table printed on stdout),
``benchmark.csv`` and ``benchmark.json`` (raw numbers and errors), ``benchmark.png`` (latency vs GFLOPs per engine,
with the engine's CNN curve).
A model whose profiling fails (build, ONNX export, training step...) gets the error in its table cell; the run
continues.

Usage:
    python scripts/benchmark.py                      # every YAML in models/ plus yolov5n/s/m, 640x640
    python scripts/benchmark.py --models yolov5_edgevit.yaml --runs 30 --threads 2
    python scripts/benchmark.py --no-onnx --no-openvino --no-train --out /tmp/bench
    python scripts/benchmark.py --reference --train-memory   # also the timm ratio and training memory
    python scripts/benchmark.py --edge --no-executorch       # also LiteRT and NCNN latency and efficiency
    python scripts/benchmark.py --reference --official-edgevit ../edgevit --official-mobileformer ../MobileFormer
"""
from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

import torch

SCRIPTS_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS_DIR.parent))
sys.path.insert(0, str(SCRIPTS_DIR))

from benchmarking.curve import (  # noqa: E402,F401  (curve_gflops_per_s, efficiencies, target_for: tests)
    apply_curve,
    apply_engine_curves,
    curve_gflops_per_s,
    efficiencies,
    target_for,
)
from benchmarking.engines import EDGE_ENGINES, ENGINES, exported_engines, fastest_engine, time_engine  # noqa: E402
from benchmarking.measure import (  # noqa: E402,F401  (attention_flop_mapping: tests)
    attention_flop_mapping,
    count_gflops,
    depthwise_gflops,
    eager_latency_ms,
    flop_breakdown,
    interleaved_eager_ms,
    time_breakdown,
    train_images_per_s,
)
from benchmarking.models import build_detector, is_ultralytics_yaml, resolve_models  # noqa: E402
from benchmarking.plot import plot  # noqa: E402
from benchmarking.reference import reference_cell  # noqa: E402
from benchmarking.report import (  # noqa: E402,F401  (floor_share, floor_text, small_cnn_text: tests)
    checkpoint_load_text,
    floor_share,
    floor_text,
    markdown_table,
    small_cnn_text,
    write_raw,
)
from benchmarking.results import FLOOR_IMG, METRICS, Result, attempt  # noqa: E402
from benchmarking.train_memory import profile_train_memory, train_memory_child  # noqa: E402

import yolo_backbones  # noqa: E402,F401  (installs the plugin)
from yolo_backbones.core.inference.runtime import tune_cpu_allocator  # noqa: E402


def profile_eval(model: torch.nn.Module, result: Result, args: argparse.Namespace) -> None:
    """Params, GFLOPs (with FLOP mix), eager latency (unless ``--rounds``) and time breakdown of a fused model."""
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
                        help="checkout of github.com/saic-fi/edgevit (for --reference; imported from there, "
                             "never copied)")
    parser.add_argument("--official-mobileformer", type=Path, default=None, metavar="DIR",
                        help="checkout of github.com/AAboys/MobileFormer (for --reference)")
    parser.add_argument("--train-memory", action="store_true",
                        help="peak memory of one training step, without and with activation checkpointing (slow)")
    parser.add_argument("--train-memory-batch", type=int, default=8)
    parser.add_argument("--train-memory-img", type=int, default=640)
    parser.add_argument("--no-onnx", dest="onnx", action="store_false", help="skip the onnxruntime latency")
    parser.add_argument("--no-openvino", dest="openvino", action="store_false",
                        help="skip the OpenVINO latency")
    parser.add_argument("--no-int8", dest="int8", action="store_false",
                        help="skip the INT8 latencies, OpenVINO and (with --edge) LiteRT (quantizing costs ~10-60 s "
                             "per model)")
    parser.add_argument("--edge", action="store_true",
                        help="also time the edge engines (LiteRT/XNNPACK, NCNN, ExecuTorch/XNNPACK, all float32) on "
                             "the plugin models and YOLOv5n/s + YOLO11n/s converted the same way (adds tens of "
                             "seconds of conversion per model and engine; off by default)")
    parser.add_argument("--no-litert", dest="litert", action="store_false", help="with --edge: skip LiteRT")
    parser.add_argument("--no-ncnn", dest="ncnn", action="store_false", help="with --edge: skip NCNN")
    parser.add_argument("--no-executorch", dest="executorch", action="store_false",
                        help="with --edge: skip ExecuTorch")
    parser.add_argument("--no-train", dest="train", action="store_false", help="skip the training throughput")
    parser.add_argument("--no-explain", dest="explain", action="store_false",
                        help="skip the profiler time breakdown used to explain models below target")
    parser.add_argument("--rounds", type=int, default=5,
                        help="latency (eager and every engine): interleave all models over this many rounds "
                             "(0: one model at a time)")
    parser.add_argument("--yolo11", action="store_true", help="also YOLO11n/s and every yolo11_* plugin YAML")
    parser.add_argument("--checkpoint-load", type=int, default=0, metavar="REPEATS",
                        help="also time the safe checkpoint loader against torch.load(weights_only=True) "
                             "on a ~50 MB checkpoint, REPEATS interleaved loads each")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmark"), help="output directory")
    args = parser.parse_args(argv)
    args.litert_int8 = args.litert and args.int8  # LiteRT INT8 goes with LiteRT, unless --no-int8
    for engine in EDGE_ENGINES:  # the edge engines run only with --edge
        setattr(args, engine.flag, args.edge and getattr(args, engine.flag))
    return args


def main(argv: list[str] | None = None) -> int:
    """Benchmark every model, print the Markdown table and write benchmark.{md,csv,json,png} to ``--out``."""
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--_train-memory-child":
        return train_memory_child(*sys.argv[2:7])
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    # Opt in to the plugin's allocator setting (the plugin never changes it by itself) before anything is measured,
    # so the YOLOv5 baselines and the plugin models run with the same allocator settings.
    tune_cpu_allocator()
    args.out.mkdir(parents=True, exist_ok=True)
    results, models = [], {}
    for path, plugin in resolve_models(args.models, args.yolo11, args.out, yolo11_baselines=args.edge):
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
    for engine in exported_engines(args):  # each engine: convert every model, then time them interleaved
        time_engine(engine, results, models, args.img, args.warmup, args.runs, args.rounds, args.threads)
    for res in results:
        if res.gflops and res.eager_ms:
            res.gflops_per_s = res.gflops / (res.eager_ms / 1000)
        if res.openvino_ms and res.openvino_int8_ms:
            res.int8_speedup = res.openvino_ms / res.openvino_int8_ms
    apply_curve(results)
    engines = exported_engines(args)
    apply_engine_curves(results, engines)
    for res in results:
        res.fastest_engine = fastest_engine(res, [ENGINES[0], *engines])
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
