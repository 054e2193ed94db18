"""Reduced-precision inference for every model YAML: ``.half()``, bf16 autocast, and dtype round trips.

YOLOv5 runs ``model.half()`` for ``val.py``/``detect.py --half`` and keeps FP16 checkpoints; a model is
also often moved between dtypes after it has run (caches built in one dtype must follow the model).
Everything here runs on CPU (CPU FP16 convolution, LayerNorm, softmax and GELU are supported by torch 2.x).

Outputs are YOLOv5's inference tensor ``(B, N, 5 + nc)``: box ``xywh`` in pixels, then objectness and
class probabilities in ``[0, 1]``; the two parts are compared with their own tolerances.
"""
from __future__ import annotations

import copy

import pytest
import torch
import yaml

import yolo_backbones  # noqa: F401  (registers the backbones with YOLOv5)
from yolo_backbones.resources import MODELS_DIR

yolo = pytest.importorskip("yolov5.models.yolo")

YAMLS = sorted(p.name for p in MODELS_DIR.glob("yolov5_*.yaml"))
IMG = 128
# Max error allowed, for the box part relative to the largest reference box value (pixels, ~IMG) and for the
# probabilities absolute. Measured on the random-init models: fp16 ~1e-3 relative, bf16 ~4e-3 relative.
TOL = {torch.float16: (1e-2, 1e-2), torch.bfloat16: (3e-2, 3e-2)}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: small CPU FP16 kernels are much slower when threads oversubscribe a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=YAMLS)
def model(request) -> torch.nn.Module:
    torch.manual_seed(0)
    m = yolo.Model(yaml.safe_load((MODELS_DIR / request.param).read_text()))
    # A training-mode batch gives the BatchNorm layers non-trivial running statistics.
    with torch.no_grad():
        m(torch.rand(2, 3, IMG, IMG))
    return m.eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(1, 3, IMG, IMG, generator=torch.Generator().manual_seed(1))


def _infer(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)[0]


def _assert_close(got: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    assert got.shape == ref.shape, what
    got = got.float()
    assert torch.isfinite(got).all(), f"{what}: non-finite outputs"
    box_tol, prob_tol = TOL[dtype]
    box_err = (got[..., :4] - ref[..., :4]).abs().max().item()
    box_scale = ref[..., :4].abs().max().item()
    prob_err = (got[..., 4:] - ref[..., 4:]).abs().max().item()
    assert box_err <= box_tol * box_scale, f"{what}: box error {box_err:.4g} px (scale {box_scale:.4g})"
    assert prob_err <= prob_tol, f"{what}: objectness/class probability error {prob_err:.4g}"


def test_half_forward_matches_float32(model, images) -> None:
    ref = _infer(model, images)
    half = copy.deepcopy(model).half()
    out = _infer(half, images.half())
    assert out.dtype == torch.float16, "an FP16 model must return FP16 (some layer computed in float32)"
    _assert_close(out, ref, torch.float16, "model.half()")


def test_bfloat16_autocast_matches_float32(model, images) -> None:
    ref = _infer(model, images)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(images)[0]
    _assert_close(out, ref, torch.bfloat16, "torch.autocast('cpu', bfloat16)")


def test_dtype_round_trip_after_a_forward(model, images) -> None:
    """float32 forward -> .half() -> forward -> .to(float32) -> forward: no cache keeps the old dtype or values.

    ``.half()`` rounds the weights, so each result is compared with a fresh copy that never ran in the other
    dtype (same rounded weights): the two must agree exactly up to float noise.
    """
    moved = copy.deepcopy(model)
    _infer(moved, images)  # builds any eval-mode caches (attention biases, Detect grids) in float32
    moved.half()
    out_half = _infer(moved, images.half())
    assert out_half.dtype == torch.float16
    fresh_half = copy.deepcopy(model).half()
    torch.testing.assert_close(out_half, _infer(fresh_half, images.half()))

    moved.to(torch.float32)
    out_float = _infer(moved, images)
    assert out_float.dtype == torch.float32
    fresh_rounded = copy.deepcopy(model).half().float()
    torch.testing.assert_close(out_float, _infer(fresh_rounded, images))
    _assert_close(out_float, _infer(model, images), torch.float16, "after the float32 -> half -> float32 round trip")
