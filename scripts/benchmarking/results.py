"""What one benchmark run measures: the models it compares against, the metrics and one model's results."""
from __future__ import annotations

import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[2]


SCRIPTS = ROOT / "scripts"


REFERENCE = "yolov5s"


BASELINES = ("yolov5n.yaml", "yolov5s.yaml", "yolov5m.yaml")


# The YOLOv5 CNNs whose GFLOP/s, interpolated in log GFLOPs, give the efficiency baseline of a model.
CURVE = ("yolov5n", "yolov5s", "yolov5m")


YOLO11_BASELINES = ("yolo11n.yaml", "yolo11s.yaml")


# A YOLOv5 CNN below the curve: yolov5n.yaml at half its width (~1.3 GFLOPs at 640), measured as a reference for
# plugin models smaller than yolov5n, where the curve is flat at yolov5n's GFLOP/s.
SMALL_CNN = ("yolov5n-half", "yolov5n.yaml", 0.125)


# The CNNs of an edge engine's curve (``--edge``): YOLOv5n/s and YOLO11n/s, exported and run on that engine in the
# same run, and below them the small CNN, so a model smaller than YOLOv5n (Mobile-Former-52M) meets a CNN of its own
# GFLOPs rather than YOLOv5n's GFLOP/s (each conversion takes tens of seconds, so YOLOv5m is not converted).
EDGE_CURVE = (SMALL_CNN[0], "yolov5n", "yolov5s", "yolo11n", "yolo11s")


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
    ("openvino_int8_ms", "OpenVINO INT8 ms", "{:.1f}"),
    ("int8_speedup", "INT8 speed-up (OpenVINO)", "{:.2f}x"),
    ("train_ips", "train img/s", "{:.1f}"),
    ("gflops_per_s", "GFLOP/s", "{:.1f}"),
    ("efficiency", "vs CNN curve", "{:.2f}"),
    ("reference", "vs reference (eval / fused / own layers)", "{}"),
    ("train_mem_gb", "train mem GB", "{:.2f}"),
    ("train_mem_ckpt_gb", "ckpt mem GB", "{:.2f}"),
)


# Columns of the edge-engine table (``--edge``): per engine its latency and efficiency against its own curve.
EDGE_METRICS = (
    ("litert_ms", "LiteRT ms", "{:.1f}"),
    ("litert_vs_cnn", "LiteRT vs CNN", "{:.2f}"),
    ("litert_int8_ms", "LiteRT INT8 ms", "{:.1f}"),
    ("ncnn_ms", "NCNN ms", "{:.1f}"),
    ("ncnn_vs_cnn", "NCNN vs CNN", "{:.2f}"),
    ("executorch_ms", "ExecuTorch ms", "{:.1f}"),
    ("executorch_vs_cnn", "ExecuTorch vs CNN", "{:.2f}"),
)


# Metrics shown without a ratio to YOLOv5s (already relative, or not numbers).
NO_RATIO = {"efficiency", "reference", "int8_speedup", "litert_vs_cnn", "ncnn_vs_cnn", "executorch_vs_cnn"}


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
    openvino_int8_ms: float | None = None
    int8_speedup: float | None = None  # openvino_ms / openvino_int8_ms
    train_ips: float | None = None
    gflops_per_s: float | None = None
    efficiency: float | None = None
    reference: str | None = None
    train_mem_gb: float | None = None
    train_mem_ckpt_gb: float | None = None
    litert_ms: float | None = None
    litert_int8_ms: float | None = None
    ncnn_ms: float | None = None
    executorch_ms: float | None = None
    litert_vs_cnn: float | None = None
    ncnn_vs_cnn: float | None = None
    executorch_vs_cnn: float | None = None
    fastest_engine: str | None = None
    errors: dict[str, str] = field(default_factory=dict)
    breakdown: dict[str, Any] = field(default_factory=dict)


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
