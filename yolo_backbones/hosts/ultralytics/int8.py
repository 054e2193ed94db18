"""``yolo export format=openvino|litert quantize=8 data=...`` for plugin models: the project's INT8 routes.

ultralytics converts the model (TorchScript trace -> ``openvino.convert_model``; litert-torch for LiteRT, with its
box-coordinate normalisation and metadata) and calibrates on ``data=`` with its own dataloader. For a model with a
plugin backbone the conversion and the dataloader are kept and the quantization is done by the project:

* OpenVINO: :func:`yolo_backbones.deploy.int8.openvino.quantize_openvino` (NNCF; the Detect head's decoding and the
  measured sensitive layers stay in floating point);
* LiteRT: :func:`yolo_backbones.deploy.int8.litert.quantize_litert` (ai-edge-quantizer's static INT8 recipe, as
  ultralytics uses, but with the Detect head's own ops, its DFL and the coordinate normalisation left in float:
  quantized with the rest, they cost yolo11_edgevit a third of its mAP50; docs/int8.md).

Stock ultralytics models keep ultralytics' own paths.
"""
from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from typing import Any

from torch import nn

from ...deploy.graph import has_backbone
from ..common.patching import replace
from .model_patch import TOPS

__all__ = ["patch_litert_int8", "patch_openvino_int8"]

_LITERT_LAYER = "__yolo_backbones_litert_int8__"  # stacks under the edge formats' patch of the same converter


def _make_torch2openvino(original: Callable) -> Callable:
    def torch2openvino(model: nn.Module, im: Any, output_dir: Any = None, dynamic: bool = False,
                       quantize: Any = None, calibration_dataset: Any = None, *args: Any, **kwargs: Any) -> Any:
        """ultralytics' conversion; ``quantize=8`` of a plugin model is quantized by yolo_backbones.deploy.int8."""
        if quantize != 8 or not has_backbone(model):
            return original(model, im, output_dir, dynamic, quantize, calibration_dataset, *args, **kwargs)
        from ...deploy.int8.openvino import quantize_openvino

        fp32 = original(model, im, None, dynamic, None, None, *args, **kwargs)
        quantized = quantize_openvino(fp32, calibration_dataset)
        if output_dir is not None:  # as the original does (the exporter itself passes none and saves)
            from pathlib import Path

            import openvino as ov

            Path(output_dir).mkdir(parents=True, exist_ok=True)
            ov.save_model(quantized, str(Path(output_dir) / "model.xml"), compress_to_fp16=False)
        return quantized

    return torch2openvino


def patch_openvino_int8() -> None:
    """Replace ``ultralytics.utils.export.openvino.torch2openvino`` once it is imported (idempotent)."""
    module = sys.modules.get("ultralytics.utils.export.openvino")
    if module is not None:
        replace(module, "torch2openvino", _make_torch2openvino, tops=TOPS)


def _calibration_samples(loader: Any, batch: int) -> list[Any]:
    """float32 NCHW arrays in [0, 1] of ``batch`` images each from ultralytics' calibration dataloader (uint8)."""
    import torch

    samples = []
    for item in loader:
        images = item["img"].cpu().float() / 255.0
        if images.shape[0] < batch:  # the file takes a fixed batch: repeat a short last batch up to it
            images = images.repeat(-(-batch // images.shape[0]), 1, 1, 1)[:batch]
        samples.extend(chunk.numpy() for chunk in torch.split(images, batch) if chunk.shape[0] == batch)
    return samples


def _make_torch2litert(original: Callable) -> Callable:
    signature = inspect.signature(original)

    def torch2litert(*args: Any, **kwargs: Any) -> Any:
        """ultralytics' LiteRT conversion; ``quantize=8`` of a plugin model is quantized by deploy.int8.litert."""
        bound = signature.bind(*args, **kwargs)
        model, im = bound.arguments.get("model"), bound.arguments.get("im")
        if bound.arguments.get("quantize") != 8 or model is None or not has_backbone(model):
            return original(*bound.args, **bound.kwargs)
        import json
        import tempfile
        import zipfile
        from pathlib import Path

        from ...deploy.int8.litert import quantize_litert

        loader = bound.arguments.get("calibration_dataset")
        if loader is None:
            raise ValueError("LiteRT quantize=8 export requires a calibration dataset (data=...)")
        file = Path(bound.arguments["file"])
        int8_file = file.with_name(f"{file.stem}_int8.tflite")  # ultralytics' name for its INT8 file
        bound.arguments.update(quantize=None, calibration_dataset=None)
        with tempfile.TemporaryDirectory() as tmp:  # the float model is an intermediate: never beside the user's
            bound.arguments["file"] = Path(tmp) / file.name
            float_file = original(*bound.args, **bound.kwargs)
            quantize_litert(float_file, int8_file, _calibration_samples(loader, int(im.shape[0])))
        with zipfile.ZipFile(int8_file, "a", zipfile.ZIP_DEFLATED) as archive:  # as ultralytics appends it
            archive.writestr("metadata.json", json.dumps(bound.arguments.get("metadata") or {}))
        return str(int8_file)

    return torch2litert


def patch_litert_int8() -> None:
    """Replace ``ultralytics.utils.export.litert.torch2litert`` once it is imported (idempotent)."""
    module = sys.modules.get("ultralytics.utils.export.litert")
    if module is not None:
        replace(module, "torch2litert", _make_torch2litert, tops=TOPS, layer=_LITERT_LAYER)
