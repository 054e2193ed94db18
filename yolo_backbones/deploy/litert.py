"""LiteRT (TFLite) export with litert-torch and inference with the LiteRT interpreter (XNNPACK), host-free.

* export: :func:`export_litert` captures the model with ``torch.export`` at the example's shape (static) and
  converts it with ``litert_torch.convert`` (XNNPACK rewrites: :func:`.xnnpack_graph.xnnpack_friendly`); the
  ``.tflite`` keeps the model's NCHW input and its float32 weights. Metadata (``stride``, ``names``) is appended as a
  zip entry, where YOLOv5 and ultralytics look for it.
* inference: :class:`LiteRTRunner` runs the file with ``ai_edge_litert``'s interpreter, whose default delegate
  for float models is XNNPACK. Precision: float32 (XNNPACK computes in fp16 only when a model or flag asks for
  it, on ARM; neither is set here).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .graph import capture_rewrites, export_ready
from .metadata import append_zip_metadata, read_zip_metadata
from .requirements import import_edge

__all__ = ["PRECISION", "export_litert", "LiteRTRunner", "load_litert"]

PRECISION = "fp32"


def export_litert(model: nn.Module, example: torch.Tensor, file: str | Path, metadata: dict[str, Any] | None = None,
                  metadata_entry: str = "metadata.json") -> Path:
    """Convert ``model`` to a ``.tflite`` file for inputs of ``example``'s shape; returns the file's path.

    Args:
        model: a (fused) model taking ``(B, C, H, W)`` float input; its outputs become the file's outputs in
            order (lists/tuples flattened).
        example: input of the exported shape.
        file: the ``.tflite`` path to write (its folder is created).
        metadata: ``stride``/``names`` to append (see :mod:`.metadata`), or None.
        metadata_entry: zip entry name: ``metadata.json`` (ultralytics) or e.g. ``meta.txt`` (a Python literal, as
            YOLOv5's reader expects).
    """
    litert_torch = import_edge("litert_torch", "LiteRT export")
    _register_square_as_product(litert_torch)
    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    with export_ready(model, example) as ready, capture_rewrites("xnnpack", ready):
        converted = litert_torch.convert(ready, (example,))
    converted.export(str(file))
    if metadata:
        append_zip_metadata(file, metadata, metadata_entry)
    return file


def _pow_scalar(x: torch.Tensor, exponent: Any) -> torch.Tensor:
    # another overload for other exponents: the decomposition must not call the op it replaces
    if exponent == 2:
        return x * x
    return torch.ops.aten.pow.Tensor_Tensor(x, torch.tensor(exponent, dtype=x.dtype))


def _register_square_as_product(litert_torch: Any) -> None:
    """Lower ``x ** 2`` as ``x * x``: LiteRT's converter cannot legalize ``tfl.pow`` of a float tensor (YOLOv5's
    Detect head computes ``(2 * sigmoid(wh)) ** 2 * anchors``). Same values; applies to LiteRT conversions only."""
    litert_torch.fx_infra.decomp.add_pre_lower_decomp(torch.ops.aten.pow.Tensor_Scalar, _pow_scalar)


class LiteRTRunner:
    """A ``.tflite`` model on the LiteRT interpreter: ``runner(x)`` takes a float32 array of the exported input
    shape and returns the outputs as a list of arrays."""

    def __init__(self, file: str | Path, threads: int | None = None) -> None:
        interpreter = import_edge("ai_edge_litert.interpreter", "LiteRT inference")
        self.file = Path(file)
        if not self.file.is_file():
            raise FileNotFoundError(f"LiteRT model {self.file} not found")
        self.interpreter = interpreter.Interpreter(model_path=str(self.file), num_threads=threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.outputs = self.interpreter.get_output_details()
        self.metadata = read_zip_metadata(self.file)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The input shape the file was exported for."""
        return tuple(int(d) for d in self.input["shape"])

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        x = np.ascontiguousarray(x, dtype=self.input["dtype"])
        if x.shape != self.input_shape:
            raise ValueError(f"{self.file.name} takes input shape {self.input_shape}, got {x.shape} (exported with "
                             "static shapes: run at the size it was exported at)")
        self.interpreter.set_tensor(self.input["index"], x)
        self.interpreter.invoke()
        return [self.interpreter.get_tensor(o["index"]).copy() for o in self.outputs]


def load_litert(file: str | Path, threads: int | None = None) -> LiteRTRunner:
    """:class:`LiteRTRunner` for ``file`` (``threads``: interpreter threads, None for LiteRT's default)."""
    return LiteRTRunner(file, threads)
