"""Per-layer INT8 sensitivity of a quantized OpenVINO model: which layers to keep in floating point.

NNCF marks every quantized tensor with a ``FakeQuantize`` node (activations and weights alike). A layer's
quantizers are the ones feeding it (:func:`quantizer_groups`, keyed by the layer's module path); returning one
layer to floating point means bypassing its quantizers (:func:`without_quantizers`), no recalibration needed.
:func:`layer_sensitivity` does that for every layer in turn and measures the head outputs' score SQNR against the
FP32 model: the layers whose bypass gains most are the ones INT8 hurts most. docs/int8.md shows the results.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .accuracy import head_parts, sqnr_db
from .openvino import module_path

__all__ = ["layer_sensitivity", "quantizer_groups", "without_quantizers"]


def _consumers(node: Any) -> list[Any]:
    return [target.get_node() for output in node.outputs() for target in output.get_target_inputs()]


def quantizer_groups(model: Any) -> dict[str, list[str]]:
    """``{layer module path: [FakeQuantize node names]}``: each quantizer under the layer it feeds first.

    A quantizer whose consumer carries no module path (an op OpenVINO made) is keyed by that consumer's name.
    """
    groups: dict[str, list[str]] = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() != "FakeQuantize":
            continue
        consumer = next(iter(_consumers(op)), None)
        while consumer is not None and consumer.get_type_name() in ("Convert", "Reshape", "Transpose"):
            consumer = next(iter(_consumers(consumer)), None)  # weight paths: FQ -> Convert/Reshape -> layer
        name = consumer.get_friendly_name() if consumer is not None else op.get_friendly_name()
        groups.setdefault(module_path(name) or name, []).append(op.get_friendly_name())
    return groups


def without_quantizers(model: Any, names: Sequence[str]) -> Any:
    """A copy of ``model`` in which the ``FakeQuantize`` nodes ``names`` pass their input through unchanged."""
    copy = model.clone()
    wanted = set(names)
    for op in copy.get_ordered_ops():
        if op.get_friendly_name() in wanted and op.get_type_name() == "FakeQuantize":
            source = op.input_value(0)
            for target in list(op.output(0).get_target_inputs()):
                target.replace_source_output(source)
    copy.validate_nodes_and_infer_types()
    return copy


def _score_sqnr(model: Any, images: Sequence[np.ndarray], reference_scores: np.ndarray, layout: str,
                threads: int | None) -> float:
    from ..openvino import compile_openvino

    compiled = compile_openvino(model, threads=threads)
    outputs = np.concatenate([np.asarray(compiled(image)[compiled.outputs[0]]) for image in images])
    return sqnr_db(reference_scores, head_parts(outputs, layout)[1])


def layer_sensitivity(quantized: Any, reference: Sequence[np.ndarray], images: Sequence[np.ndarray], layout: str,
                      threads: int | None = None, top: int | None = None) -> list[dict[str, Any]]:
    """Score-SQNR gain (dB) of returning each layer of ``quantized`` alone to floating point, largest first.

    Args:
        quantized: NNCF-quantized ``openvino.Model`` (with its ``FakeQuantize`` nodes).
        reference: FP32 head outputs for ``images`` (one array per image).
        images: (1, 3, H, W) float32 images.
        layout: head layout (:data:`~yolo_backbones.deploy.int8.accuracy.LAYOUTS`).
        top: return only the ``top`` most sensitive layers.
    Returns:
        ``[{"layer": module path, "quantizers": n, "sqnr_db": with it in FP, "gain_db": vs all INT8}, ...]``.
    """
    reference_scores = head_parts(np.concatenate([np.asarray(r) for r in reference]), layout)[1]
    base = _score_sqnr(quantized, images, reference_scores, layout, threads)
    rows = []
    for layer, names in quantizer_groups(quantized).items():
        value = _score_sqnr(without_quantizers(quantized, names), images, reference_scores, layout, threads)
        rows.append({"layer": layer, "quantizers": len(names), "sqnr_db": value, "gain_db": value - base})
    rows.sort(key=lambda r: -r["gain_db"])
    return rows[:top] if top else rows
