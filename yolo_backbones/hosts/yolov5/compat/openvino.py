"""OpenVINO export and inference for YOLOv5 with today's ``openvino`` package (2023.1 and newer).

YOLOv5 7.0.14 exports with ``openvino.inference_engine`` and the ``mo`` command and loads with
``openvino.runtime``; both APIs are gone from the ``openvino`` package (``openvino-dev`` is
discontinued). This module replaces the host's ``export_openvino`` and the OpenVINO branch of
``DetectMultiBackend`` (constructor and forward) with the host-free code of
:mod:`yolo_backbones.deploy.openvino`:

* export: the ONNX file that ``export.py`` writes first becomes ``<stem>_openvino_model/<stem>.xml``
  (+ ``.bin``, + ``<stem>.yaml`` with ``stride`` and ``names``, what ``DetectMultiBackend`` reads);
* inference: compiled at f32 inference precision (see the deploy module);
* ``export.run`` (what the PyPI ``yolov5 export`` CLI calls) takes ``--include openvino`` and ``--img 320``
  as single values and defaults to opset 17, as export.py's own command line does.

:func:`patch_openvino` also hides OpenVINO's telemetry client before a clone's own export code imports openvino.
"""
from __future__ import annotations

import contextvars
import inspect
import os
import time
import types
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import yaml
from torch import nn

from ....deploy.openvino import (
    INFERENCE_PRECISION,
    MODEL_DIR_SUFFIX,
    InputShapeError,
    OpenVINOUnavailableError,
    compile_openvino,
    convert_onnx_to_openvino,
    find_openvino_xml,
    hide_openvino_telemetry,
    import_openvino,
    read_metadata,
    write_metadata,
)
from ...common.patching import LOG, replace

# Re-exported: these names lived here before the deploy package (tests and scripts of older checkouts).
__all__ = ["INFERENCE_PRECISION", "InputShapeError", "OpenVINOUnavailableError", "hide_openvino_telemetry",
           "import_openvino", "convert_onnx_to_openvino", "compile_openvino", "find_openvino_xml", "read_metadata",
           "write_metadata", "patch_openvino"]

DEFAULT_OPSET = 17  # export.py's argparse default; `export.run`'s own default (12) predates attention ops
_STATE = "_yolo_backbones_openvino"  # set on DetectMultiBackend instances that this module built
# export.run's --int8/--data/--img for export_openvino: the pip package's run calls export_openvino(file, metadata,
# half) without them (a clone passes int8 and data itself)
_RUN_SETTINGS: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("yolo_backbones_export_run",
                                                                                      default=None)


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
                convert_onnx_to_openvino(file.with_suffix(".onnx"), out_dir, metadata, transform)
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
# DetectMultiBackend's format flags; a replaced loader sets them all False and its own True
BACKEND_FLAGS = ("pt", "jit", "dnn", "onnx", "xml", "engine", "coreml", "saved_model", "pb", "tflite", "edgetpu",
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
            self.__dict__.update(dict.fromkeys(BACKEND_FLAGS, False))
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
