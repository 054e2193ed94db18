"""Module stand-ins that host files see under the names ``torch`` and ``np``: real modules plus a fixed attribute."""
from __future__ import annotations

import inspect
import types
from typing import Any

import numpy as np
import torch

from ...common.checkpoints import load_model_checkpoint



class _OnnxWithLegacyExport(types.ModuleType):
    """``torch.onnx`` as seen by the host's export.py: ``export`` defaults to the TorchScript exporter.

    Why: since torch 2.9 ``torch.onnx.export`` defaults to ``dynamo=True``, which needs the
    ``onnxscript`` package and handles ``dynamic_axes`` differently; YOLOv5's export.py was written
    for the TorchScript-based exporter (``dynamo=False``). An explicit ``dynamo=`` is respected.
    """

    def __init__(self) -> None:
        super().__init__("torch.onnx", torch.onnx.__doc__)

    def __getattr__(self, name: str) -> Any:
        return getattr(torch.onnx, name)

    @staticmethod
    def export(*args: Any, **kwargs: Any) -> Any:
        if "dynamo" in inspect.signature(torch.onnx.export).parameters:
            kwargs.setdefault("dynamo", False)
        return torch.onnx.export(*args, **kwargs)


class _TorchForHost(types.ModuleType):
    """Stands in for the name ``torch`` inside the host modules that load checkpoints or export ONNX.

    Everything is the real torch except ``load`` (the data-only loader, which also requires a model checkpoint:
    every such call of YOLOv5 reads ``ckpt['model']``) and ``onnx`` (legacy export).
    Why: pip's yolov5 calls ``torch.load(f, map_location=...)`` inside function bodies (attempt_load,
    train, strip_optimizer, hubconf); replacing the module-global name ``torch`` there reroutes
    those calls without changing ``torch.load`` for the rest of the process.
    """

    load = staticmethod(load_model_checkpoint)
    onnx = _OnnxWithLegacyExport()

    def __init__(self) -> None:
        super().__init__("torch", torch.__doc__)

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)


_TORCH = _TorchForHost()


class _NumpyForHost(types.ModuleType):
    """Stands in for the name ``np`` in pip yolov5's ``utils/metrics.py``: the real numpy plus ``trapz``.

    Why: numpy 2.4 removed ``np.trapz`` (``trapezoid`` since 2.0) and ``compute_ap`` calls it, so val.py
    crashed with AttributeError as soon as one detection was correct.
    """

    trapz = staticmethod(getattr(np, "trapezoid", None))

    def __init__(self) -> None:
        super().__init__("numpy", np.__doc__)

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)


_TORCH_USERS = ("models.experimental", "train", "utils.general", "hubconf", "segment.train", "export")
