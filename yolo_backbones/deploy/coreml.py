"""Core ML export with coremltools (ML Program, float32), host-free, and the checks possible without macOS.

* export: :func:`export_coreml` traces the model with ``torch.jit.trace`` at the example's shape and converts it
  to an ML Program (``.mlpackage``) with ``compute_precision=FLOAT32`` (coremltools' default for ML Programs is
  float16). The input is either a float tensor ``image`` (``(B, C, H, W)`` in [0, 1]) or, with
  ``image_input=True``, a Core ML image scaled by 1/255 (what camera pipelines hand over).
* checks (:func:`check_coreml`): coremltools reloads the saved package's spec, and every operation in it is a
  core MIL operation (no custom layer or custom op that a device would have to supply).
* Core ML has no runtime on Linux: predictions (and numerical parity) need macOS; nothing here runs the model.
"""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .graph import export_ready
from .metadata import clean_metadata
from .requirements import import_edge

__all__ = ["PRECISION", "CoreMLCheckError", "export_coreml", "check_coreml", "coreml_operations"]

PRECISION = "fp32"


class CoreMLCheckError(RuntimeError):
    """A converted Core ML package that does not reload, or that holds custom layers / non-core operations."""


def export_coreml(model: nn.Module, example: torch.Tensor, file: str | Path, metadata: dict[str, Any] | None = None,
                  image_input: bool = False) -> Path:
    """Convert ``model`` to an ML Program ``.mlpackage`` for inputs of ``example``'s shape; returns its path.

    Args:
        model: a (fused) model taking ``(B, C, H, W)`` float input in [0, 1].
        example: input of the exported shape.
        file: the ``.mlpackage`` path (replaced if it exists).
        metadata: ``stride``/``names`` stored in the package's user-defined metadata, or None.
        image_input: take a Core ML image (RGB, scaled by 1/255) instead of a float tensor.
    """
    ct = import_edge("coremltools", "Core ML export")
    file = Path(file)
    with export_ready(model, example) as ready, warnings.catch_warnings():
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        traced = torch.jit.trace(ready, example, strict=False)
    if image_input:
        inputs = [ct.ImageType("image", shape=tuple(example.shape), scale=1 / 255, color_layout=ct.colorlayout.RGB)]
    else:
        inputs = [ct.TensorType("image", shape=tuple(example.shape))]
    converted = ct.convert(traced, inputs=inputs, convert_to="mlprogram", compute_precision=ct.precision.FLOAT32,
                           minimum_deployment_target=ct.target.iOS16)
    if metadata:
        clean = clean_metadata(metadata, "metadata to write")
        converted.user_defined_metadata.update({k: str(v) for k, v in clean.items()})
    if file.exists():
        shutil.rmtree(file) if file.is_dir() else file.unlink()
    file.parent.mkdir(parents=True, exist_ok=True)
    converted.save(str(file))
    return file


def coreml_operations(file: str | Path) -> list[str]:
    """The operation types of a saved Core ML package's main program (layer types for a neural network)."""
    ct = import_edge("coremltools", "Core ML inspection")
    spec = ct.utils.load_spec(str(file))
    kind = spec.WhichOneof("Type")
    if kind == "mlProgram":
        return [op.type for function in spec.mlProgram.functions.values()
                for block in function.block_specializations.values() for op in block.operations]
    if kind == "neuralNetwork":
        return [layer.WhichOneof("layer") for layer in spec.neuralNetwork.layers]
    raise CoreMLCheckError(f"{file}: a Core ML {kind} model, expected an ML Program or a neural network")


def check_coreml(file: str | Path) -> dict[str, int]:
    """Reload a saved package with coremltools and check that it holds only core operations.

    Returns ``{operation type: count}``. Raises :class:`CoreMLCheckError` if the spec does not reload, or for a
    custom layer (neural network) / an operation outside the core MIL opset (ML Program).
    """
    ct = import_edge("coremltools", "Core ML check")
    from coremltools.converters.mil.mil.ops.registry import SSAOpRegistry

    try:
        ct.models.MLModel(str(file), skip_model_load=True)  # parses the spec and the weights file
        operations = coreml_operations(file)
    except CoreMLCheckError:
        raise
    except Exception as exc:
        raise CoreMLCheckError(f"{file}: coremltools could not reload the package: {exc}") from exc
    program = ct.utils.load_spec(str(file)).WhichOneof("Type") == "mlProgram"
    core = set(SSAOpRegistry.core_ops) | {"const"}
    foreign = sorted({op for op in operations if op == "custom" or (program and op not in core)})
    if foreign:
        raise CoreMLCheckError(f"{file}: operations outside Core ML's core set (custom layers): {', '.join(foreign)}")
    counts: dict[str, int] = {}
    for op in operations:
        counts[op] = counts.get(op, 0) + 1
    return counts
