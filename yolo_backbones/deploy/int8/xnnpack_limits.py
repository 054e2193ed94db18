"""Which operators of an INT8 ``.tflite`` XNNPACK refuses to run, read from the file's quantization parameters.

XNNPACK runs a quantized convolution, fully connected layer or matrix product only when its requantization scale,
``input scale * weight scale / output scale`` (per output channel), lies in ``[2**-32, 256)``. A tensor whose
calibrated range is (nearly) empty breaks that: a dynamic-ReLU hyper-function whose hidden ReLU units never fire on
the calibration images gets an output scale of ~1e-11 (ratio ~5e6), and the layer that reads it a ratio of ~1e-13.
The LiteRT interpreter then fails to load the whole model ("failed to create XNNPACK runtime").
:func:`~.litert.quantize_litert` leaves such operators in float.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["REQUANTIZATION_RANGE", "xnnpack_unfit_outputs"]

REQUANTIZATION_RANGE = (2.0 ** -32, 256.0)  # XNNPACK's accepted [low, high) requantization scales
_CHECKED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL")


def xnnpack_unfit_outputs(model: str | Path) -> list[str]:
    """Output-tensor names of the quantized operators of ``model`` (a ``.tflite``) whose requantization scale is
    outside :data:`REQUANTIZATION_RANGE`; ``[]`` when XNNPACK can take them all."""
    from ai_edge_litert import schema_py_generated as schema

    flat = schema.Model.GetRootAsModel(Path(model).read_bytes(), 0)
    builtin = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    codes = [builtin.get(max(flat.OperatorCodes(i).BuiltinCode(), flat.OperatorCodes(i).DeprecatedBuiltinCode()))
             for i in range(flat.OperatorCodesLength())]
    low, high = REQUANTIZATION_RANGE
    unfit = []
    for g in range(flat.SubgraphsLength()):
        graph = flat.Subgraphs(g)
        for i in range(graph.OperatorsLength()):
            op = graph.Operators(i)
            if codes[op.OpcodeIndex()] not in _CHECKED or op.InputsLength() < 2:
                continue
            x, w, y = (_scales(graph, t) for t in (op.Inputs(0), op.Inputs(1), op.Outputs(0)))
            if x is None or w is None or y is None:
                continue  # a float operator
            ratio = x[0] * w / y[0]
            if not (np.isfinite(ratio).all() and ratio.min() >= low and ratio.max() < high):
                unfit.append(graph.Tensors(op.Outputs(0)).Name().decode())
    return unfit


def _scales(graph: object, tensor: int) -> np.ndarray | None:
    """Quantization scales of tensor ``tensor`` of a flatbuffer subgraph (None: a float tensor or no tensor)."""
    q = graph.Tensors(tensor).Quantization() if tensor >= 0 else None
    return q.ScaleAsNumpy() if q is not None and q.ScaleLength() else None
