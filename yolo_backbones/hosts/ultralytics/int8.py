"""``yolo export format=openvino quantize=8 data=...`` for plugin models: NNCF with the project's FP32 exceptions.

ultralytics converts the model (TorchScript trace -> ``openvino.convert_model``) and calibrates on ``data=`` with its
own dataloader; for a model with a plugin backbone the conversion is kept and the quantization is done by
:func:`yolo_backbones.deploy.int8.openvino.quantize_openvino` (the Detect head's decoding and the measured sensitive
layers stay in floating point; docs/int8.md). Stock ultralytics models keep ultralytics' own path.
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from torch import nn

from ..common.patching import replace
from .model_patch import TOPS

__all__ = ["patch_openvino_int8"]


def _has_plugin_backbone(model: nn.Module) -> bool:
    from ...core import Backbone

    return any(isinstance(m, Backbone) for m in model.modules())


def _make_torch2openvino(original: Callable) -> Callable:
    def torch2openvino(model: nn.Module, im: Any, output_dir: Any = None, dynamic: bool = False,
                       quantize: Any = None, calibration_dataset: Any = None, *args: Any, **kwargs: Any) -> Any:
        """ultralytics' conversion; ``quantize=8`` of a plugin model is quantized by yolo_backbones.deploy.int8."""
        if quantize != 8 or not _has_plugin_backbone(model):
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
