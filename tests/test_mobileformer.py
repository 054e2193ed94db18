"""Tests of the Mobile-Former backbone: parameter counts, official keys, checkpoints, detection mode, its model YAMLs.

The checks run for every model YAML (training step, EMA, ONNX, ...) are in test_yaml_models.py.
"""
from __future__ import annotations

import argparse
import copy
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import yolo_backbones
from yolo_backbones.core.mobileformer import MobileFormer
from yolo_backbones.core.weights.state_dict import CheckpointMismatchError
from yolo_backbones.resources import MODELS_DIR

from helpers import DETECTION, key_shapes, model_shapes, n_params, random_state_dict

torch.set_num_threads(1)

# Totals of the official classifiers (reference §6.1) and of stem + tokens + features (§6.2).
PARAMS_CLS = {"508m": 13_976_976, "294m": 11_422_648, "214m": 9_425_920, "151m": 7_595_828,
              "96m": 4_585_252, "52m": 3_469_092, "26m": 3_232_788}
PARAMS_DET = {"508m": 8_429_000, "294m": 6_580_368, "214m": 5_728_344, "151m": 4_907_788,
              "96m": 2_003_900, "52m": 1_626_236, "26m": 1_431_404}
# Channels at strides 4 / 8 / 16 / 32 (reference §3.1).
CHANNELS = {"508m": (40, 72, 176, 240), "294m": (24, 48, 128, 192), "214m": (20, 40, 112, 160),
            "151m": (16, 32, 88, 128), "96m": (16, 32, 88, 128), "52m": (12, 24, 64, 96), "26m": (12, 24, 64, 96)}
# Mobile-Former model YAMLs: variant and the neck's P3/P4/P5 widths (the Detect inputs) after width_multiple.
YAMLS = {"yolov5_mobileformer_52m.yaml": ("52m", (32, 64, 128)), "yolov5_mobileformer.yaml": ("294m", (64, 128, 256)),
         "yolov5_mobileformer_508m.yaml": ("508m", (96, 192, 384))}


def official_keys(variant: str) -> dict[str, tuple[int, ...]]:
    """``{key: shape}`` of the official Mobile-Former-<variant> checkpoint
    (``data/keys/official_mobile_former_*.txt``)."""
    return key_shapes(f"official_mobile_former_{variant}")


def make_official_checkpoint(variant: str, path: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """Write an official-format ``.pth.tar`` (random tensors, DDP ``module.`` prefix); return the raw state_dict."""
    sd = random_state_dict(official_keys(variant), seed, std=0.1)
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}, "epoch": 1,
                "args": argparse.Namespace(model=f"mobile_former_{variant}")}, path)
    return sd


def build_detector(cfg: dict) -> nn.Module:
    """A YOLOv5 ``DetectionModel`` built from a model YAML dict (skips if the yolov5 package is missing)."""
    yolo = pytest.importorskip("yolov5.models.yolo")
    torch.manual_seed(0)
    return yolo.Model(cfg)


def load_yaml(name: str) -> dict:
    """The dict of ``models/<name>``."""
    return yaml.safe_load((MODELS_DIR / name).read_text())


@pytest.mark.parametrize("variant", list(PARAMS_CLS))
def test_param_counts(variant: str) -> None:
    assert n_params(MobileFormer(variant, num_classes=1000)) == PARAMS_CLS[variant]
    assert n_params(MobileFormer(variant, out_indices=(0, 1, 2, 3), **DETECTION)) == PARAMS_DET[variant]


@pytest.mark.parametrize("variant", list(CHANNELS))
def test_variant_channels(variant: str) -> None:
    assert MobileFormer.variant_channels(variant) == CHANNELS[variant]
    assert MobileFormer.variant_channels(variant.upper()) == CHANNELS[variant]


def test_all_variants_registered() -> None:
    names = yolo_backbones.backbone_names()
    assert all(f"mobileformer_{v}" in names for v in PARAMS_CLS)
    record = next(r for r in yolo_backbones.list_backbones() if r["name"] == "mobileformer_508m")
    assert record["channels"] == [40, 72, 176, 240] and record["yaml_module"] == "MobileFormer"


@pytest.mark.parametrize("variant", ["508m", "52m"])
def test_state_dict_matches_official_keys(variant: str) -> None:
    expected = official_keys(variant)
    got = model_shapes(MobileFormer(variant, num_classes=1000))
    assert set(got) == set(expected), sorted(set(got) ^ set(expected))[:10]
    assert got == expected


def test_first_parameter_is_stem_conv() -> None:
    for kwargs in ({"features_only": True}, {"num_classes": 1000}):
        model = MobileFormer("52m", **kwargs)
        name, p = next(model.named_parameters())
        assert name == "stem.0.weight" and p.shape[1] == 3
        assert next(model.parameters()) is model.stem[0].weight
    assert next(MobileFormer("26m", in_chans=1, **DETECTION).parameters()).shape[1] == 1


def test_official_checkpoint_loads(tmp_path: Path) -> None:
    path = tmp_path / "mobile-former-52m.pth.tar"
    sd = make_official_checkpoint("52m", path)
    model = yolo_backbones.create("mobileformer_52m", num_classes=1000, pretrained=str(path))
    own = model.state_dict()
    assert set(own) == set(sd)
    assert all(torch.equal(own[k], sd[k]) for k in sd)

    # Detection mode skips the classifier-only keys; the constructor argument loads too.
    det = MobileFormer("52m", out_indices=(1, 2, 3), pretrained=str(path), **DETECTION)
    assert not any(k.startswith(("local_global.", "classifier.")) for k in det.state_dict())
    assert all(torch.equal(v, sd[k]) for k, v in det.state_dict().items())
    # A detection model that stops at stride 16 does not build the last blocks: their keys are skipped.
    short = MobileFormer("52m", out_indices=(0, 1, 2), pretrained=str(path), **DETECTION)
    assert len(short.features) == 7
    assert all(torch.equal(v, sd[k]) for k, v in short.state_dict().items())


def test_mismatching_checkpoint_raises(tmp_path: Path) -> None:
    path = tmp_path / "mobile-former-52m.pth.tar"
    sd = make_official_checkpoint("52m", path)
    # 26m has the same keys as 52m but grouped 1x1 convs: shape mismatch.
    with pytest.raises(CheckpointMismatchError, match="shape mismatch"):
        yolo_backbones.create("mobileformer_26m", num_classes=1000, pretrained=str(path))
    with pytest.raises(CheckpointMismatchError):
        MobileFormer("508m", pretrained=str(path), **DETECTION)
    sd.pop("features.3.conv1.0.weight")
    torch.save({"state_dict": sd}, tmp_path / "broken.pth.tar")
    with pytest.raises(CheckpointMismatchError, match="missing"):
        MobileFormer("52m", pretrained=str(tmp_path / "broken.pth.tar"), **DETECTION)


@pytest.mark.parametrize("size", [(64, 64), (96, 160), (192, 256), (320, 640), (333, 517), (32, 32)])
def test_detection_output_shapes(size: tuple[int, int]) -> None:
    h, w = size
    model = MobileFormer("52m", out_indices=(0, 1, 2, 3), **DETECTION).eval()
    with torch.no_grad():
        outs = model(torch.rand(2, 3, h, w))
    assert isinstance(outs, list) and len(outs) == 4
    for out, c, s in zip(outs, CHANNELS["52m"], (4, 8, 16, 32)):
        assert tuple(out.shape) == (2, c, -(-h // s), -(-w // s))
        assert torch.isfinite(out).all()
    assert model.out_channels == list(CHANNELS["52m"]) and model.out_strides == [4, 8, 16, 32]


@pytest.mark.parametrize("variant,out_indices", [("52m", (1, 2, 3)), ("52m", (0, 1, 2, 3)), ("26m", (1, 2, 3)),
                                                 ("96m", (0, 1, 2)), ("151m", (1, 2, 3))])
def test_every_parameter_gets_gradient(variant: str, out_indices: tuple[int, ...]) -> None:
    model = MobileFormer(variant, out_indices=out_indices, **DETECTION).train()
    outs = model(torch.rand(2, 3, 64, 96))
    sum(o.sum() for o in outs).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    zero_grad = [n for n, p in model.named_parameters() if p.grad is not None and not p.grad.abs().sum() > 0]
    assert not no_grad, no_grad
    assert not zero_grad, zero_grad
    assert model.tokens.weight.grad.abs().sum() > 0


def test_no_classifier_modules_in_detection_mode() -> None:
    model = MobileFormer("52m", **DETECTION)
    assert not hasattr(model, "classifier") and not hasattr(model, "local_global")
    assert not any(isinstance(m, nn.BatchNorm1d) for m in model.modules())


@pytest.mark.parametrize("size,shapes", [(256, [(1, 24, 32, 32), (1, 64, 16, 16), (1, 96, 8, 8)]),
                                         (32, [(1, 24, 4, 4), (1, 64, 2, 2), (1, 96, 1, 1)])])
def test_batch1_training(size: int, shapes: list[tuple[int, ...]]) -> None:
    # YOLOv5's probes, in training mode at batch 1: the stride probe (256x256 zeros) and model_info's
    # FLOPs probe (32x32, a 1x1 map at stride 32 that a plain BatchNorm2d rejects).
    model = MobileFormer("52m", out_indices=(1, 2, 3), **DETECTION).train()
    outs = model(torch.zeros(1, 3, size, size))
    assert [tuple(o.shape) for o in outs] == shapes
    sum(o.sum() for o in outs).backward()


def test_flop_counts() -> None:
    # YOLOv5's model_info counts FLOPs (thop) at 32x32 and scales them by pixel count: the token path,
    # whose cost does not depend on the image size, must not be scaled with it.
    thop = pytest.importorskip("thop")
    model = MobileFormer("52m", **DETECTION).eval()

    def thop_flops(size: int) -> float:
        return thop.profile(copy.deepcopy(model), inputs=(torch.zeros(1, 3, size, size),), verbose=False)[0]

    assert thop_flops(32) * 64 == pytest.approx(thop_flops(256), rel=0.05)
    # torch's counter (scripts/benchmark.py) runs under no_grad.
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, 64, 64))
    assert counter.get_total_flops() > 0


def test_inplace_activations_are_safe() -> None:
    # YOLOv5 sets inplace=True on every activation module it finds; results must not change.
    torch.manual_seed(0)
    model = MobileFormer("26m", out_indices=(0, 1, 2, 3), **DETECTION).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        for m in model.modules():
            if type(m) in (nn.Hardswish, nn.LeakyReLU, nn.ReLU, nn.ReLU6, nn.SiLU):
                m.inplace = True
        out = model(x)
    assert all(torch.equal(a, b) for a, b in zip(ref, out))
    model.train()
    sum(o.sum() for o in model(torch.rand(2, 3, 64, 64))).backward()


def test_half() -> None:
    model = MobileFormer("52m", **DETECTION).eval().half()
    with torch.no_grad():
        outs = model(torch.rand(1, 3, 64, 96).half())
    assert all(o.dtype == torch.float16 and torch.isfinite(o).all() for o in outs)


def test_jit_trace_other_size() -> None:
    model = MobileFormer("52m", **DETECTION).eval()
    with torch.no_grad():
        traced = torch.jit.trace(model, torch.rand(1, 3, 64, 64), strict=False)
        x = torch.rand(2, 3, 96, 64)
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(traced(x), model(x)))


def test_unknown_variant_lists_variants() -> None:
    with pytest.raises(ValueError) as err:
        MobileFormer("1000m", **DETECTION)
    assert all(v in str(err.value) for v in PARAMS_CLS)
    with pytest.raises(ValueError, match="mobileformer_52m"):
        yolo_backbones.create("mobileformer_53m")


def test_bad_out_indices() -> None:
    with pytest.raises(ValueError):
        MobileFormer("52m", out_indices=(2, 1), **DETECTION)
    with pytest.raises(ValueError):
        MobileFormer("52m", out_indices=(4,), **DETECTION)


def test_onnx_export_matches(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")

    class AsTuple(nn.Module):
        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return tuple(self.model(x))

    model = AsTuple(MobileFormer("26m", out_indices=(1, 2, 3), **DETECTION)).eval()
    path = tmp_path / "mf.onnx"
    names = ["p3", "p4", "p5"]
    torch.onnx.export(model, torch.rand(1, 3, 64, 64), str(path), opset_version=17, dynamo=False,
                      input_names=["images"], output_names=names,
                      dynamic_axes={"images": {0: "b", 2: "h", 3: "w"},
                                    **{n: {0: "b", 2: f"h{n}", 3: f"w{n}"} for n in names}})
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.rand(2, 3, 96, 160)
    with torch.no_grad():
        ref = model(x)
    outs = sess.run(None, {"images": x.numpy()})
    for r, o in zip(ref, outs):
        assert r.shape == o.shape
        assert torch.allclose(r, torch.from_numpy(o), atol=1e-4)


@pytest.mark.parametrize("name", list(YAMLS))
def test_yaml_detector_channels_and_rect_batch(name: str) -> None:
    variant, neck = YAMLS[name]
    p3, p4, p5 = CHANNELS[variant][1:]
    model = build_detector(load_yaml(name)).eval()
    layers = model.model
    assert isinstance(layers[0], MobileFormer) and layers[0].variant == variant
    assert layers[0].out_channels == [p3, p4, p5] and [m.index for m in layers[1:4]] == [0, 1, 2]
    # SPPF takes P5; the P4 and P3 concats join the neck's maps with the backbone's; Detect takes the neck widths.
    assert layers[4].cv1.conv.in_channels == p5
    assert layers[8].cv1.conv.in_channels == neck[1] + p4
    assert layers[12].cv1.conv.in_channels == neck[0] + p3
    assert [c.in_channels for c in layers[-1].m] == list(neck)
    # A non-square rect batch (multiples of 32, as YOLOv5's rect loader makes them) through the full detector.
    selected = {}
    for i in (1, 2, 3):
        layers[i].register_forward_hook(lambda m, inp, out, i=i: selected.update({i: tuple(out.shape)}))
    with torch.no_grad():
        pred = model(torch.rand(2, 3, 96, 224))[0]
    assert [selected[i] for i in (1, 2, 3)] == [(2, p3, 12, 28), (2, p4, 6, 14), (2, p5, 3, 7)]
    assert pred.shape == (2, 3 * (12 * 28 + 6 * 14 + 3 * 7), 85)


def test_official_checkpoint_in_a_yaml_row(tmp_path: Path) -> None:
    # [-1, 1, MobileFormer, [52m, [1, 2, 3], path/to/mobile-former-52m.pth.tar]] loads the ImageNet weights.
    path = tmp_path / "mobile-former-52m.pth.tar"
    sd = make_official_checkpoint("52m", path)
    cfg = load_yaml("yolov5_mobileformer_52m.yaml")
    cfg["backbone"][0][3].append(str(path))
    backbone = build_detector(cfg).model[0]
    # Parameters only: YOLOv5's stride probe (one training-mode forward while building) moves the BN running stats.
    assert all(torch.equal(p, sd[k]) for k, p in backbone.named_parameters())
