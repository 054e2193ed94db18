"""Inference fusing: ``Backbone.fuse()`` and YOLOv5's ``model.fuse()`` fold BNs and other exact re-parameterisations.

Every check uses randomised BN statistics / affine parameters and layer scales, so a fold that drops a
term (a BN bias, a running mean, the ``+ x`` of a position encoding, a layer scale) changes the output.
"""
from __future__ import annotations

import copy
import warnings

import pytest
import torch
import yaml
from torch import nn

from yolo_backbones.core.edgevit import EdgeViT
from yolo_backbones.core.efficientformer.v1 import EfficientFormer
from yolo_backbones.core.efficientformer.v2 import EfficientFormerV2
from yolo_backbones.core.inference.fuse import (
    absorb_identity,
    count_batchnorms,
    fold_affine_into_conv,
    fuse_bn_conv,
    fuse_conv_bn,
)
from yolo_backbones.core.mobileformer import MobileFormer
from yolo_backbones.resources import MODELS_DIR

from helpers import DETECTION, single_thread  # noqa: F401  (autouse: one torch thread per test)

TOL = dict(atol=1e-4, rtol=0.0)
# Sizes are multiples of 32 (EdgeViT's constraint); the first is non-square.
SIZES = ((64, 96), (96, 96))

# (constructor, variant, BN layers of the detection backbone before -> after fusing, the BNs that remain).
# Remaining: EdgeViT's and EfficientFormerV2's final ``norm`` on the stride-32 output, which follows a residual
# sum and feeds nothing inside the backbone (the neck's first conv pads, so it cannot absorb it exactly either).
CASES = {
    "edgevit_xxs": (EdgeViT, "xxs", 11, ["norm"]),
    "mobileformer_26m": (MobileFormer, "26m", 30, []),
    "efficientformer_l1": (EfficientFormer, "l1", 33, []),
    "efficientformerv2_s0": (EfficientFormerV2, "s0", 75, ["norm"]),
}


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics / affine parameters and layer scales, so that every fold matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0.0, 0.5, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0.0, 0.3, generator=g)
        for name, p in model.named_parameters():
            if "layer_scale" in name:
                p.uniform_(0.2, 1.0, generator=g)
    return model


def batchnorm_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def outputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        out = model(x)
    return list(out) if isinstance(out, (list, tuple)) else [out]


def assert_detections_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-5) -> None:
    """Compare YOLOv5 ``Detect`` inference outputs ``(B, N, 5 + nc)``: box ``xywh`` in pixels, then scores.

    Box coordinates reach hundreds of pixels, where float32 spacing is ~3e-5 and the re-associated sums of a
    fused model differ from the unfused ones by up to ~2e-4, so a fixed ``1e-4`` is rounding-noise-limited.
    Each part (boxes; objectness and class scores) is therefore compared to ``rtol`` times its own largest
    magnitude: still far below what a wrong fold does (the box decoding multiplies logit errors by the stride).
    """
    for part in (slice(0, 4), slice(4, None)):
        e = expected[..., part]
        torch.testing.assert_close(actual[..., part], e, rtol=0.0, atol=rtol * float(e.abs().max()))


@pytest.fixture(scope="module", params=sorted(CASES))
def pair(request) -> tuple[str, nn.Module, nn.Module]:
    """(case, unfused eval backbone, fused deep copy) in detection mode with randomised statistics."""
    torch.manual_seed(0)
    cls, variant, _, _ = CASES[request.param]
    model = randomise(cls(variant, **DETECTION).eval())
    return request.param, model, copy.deepcopy(model).fuse()


@pytest.mark.parametrize("size", SIZES)
def test_fused_backbone_matches_unfused(pair, size) -> None:
    _, model, fused = pair
    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(1))
    ref, got = outputs(model, x), outputs(fused, x)
    assert len(ref) == len(got) == 3
    for a, b in zip(ref, got):
        assert a.shape == b.shape
        torch.testing.assert_close(b, a, **TOL)


@pytest.mark.parametrize("size", ((128, 96),))
def test_row_tiled_inference_matches_unfused(pair, size, monkeypatch) -> None:
    """With a tiny tile budget every wide per-pixel chain of a batch-1 fused model runs strip by strip (halo rows,
    strips at the map borders) and the large attention head by head; the outputs stay those of the unfused model."""
    from yolo_backbones.core.inference import tiling

    case, model, fused = pair
    calls = []
    row_tiles = tiling.row_tiles
    monkeypatch.setattr(tiling, "TILE_BYTES", 4096)
    monkeypatch.setattr(tiling, "row_tiles", lambda *a, **k: calls.append(r := row_tiles(*a, **k)) or r)
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(2))
    ref, got = outputs(model, x), outputs(fused, x)
    if not case.startswith("mobileformer"):
        assert any(t is not None and len(t) > 2 for t in calls), "no chain was tiled"
    for a, b in zip(ref, got):
        torch.testing.assert_close(b, a, **TOL)


def test_batchnorms_are_folded(pair) -> None:
    case, model, fused = pair
    _, _, before, remaining = CASES[case]
    assert count_batchnorms(model) == before
    assert batchnorm_names(fused) == remaining
    assert count_batchnorms(fused) < before


def test_other_reparameterisations_applied(pair) -> None:
    case, model, fused = pair
    if case.startswith("edgevit"):
        assert fused.input_norm_folded and not model.input_norm_folded
        blocks = [m for m in fused.modules() if hasattr(m, "pos_embed")]
        assert blocks and all(m.pos_embed_has_identity for m in blocks)
    elif case.startswith("efficientformer"):
        names = [n for n, _ in fused.named_parameters() if "layer_scale" in n]
        # Only v1's pooling mixer keeps its layer scale (nothing to fold it into).
        assert all(n.endswith("layer_scale_1") for n in names)
        assert len(names) < sum("layer_scale" in n for n, _ in model.named_parameters())
        if case.endswith("v2_s0"):
            assert not names


def test_fuse_is_idempotent(pair) -> None:
    _, _, fused = pair
    again = copy.deepcopy(fused)
    del again.fused  # bypass the early return: every fold must find nothing left to do
    assert again.fuse() is again
    assert list(again.state_dict()) == list(fused.state_dict())
    for (k, a), b in zip(fused.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k
    x = torch.rand(1, 3, 64, 96)
    for a, b in zip(outputs(fused, x), outputs(again, x)):
        assert torch.equal(a, b)


def test_fusing_in_training_mode_warns() -> None:
    model = MobileFormer("26m", **DETECTION)
    with pytest.warns(UserWarning, match="inference only"):
        model.fuse()


# ---------------------------------------------------------------------------------- fold primitives
def test_fold_primitives_are_exact() -> None:
    g = torch.Generator().manual_seed(0)
    bn = randomise(nn.BatchNorm2d(8).eval())
    x = torch.randn(2, 8, 9, 7, generator=g)
    # conv -> BN, grouped strided padded conv without bias
    conv = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=2, bias=False)
    torch.testing.assert_close(fuse_conv_bn(conv, bn)(x), bn(conv(x)), **TOL)
    # BN -> grouped 1x1 conv (pre-norm)
    conv = nn.Conv2d(8, 12, 1, groups=4)
    torch.testing.assert_close(fuse_bn_conv(bn, conv)(x), conv(bn(x)), **TOL)
    # a padding conv cannot absorb a pre-norm exactly
    with pytest.raises(ValueError, match="padding"):
        fold_affine_into_conv(nn.Conv2d(8, 8, 3, padding=1), torch.ones(8), torch.zeros(8))
    # x + dwconv(x) -> dwconv
    conv = nn.Conv2d(8, 8, 5, padding=2, groups=8)
    ref = x + conv(x)
    absorb_identity(conv)
    torch.testing.assert_close(conv(x), ref.detach(), **TOL)
    with pytest.raises(ValueError):
        absorb_identity(nn.Conv2d(8, 8, 3, stride=2, padding=1))


# ----------------------------------------------------------------------------------- YOLOv5 fuse()
def test_yolov5_model_fuse_also_fuses_backbone() -> None:
    yolo = pytest.importorskip("yolov5.models.yolo")
    import yolo_backbones  # noqa: F401  (patches YOLOv5)

    torch.manual_seed(0)
    model = yolo.Model(yaml.safe_load((MODELS_DIR / "yolov5_edgevit.yaml").read_text())).eval()
    randomise(model)
    fused = copy.deepcopy(model)
    before = count_batchnorms(model.model[0])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert fused.fuse() is fused
    assert not [w for w in caught if "inference only" in str(w.message)]  # eval mode: no warning
    assert count_batchnorms(fused.model[0]) < before
    assert fused.model[0].fused
    assert count_batchnorms(fused) < count_batchnorms(model)  # YOLOv5's own Conv+BN folds still happen
    # Own generator: the input must not depend on how much global RNG the model build or fuse() consumed.
    x = torch.rand(1, 3, 96, 128, generator=torch.Generator().manual_seed(3))
    ref = outputs(model, x)[0]
    assert_detections_close(outputs(fused, x)[0], ref)
    state = {k: v.clone() for k, v in fused.state_dict().items()}
    fused.fuse()  # second call: no-op
    assert list(state) == list(fused.state_dict())
    assert all(torch.equal(v, fused.state_dict()[k]) for k, v in state.items())
    assert_detections_close(outputs(copy.deepcopy(fused), x)[0], ref)
