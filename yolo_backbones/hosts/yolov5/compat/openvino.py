"""OpenVINO export and inference for YOLOv5 with today's ``openvino`` package (2023.1 and newer).

YOLOv5 7.0.14 exports with ``openvino.inference_engine`` and the ``mo`` command and loads with
``openvino.runtime``; both APIs are gone from the ``openvino`` package (``openvino-dev`` is
discontinued). This module replaces the host's ``export_openvino`` and the OpenVINO branch of
``DetectMultiBackend`` (constructor and forward) with code on the current API:

* export: the ONNX file that ``export.py`` writes first is converted with ``openvino.convert_model``
  and saved with ``openvino.save_model(..., compress_to_fp16=False)`` as ``<stem>_openvino_model/<stem>.xml``
  (+ ``.bin``), beside ``<stem>.yaml`` holding ``stride`` and ``names`` (what ``DetectMultiBackend`` reads);
  static or dynamic shapes follow the ONNX file (``--dynamic``);
* inference: ``openvino.Core().compile_model`` on the CPU with ``INFERENCE_PRECISION_HINT = f32``.
  Why explicit: OpenVINO's CPU plugin defaults to bf16 (or f16) inference on CPUs that have it
  (AVX512-BF16, AMX), which moves outputs by ~3e-4 of their range; f32 keeps them within ~1e-6 of
  PyTorch. :data:`INFERENCE_PRECISION` is the default of :func:`compile_openvino`.
* ``export.run`` (what the PyPI ``yolov5 export`` CLI calls) takes ``--include openvino`` and ``--img 320``
  as single values and defaults to opset 17, as export.py's own command line does.

``import openvino`` initialises Intel's telemetry (a client-id file under ``~/intel`` and a background
upload to Google Analytics). :func:`hide_openvino_telemetry` (run by ``apply_compat``, so also before a
clone's own export code imports openvino) hides the telemetry client from the process, and OpenVINO falls
back to its built-in no-op stub, in line with the plugin's "nothing leaves the machine" rule.
"""
from __future__ import annotations

import contextvars
import inspect
import os
import sys
import time
import types
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import yaml
from torch import nn

from ...common.patching import LOG, replace

__all__ = ["INFERENCE_PRECISION", "InputShapeError", "OpenVINOUnavailableError", "hide_openvino_telemetry",
           "import_openvino", "convert_onnx_to_openvino", "compile_openvino", "find_openvino_xml", "read_metadata",
           "write_metadata", "patch_openvino"]

INFERENCE_PRECISION = "f32"  # OpenVINO's INFERENCE_PRECISION_HINT; see the module docstring
MODEL_DIR_SUFFIX = "_openvino_model"
DEFAULT_OPSET = 17  # export.py's argparse default; `export.run`'s own default (12) predates attention ops
_STATE = "_yolo_backbones_openvino"  # set on DetectMultiBackend instances that this module built
# export.run's --int8/--data/--img for export_openvino: the pip package's run calls export_openvino(file, metadata,
# half) without them (a clone passes int8 and data itself)
_RUN_SETTINGS: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("yolo_backbones_export_run",
                                                                                      default=None)


class OpenVINOUnavailableError(ImportError):
    """The ``openvino`` package is missing or too old (the CLI prints this as one line)."""


class InputShapeError(ValueError):
    """An image batch whose shape a statically exported OpenVINO model does not take (one line from the CLI)."""


def hide_openvino_telemetry() -> None:
    """Make ``import openvino_telemetry`` fail in this process, so OpenVINO uses its no-op telemetry stub.

    A no-op if the telemetry client is already imported (then OpenVINO already initialised it).
    """
    if "openvino_telemetry" not in sys.modules:
        sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]  # `import` raises ImportError


def import_openvino() -> types.ModuleType:
    """Import and return the ``openvino`` package with its telemetry off (:func:`hide_openvino_telemetry`).

    Raises ImportError with an install hint if the package is missing or older than 2023.1.
    """
    hide_openvino_telemetry()
    try:
        import openvino
    except ImportError as exc:
        raise OpenVINOUnavailableError("OpenVINO export and inference need the `openvino` package (2023.1 or "
                                       "newer): pip install openvino") from exc
    if not hasattr(openvino, "convert_model"):
        raise OpenVINOUnavailableError(f"openvino {getattr(openvino, '__version__', '?')} is too old: the plugin "
                                       "needs 2023.1 or newer (convert_model / save_model): pip install -U openvino")
    return openvino


# ------------------------------------------------------------------------------------------------ files
def write_metadata(path: Path, metadata: dict[str, Any]) -> None:
    """Write YOLOv5's model metadata YAML: ``stride`` (int) and ``names`` (``{index: name}`` or a list).

    Values are coerced to plain ints/strings so ``yaml.safe_dump`` accepts them and
    ``DetectMultiBackend`` reads back what ``export.py`` had (``names[0]`` works for both forms).
    """
    data = dict(metadata)
    if "stride" in data:
        data["stride"] = int(data["stride"])
    names = data.get("names")
    if isinstance(names, dict):
        data["names"] = {int(k): str(v) for k, v in names.items()}
    elif names is not None:
        data["names"] = [str(v) for v in names]
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def read_metadata(xml: Path) -> tuple[int | None, dict | list | None]:
    """``(stride, names)`` from ``<stem>.yaml`` beside ``xml`` (else ``metadata.yaml``); ``(None, None)`` if absent."""
    for path in (xml.with_suffix(".yaml"), xml.parent / "metadata.yaml"):
        if path.is_file():
            data = yaml.safe_load(path.read_text(errors="ignore")) or {}
            stride = data.get("stride")
            return (int(stride) if stride is not None else None), data.get("names")
    return None, None


def find_openvino_xml(weights: str | Path) -> Path | None:
    """The ``.xml`` of an OpenVINO model given as its ``*_openvino_model`` folder or as the ``.xml`` itself.

    Returns None when ``weights`` names no OpenVINO model (another format); raises FileNotFoundError
    when it names one that is not there.
    """
    path = Path(str(weights).strip())
    if path.suffix.lower() == ".xml":
        if not path.is_file():
            raise FileNotFoundError(f"OpenVINO model {path} not found")
        return path
    if MODEL_DIR_SUFFIX not in path.name:
        return None
    if not path.is_dir():
        raise FileNotFoundError(f"OpenVINO model folder {path} not found (export one with "
                                "`export.py --weights best.pt --include openvino`)")
    xmls = sorted(path.glob("*.xml"))
    own = path / f"{path.name.removesuffix(MODEL_DIR_SUFFIX)}.xml"  # what export_openvino writes
    if own in xmls:
        return own
    if len(xmls) == 1:
        return xmls[0]
    raise FileNotFoundError(f"{path} holds {'no' if not xmls else len(xmls)} .xml files; expected one "
                            f"({own.name}); pass the .xml to use")


def convert_onnx_to_openvino(onnx_file: Path, out_dir: Path, metadata: dict[str, Any] | None = None,
                             transform: Callable[[Any], Any] | None = None, xml_stem: str | None = None) -> Path:
    """Convert an ONNX model to OpenVINO IR: ``out_dir/<onnx stem>.xml`` + ``.bin`` (+ ``.yaml`` metadata).

    Weights stay in the ONNX file's precision (``compress_to_fp16=False``); the input keeps the ONNX
    file's shape, static or with dynamic batch/height/width, and is marked NCHW. ``transform`` (e.g. INT8
    quantization) maps the converted ``openvino.Model`` before it is saved; ``xml_stem`` names the files
    (default: the ONNX file's stem). Returns the .xml path.
    """
    ov = import_openvino()
    onnx_file, out_dir = Path(onnx_file), Path(out_dir)
    if not onnx_file.is_file():
        raise FileNotFoundError(f"{onnx_file} not found: the OpenVINO model is converted from the ONNX export, "
                                "which failed or was not run")
    model = ov.convert_model(str(onnx_file))
    image = model.get_parameters()[0]
    if image.get_layout().empty:
        image.set_layout(ov.Layout("NCHW"))  # lets OpenVINO tools (get_batch, preprocessing) find the batch axis
    if transform is not None:
        model = transform(model)
    out_dir.mkdir(parents=True, exist_ok=True)
    xml = out_dir / f"{xml_stem or onnx_file.stem}.xml"
    ov.save_model(model, str(xml), compress_to_fp16=False)
    if metadata is not None:
        write_metadata(xml.with_suffix(".yaml"), metadata)
    return xml


def compile_openvino(model: str | Path | Any, device: str = "CPU", precision: str = INFERENCE_PRECISION,
                     threads: int | None = None) -> Any:
    """Compile an OpenVINO model (.xml path or ``openvino.Model``) with an explicit inference precision.

    Args:
        model: the IR ``.xml`` (the ``.bin`` beside it) or an in-memory ``openvino.Model``.
        device: OpenVINO device name.
        precision: ``INFERENCE_PRECISION_HINT`` (``"f32"`` default; ``"bf16"``/``"f16"`` are faster where the
            CPU supports them and move outputs by ~1e-4..1e-3 of their range).
        threads: ``INFERENCE_NUM_THREADS`` (None: OpenVINO's default, all cores).
    Returns:
        ``openvino.CompiledModel``; call it with a float32 NCHW array, index the result by its outputs.
    """
    ov = import_openvino()
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return ov.Core().compile_model(model if not isinstance(model, (str, Path)) else str(model), device, config)


# ------------------------------------------------------------------------------------------- export.py
def _patch_export(export: types.ModuleType) -> None:
    """Replace ``export_openvino`` of a host ``export`` module (pip 7.0.14 or a clone)."""
    if not callable(export.__dict__.get("export_openvino")):
        return
    logger = export.__dict__.get("LOGGER", LOG)
    colorstr = export.__dict__.get("colorstr", lambda *s: s[-1])
    file_size = export.__dict__.get("file_size", lambda f: 0.0)

    def make(original: Callable) -> Callable:
        def export_openvino(file: Path, metadata: dict, half: bool, int8: bool = False, data: Any = None,
                            prefix: str | None = None) -> tuple[str | None, None]:
            """Convert ``file``'s ONNX export to ``<stem>_openvino_model/`` (FP32 IR, or FP16 if the ONNX is).

            Returns ``(folder path, None)``, or ``(None, None)`` after logging the error, as YOLOv5's exports do.
            Why: the original runs ``openvino.inference_engine`` and the ``mo`` tool, both removed from openvino.
            ``int8`` (``--int8``; the pip package's ``run`` does not pass it, :data:`_RUN_SETTINGS` carries it)
            writes ``<stem>_int8_openvino_model/`` quantized by :mod:`yolo_backbones.deploy.int8` on ``--data``.
            """
            settings = _RUN_SETTINGS.get() or {}
            int8, data = int8 or settings.get("int8", False), data or settings.get("data")
            prefix = prefix or colorstr("OpenVINO:")
            t0 = time.perf_counter()
            try:
                ov = import_openvino()
                logger.info(f"\n{prefix} starting export with openvino {ov.__version__}...")
                file = Path(file)
                out_dir = file.with_name(f"{file.stem}{'_int8' if int8 else ''}{MODEL_DIR_SUFFIX}")
                transform = None
                if int8:
                    from ....deploy.int8.openvino import int8_transform

                    transform = int8_transform(data, settings.get("imgsz"), logger.info, prefix)
                convert_onnx_to_openvino(file.with_suffix(".onnx"), out_dir, metadata, transform,
                                         xml_stem=file.stem)
                f = f"{out_dir}{os.sep}"
                logger.info(f"{prefix} export success ✅ {time.perf_counter() - t0:.1f}s, saved as {f} "
                            f"({file_size(f):.1f} MB)")
                return f, None
            except Exception as exc:  # noqa: BLE001  (YOLOv5's exports log a failure and go on with the others)
                logger.info(f"{prefix} export failure ❌ {time.perf_counter() - t0:.1f}s: {exc}")
                return None, None

        return export_openvino

    replace(export, "export_openvino", make)
    _patch_export_run(export)


def _patch_export_run(export: types.ModuleType) -> None:
    """Let ``export.run`` take ``include`` as a string (``"openvino"``, ``"onnx,openvino"``) and ``imgsz``/``img``
    as an int, as argparse's lists do.

    Why: the pip CLI (``yolov5 export --include openvino --img 320``, python-fire) passes scalars: 7.0.14's
    ``run`` iterated the string character by character ("Invalid --include ['o', 'p', ...]") and took
    ``len()`` of the int. ``opset`` defaults to 17 as in export.py's own command line: ``run``'s default, 12,
    cannot export ``scaled_dot_product_attention`` (opset 14+), so ``yolov5 export`` failed for every plugin model.
    """
    if not callable(export.__dict__.get("run")):
        return

    def make(original: Callable) -> Callable:
        signature = inspect.signature(original)

        def run(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            given = bound.arguments
            if "opset" in signature.parameters and "opset" not in bound.arguments:
                bound.arguments["opset"] = DEFAULT_OPSET
            include = bound.arguments.get("include")
            if isinstance(include, str):
                bound.arguments["include"] = [s.strip() for s in include.split(",") if s.strip()]
            for name in ("imgsz", "img"):
                if isinstance(bound.arguments.get(name), int):
                    bound.arguments[name] = [bound.arguments[name]]
            size = given.get("imgsz") or given.get("img")
            token = _RUN_SETTINGS.set({"int8": bool(given.get("int8")), "data": given.get("data"),
                                       "imgsz": int(size[0]) if size else None})
            try:
                return original(*bound.args, **bound.kwargs)
            finally:
                _RUN_SETTINGS.reset(token)

        # fire reads the flags (and fills in their defaults) from the signature: the original's, opset 17
        run.__signature__ = signature.replace(parameters=[
            p.replace(default=DEFAULT_OPSET) if p.name == "opset" else p for p in signature.parameters.values()])
        return run

    replace(export, "run", make)


# -------------------------------------------------------------------------------- DetectMultiBackend
_BACKEND_FLAGS = ("pt", "jit", "dnn", "onnx", "xml", "engine", "coreml", "saved_model", "pb", "tflite", "edgetpu",
                  "tfjs", "paddle", "triton", "nhwc", "fp16", "cuda", "dynamic")


def _patch_common(common: types.ModuleType) -> None:
    """Replace the OpenVINO branch of ``DetectMultiBackend.__init__``/``forward`` in a host ``models.common``."""
    backend = common.__dict__.get("DetectMultiBackend")
    if not isinstance(backend, type):
        return
    host_root = common.__dict__.get("ROOT")

    def make_init(original: Callable) -> Callable:
        signature = inspect.signature(original)

        def __init__(self: nn.Module, *args: Any, **kwargs: Any) -> None:
            """OpenVINO models (``*_openvino_model/`` or ``.xml``) load here; every other format in the original.

            Why: the original imports ``openvino.runtime`` (removed) and compiles at OpenVINO's default
            precision (bf16 on CPUs that support it).
            """
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            params = {k: v for k, v in bound.arguments.items() if k != "self"}
            weights = params.get("weights")
            xml = find_openvino_xml(weights[0] if isinstance(weights, (list, tuple)) else weights)
            if xml is None:
                original(self, *args, **kwargs)
                return
            nn.Module.__init__(self)
            logger = common.__dict__.get("LOGGER", LOG)
            logger.info(f"Loading {xml} for OpenVINO inference ({INFERENCE_PRECISION})...")
            compiled = compile_openvino(xml)
            stride, names = read_metadata(xml)
            data = params.get("data")
            if names is None:
                names = (yaml.safe_load(Path(data).read_text(errors="ignore"))["names"] if data
                         else {i: f"class{i}" for i in range(999)})
            if names and names[0] == "n01440764" and len(names) == 1000 and host_root is not None:
                names = yaml.safe_load((Path(host_root) / "data" / "ImageNet.yaml").read_text())["names"]
            batch = compiled.input(0).get_partial_shape()[0]
            self.__dict__.update(params)
            self.__dict__.update(dict.fromkeys(_BACKEND_FLAGS, False))
            self.__dict__.update(
                xml=True, w=str(xml), stride=stride or 32, names=names,
                device=params.get("device", torch.device("cpu")),
                batch_size=batch.get_length() if batch.is_static else 1,
                ov_compiled_model=compiled, executable_network=compiled)  # the clone's and 7.0.14's attribute names
            self.__dict__[_STATE] = True

        return __init__

    def make_forward(original: Callable) -> Callable:
        def forward(self: nn.Module, im: torch.Tensor, augment: bool = False, visualize: bool = False) -> Any:
            """OpenVINO inference for models loaded by the replaced ``__init__``; the original otherwise."""
            if not self.__dict__.get(_STATE):
                return original(self, im, augment, visualize)
            compiled = self.ov_compiled_model
            expected = compiled.input(0).get_partial_shape()
            if not expected.compatible(import_openvino().PartialShape(list(im.shape))):
                raise InputShapeError(f"{self.w} takes input shape {expected}, got {tuple(im.shape)}: run with the "
                                      "--img it was exported at, or export with --dynamic")
            result = compiled(np.ascontiguousarray(im.detach().cpu().float().numpy()))
            y = [result[output] for output in compiled.outputs]
            return self.from_numpy(y[0]) if len(y) == 1 else [self.from_numpy(x) for x in y]

        return forward

    # `replace` works on any object with a __dict__; the class is patched in place, so every module that
    # imported DetectMultiBackend by name (val, detect, helpers, hubconf) gets the new methods.
    replace(backend, "__init__", make_init)  # type: ignore[arg-type]
    replace(backend, "forward", make_forward)  # type: ignore[arg-type]


def patch_openvino(export: types.ModuleType | None, common: types.ModuleType | None) -> None:
    """Hide OpenVINO's telemetry; replace the functions of the host modules given (either may be None). Idempotent."""
    hide_openvino_telemetry()
    if export is not None:
        _patch_export(export)
    if common is not None:
        _patch_common(common)
