"""Exported-model engines: export a fused detector the way the hosts do and time it on the engine's runtime."""
from __future__ import annotations

import contextlib
import copy
import io
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from .measure import median_time_s


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


def openvino_int8_latency_ms(model: torch.nn.Module, img: int, warmup: int, runs: int, threads: int) -> float:
    """Median milliseconds of the OpenVINO model quantized like ``export.py --include openvino --int8``: NNCF INT8
    calibrated on the embedded coco8 images at ``img``, with the project's FP32 exceptions (docs/int8.md); compiled
    as DetectMultiBackend does (f32 hint for the parts left in floating point)."""
    from yolo_backbones.deploy.int8.openvino import int8_transform
    from yolo_backbones.deploy.openvino import compile_openvino, convert_onnx_to_openvino

    with tempfile.TemporaryDirectory() as tmp:
        xml = convert_onnx_to_openvino(export_onnx(model, img, Path(tmp) / "model.onnx"), Path(tmp) / "ov",
                                       transform=int8_transform(None, img, log=lambda message: None))
        compiled = compile_openvino(xml, threads=threads)
        x = torch.rand(1, 3, img, img).numpy()
        return median_time_s(lambda: compiled(x), warmup, runs) * 1000


@dataclass(frozen=True)
class Engine:
    """One latency column: ``key`` (Result field), ``label`` (plot/explanation), the ``flag`` of ``args`` that turns it
    on (None: always), ``latency_ms(model, img, warmup, runs, threads)`` (None: eager, timed interleaved by the
    caller) and how the settings paragraph describes it."""

    key: str
    label: str
    flag: str | None
    latency_ms: Callable[..., float] | None
    described: str


ENGINES = (
    Engine("eager_ms", "PyTorch eager", None, None, "PyTorch eager"),
    Engine("onnx_ms", "onnxruntime", "onnx", onnx_latency_ms, "onnxruntime CPUExecutionProvider (opset 17)"),
    Engine("openvino_ms", "OpenVINO", "openvino", openvino_latency_ms, "OpenVINO CPU, f32 inference precision"),
    Engine("openvino_int8_ms", "OpenVINO INT8", "int8", openvino_int8_latency_ms,
           "OpenVINO INT8: NNCF post-training quantization as export.py --int8 does, calibrated on the 8 coco8 images"),
)


def exported_engines(args: Any) -> list[Engine]:
    """The engines other than eager that ``args`` turns on."""
    return [e for e in ENGINES if e.latency_ms is not None and getattr(args, e.flag, False)]
