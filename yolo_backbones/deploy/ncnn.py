"""NCNN export with pnnx and inference with the ``ncnn`` runtime, host-free.

* export: :func:`export_ncnn` traces the model with ``torch.jit.trace`` (pnnx checks the trace by tracing it
  again without autograd; the backbones record the same graph in both grad modes) at the example's shape and
  converts it with pnnx into ``<folder>/model.ncnn.param`` + ``model.ncnn.bin`` (fp32 weights), beside
  ``metadata.yaml``. pnnx's intermediate files (a TorchScript copy, pnnx graph, ONNX, Python) are removed.
* inference: :class:`NCNNRunner` loads the pair with fp16/bf16 storage, packing and arithmetic switched off.
  Why explicit: ncnn's defaults store activations in fp16 wherever the CPU has conversion instructions (x86
  with F16C, ARM), which moves outputs by ~1e-3 of their range; with them off it computes in float32.
  NCNN runs one image at a time (no batch axis); the runner loops over a batch.
"""
from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .graph import capture_rewrites, export_ready
from .metadata import read_yaml_metadata, write_yaml_metadata
from .requirements import import_edge

__all__ = ["PRECISION", "MODEL_DIR_SUFFIX", "PARAM", "export_ncnn", "NCNNRunner", "load_ncnn", "fp32_options",
           "find_ncnn_param"]

PRECISION = "fp32"
MODEL_DIR_SUFFIX = "_ncnn_model"
PARAM, BIN = "model.ncnn.param", "model.ncnn.bin"
_PNNX_FILES = ("model.pt", "model.pnnx.param", "model.pnnx.bin", "model_pnnx.py", "model.pnnx.onnx", "model_ncnn.py")


@contextlib.contextmanager
def _inside(folder: Path):
    # pnnx writes debug files (debug.param, debug.bin, ...) into the working directory: keep them out of the user's
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def export_ncnn(model: nn.Module, example: torch.Tensor, folder: str | Path,
                metadata: dict[str, Any] | None = None) -> Path:
    """Convert ``model`` to an NCNN model folder for inputs of ``example``'s shape; returns the folder.

    Args:
        model: a (fused) model taking ``(B, C, H, W)`` float input; outputs ``out0, out1, ...`` in order.
        example: input of the exported shape (batch 1: NCNN has no batch axis).
        folder: output folder (created), e.g. ``best_ncnn_model``.
        metadata: ``stride``/``names`` for ``metadata.yaml``, or None.
    """
    pnnx = import_edge("pnnx", "NCNN export")
    import_edge("ncnn", "NCNN export")
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"ptpath": "model.pt", "pnnxparam": "model.pnnx.param", "pnnxbin": "model.pnnx.bin",
             "pnnxpy": "model_pnnx.py", "pnnxonnx": "model.pnnx.onnx", "ncnnparam": PARAM, "ncnnbin": BIN,
             "ncnnpy": "model_ncnn.py"}
    with export_ready(model, example) as ready, capture_rewrites("ncnn", ready), \
            tempfile.TemporaryDirectory() as scratch, _inside(Path(scratch)):
        pnnx.export(ready, inputs=example, fp16=False, device="cpu",
                    **{k: str(folder / v) for k, v in paths.items()})
    for name in _PNNX_FILES:
        (folder / name).unlink(missing_ok=True)
    if not (folder / PARAM).is_file():
        raise RuntimeError(f"pnnx wrote no {PARAM} into {folder} (see its output above)")
    if metadata:
        write_yaml_metadata(folder / "metadata.yaml", metadata)
    return folder


def fp32_options(option: Any, threads: int | None = None) -> Any:
    """Set an ``ncnn.Option`` (e.g. ``net.opt``) to float32 storage and arithmetic; returns it."""
    option.use_fp16_storage = option.use_fp16_packed = option.use_fp16_arithmetic = False
    option.use_bf16_storage = False
    option.use_vulkan_compute = False
    if threads:
        option.num_threads = int(threads)
    return option


def find_ncnn_param(weights: str | Path) -> Path | None:
    """The ``.param`` file of an NCNN model given as its folder (``*_ncnn_model``) or as the ``.param``; None if
    ``weights`` names no NCNN model. Raises FileNotFoundError when it names one that is not there."""
    path = Path(str(weights).strip())
    if path.suffix == ".param":
        if not path.is_file():
            raise FileNotFoundError(f"NCNN model {path} not found")
        return path
    if not path.name.endswith(MODEL_DIR_SUFFIX):
        return None
    params = sorted(path.glob("*.param")) if path.is_dir() else []
    if not params:
        raise FileNotFoundError(f"NCNN model folder {path} not found or holds no .param file")
    return path / PARAM if path / PARAM in params else params[0]


class NCNNRunner:
    """An NCNN model on the ncnn runtime at float32: ``runner(x)`` takes a float32 ``(B, C, H, W)`` array and
    returns the outputs (``out0``, ``out1``, ...) as arrays with a batch axis."""

    def __init__(self, weights: str | Path, threads: int | None = None) -> None:
        ncnn = import_edge("ncnn", "NCNN inference")
        param = find_ncnn_param(weights)
        if param is None:
            raise FileNotFoundError(f"{weights} is not an NCNN model (a *{MODEL_DIR_SUFFIX} folder or a .param file)")
        self.param = param
        self.ncnn = ncnn
        self.net = ncnn.Net()
        fp32_options(self.net.opt, threads)
        if self.net.load_param(str(param)) or self.net.load_model(str(param.with_suffix(".bin"))):
            raise RuntimeError(f"ncnn could not load {param} (+ .bin): a layer is unknown to this ncnn version or "
                               "the files are damaged")
        self.input_name = self.net.input_names()[0]
        # pnnx names the model's outputs out0, out1, ...; other unconsumed blobs (values a block computes but the
        # model does not return, e.g. Mobile-Former's last tokens) are listed as outputs too and are skipped.
        names = [n for n in self.net.output_names() if re.fullmatch(r"out\d+", n)]
        self.output_names = sorted(names, key=lambda n: int(n[3:]))
        self.metadata = read_yaml_metadata(param.parent / "metadata.yaml")

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        outputs = []
        for image in np.asarray(x, dtype=np.float32):
            with self.net.create_extractor() as ex:
                ex.input(self.input_name, self.ncnn.Mat(np.ascontiguousarray(image)).clone())
                outputs.append([np.array(ex.extract(name)[1]) for name in self.output_names])
        return [np.stack(ys) for ys in zip(*outputs)]


def load_ncnn(weights: str | Path, threads: int | None = None) -> NCNNRunner:
    """:class:`NCNNRunner` for a ``*_ncnn_model`` folder or its ``.param`` file."""
    return NCNNRunner(weights, threads)
