"""OpenVINO INT8 (NNCF post-training quantization) of an exported detector, with measured FP32 exceptions.

:func:`quantize_openvino` takes an FP32 ``openvino.Model`` (from ONNX, as YOLOv5's ``export.py`` converts, or
from a TorchScript trace, as ultralytics does) and calibration images, and returns the INT8 model: weights
and activations of convolutions and matrix products in INT8 (:data:`PRESET`: symmetric weights and activations;
activation ranges from the minimum and maximum over all calibration images, :data:`ACTIVATION_RANGES`), except

* the Detect head's own arithmetic (box decoding, sigmoids, the DFL of ultralytics heads): boxes are pixel
  coordinates, which 8 bits over a 640-pixel range would round to several pixels;
* matrix products whose constant operand is on the left (:func:`left_constant_matmuls`: EfficientFormerV2's
  talking heads), which NNCF's bias correction mishandles;
* fused attention (:func:`attention_nodes`): OpenVINO's CPU plugin corrupts the heap running a
  ``ScaledDotProductAttention`` whose inputs and output are both quantized at f32 inference precision;
* the layers of :data:`~yolo_backbones.deploy.int8.scopes.KEEP_FP32`, chosen by a measured per-layer
  sensitivity (docs/int8.md).

Node names are matched through the module path they carry (:func:`module_path`), which both converters keep,
so one rule covers both hosts' exports.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .calibration import calibration_batches, dataset_images, load_images
from .scopes import KEEP_FP32, KeepRule

__all__ = [
    "ACTIVATION_RANGES",
    "NNCFUnavailableError",
    "PRESET",
    "attention_nodes",
    "fp32_nodes",
    "head_decode_nodes",
    "import_nncf",
    "input_size",
    "int8_transform",
    "left_constant_matmuls",
    "module_path",
    "quantize_openvino",
    "quantize_openvino_file",
]

# Measured on fitted detectors (docs/int8.md, "Choosing the quantizer"): NNCF's defaults (MIXED preset, i.e.
# asymmetric activations, and activation ranges averaged over images) cost the yolo11 Mobile-Former-52M 32 dB of
# score SQNR (cosine 0.74); symmetric activations with min/max ranges reach >= 0.997 on every model measured.
PRESET = "PERFORMANCE"
ACTIVATION_RANGES = "MINMAX"

_TORCHSCRIPT_NAME = re.compile(r"^__module\.([^/]+)/")  # "__module.model.0.blocks1.0.attn.qkv/aten::linear/MatMul"


class NNCFUnavailableError(ImportError):
    """NNCF (OpenVINO's quantizer) is not installed (the CLI prints this as one line)."""


def import_nncf() -> Any:
    """Import ``nncf`` quietly (its telemetry hidden, as OpenVINO's); ImportError with the install hint if missing."""
    from ..openvino import import_openvino

    import_openvino()  # hides the telemetry client that nncf would start too
    try:
        import nncf
    except ImportError as exc:
        raise NNCFUnavailableError("OpenVINO INT8 export needs NNCF: pip install 'yolo-backbones[openvino]' "
                                   "(or pip install nncf)") from exc
    return nncf


def module_path(node_name: str) -> str | None:
    """The PyTorch module path an OpenVINO node name carries, e.g. ``model.0.blocks1.0.attn.qkv``; else None.

    TorchScript-converted graphs (ultralytics) name nodes ``__module.<path>/aten::op/Op``; ONNX-converted ones
    (YOLOv5's export.py) ``/<path with / between modules>/Op``. Nodes that OpenVINO made itself (``MVN_35``)
    carry none.
    """
    match = _TORCHSCRIPT_NAME.match(node_name)
    if match:
        return match.group(1)
    if node_name.startswith("/") and node_name.count("/") >= 2:
        return ".".join(node_name.split("/")[1:-1])
    return None


def _detect_path(model: Any) -> str | None:
    """Module path of the Detect head: the module of the graph's last Sigmoid (the class scores)."""
    ops = model.get_ordered_ops()
    sigmoids = [p for p in (module_path(op.get_friendly_name()) for op in ops if op.get_type_name() == "Sigmoid") if p]
    if not sigmoids:
        return None
    parts = sigmoids[-1].split(".")
    # the head is the "model.<k>" row: its own ops sit at that path, its convs below it
    return ".".join(parts[:2]) if len(parts) >= 2 and parts[0] == "model" else sigmoids[-1]


def head_decode_nodes(model: Any) -> list[str]:
    """Names of the Detect head's own nodes (decoding, sigmoid, DFL), which stay in floating point."""
    head = _detect_path(model)
    if head is None:
        return []
    names = []
    for op in model.get_ordered_ops():
        path = module_path(op.get_friendly_name())
        if path is not None and (path == head or path.startswith(f"{head}.dfl")):
            names.append(op.get_friendly_name())
    return names


def _constant_source(port: Any) -> bool:
    """True if an input port is fed by a Constant (directly or through the Convert of a compressed weight)."""
    node = port.get_source_output().get_node()
    if node.get_type_name() == "Convert":
        node = node.input(0).get_source_output().get_node()
    return node.get_type_name() == "Constant"


def left_constant_matmuls(model: Any) -> list[str]:
    """Names of the ``MatMul`` nodes computing ``W @ x`` with a constant ``W`` (``x`` a tensor).

    EfficientFormerV2's talking heads (:func:`~yolo_backbones.core.layers.attention_bias.mix_heads`) mix the head
    axis as ``(heads, heads) @ (B, heads, Nq * Nk)`` plus a ``(heads, 1)`` bias. NNCF takes a weighted ``MatMul``'s
    output channels to be its last axis, so its fast bias correction computes a shift of ``Nq * Nk`` values for
    the ``heads``-value bias and fails (``cannot reshape array of size 2048 into shape (1,8,1)``, NNCF 3.4).
    These nodes stay in floating point (their weight is ``heads x heads``: nothing to gain in INT8); their
    inputs, the attention logits and probabilities, are then not quantized either.
    """
    return [op.get_friendly_name() for op in model.get_ordered_ops()
            if op.get_type_name() == "MatMul" and _constant_source(op.input(0)) and not _constant_source(op.input(1))]


def attention_nodes(model: Any) -> list[str]:
    """Names of the ``ScaledDotProductAttention`` nodes (the attention of EfficientFormer's last stage, EdgeViT's
    global attention): their inputs stay in floating point.

    With quantized inputs *and* a quantized output, OpenVINO 2026.4's CPU plugin runs such a node through an INT8
    attention kernel that writes outside its buffers at f32 inference precision (``free(): invalid size`` or a
    segfault later; measured on EfficientFormer-L1 at 160 px, docs/int8.md). Its output is still quantized for
    the projection after it.
    """
    return [op.get_friendly_name() for op in model.get_ordered_ops()
            if op.get_type_name() == "ScaledDotProductAttention"]


def fp32_nodes(model: Any, rules: Sequence[KeepRule] = KEEP_FP32) -> list[str]:
    """Names of the nodes kept in floating point: the head's decoding, the :func:`left_constant_matmuls`, the
    :func:`attention_nodes` and every node a rule matches."""
    names = set(head_decode_nodes(model)) | set(left_constant_matmuls(model)) | set(attention_nodes(model))
    head = _detect_path(model)
    for op in model.get_ordered_ops():
        path = module_path(op.get_friendly_name())
        if path is not None and any(rule.matches(path, head) for rule in rules):
            names.add(op.get_friendly_name())
    return sorted(names)


def input_size(model: Any) -> tuple[int, int] | None:
    """(height, width) of a static NCHW image input; None for a dynamic one."""
    shape = model.inputs[0].get_partial_shape()
    return (shape[2].get_length(), shape[3].get_length()) if shape[2].is_static and shape[3].is_static else None


def quantize_openvino(model: Any, calibration: Iterable[np.ndarray] | Any, *,
                      keep_fp32: Sequence[KeepRule] | None = None, subset_size: int | None = None,
                      extra_fp32: Sequence[str] = ()) -> Any:
    """INT8 ``openvino.Model`` from an FP32 one (see the module docstring).

    Args:
        model: FP32 ``openvino.Model`` of a detector (image in, Detect output out).
        calibration: float32 NCHW image batches in [0, 1] (e.g. :func:`calibration_batches`), or an ``nncf.Dataset``.
        keep_fp32: rules of layers kept in floating point (default :data:`KEEP_FP32`; ``()`` keeps only the head's
            decoding).
        subset_size: calibration samples used (default: all).
        extra_fp32: further node names to keep in floating point (sensitivity measurements).
    """
    nncf = import_nncf()
    if not isinstance(calibration, nncf.Dataset):
        calibration = nncf.Dataset([np.ascontiguousarray(b, dtype=np.float32) for b in calibration])
    length = calibration.get_length()
    if not length:
        raise ValueError("no calibration images: the dataset split is empty")
    ignored = fp32_nodes(model, KEEP_FP32 if keep_fp32 is None else keep_fp32) + list(extra_fp32)
    logger = logging.getLogger("nncf")
    level = logger.level
    logger.setLevel(logging.WARNING)  # NNCF logs one INFO line per node it leaves alone (hundreds)
    try:
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
        from nncf.quantization.range_estimator import RangeEstimatorParametersSet

        ranges = getattr(RangeEstimatorParametersSet, ACTIVATION_RANGES)
        return nncf.quantize(model, calibration, preset=getattr(nncf.QuantizationPreset, PRESET),
                             subset_size=subset_size or length,
                             advanced_parameters=AdvancedQuantizationParameters(
                                 activations_range_estimator_params=ranges),
                             ignored_scope=nncf.IgnoredScope(names=sorted(set(ignored)), validate=False))
    finally:
        logger.setLevel(level)


def quantize_openvino_file(fp32_xml: str | Path, int8_xml: str | Path, data: str | Path, imgsz: int | None = None,
                           images: int | None = None, split: str = "val") -> Path:
    """Quantize an FP32 IR calibrated on a dataset YAML's images; write the INT8 IR to ``int8_xml`` (+ ``.bin``).

    ``imgsz``: calibration image size (default: the model's static input size; required for a dynamic model).
    ``images``: use the first N images of the split (default: all).
    """
    from ..openvino import import_openvino

    ov = import_openvino()
    model = ov.Core().read_model(str(fp32_xml))
    static = input_size(model)
    size = imgsz or (static[0] if static else None)
    if size is None:
        raise ValueError(f"{fp32_xml} has a dynamic input size: give the calibration image size (--img/imgsz)")
    if static and static[0] != static[1]:
        raise ValueError(f"{fp32_xml} takes {static[0]}x{static[1]} images; INT8 calibration letterboxes to "
                         "squares: export at a square size")
    quantized = quantize_openvino(model, calibration_batches(data, size, images, split))
    int8_xml = Path(int8_xml)
    int8_xml.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(int8_xml), compress_to_fp16=False)
    return int8_xml


DEFAULT_DATA = "coco8.yaml"  # the embedded 8 images
MAX_CALIBRATION_IMAGES = 300  # NNCF's default subset; docs/int8.md: 8 images already reach the targets here


def int8_transform(data: str | Path | None, imgsz: int | None, log: Callable[[str], None] = print,
                   prefix: str = "OpenVINO:") -> Callable[[Any], Any]:
    """A function FP32 ``openvino.Model`` -> INT8 one, calibrated on ``data``'s val images (hosts' export routes).

    ``data`` None: the embedded coco8. ``imgsz``: calibration size for a model with a dynamic input (else the
    model's own size; 640 when neither is known).
    """
    data = data or DEFAULT_DATA

    def transform(model: Any) -> Any:
        static = input_size(model)
        if static and static[0] != static[1]:
            raise ValueError(f"INT8 calibration letterboxes images to squares, but the model takes {static[0]}x"
                             f"{static[1]}: export at a square size")
        size = static[0] if static else (imgsz or 640)
        files = dataset_images(data, "val", MAX_CALIBRATION_IMAGES)
        log(f"{prefix} INT8 quantization with NNCF, calibrated on {len(files)} images of {data} at {size}x{size}; "
            f"{len(fp32_nodes(model))} nodes kept in floating point (docs/int8.md)")
        return quantize_openvino(model, (lb.image[None] for lb in load_images(files, size)))

    return transform
