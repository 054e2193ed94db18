"""Exported-model engines: export a fused detector the way the hosts do and time it on the engine's runtime.

The edge engines (LiteRT, NCNN, ExecuTorch, ``--edge``) convert through the host-free :mod:`yolo_backbones.deploy`
modules, as ``export.py --include tflite|ncnn|executorch`` and ``yolo export format=...`` do, and time the same
runners ``val.py`` / ``detect.py`` use (float32). Their kernels (XNNPACK, ncnn) are the ones phones run; on an
x86 CPU they take their x86 paths, so the figures are a proxy for a phone's.
"""
from __future__ import annotations

import contextlib
import copy
import io
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .measure import median_time_s
from .results import CURVE, EDGE_CURVE, Result


def head_export_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of a fused eval detector with its head in export mode (one output tensor), as both hosts export it."""
    model = copy.deepcopy(model).eval()
    model.model[-1].export = True
    return model


def export_onnx(model: torch.nn.Module, img: int, path: Path) -> Path:
    """Export a copy of a fused eval detector as export.py does (Detect.export=True, opset 17)."""
    model = head_export_copy(model)
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


def _edge_latency_ms(convert: Callable[[torch.nn.Module, torch.Tensor, Path], Any], what: str,
                     img: int, warmup: int, runs: int, model: torch.nn.Module) -> float:
    """Convert the detector (head in export mode, static 1x3ximgximg) with ``convert(model, example, folder)``, which
    returns a runner of the result, and time ``runner(x)``: median milliseconds of batch-1 runs."""
    example = torch.zeros(1, 3, img, img)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        runner = convert(head_export_copy(model), example, Path(tmp))
        print(f"[benchmark] {what} conversion {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        x = np.random.default_rng(0).random((1, 3, img, img), dtype=np.float32)
        return median_time_s(lambda: runner(x), warmup, runs) * 1000


def litert_latency_ms(model: torch.nn.Module, img: int, warmup: int, runs: int, threads: int) -> float:
    """Median milliseconds of the LiteRT interpreter (XNNPACK, float32, ``threads`` threads) on the detector
    converted by litert-torch (:mod:`yolo_backbones.deploy.litert`)."""
    from yolo_backbones.deploy import litert

    def convert(m: torch.nn.Module, example: torch.Tensor, folder: Path) -> Callable:
        return litert.load_litert(litert.export_litert(m, example, folder / "model.tflite"), threads)

    return _edge_latency_ms(convert, "LiteRT", img, warmup, runs, model)


def litert_int8_latency_ms(model: torch.nn.Module, img: int, warmup: int, runs: int, threads: int) -> float:
    """Median milliseconds of the LiteRT interpreter (XNNPACK, ``threads`` threads) on the detector converted by
    litert-torch and quantized as ``--include tflite --int8`` / ``format=litert quantize=8`` do (ai-edge-quantizer,
    INT8 weights and activations, calibrated on the embedded coco8 images at ``img``; float input and output)."""
    from yolo_backbones.deploy import litert
    from yolo_backbones.deploy.int8.litert import quantize_litert_on_dataset

    def convert(m: torch.nn.Module, example: torch.Tensor, folder: Path) -> Callable:
        float_file = litert.export_litert(m, example, folder / "model.tflite")
        int8_file = quantize_litert_on_dataset(float_file, folder / "model_int8.tflite", None, (img, img))
        return litert.load_litert(int8_file, threads)

    return _edge_latency_ms(convert, "LiteRT INT8", img, warmup, runs, model)


def ncnn_latency_ms(model: torch.nn.Module, img: int, warmup: int, runs: int, threads: int) -> float:
    """Median milliseconds of ncnn (float32 storage and arithmetic, ``threads`` threads) on the detector converted
    by pnnx (:mod:`yolo_backbones.deploy.ncnn`)."""
    from yolo_backbones.deploy import ncnn

    def convert(m: torch.nn.Module, example: torch.Tensor, folder: Path) -> Callable:
        return ncnn.load_ncnn(ncnn.export_ncnn(m, example, folder / "model_ncnn_model"), threads)

    return _edge_latency_ms(convert, "NCNN", img, warmup, runs, model)


def executorch_latency_ms(model: torch.nn.Module, img: int, warmup: int, runs: int, threads: int) -> float:
    """Median milliseconds of the ExecuTorch runtime (XNNPACK delegate, float32, a ``threads``-thread pool) on the
    detector lowered by :mod:`yolo_backbones.deploy.executorch`."""
    from yolo_backbones.deploy import executorch

    def convert(m: torch.nn.Module, example: torch.Tensor, folder: Path) -> Callable:
        return executorch.load_executorch(executorch.export_executorch(m, example, folder / "model.pte"), threads)

    return _edge_latency_ms(convert, "ExecuTorch", img, warmup, runs, model)


@dataclass(frozen=True)
class Engine:
    """One latency column: ``key`` (Result field), ``label`` (plot/explanation), the ``flag`` of ``args`` that turns it
    on (None: always), ``latency_ms(model, img, warmup, runs, threads)`` (None: eager, timed interleaved by the
    caller), how the settings paragraph describes it, the CNNs of its ``curve`` and the Result field of the
    efficiency against that curve (None: no efficiency). An ``edge`` engine (``--edge``) measures the plugin models
    and its curve's CNNs only (each conversion takes tens of seconds)."""

    key: str
    label: str
    flag: str | None
    latency_ms: Callable[..., float] | None
    described: str
    curve: tuple[str, ...] = CURVE
    efficiency_key: str | None = None
    edge: bool = False
    float32: bool = True  # the fastest engine is named among float32 engines only (INT8 is another accuracy)

    def measures(self, result: Result) -> bool:
        """Whether this engine times ``result``'s model (every model, or for an edge engine plugin models and the
        CNNs of its curve)."""
        return not self.edge or result.plugin or result.name in self.curve


ENGINES = (
    Engine("eager_ms", "PyTorch eager", None, None, "PyTorch eager", efficiency_key="efficiency"),
    Engine("onnx_ms", "onnxruntime", "onnx", onnx_latency_ms, "onnxruntime CPUExecutionProvider (opset 17)"),
    Engine("openvino_ms", "OpenVINO", "openvino", openvino_latency_ms, "OpenVINO CPU, f32 inference precision"),
    Engine("openvino_int8_ms", "OpenVINO INT8", "int8", openvino_int8_latency_ms,
           "OpenVINO INT8: NNCF post-training quantization as export.py --int8 does, calibrated on the 8 coco8 images",
           float32=False),
    Engine("litert_ms", "LiteRT", "litert", litert_latency_ms,
           "LiteRT interpreter with XNNPACK, float32 (litert-torch conversion)", EDGE_CURVE, "litert_vs_cnn", True),
    Engine("litert_int8_ms", "LiteRT INT8", "litert_int8", litert_int8_latency_ms,
           "LiteRT INT8: ai-edge-quantizer as --int8 / quantize=8 do, calibrated on the 8 coco8 images", EDGE_CURVE,
           None, True, float32=False),
    Engine("ncnn_ms", "NCNN", "ncnn", ncnn_latency_ms, "ncnn, float32 storage and arithmetic (pnnx conversion)",
           EDGE_CURVE, "ncnn_vs_cnn", True),
    Engine("executorch_ms", "ExecuTorch", "executorch", executorch_latency_ms,
           "ExecuTorch runtime with the XNNPACK delegate, float32", EDGE_CURVE, "executorch_vs_cnn", True),
)


EDGE_ENGINES = tuple(e for e in ENGINES if e.edge)


def exported_engines(args: Any) -> list[Engine]:
    """The engines other than eager that ``args`` turns on."""
    return [e for e in ENGINES if e.latency_ms is not None and getattr(args, e.flag, False)]


def fastest_engine(result: Result, engines: Sequence[Engine] = ENGINES) -> str | None:
    """Label of the float32 engine with the lowest latency measured for ``result`` (None if none was)."""
    timed = [(getattr(result, e.key), e.label) for e in engines if e.float32 and getattr(result, e.key)]
    return min(timed)[1] if timed else None
