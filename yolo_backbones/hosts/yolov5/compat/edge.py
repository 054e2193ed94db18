"""YOLOv5's edge formats: ``export.py --include tflite|coreml|ncnn|executorch`` and ``DetectMultiBackend`` on them.

YOLOv5 7.0.14 exports TFLite through its Keras re-implementation (``models/tf.py``, which knows only its own
layers) and Core ML as a neural-network ``.mlmodel`` (which coremltools 9 no longer writes from PyTorch); it has
no NCNN or ExecuTorch target. ``export.run`` is wrapped: these four formats are taken out of ``include`` and
converted by :mod:`yolo_backbones.deploy` from the same fused model YOLOv5 exports (Detect in export mode:
one ``(B, N, 5 + nc)`` output); the other formats go to YOLOv5's own code. Files written:

* ``tflite``: ``<stem>-fp32.tflite`` in YOLOv5's TFLite convention (NHWC input, xywh divided by the image size,
  ``meta.txt`` zip entry), so YOLOv5's own TFLite branch can run it too; LiteRT interpreter, XNNPACK, float32;
* ``coreml``: ``<stem>.mlpackage`` (ML Program, float32, image input scaled by 1/255; no ``--nms`` pipeline);
* ``ncnn``: ``<stem>_ncnn_model/`` (``model.ncnn.param``/``.bin``, ``metadata.yaml``); float32 at inference;
* ``executorch``: ``<stem>.pte`` (XNNPACK delegate) beside ``<stem>.yaml``.

``DetectMultiBackend`` (val.py, detect.py, ``yolov5.load``) loads ``.tflite``, ``*_ncnn_model`` / ``.param`` and
``.pte`` through the runners of :mod:`yolo_backbones.deploy`; a ``.mlpackage`` gets a one-line error (Core ML
runs on Apple platforms only). All exports are static: batch and size of ``--batch-size`` / ``--img``.
"""
from __future__ import annotations

import inspect
import time
import types
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ...common.patching import LOG, replace
from .openvino import BACKEND_FLAGS

__all__ = ["EDGE_FORMATS", "patch_edge", "YOLOv5TFLiteLayout", "CoreMLNotOnThisPlatformError"]

EDGE_FORMATS = ("tflite", "coreml", "ncnn", "executorch")
_STATE = "_yolo_backbones_edge"


class CoreMLNotOnThisPlatformError(RuntimeError):
    """A Core ML package given to DetectMultiBackend on a platform without a Core ML runtime."""


class YOLOv5TFLiteLayout(nn.Module):
    """YOLOv5's TFLite I/O convention around a Detect model: NHWC input, box centres and sizes divided by the
    input width/height (``DetectMultiBackend`` multiplies them back). ``(B, H, W, 3)`` -> ``(B, N, 5 + nc)``."""

    def __init__(self, model: nn.Module, height: int, width: int) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("scale", torch.tensor([width, height, width, height], dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.model(x.permute(0, 3, 1, 2))
        y = y[0] if isinstance(y, (list, tuple)) else y
        return torch.cat((y[..., :4] / self.scale, y[..., 4:]), -1)


def _split_include(include: Any) -> tuple[list[str], list[str]]:
    items = [include] if isinstance(include, str) else list(include or ())
    names = [s.strip().lower() for item in items for s in str(item).split(",") if s.strip()]
    return [n for n in names if n not in EDGE_FORMATS], [n for n in names if n in EDGE_FORMATS]


def _export_edge(export: types.ModuleType, formats: list[str], args: dict[str, Any]) -> list[str]:
    """Load ``args['weights']`` as YOLOv5's ``run`` does and convert it to each format; returns the paths."""
    from ....deploy import coreml, executorch, litert, ncnn

    g = export.__dict__
    logger, colorstr = g.get("LOGGER", LOG), g.get("colorstr", lambda *s: s[-1])
    weights = args.get("weights", "yolov5s.pt")
    weights = weights[0] if isinstance(weights, (list, tuple)) else weights
    file = Path(weights)
    imgsz = args.get("imgsz") or args.get("img") or (640, 640)
    imgsz = [imgsz] if isinstance(imgsz, int) else list(imgsz)
    imgsz *= 2 if len(imgsz) == 1 else 1
    int8 = bool(args.get("int8"))
    unapplied = [f for f in formats if f != "tflite"] if int8 and not args.get("half") and not args.get("dynamic") \
        else formats
    if (args.get("half") or int8 or args.get("dynamic")) and unapplied:
        logger.warning(f"{colorstr('edge:')} --half/--int8/--dynamic are not applied to {', '.join(unapplied)}: "
                       "these exports are float32 with static shapes (--int8 applies to tflite)")
    model = g["attempt_load"](str(weights), device=torch.device("cpu"), inplace=True, fuse=True)
    gs = int(max(model.stride))
    imgsz = [g["check_img_size"](x, gs) for x in imgsz]
    im = torch.zeros(int(args.get("batch_size") or 1), 3, *imgsz)
    model.eval()
    for m in model.modules():
        if type(m).__name__ in ("Detect", "Segment"):
            m.inplace, m.dynamic, m.export = bool(args.get("inplace")), False, True
    metadata = {"stride": gs, "names": model.names}
    done = []
    for fmt in formats:
        prefix, t0 = colorstr(f"{fmt}:"), time.perf_counter()
        logger.info(f"\n{prefix} starting export of {file} at {tuple(im.shape)} (float32, static shapes)...")
        try:
            if fmt == "tflite":
                h, w = imgsz
                nhwc = YOLOv5TFLiteLayout(model, h, w)
                out = litert.export_litert(nhwc, im.permute(0, 2, 3, 1).contiguous(),
                                           file.with_name(f"{file.stem}-fp32.tflite"), metadata, "meta.txt")
                if int8:  # YOLOv5's name for its INT8 TFLite file; calibrated on --data (default: coco8)
                    from ....deploy.int8.litert import quantize_litert_on_dataset

                    out = quantize_litert_on_dataset(out, file.with_name(f"{file.stem}-int8.tflite"), args.get("data"),
                                                     (h, w), nhwc=True, metadata=metadata, metadata_entry="meta.txt")
            elif fmt == "coreml":
                out = coreml.export_coreml(model, im, file.with_suffix(".mlpackage"), metadata, image_input=True)
                coreml.check_coreml(out)
            elif fmt == "ncnn":
                if im.shape[0] != 1:
                    raise ValueError("NCNN models take one image at a time: export with --batch-size 1")
                out = ncnn.export_ncnn(model, im, file.with_name(f"{file.stem}{ncnn.MODEL_DIR_SUFFIX}"), metadata)
            else:
                out = executorch.export_executorch(model, im, file.with_suffix(".pte"), metadata)
            logger.info(f"{prefix} export success ✅ {time.perf_counter() - t0:.1f}s, saved as {out}")
            done.append(str(out))
        except ImportError:
            raise  # a missing package of the edge extra: one line naming it (EdgeExtraMissingError)
        except Exception as exc:  # noqa: BLE001  (YOLOv5's exports log a failure and go on with the others)
            logger.info(f"{prefix} export failure ❌ {time.perf_counter() - t0:.1f}s: {exc}")
    return done


def _patch_export_run(export: types.ModuleType) -> None:
    if not callable(export.__dict__.get("run")):
        return

    def make(original: Callable) -> Callable:
        signature = inspect.signature(original)

        def run(*args: Any, **kwargs: Any) -> list[str]:
            """YOLOv5's ``export.run``; ``tflite``/``coreml``/``ncnn``/``executorch`` through yolo_backbones.deploy."""
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            host, edge = _split_include(bound.arguments.get("include"))
            if not edge:
                return original(*bound.args, **bound.kwargs)
            files = []
            if host:
                bound.arguments["include"] = host
                files = list(original(*bound.args, **bound.kwargs) or [])
            return files + _export_edge(export, edge, dict(bound.arguments))

        run.__signature__ = signature
        return run

    replace(export, "run", make, layer=_STATE)


# -------------------------------------------------------------------------------- DetectMultiBackend
def _edge_runner(weights: Any) -> tuple[str, Any] | None:
    """``(format, runner)`` for an edge model file, None for any other weights."""
    from ....deploy import executorch, litert, ncnn

    w = str(weights[0] if isinstance(weights, (list, tuple)) else weights).strip()
    path = Path(w)
    if path.suffix == ".mlpackage" or path.suffix == ".mlmodel" and not path.exists():
        raise CoreMLNotOnThisPlatformError(f"{path}: Core ML models run on Apple platforms only (coremltools has no "
                                           "runtime on Linux); validate the .pt, .tflite, NCNN or .pte export here")
    if path.suffix == ".tflite" and "_edgetpu" not in path.name:
        return "tflite", litert.load_litert(path)
    if ncnn.find_ncnn_param(path) is not None:
        return "ncnn", ncnn.load_ncnn(path)
    if path.suffix == ".pte":
        return "executorch", executorch.load_executorch(path)
    return None


def _patch_common(common: types.ModuleType) -> None:
    backend = common.__dict__.get("DetectMultiBackend")
    if not isinstance(backend, type):
        return

    def make_init(original: Callable) -> Callable:
        signature = inspect.signature(original)

        def __init__(self: nn.Module, *args: Any, **kwargs: Any) -> None:
            """LiteRT / NCNN / ExecuTorch models load here (deploy runners); every other format in the original."""
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            params = {k: v for k, v in bound.arguments.items() if k != "self"}
            found = _edge_runner(params.get("weights"))
            if found is None:
                original(self, *args, **kwargs)
                return
            fmt, runner = found
            nn.Module.__init__(self)
            common.__dict__.get("LOGGER", LOG).info(f"Loading {params.get('weights')} for {fmt} inference (float32)...")
            meta = runner.metadata
            names = meta.get("names")
            if names is None:
                data = params.get("data")
                names = (common.__dict__["yaml_load"](data)["names"] if data else {i: f"class{i}" for i in range(999)})
            self.__dict__.update(params)
            self.__dict__.update(dict.fromkeys(BACKEND_FLAGS, False))
            self.__dict__.update(w=str(params.get("weights")), stride=meta.get("stride", 32), names=names,
                                 device=params.get("device", torch.device("cpu")), batch_size=1,
                                 edge_format=fmt, edge_runner=runner)
            self.__dict__[_STATE] = True

        return __init__

    def make_forward(original: Callable) -> Callable:
        def forward(self: nn.Module, im: torch.Tensor, augment: bool = False, visualize: bool = False) -> Any:
            """Inference on the deploy runner for models loaded by the replaced ``__init__``."""
            if not self.__dict__.get(_STATE):
                return original(self, im, augment, visualize)
            x = im.detach().cpu().float().numpy()
            h, w = x.shape[2:]
            if self.edge_format == "tflite":  # YOLOv5's TFLite convention (see YOLOv5TFLiteLayout)
                y = self.edge_runner(np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
                y[0][..., :4] *= np.array([w, h, w, h], dtype=y[0].dtype)
            else:
                y = self.edge_runner(x)
            return self.from_numpy(y[0]) if len(y) == 1 else [self.from_numpy(a) for a in y]

        return forward

    replace(backend, "__init__", make_init, layer=_STATE)  # type: ignore[arg-type]
    replace(backend, "forward", make_forward, layer=_STATE)  # type: ignore[arg-type]


def patch_edge(export: types.ModuleType | None, common: types.ModuleType | None) -> None:
    """Route YOLOv5's edge formats (export and DetectMultiBackend) to yolo_backbones.deploy. Idempotent."""
    if export is not None:
        _patch_export_run(export)
    if common is not None:
        _patch_common(common)
