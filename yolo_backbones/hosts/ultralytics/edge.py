"""ultralytics' edge formats for plugin models: ``yolo export format=litert|coreml|ncnn|executorch|mnn`` and
their loaders in ``AutoBackend``.

* export: ultralytics' own converters (``ultralytics.utils.export.{litert,ncnn,executorch,coreml}``) keep their
  conventions (output layout, coordinate normalisation, metadata, NMS pipelines) and receive the model prepared
  by :func:`~yolo_backbones.deploy.graph.export_model` when it holds a plugin backbone: NCHW weights (XNNPACK's
  lowering asserts them), EfficientFormer's attention biases as constants of the export size; the NCNN and LiteRT
  converters run inside the capture rewrites of the plugin's own exports
  (:func:`~yolo_backbones.deploy.graph.capture_rewrites`).
  Their metadata gets ``yolo_backbones: <version>``, which the loaders below look for. Stock models pass
  unchanged. ExecuTorch programs of plugin models are lowered by :mod:`yolo_backbones.deploy.executorch` (its
  XNNPACK graph rewrites), written in ultralytics' layout.
* NCNN loader: a ``*_ncnn_model`` with that marker loads through :mod:`yolo_backbones.deploy.ncnn`: float32
  (ncnn would store activations in fp16) and only the model's outputs ``out0, out1, ...`` (ultralytics takes
  every unconsumed blob as an output, which for Mobile-Former includes its last tokens).
* MNN loader: a model with the marker runs at MNN's ``precision: high`` (float32) instead of ``low``.
"""
from __future__ import annotations

import inspect
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

from ...deploy.graph import capture_rewrites, export_model, has_backbone
from ...deploy.metadata import MAX_METADATA_BYTES, read_yaml_metadata
from ..common.patching import replace
from .model_patch import TOPS

__all__ = ["MARKER", "patch_edge"]

MARKER = "yolo_backbones"
_CONVERTERS = {"ultralytics.utils.export.litert": "torch2litert", "ultralytics.utils.export.ncnn": "torch2ncnn",
               "ultralytics.utils.export.executorch": "torch2executorch",
               "ultralytics.utils.export.coreml": "torch2coreml", "ultralytics.utils.export.mnn": "onnx2mnn"}
_RUNTIMES = {"torch2ncnn": "ncnn", "torch2litert": "xnnpack"}  # converter -> capture_rewrites runtime


def _version() -> str:
    from ... import __version__

    return __version__


def _make_converter(original: Callable) -> Callable:
    signature = inspect.signature(original)

    def convert(*args: Any, **kwargs: Any) -> Any:
        """ultralytics' converter, given a model prepared for static export when it holds a plugin backbone."""
        bound = signature.bind(*args, **kwargs)
        model, example = bound.arguments.get("model"), bound.arguments.get("im")
        metadata = bound.arguments.get("metadata")
        if isinstance(metadata, dict) and (model is None or has_backbone(model)):
            metadata[MARKER] = _version()
        if model is None or example is None or not has_backbone(model):
            return original(*bound.args, **bound.kwargs)
        if original.__name__ == "torch2executorch":
            return _torch2executorch(model, example, bound.arguments.get("output_dir"), metadata)
        with export_model(model, example) as ready, capture_rewrites(_RUNTIMES.get(original.__name__), ready):
            bound.arguments["model"] = ready
            return original(*bound.args, **bound.kwargs)

    return convert


def _torch2executorch(model: Any, example: Any, output_dir: str | Path, metadata: dict | None) -> str:
    """ultralytics' ExecuTorch export layout (``<output_dir>/model.pte`` + ``metadata.yaml``) written by
    :func:`yolo_backbones.deploy.executorch.export_executorch`, whose graph rewrites keep LayerNorm, attention and
    splits on XNNPACK (ultralytics lowers the captured graph as it is)."""
    from ultralytics.utils import YAML

    from ...deploy.executorch import export_executorch

    output_dir = Path(output_dir)
    export_executorch(model, example, output_dir / "model.pte")
    if metadata is not None:
        YAML.save(output_dir / "metadata.yaml", metadata)
    return str(output_dir)


def _make_ncnn_load(original: Callable) -> Callable:
    def load_model(self: Any, weight: str | Path) -> None:
        """ultralytics' NCNN loading; plugin exports (metadata marker) load at float32 through deploy.ncnn."""
        from ...deploy.ncnn import find_ncnn_param, load_ncnn

        param = find_ncnn_param(weight) if Path(weight).name.endswith("_ncnn_model") else Path(weight)
        if param is None or not param.is_file() or MARKER not in _raw_yaml(param.parent / "metadata.yaml"):
            return original(self, weight)
        runner = load_ncnn(param)
        self.pyncnn, self.net, self.yolo_backbones_runner = runner.ncnn, runner.net, runner
        self.apply_metadata(self.read_metadata(param))
        return None

    return load_model


def _make_ncnn_forward(original: Callable) -> Callable:
    def forward(self: Any, im: Any) -> Any:
        """ultralytics' NCNN inference; models loaded by the patched loader run on their float32 runner."""
        runner = self.__dict__.get("yolo_backbones_runner")
        return original(self, im) if runner is None else runner(im.cpu().numpy())

    return forward


def _raw_yaml(path: Path) -> dict:
    """The keys of an NCNN folder's ``metadata.yaml`` (``{}`` without one), read as data only. A file that is not
    plain, bounded metadata (Python tags, bad stride/names, oversized) raises
    :class:`~yolo_backbones.core.weights.metadata.MetadataError` naming it (the NCNN loader reads the file before
    ultralytics' checked reader does)."""
    if not path.is_file():
        return {}
    read_yaml_metadata(path)  # validates size, YAML (safe_load) and stride/names; raises MetadataError
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8", errors="replace"))
    return data if isinstance(data, dict) else {}


def _mnn_marked(net: Any) -> bool:
    # Read from the file's own bizCode, not the backend's metadata: a host may filter the keys it applies (the
    # marker is not one of ultralytics' keys). json only, bounded like any exported metadata.
    try:
        text = net.get_info().get("bizCode", "")
        data = json.loads(text) if isinstance(text, str) and len(text) <= MAX_METADATA_BYTES else {}
    except Exception:  # noqa: BLE001  (foreign or damaged metadata: not a plugin export)
        return False
    return isinstance(data, dict) and MARKER in data


def _make_mnn_load(original: Callable) -> Callable:
    def load_model(self: Any, weight: str | Path) -> None:
        """ultralytics' MNN loading; plugin exports (marker in bizCode) are reloaded at ``precision: high``."""
        original(self, weight)
        if not _mnn_marked(self.net):
            return
        mnn = sys.modules["MNN"]  # imported by the original (with ultralytics' execstack workaround)
        config = {"precision": "high", "backend": "CPU", "numThread": (os.cpu_count() + 1) // 2}
        rt = mnn.nn.create_runtime_manager((config,))
        self.net = mnn.nn.load_module_from_file(str(weight), [], [], runtime_manager=rt, rearrange=True)

    return load_model


def patch_edge() -> None:
    """Patch the converters and backends above among the ultralytics modules imported so far (idempotent)."""
    for name, function in _CONVERTERS.items():
        module = sys.modules.get(name)
        if module is not None:
            replace(module, function, _make_converter, tops=TOPS)
    backends = sys.modules.get("ultralytics.nn.backends.ncnn")
    backend = getattr(backends, "NCNNBackend", None)
    if isinstance(backend, type):
        replace(backend, "load_model", _make_ncnn_load)  # type: ignore[arg-type]
        replace(backend, "forward", _make_ncnn_forward)  # type: ignore[arg-type]
    mnn = sys.modules.get("ultralytics.nn.backends.mnn")
    backend = getattr(mnn, "MNNBackend", None)
    if isinstance(backend, type):
        replace(backend, "load_model", _make_mnn_load)  # type: ignore[arg-type]
