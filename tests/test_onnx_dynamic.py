"""ONNX export with dynamic batch / image size for every model YAML; onnxruntime must match PyTorch.

Mirrors what YOLOv5's ``export.py --include onnx --dynamic --opset 17`` does (``Detect.export`` /
``Detect.dynamic`` set, TorchScript-based exporter, ``images`` / ``output0`` with dynamic axes): export
once at 192x192 batch 1, then run onnxruntime at other batch sizes and non-square sizes (other token
grids, so a size baked in at trace time shows up as an error or a mismatch).

The randomly initialised models are perturbed first (:func:`perturb`): at their init the EfficientFormer
attention biases are zero and the layer scales 1e-5, so a wrong bias would not change the output. Even
so, the random neck and Detect head damp the backbone's signal (a 10 % change of every attention bias
moves the Detect output by ~5e-7 of its range), so the graph also returns the backbone's feature maps
(:class:`WithFeatures`, same graph otherwise) and those are compared tightly as well.
"""
from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from helpers import single_thread  # noqa: F401  (autouse: one torch thread per test)

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from yolov5.models.yolo import Detect, Model  # noqa: E402

pytestmark = pytest.mark.slow  # end-to-end: subprocesses, training, exports

MODELS = sorted((Path(__file__).resolve().parents[1] / "models").glob("yolov5_*.yaml"))
EXPORT_SIZE = 192
CHECK_SHAPES = [(2, 128, 256), (1, 256, 192)]  # (batch, height, width), both unlike the export input
RTOL = 1e-3  # of the largest absolute output (box coordinates are in pixels)
SCORE_ATOL = 1e-3  # objectness / class scores (sigmoids) on their own
FEATURE_RTOL = 1e-4  # backbone maps, of each map's largest absolute value (onnxruntime is at ~1e-6)


def perturb(model: nn.Module, seed: int = 0) -> None:
    """Give the parameters that start at a degenerate value (zero biases, tiny layer scales, unit BN
    statistics) seeded random values, so every branch of every block influences the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("attention_biases"):
                p.copy_(torch.randn(p.shape, generator=g) * 2)
            elif "layer_scale" in name:
                p.copy_(torch.rand(p.shape, generator=g) * 0.4 + 0.1)
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


class WithFeatures(nn.Module):
    """The YOLOv5 model, returning ``(Detect output, *backbone feature maps)`` (a forward hook on layer 0)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feats: list[torch.Tensor] = []
        handle = self.model.model[0].register_forward_hook(lambda m, i, out: feats.extend(out))
        try:
            y = self.model(x)
        finally:
            handle.remove()
        return (y[0], *feats)


def export_dynamic(model: nn.Module, f: Path) -> list[str]:
    """What YOLOv5's export_onnx does with ``--dynamic --opset 17`` (on the unfused model), plus the
    backbone maps as extra outputs ``feat{i}``; returns the output names."""
    for m in model.modules():
        if isinstance(m, Detect):
            m.inplace, m.dynamic, m.export = True, True, True
    im = torch.zeros(1, 3, EXPORT_SIZE, EXPORT_SIZE)
    for _ in range(2):  # dry runs, as export.py
        model(im)
    wrapped = WithFeatures(model).eval()
    names = ["output0"] + [f"feat{i}" for i in range(len(wrapped(im)) - 1)]
    axes = {"images": {0: "batch", 2: "height", 3: "width"}, "output0": {0: "batch", 1: "anchors"},
            **{n: {0: "batch", 2: f"{n}_height", 3: f"{n}_width"} for n in names[1:]}}  # own names: other sizes
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # TracerWarnings, deprecation of the TorchScript exporter
        torch.onnx.export(wrapped, im, str(f), opset_version=17, do_constant_folding=True,
                          input_names=["images"], output_names=names, dynamic_axes=axes, dynamo=False)
    return names


@pytest.mark.parametrize("cfg", MODELS, ids=[p.stem for p in MODELS])
def test_onnx_dynamic_parity(cfg: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        model = Model(str(cfg)).eval()  # prints its summary
    perturb(model)
    f = tmp_path / f"{cfg.stem}.onnx"
    with torch.no_grad():
        names = export_dynamic(model, f)

    import onnx
    onnx.checker.check_model(onnx.load(str(f)))
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    so.log_severity_level = 3
    session = ort.InferenceSession(str(f), so, providers=["CPUExecutionProvider"])

    g = torch.Generator().manual_seed(1)
    for b, h, w in CHECK_SHAPES:
        x = torch.rand(b, 3, h, w, generator=g)
        with torch.no_grad():
            refs = [t.numpy() for t in WithFeatures(model)(x)]
        outs = session.run(names, {"images": x.numpy()})
        for name, out, ref in zip(names[1:], outs[1:], refs[1:]):
            assert out.shape == ref.shape, f"{b}x{h}x{w} {name}: onnx {out.shape} vs torch {ref.shape}"
            err = np.abs(out - ref).max()
            assert err <= FEATURE_RTOL * np.abs(ref).max(), f"{b}x{h}x{w} {name}: max |onnx - torch| {err:.3g} " \
                                                            f"(max |torch| {np.abs(ref).max():.3g})"
        out, ref = outs[0], refs[0]
        assert out.shape == ref.shape, f"{b}x{h}x{w}: onnx {out.shape} vs torch {ref.shape}"
        err = np.abs(out - ref).max()
        assert err <= RTOL * np.abs(ref).max(), f"{b}x{h}x{w}: max |onnx - torch| {err:.3g} (max |torch| " \
                                                f"{np.abs(ref).max():.3g})"
        score_err = np.abs(out[..., 4:] - ref[..., 4:]).max()
        assert score_err <= SCORE_ATOL, f"{b}x{h}x{w}: scores max |onnx - torch| {score_err:.3g}"
