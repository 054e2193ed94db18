"""LiteRT (TFLite) full-integer quantization of a float ``.tflite`` detector with ai-edge-quantizer.

:func:`quantize_litert` takes the float32 ``.tflite`` that :mod:`yolo_backbones.deploy.litert` writes and
calibration images in the model's own input layout, and writes a static INT8 model: int8 weights (per channel) and
int8 activations, calibrated on the images; the model's input and output stay float32 (the interpreter quantizes at
the boundary), as LiteRT delegates and the hosts' loaders expect. The Detect head's own ops (box decoding, DFL,
sigmoids, concatenation; tensors named after the Detect module by litert-torch) and the hosts' wrappers (YOLOv5's
TFLite layout, ultralytics' coordinate normalisation) stay float, as in the OpenVINO route: quantized, the
decoding's shared int8 ranges zeroed every score of yolov5_edgevit (score cosine 0.0 -> 0.979 with them in float;
docs/int8.md). Operators XNNPACK cannot run in int8 (:mod:`.xnnpack_limits`) are left in float too.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .xnnpack_limits import xnnpack_unfit_outputs

__all__ = ["HEAD_TENSORS", "LiteRTQuantizerUnavailableError", "quantize_litert", "quantize_litert_on_dataset"]

# Output-tensor names (litert-torch names them by module path) of the ops kept in float: those of the Detect module
# itself (".../Detect_19;57", not its convolutions ".../Detect_19/torch.nn.modules.conv.Conv2d_0;..."), of the DFL of
# ultralytics heads (".../Detect_18/ultralytics.nn.modules.block.DFL_dfl;1", its fixed 1x1 conv included) and of the
# wrappers around the model: YOLOv5's TFLite layout, ultralytics' coordinate normalisation ("..._NormalizeCoords;1").
HEAD_TENSORS = r".*(\.Detect_\d+(/[^;]*\.DFL_dfl[^;]*)?;|TFLiteLayout_model;|_NormalizeCoords;).*"

_MAX_REQUANTIZATIONS = 4  # quantize, then leave XNNPACK-unfit operators in float up to 3 times


class LiteRTQuantizerUnavailableError(ImportError):
    """ai-edge-quantizer is not installed (the CLI prints this as one line)."""


def _import_quantizer() -> Any:
    try:
        from ai_edge_quantizer import qtyping, quantizer, recipe
    except ImportError as exc:
        raise LiteRTQuantizerUnavailableError("LiteRT INT8 needs ai-edge-quantizer: pip install "
                                              "'yolo-backbones[edge]' (or pip install ai-edge-quantizer)") from exc
    return qtyping, quantizer, recipe


def quantize_litert(float_model: str | Path, int8_model: str | Path, calibration: Iterable[np.ndarray],
                    signature: str = "serving_default", float_ops: Sequence[str] = ()) -> Path:
    """Write a static INT8 copy of a float ``.tflite`` calibrated on ``calibration``; returns ``int8_model``.

    Args:
        float_model: float32 ``.tflite`` (one image input).
        int8_model: path of the INT8 model to write (overwritten).
        calibration: float32 arrays shaped like the model's input (e.g. NHWC for YOLOv5's TFLite layout).
        signature: the model's signature whose input is fed.
        float_ops: TFLite operator names (``"BATCH_MATMUL"``...) left in float everywhere (experiments, see
            docs/int8.md).
    """
    qtyping, quantizer, recipe = _import_quantizer()
    unknown = [op for op in float_ops if not hasattr(qtyping.TFLOperationName, op)]
    if unknown:
        known = sorted(name for name in vars(qtyping.TFLOperationName) if name.isupper())
        raise ValueError(f"unknown TFLite operator(s) {unknown} in float_ops; known: {', '.join(known)}")
    qt = quantizer.Quantizer(str(float_model))
    qt.load_quantization_recipe(recipe.static_wi8_ai8())
    for op in (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT):  # float32 in and out
        qt.update_quantization_recipe(regex=".*", operation_name=op, algorithm_key=recipe.AlgorithmName.NO_QUANTIZE)
    for op in float_ops:
        qt.update_quantization_recipe(regex=".*", operation_name=getattr(qtyping.TFLOperationName, op),
                                      algorithm_key=recipe.AlgorithmName.NO_QUANTIZE)
    qt.update_quantization_recipe(regex=HEAD_TENSORS, operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                                  algorithm_key=recipe.AlgorithmName.NO_QUANTIZE)
    input_name = _input_name(float_model, signature)
    samples = [{input_name: np.ascontiguousarray(x, dtype=np.float32)} for x in calibration]
    if not samples:
        raise ValueError("no calibration images: the dataset split is empty")
    result = qt.calibrate({signature: samples})
    int8_model = Path(int8_model)
    int8_model.parent.mkdir(parents=True, exist_ok=True)
    kept: list[str] = []
    for _ in range(_MAX_REQUANTIZATIONS):
        qt.quantize(calibration_result=result).export_model(str(int8_model), overwrite=True)
        unfit = xnnpack_unfit_outputs(int8_model)
        if not unfit:
            return int8_model
        # An operator left in float hands its float output to the next one, so each round can reveal its reader.
        kept += unfit
        # the quantizer matches an operator's scope: its output-tensor names, each followed by ";"
        qt.update_quantization_recipe(regex="^(" + "|".join(re.escape(name) for name in kept) + ");",
                                      operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                                      algorithm_key=recipe.AlgorithmName.NO_QUANTIZE)
    raise RuntimeError(f"{int8_model}: XNNPACK cannot run {len(unfit)} quantized operator(s) after "
                       f"{_MAX_REQUANTIZATIONS} rounds of leaving such operators in float (first: {unfit[0]})")


def _input_name(model: str | Path, signature: str) -> str:
    """Name of the (only) input of ``signature`` in a ``.tflite`` file (``args_0`` for litert-torch exports)."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(model)).get_signature_runner(signature)
    names = list(runner.get_input_details())
    if len(names) != 1:
        raise ValueError(f"{model} has {len(names)} inputs in signature {signature!r}; expected one image input")
    return names[0]


def quantize_litert_on_dataset(float_model: str | Path, int8_model: str | Path, data: str | Path | None,
                               size: tuple[int, int], nhwc: bool = False, metadata: dict[str, Any] | None = None,
                               metadata_entry: str = "metadata.json", limit: int = 300) -> Path:
    """:func:`quantize_litert` calibrated on the ``val:`` images of a dataset YAML (None: the embedded coco8).

    ``size``: the model's (height, width), square; ``nhwc``: the model takes NHWC images (YOLOv5's TFLite layout);
    ``metadata``/``metadata_entry``: appended to the INT8 file as to the float one (see ``deploy.metadata``).
    """
    from ..metadata import append_zip_metadata
    from .calibration import dataset_images, load_images
    from .openvino import DEFAULT_DATA

    if size[0] != size[1]:
        raise ValueError(f"INT8 calibration letterboxes images to squares, but the model takes {size[0]}x{size[1]}: "
                         "export at a square size")
    images = (lb.image[None] for lb in load_images(dataset_images(data or DEFAULT_DATA, "val", limit), size[0]))
    out = quantize_litert(float_model, int8_model, (x.transpose(0, 2, 3, 1) if nhwc else x for x in images))
    if metadata:
        append_zip_metadata(out, metadata, metadata_entry)
    return out
