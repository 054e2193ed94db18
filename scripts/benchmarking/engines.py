"""Exported-model engines: export a fused detector the way the hosts do and time it on the engine's runtime.

The edge engines (LiteRT, NCNN, ExecuTorch, ``--edge``) convert through the host-free :mod:`yolo_backbones.deploy`
modules, as ``export.py --include tflite|ncnn|executorch`` and ``yolo export format=...`` do, and time the same
runners ``val.py`` / ``detect.py`` use (float32). Their kernels (XNNPACK, ncnn) are the ones phones run; on an
x86 CPU they take their x86 paths, so the figures are a proxy for a phone's.

Every exported engine (:func:`time_engine`) first converts all the models it measures, then times them interleaved
in ``--rounds`` rounds, as eager latency is: a shared machine's drift is spread over the models it compares.
"""
from __future__ import annotations

import contextlib
import copy
import io
import subprocess
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

from .measure import interleaved_ms
from .results import CURVE, EDGE_CURVE, Result, attempt


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


# A converted model ready to run: ``runner(x)`` with ``x`` a float32 ``(1, 3, img, img)`` array.
Runner = Callable[[np.ndarray], Any]


def onnx_runner(model: torch.nn.Module, img: int, threads: int, folder: Path) -> Runner:
    """onnxruntime (CPUExecutionProvider, ``threads`` intra-op threads) on the model exported as export.py does."""
    import onnxruntime as ort

    path = export_onnx(model, img, folder / "model.onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})


def openvino_runner(model: torch.nn.Module, img: int, threads: int, folder: Path) -> Runner:
    """OpenVINO CPU (f32, as DetectMultiBackend runs it) on the model exported like ``export.py --include
    openvino`` (ONNX, then ``openvino.convert_model``)."""
    from yolo_backbones.deploy.openvino import compile_openvino, convert_onnx_to_openvino

    xml = convert_onnx_to_openvino(export_onnx(model, img, folder / "model.onnx"), folder / "ov")
    return compile_openvino(xml, threads=threads)


def openvino_int8_runner(model: torch.nn.Module, img: int, threads: int, folder: Path) -> Runner:
    """OpenVINO on the model quantized like ``export.py --include openvino --int8``: NNCF INT8 calibrated on the
    embedded coco8 images at ``img``, with the project's FP32 exceptions (docs/int8.md); compiled as
    DetectMultiBackend does (f32 hint for the parts left in floating point)."""
    from yolo_backbones.deploy.openvino import compile_openvino

    onnx_file = export_onnx(model, img, folder / "model.onnx")
    # NNCF's calibration leaves its process slower for a while after it returns (a quiet-machine check timed
    # yolov5s INT8 at 14.8 ms right after calibrating, 8.6 ms later): calibrating in a child keeps it off the timing.
    xml = folder / "ov_int8" / "model.xml"
    child = subprocess.run([sys.executable, "-c", _QUANTIZE_OPENVINO, str(onnx_file), str(xml.parent), str(img)],
                           capture_output=True, text=True)
    if child.returncode or not xml.is_file():
        raise RuntimeError(f"NNCF INT8 quantization failed: {child.stderr.strip()[-2000:]}")
    return compile_openvino(xml, threads=threads)


# onnx_file, out_dir, img -> out_dir/model.xml: what ``export.py --include openvino --int8`` writes
_QUANTIZE_OPENVINO = """
import sys
from yolo_backbones.deploy.int8.openvino import int8_transform
from yolo_backbones.deploy.openvino import convert_onnx_to_openvino
convert_onnx_to_openvino(sys.argv[1], sys.argv[2], transform=int8_transform(None, int(sys.argv[3]), log=lambda m: None))
"""


def litert_runner(model: torch.nn.Module, img: int, threads: int, folder: Path) -> Runner:
    """The LiteRT interpreter (XNNPACK, float32) on the detector converted by litert-torch
    (:mod:`yolo_backbones.deploy.litert`)."""
    from yolo_backbones.deploy import litert

    return litert.load_litert(litert.export_litert(head_export_copy(model), _example(img), folder / "model.tflite"),
                              threads)


def litert_int8_runner(model: torch.nn.Module, img: int, threads: int, folder: Path) -> Runner:
    """The LiteRT interpreter (XNNPACK) on the detector converted by litert-torch and quantized as ``--include
    tflite --int8`` / ``format=litert quantize=8`` do (ai-edge-quantizer, INT8 weights and activations, calibrated
    on the embedded coco8 images at ``img``; float input and output)."""
    from yolo_backbones.deploy import litert
    from yolo_backbones.deploy.int8.litert import quantize_litert_on_dataset

    float_file = litert.export_litert(head_export_copy(model), _example(img), folder / "model_float.tflite")
    int8_file = quantize_litert_on_dataset(float_file, folder / "model_int8.tflite", None, (img, img))
    return litert.load_litert(int8_file, threads)


def ncnn_runner(model: torch.nn.Module, img: int, threads: int, folder: Path) -> Runner:
    """ncnn (float32 storage and arithmetic) on the detector converted by pnnx (:mod:`yolo_backbones.deploy.ncnn`)."""
    from yolo_backbones.deploy import ncnn

    return ncnn.load_ncnn(ncnn.export_ncnn(head_export_copy(model), _example(img), folder / "model_ncnn_model"),
                          threads)


def executorch_runner(model: torch.nn.Module, img: int, threads: int, folder: Path) -> Runner:
    """The ExecuTorch runtime (XNNPACK delegate, float32) on the detector lowered by
    :mod:`yolo_backbones.deploy.executorch`."""
    from yolo_backbones.deploy import executorch

    return executorch.load_executorch(
        executorch.export_executorch(head_export_copy(model), _example(img), folder / "model.pte"), threads)


def _example(img: int) -> torch.Tensor:
    """The static export input: one ``3 x img x img`` image."""
    return torch.zeros(1, 3, img, img)


def convert_for(engine: Engine, model: torch.nn.Module, img: int, threads: int, folder: Path) -> Runner:
    """``engine``'s runner of the fused detector ``model``, its files written under ``folder`` (which must outlive
    the runner); the conversion time goes to stderr."""
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    runner = engine.runner(model, img, threads, folder)
    print(f"[benchmark] {engine.label} conversion {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return runner


def random_image(img: int) -> np.ndarray:
    """The fixed float32 ``(1, 3, img, img)`` input every exported engine is timed on."""
    return np.random.default_rng(0).random((1, 3, img, img), dtype=np.float32)


@dataclass(frozen=True)
class Engine:
    """One latency column: ``key`` (Result field), ``label`` (plot/explanation), the ``flag`` of ``args`` that turns it
    on (None: always), ``runner(model, img, threads, folder)`` that converts a fused detector and returns a
    :data:`Runner` (None: eager, timed by the caller), how the settings paragraph describes it, the CNNs of its
    ``curve`` and the Result field of the efficiency against that curve (None: no efficiency). An ``edge`` engine
    (``--edge``) measures the plugin models and its curve's CNNs only (each conversion takes tens of seconds)."""

    key: str
    label: str
    flag: str | None
    runner: Callable[..., Runner] | None
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
    Engine("onnx_ms", "onnxruntime", "onnx", onnx_runner, "onnxruntime CPUExecutionProvider (opset 17)"),
    Engine("openvino_ms", "OpenVINO", "openvino", openvino_runner, "OpenVINO CPU, f32 inference precision"),
    Engine("openvino_int8_ms", "OpenVINO INT8", "int8", openvino_int8_runner,
           "OpenVINO INT8: NNCF post-training quantization as export.py --int8 does, calibrated on the 8 coco8 images",
           float32=False),
    Engine("litert_ms", "LiteRT", "litert", litert_runner,
           "LiteRT interpreter with XNNPACK, float32 (litert-torch conversion)", EDGE_CURVE, "litert_vs_cnn", True),
    Engine("litert_int8_ms", "LiteRT INT8", "litert_int8", litert_int8_runner,
           "LiteRT INT8: ai-edge-quantizer as --int8 / quantize=8 do, calibrated on the 8 coco8 images", EDGE_CURVE,
           None, True, float32=False),
    Engine("ncnn_ms", "NCNN", "ncnn", ncnn_runner, "ncnn, float32 storage and arithmetic (pnnx conversion)",
           EDGE_CURVE, "ncnn_vs_cnn", True),
    Engine("executorch_ms", "ExecuTorch", "executorch", executorch_runner,
           "ExecuTorch runtime with the XNNPACK delegate, float32", EDGE_CURVE, "executorch_vs_cnn", True),
)


EDGE_ENGINES = tuple(e for e in ENGINES if e.edge)


def exported_engines(args: Any) -> list[Engine]:
    """The engines other than eager that ``args`` turns on."""
    return [e for e in ENGINES if e.runner is not None and getattr(args, e.flag, False)]


def fastest_engine(result: Result, engines: Sequence[Engine] = ENGINES) -> str | None:
    """Label of the float32 engine with the lowest latency measured for ``result`` (None if none was)."""
    timed = [(getattr(result, e.key), e.label) for e in engines if e.float32 and getattr(result, e.key)]
    return min(timed)[1] if timed else None


def time_engine(engine: Engine, results: Sequence[Result], models: dict[str, torch.nn.Module], img: int,
                warmup: int, runs: int, rounds: int, threads: int) -> None:
    """Set ``engine.key`` of every result the engine measures: convert all those models first, then time them
    interleaved over ``rounds`` rounds (:func:`~.measure.interleaved_ms`), as eager latency is.

    Only one engine's converted models are held at a time. A failed conversion or first run is recorded in the
    result's errors and leaves its latency None.
    """
    x = random_image(img)
    with tempfile.TemporaryDirectory() as tmp:
        calls: dict[str, Callable[[], Any]] = {}
        for res in results:
            if not engine.measures(res) or res.name not in models:
                continue
            runner = attempt(res, engine.key, lambda res=res: convert_for(engine, models[res.name], img, threads,
                                                                           Path(tmp) / res.name))
            if runner is not None and attempt(res, engine.key, lambda runner=runner: runner(x)) is not None:
                calls[res.name] = lambda runner=runner: runner(x)
        by_name = {res.name: res for res in results}
        for name, ms in interleaved_ms(calls, warmup, runs, rounds).items():
            setattr(by_name[name], engine.key, ms)
