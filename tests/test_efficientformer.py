"""Tests of the EfficientFormer (v1) and EfficientFormerV2 backbones: official parameter counts and
state_dict layout, official- and timm-format checkpoints, the resizable attention bias and its cache,
detection-mode shapes at YOLOv5's probe sizes, gradients, deepcopy, half precision, tracing and ONNX."""
from __future__ import annotations

import argparse
import copy
import itertools
import math
import re
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import yolo_backbones
from yolo_backbones.core.base import InputSizeError
from yolo_backbones.core.efficientformer.v1 import EfficientFormer
from yolo_backbones.core.efficientformer.v2 import EfficientFormerV2
from yolo_backbones.core.layers import OffsetBiasAttention, SafeBatchNorm2d
from yolo_backbones.core.weights.state_dict import CheckpointMismatchError

from helpers import DETECTION, key_shapes, n_params, random_state_dict, single_thread  # noqa: F401 (autouse fixture)

V1_CHANNELS = {"l1": (48, 96, 224, 448), "l3": (64, 128, 320, 512), "l7": (96, 192, 384, 768)}
V2_CHANNELS = {"s0": (32, 48, 96, 176), "s1": (32, 48, 120, 224), "s2": (32, 64, 144, 288), "l": (40, 80, 192, 384)}
# (registry name, official key list, timm key list)
LAYOUTS = {"v1": ("efficientformer_l1", "official_efficientformer_l1", "timm_efficientformer_l1"),
           "v2": ("efficientformerv2_s0", "official_efficientformerv2_s0", "timm_efficientformerv2_s0")}


# --------------------------------------------------------------------------------- helpers
def reference_bias_idxs(q_res: int, k_res: int, stride: int) -> torch.Tensor:
    """The official ``attention_bias_idxs``, built like the reference: offsets numbered by first appearance."""
    offsets: dict[tuple[int, int], int] = {}
    idxs = []
    for qy, qx in itertools.product(range(q_res), range(q_res)):
        for ky, kx in itertools.product(range(k_res), range(k_res)):
            off = (abs(qy * stride - ky), abs(qx * stride - kx))
            idxs.append(offsets.setdefault(off, len(offsets)))
    return torch.tensor(idxs).view(q_res * q_res, k_res * k_res)


def _well_scaled(key: str, shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    """Official values for ``attention_bias_idxs``; otherwise a random tensor scaled for the kind of key."""
    if key.endswith("attention_bias_idxs"):
        n_q, n_k = shape
        k_res, q_res = math.isqrt(n_k), math.isqrt(n_q)
        return reference_bias_idxs(q_res, k_res, 2 if q_res != k_res else 1)
    if key.endswith("running_mean"):
        return torch.randn(shape, generator=g) * 0.1
    if "layer_scale" in key:
        return torch.rand(shape, generator=g) * 0.3
    if key.endswith("attention_biases"):
        return torch.randn(shape, generator=g)
    if len(shape) > 1:
        return torch.randn(shape, generator=g) / math.prod(shape[1:]) ** 0.5
    if key.endswith("weight"):
        return 1 + 0.2 * torch.randn(shape, generator=g)
    return 0.1 * torch.randn(shape, generator=g)


def random_official_state_dict(stem: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random, well-scaled tensors for every official key; ``attention_bias_idxs`` get their true values."""
    return random_state_dict(key_shapes(stem), seed, num_batches_tracked=11, fill=_well_scaled)


def save_official(path: Path, sd: dict[str, torch.Tensor]) -> str:
    """Save like the official ``main.py``: weights under ``'model'`` next to a pickled ``argparse.Namespace``."""
    torch.save({"model": sd, "epoch": 299, "args": argparse.Namespace(model="x", lr=1e-3)}, path)
    return str(path)


def official_to_timm_v1(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official -> timm key names for v1, written from backbones.md §4.2 (independent of the model's inverse)."""
    stem = {"0": "conv1", "1": "norm1", "3": "conv2", "4": "norm2"}
    out = {}
    for k, v in sd.items():
        if m := re.match(r"patch_embed\.(\d)\.(.*)", k):
            k = f"stem.{stem[m[1]]}.{m[2]}"
        elif m := re.match(r"network\.(\d+)\.(proj|norm)\.(.*)", k):
            k = f"stages.{(int(m[1]) + 1) // 2}.downsample.{'conv' if m[2] == 'proj' else 'norm'}.{m[3]}"
        elif m := re.match(r"network\.(\d+)\.(\d+)\.(.*)", k):
            rest = re.sub(r"^layer_scale_(\d)$", r"ls\1.gamma", m[3])
            k = f"stages.{int(m[1]) // 2}.blocks.{m[2]}.{rest}"
        elif k.startswith("dist_head."):
            k = "head_dist." + k[len("dist_head."):]
        out[k] = v
    return out


def official_to_timm_v2(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official -> timm names and shapes for v2 (backbones.md §4.2); drops ``attention_bias_idxs`` like timm."""
    stem = {"0": "conv1.conv", "1": "conv1.bn", "3": "conv2.conv", "4": "conv2.bn"}
    block_rules = [(r"^mlp\.fc1\.", "mlp.fc1.conv."), (r"^mlp\.norm1\.", "mlp.fc1.bn."),
                   (r"^mlp\.mid\.", "mlp.mid.conv."), (r"^mlp\.mid_norm\.", "mlp.mid.bn."),
                   (r"^mlp\.fc2\.", "mlp.fc2.conv."), (r"^mlp\.norm2\.", "mlp.fc2.bn."),
                   (r"^token_mixer\.proj\.1\.", "token_mixer.proj.conv."),
                   (r"^token_mixer\.proj\.2\.", "token_mixer.proj.bn."),
                   (r"^token_mixer\.(\w+)\.0\.", r"token_mixer.\1.conv."),
                   (r"^token_mixer\.(\w+)\.1\.", r"token_mixer.\1.bn."),
                   (r"^layer_scale_(\d)$", r"ls\1.gamma")]
    attn_rules = [(r"^q\.local\.0\.", "q.local."), (r"^q\.proj\.0\.", "q.proj.conv."), (r"^q\.proj\.1\.", "q.proj.bn."),
                  (r"^proj\.1\.", "proj.conv."), (r"^proj\.2\.", "proj.bn."),
                  (r"^(\w+)\.0\.", r"\1.conv."), (r"^(\w+)\.1\.", r"\1.bn.")]

    def apply(rules, s):
        for pat, rep in rules:
            new = re.sub(pat, rep, s)
            if new != s:
                return new
        return s

    out = {}
    for k, v in sd.items():
        if k.endswith("attention_bias_idxs"):
            continue
        if m := re.match(r"patch_embed\.(\d)\.(.*)", k):
            k = f"stem.{stem[m[1]]}.{m[2]}"
        elif m := re.match(r"network\.(\d+)\.(proj|norm|conv|bn)\.(.*)", k):
            k = f"stages.{(int(m[1]) + 1) // 2}.downsample.conv.{'conv' if m[2] in ('proj', 'conv') else 'bn'}.{m[3]}"
        elif m := re.match(r"network\.(\d+)\.attn\.(.*)", k):
            k = f"stages.{(int(m[1]) + 1) // 2}.downsample.attn.{apply(attn_rules, m[2])}"
        elif m := re.match(r"network\.(\d+)\.(\d+)\.(.*)", k):
            rest = apply(block_rules, m[3])
            if rest.endswith(".gamma"):
                v = v.flatten()
            k = f"stages.{int(m[1]) // 2}.blocks.{m[2]}.{rest}"
        elif k.startswith("dist_head."):
            k = "head_dist." + k[len("dist_head."):]
        out[k] = v
    return out


def bias_layers(model: nn.Module) -> dict[str, OffsetBiasAttention]:
    return {n: m for n, m in model.named_modules() if isinstance(m, OffsetBiasAttention)}


def bias_cache_sizes(model: nn.Module) -> int:
    return sum(len(m._bias_cache) for m in bias_layers(model).values())


# --------------------------------------------------------------------------- official layout
@pytest.mark.parametrize("name,expected", [
    ("efficientformer_l1", 12_289_928), ("efficientformer_l3", 31_406_000), ("efficientformer_l7", 82_229_328),
    ("efficientformerv2_s0", 3_600_256), ("efficientformerv2_s1", 6_185_560),
    ("efficientformerv2_s2", 12_710_112), ("efficientformerv2_l", 26_322_288)])
def test_param_count_matches_official(name, expected):
    model = yolo_backbones.create(name, num_classes=1000)
    assert n_params(model) == expected


@pytest.mark.parametrize("layout", ["v1", "v2"])
def test_state_dict_keys_and_shapes_match_official(layout):
    name, official, _ = LAYOUTS[layout]
    model = yolo_backbones.create(name, num_classes=1000)
    ref = key_shapes(official)
    idx_keys = [k for k in ref if k.endswith("attention_bias_idxs")]
    assert idx_keys  # the official files do hold the index buffers...
    expected = [(k, s) for k, s in ref.items() if k not in idx_keys]
    # ... which this implementation derives instead; every other key, shape and even the order match.
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == expected
    assert next(iter(model.named_parameters()))[0] == "patch_embed.0.weight"


def test_variant_channels_and_metadata():
    for v, ch in V1_CHANNELS.items():
        assert EfficientFormer.variant_channels(v) == ch == EfficientFormer.variant_channels(v.upper())
    for v, ch in V2_CHANNELS.items():
        assert EfficientFormerV2.variant_channels(v) == ch
    m = EfficientFormerV2("s1", **DETECTION)
    assert m.stage_channels == V2_CHANNELS["s1"] and m.out_channels == [48, 120, 224] and m.out_strides == [8, 16, 32]
    names = yolo_backbones.backbone_names()
    assert {"efficientformer_l1", "efficientformer_l7", "efficientformerv2_s0", "efficientformerv2_l"} <= set(names)


def test_block_layout_matches_reference():
    # Flat takes an index in stage 3 (L1: Meta3D at network.6.4; L7: Flat first, all 8 blocks Meta3D).
    l1 = dict(EfficientFormer("l1", num_classes=1000).named_modules())
    assert type(l1["network.6.3"]).__name__ == "Flat" and type(l1["network.6.4"]).__name__ == "Meta3D"
    l7 = dict(EfficientFormer("l7", num_classes=1000).named_modules())
    assert type(l7["network.6.0"]).__name__ == "Flat" and type(l7["network.6.8"]).__name__ == "Meta3D"
    s0 = dict(EfficientFormerV2("s0", num_classes=1000).named_modules())
    assert s0["network.4.4.token_mixer"].stride_conv is not None and s0["network.6.2.token_mixer"].stride_conv is None
    assert tuple(s0["network.5.attn"].attention_biases.shape) == (8, 196)
    assert isinstance(s0["patch_embed.2"], nn.GELU) and isinstance(l1["patch_embed.2"], nn.ReLU)


# -------------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("layout", ["v1", "v2"])
def test_official_checkpoint_loads_strictly(tmp_path, layout):
    name, official, _ = LAYOUTS[layout]
    sd = random_official_state_dict(official)
    path = save_official(tmp_path / "official.pth", sd)
    model = yolo_backbones.create(name, num_classes=1000, pretrained=path)
    own = model.state_dict()
    for k, v in sd.items():
        if not k.endswith("attention_bias_idxs"):
            assert torch.equal(own[k], v), k
    # Plain torch strict loading of the raw official dict works too (the idxs buffers are absorbed).
    fresh = yolo_backbones.create(name, num_classes=1000)
    fresh.load_state_dict(sd, strict=True)

    # Detection mode drops head/dist_head only; the final norm is kept and loaded.
    cls = EfficientFormer if layout == "v1" else EfficientFormerV2
    det = cls(name.rsplit("_", 1)[1], out_indices=(1, 2, 3), pretrained=path, **DETECTION)
    det_sd = det.state_dict()
    assert not any(k.startswith(("head.", "dist_head.")) for k in det_sd) and "norm.weight" in det_sd
    for k, v in det_sd.items():
        assert torch.equal(v, sd[k]), k


@pytest.mark.parametrize("layout", ["v1", "v2"])
def test_timm_checkpoint_loads_and_matches_official(tmp_path, layout):
    name, official, timm = LAYOUTS[layout]
    sd = random_official_state_dict(official, seed=3)
    timm_sd = (official_to_timm_v1 if layout == "v1" else official_to_timm_v2)(sd)
    # The test's own forward mapping reproduces the real timm layout exactly (names and shapes)...
    assert {k: tuple(v.shape) for k, v in timm_sd.items()} == key_shapes(timm)
    # ... so loading it exercises the model's inverse mapping; outputs must equal the official load.
    torch.save(timm_sd, tmp_path / "timm.pth")
    a = yolo_backbones.create(name, num_classes=1000, pretrained=save_official(tmp_path / "off.pth", sd)).eval()
    b = yolo_backbones.create(name, num_classes=1000, pretrained=str(tmp_path / "timm.pth")).eval()
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


# The cheap variants only: L3 / L7 / V2-L (3-8 s each) repeat the blocks of L1 / V2-S2 at other depths
# and widths (their layouts are checked by test_param_count_matches_official and
# test_block_layout_matches_reference).
@pytest.mark.parametrize("name", ["efficientformer_l1", "efficientformerv2_s0", "efficientformerv2_s1",
                                  "efficientformerv2_s2"])
def test_logits_match_timm_at_224(tmp_path, name):
    """Random weights in a real timm model, saved as a timm state_dict, loaded strictly: same logits at 224."""
    timm = pytest.importorskip("timm")
    ref = timm.create_model(name, pretrained=False)  # no network access
    own = ref.state_dict()

    def fill(key, shape, g):
        if not own[key].is_floating_point():  # timm v1's persistent attention_bias_idxs
            return own[key]
        if key.endswith(".gamma"):  # timm's layer scales: far from their 1e-5 init so every branch counts
            return torch.rand(shape, generator=g) * 0.3
        return _well_scaled(key, shape, g)

    sd = random_state_dict({k: tuple(v.shape) for k, v in own.items()}, seed=5, num_batches_tracked=11, fill=fill)
    ref.load_state_dict(sd, strict=True)
    torch.save(sd, tmp_path / "timm.pth")
    model = yolo_backbones.create(name, num_classes=1000, pretrained=str(tmp_path / "timm.pth")).eval()
    ref.eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = ref(x)
        # timm's eval output is the mean of head and head_dist, like the official code and ours.
        pooled = ref.forward_head(ref.forward_features(x), pre_logits=True)
        torch.testing.assert_close(expected, (ref.head(pooled) + ref.head_dist(pooled)) / 2, atol=1e-6, rtol=0)
        got = model(x)
        assert got.shape == (2, 1000) and expected.abs().max() > 1
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)

        # The comparison is sensitive to the bias geometry: swapping dy and dx in one table is caught
        # (the in-place edit also invalidates the cached eval-mode bias).
        biases = next(p for n, p in model.named_parameters() if n.endswith("attention_biases"))
        r = math.isqrt(biases.shape[1])
        biases.copy_(biases.view(-1, r, r).transpose(1, 2).reshape(biases.shape))
        assert (model(x) - expected).abs().max() > 1e-3


def test_mismatched_checkpoints_raise(tmp_path):
    sd = random_official_state_dict("official_efficientformer_l1")
    # Another variant.
    with pytest.raises(CheckpointMismatchError):
        yolo_backbones.create("efficientformer_l3", num_classes=1000, pretrained=save_official(tmp_path / "a.pth", sd))
    # Wrong shape.
    bad = dict(sd, **{"network.6.4.token_mixer.attention_biases": torch.zeros(8, 64)})
    with pytest.raises(CheckpointMismatchError, match=re.escape("network.6.4.token_mixer.attention_biases")):
        yolo_backbones.create("efficientformer_l1", num_classes=1000, pretrained=save_official(tmp_path / "b.pth", bad))
    # Missing key.
    bad = {k: v for k, v in sd.items() if k != "network.2.1.mlp.fc1.weight"}
    with pytest.raises(CheckpointMismatchError, match=re.escape("network.2.1.mlp.fc1.weight")):
        EfficientFormer("l1", pretrained=save_official(tmp_path / "c.pth", bad), **DETECTION)
    # An index buffer with a different geometry (e.g. an official 25x25 detection checkpoint).
    bad = dict(sd, **{"network.6.4.token_mixer.attention_bias_idxs": torch.zeros(49, 49, dtype=torch.long)})
    with pytest.raises(CheckpointMismatchError, match="attention_bias_idxs"):
        yolo_backbones.create("efficientformer_l1", num_classes=1000, pretrained=save_official(tmp_path / "d.pth", bad))
    with pytest.raises(RuntimeError, match="attention_bias_idxs"):  # plain load_state_dict also refuses it
        EfficientFormer("l1", num_classes=1000).load_state_dict(bad)
    # v2 checkpoint into v1.
    v2 = random_official_state_dict("official_efficientformerv2_s0")
    with pytest.raises(CheckpointMismatchError):
        EfficientFormer("l1", pretrained=save_official(tmp_path / "e.pth", v2), **DETECTION)


def test_truncated_detection_model_loads_full_checkpoint(tmp_path):
    path = save_official(tmp_path / "s0.pth", random_official_state_dict("official_efficientformerv2_s0"))
    model = EfficientFormerV2("s0", out_indices=(0, 1), pretrained=path, **DETECTION)
    # Stages after the last requested one are not built (no unused parameters), and their keys are skipped.
    assert len(model.network) == 3 and not hasattr(model, "norm")
    outs = model(torch.rand(1, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 32, 16, 16), (1, 48, 8, 8)]


# ------------------------------------------------------------------------- attention biases
@pytest.mark.parametrize("layout", ["v1", "v2"])
def test_native_grid_bias_equals_official_gather(layout):
    name, official, _ = LAYOUTS[layout]
    sd = random_official_state_dict(official)
    model = yolo_backbones.create(name, num_classes=1000)
    model.load_state_dict(sd)
    layers = bias_layers(model)
    assert len(layers) == (1 if layout == "v1" else 5)
    for n, layer in layers.items():
        official_idxs = sd[f"{n}.attention_bias_idxs"]
        assert torch.equal(layer.official_bias_idxs(), official_idxs), n
        q_hw, k_hw = layer.native_grids()
        expected = sd[f"{n}.attention_biases"][:, official_idxs]
        for train in (True, False):  # fresh computation and the cached (no-grad) path
            layer.train(train)
            with torch.set_grad_enabled(train):
                got = layer.attention_bias(q_hw, k_hw, torch.float32)
            assert torch.equal(got, expected), n


def test_bias_follows_any_grid():
    layer = EfficientFormerV2("s0", num_classes=1000).get_submodule("network.5.attn")
    with torch.no_grad():
        layer.attention_biases.normal_()
    table = layer.attention_biases.detach().view(8, 14, 14)
    # Non-square key grid 10 x 20 (stride-16 map of 160 x 320), queries on every other key.
    bias = layer.attention_bias((5, 10), (10, 20), torch.float32)
    assert bias.shape == (8, 50, 200)
    resized = F.interpolate(table[None], size=(10, 20), mode="bicubic", align_corners=True)[0]
    # Query (2, 3) sits on key (4, 6); key (7, 1) is 3 rows and 5 columns away.
    assert torch.equal(bias[:, 2 * 10 + 3, 7 * 20 + 1], resized[:, 3, 5])
    # align_corners keeps the zero offset (a token and itself) exactly.
    assert torch.equal(bias[:, 0, 0], table[:, 0, 0])
    # A 1x1 grid (the 32x32 FLOPs probe in v1 stage 3) gets the zero-offset bias.
    v1 = EfficientFormer("l1", num_classes=1000).get_submodule("network.6.4.token_mixer")
    with torch.no_grad():
        v1.attention_biases.normal_()
    assert torch.equal(v1.attention_bias((1, 1), (1, 1), torch.float32), v1.attention_biases[:, :1, None])


def test_bias_cache_is_refreshed_after_loading_casting_and_updates():
    torch.manual_seed(0)
    model = EfficientFormer("l1", **DETECTION).eval()
    x = torch.rand(1, 3, 256, 320)
    with torch.no_grad():
        model(x)
    assert bias_cache_sizes(model) == 1  # eval + no_grad: cached

    other = EfficientFormer("l1", **DETECTION).eval()
    with torch.no_grad():
        for n, p in other.named_parameters():
            if n.endswith("attention_biases"):
                p.normal_()
        expected = other(x)
        model.load_state_dict(other.state_dict())
        assert bias_cache_sizes(model) == 0  # cleared by load_state_dict
        for a, b in zip(model(x), expected):
            assert torch.equal(a, b)

        # In-place updates (e.g. YOLOv5's EMA: `v *= d; v += ...` on state_dict tensors) bump the version.
        model(x)
        for v in model.state_dict().values():
            if v.is_floating_point():
                v.mul_(0.5)
        for v in other.state_dict().values():
            if v.is_floating_point():
                v.mul_(0.5)
        for a, b in zip(model(x), other(x)):
            assert torch.equal(a, b)

        # .half() / .float() clear the cache; results equal a fresh half-precision copy.
        model(x)
        half = model.half()
        assert bias_cache_sizes(half) == 0
        ref_half = copy.deepcopy(other).half()
        try:
            for a, b in zip(half(x.half()), ref_half(x.half())):
                assert a.dtype == torch.float16 and torch.equal(a, b)
        except (RuntimeError, NotImplementedError) as e:  # some CPU builds lack fp16 kernels
            if "not implemented" not in str(e).lower():
                raise
        model.float()
        assert bias_cache_sizes(model) == 0
        for a, b in zip(model(x), ref_half.float()(x)):  # both round-tripped through fp16
            assert torch.equal(a, b)

    # Training mode, or eval with autograd on, never caches (no graph kept in an attribute).
    model.train()
    model(x)
    model.eval()
    model(x)
    assert bias_cache_sizes(model) == 0


# ----------------------------------------------------------------------------- detection mode
@pytest.mark.parametrize("cls,variant,channels", [(EfficientFormer, "l1", V1_CHANNELS["l1"]),
                                                  (EfficientFormerV2, "s0", V2_CHANNELS["s0"])])
@pytest.mark.parametrize("hw", [(256, 256), (320, 640), (320, 192), (32, 32), (96, 160), (33, 47)])
def test_detection_shapes_training_batch1(cls, variant, channels, hw):
    # Training mode, batch 1: YOLOv5's stride probe (256) and FLOPs probe (32: 1x1 map at stride 32).
    model = cls(variant, out_indices=(0, 1, 2, 3), **DETECTION).train()
    h, w = hw
    outs = model(torch.zeros(1, 3, h, w))
    expected = [(1, c, math.ceil(h / s), math.ceil(w / s)) for c, s in zip(channels, (4, 8, 16, 32))]
    assert [tuple(o.shape) for o in outs] == expected
    assert all(torch.isfinite(o).all() for o in outs)


@pytest.mark.parametrize("cls,variant,channels", [(EfficientFormer, "l1", V1_CHANNELS["l1"]),
                                                  (EfficientFormerV2, "s0", V2_CHANNELS["s0"])])
def test_any_size_eval_and_bias_cache_per_size(cls, variant, channels):
    """Rect validation shapes (320x192, 640x480, 480x640) and 1280x1280 in eval; one cached bias per size
    and dtype, served unchanged on a revisit, dropped by ``.to()``."""
    torch.manual_seed(0)
    model = cls(variant, out_indices=(1, 2, 3), **DETECTION).eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("attention_biases"):
                p.normal_()  # a non-constant table, so the resize to each grid matters
    layers = bias_layers(model).values()
    g = torch.Generator().manual_seed(0)
    sizes = [(320, 192), (640, 480), (480, 640)]
    inputs = {hw: torch.rand(2 if hw == sizes[0] else 1, 3, *hw, generator=g) for hw in sizes}
    with torch.no_grad():
        outs = {hw: model(x) for hw, x in inputs.items()}
        for (h, w), o in outs.items():
            assert [tuple(t.shape)[1:] for t in o] == [(c, h // s, w // s) for c, s in zip(channels[1:], (8, 16, 32))]
        assert all(len(m._bias_cache) == len(sizes) for m in layers)  # one entry per runtime grid
        for a, b in zip(model(inputs[sizes[0]]), outs[sizes[0]]):  # cache hit
            assert torch.equal(a, b)
    for a, b in zip(model(inputs[sizes[0]]), outs[sizes[0]]):  # autograd on: freshly computed bias
        torch.testing.assert_close(a.detach(), b, atol=1e-5, rtol=1e-5)

    model.to(torch.float64)  # a dtype (or device) change drops the float32 entries
    assert bias_cache_sizes(model) == 0
    with torch.no_grad():
        for a, b in zip(model(inputs[sizes[0]].double()), outs[sizes[0]]):
            assert a.dtype == torch.float64
            torch.testing.assert_close(a.float(), b, atol=1e-4, rtol=1e-4)
        model.float()
        assert bias_cache_sizes(model) == 0
        # YOLOv5's largest common size (--img 1280), batch 1.
        big = model(torch.rand(1, 3, 1280, 1280, generator=g))
    assert [tuple(t.shape) for t in big] == [(1, c, 1280 // s, 1280 // s) for c, s in zip(channels[1:], (8, 16, 32))]
    assert all(torch.isfinite(t).all() for t in big)


def test_v1_stage3_output_is_the_normed_token_grid():
    model = EfficientFormer("l1", out_indices=(3,), **DETECTION).eval()
    x = torch.rand(2, 3, 96, 160)
    with torch.no_grad():
        out = model(x)[0]
        t = model.patch_embed((x - model.input_mean) / model.input_std)
        for blk in model.network:
            t = blk(t)
        tokens = model.norm(t.reshape(2, -1, 448))  # the reference (B, N, C) layout, row-major tokens
    assert t.shape == (2, 3, 5, 448)
    torch.testing.assert_close(out, tokens.transpose(1, 2).reshape(2, 448, 3, 5))


def test_classification_logits_and_eval_average():
    model = EfficientFormer("l1", num_classes=10).eval()
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        logits = model(x)
        pooled = model.forward_features(x).mean((2, 3))  # the final map after the final norm
    assert logits.shape == (2, 10)
    torch.testing.assert_close(logits, (model.head(pooled) + model.dist_head(pooled)) / 2)


def test_bad_input_raises():
    with pytest.raises(InputSizeError, match="3, H, W"):
        EfficientFormerV2("s0", **DETECTION)(torch.rand(1, 1, 64, 64))
    with pytest.raises(InputSizeError):
        EfficientFormer("l1", **DETECTION)(torch.rand(3, 64, 64))
    with pytest.raises(ValueError, match="out_indices"):
        EfficientFormer("l1", out_indices=(3, 1), **DETECTION)
    with pytest.raises(ValueError, match="s0, s1, s2, l"):
        EfficientFormerV2("m", **DETECTION)


@pytest.mark.parametrize("cls,variant", [(EfficientFormer, "l1"), (EfficientFormerV2, "s0")])
def test_backward_reaches_every_parameter(cls, variant):
    torch.manual_seed(0)
    model = cls(variant, out_indices=(1, 2, 3), drop_path_rate=0.1, **DETECTION)
    assert not hasattr(model, "head") and not hasattr(model, "dist_head")
    with torch.no_grad():  # non-zero biases so the (non-native) bias resize is exercised with gradients
        for n, p in model.named_parameters():
            if n.endswith("attention_biases"):
                p.normal_()
    x = torch.rand(2, 3, 128, 192)
    for mode in ("train", "eval"):
        model.train(mode == "train")
        model.zero_grad(set_to_none=True)
        outs = model(x)
        sum((o * torch.randn_like(o)).sum() for o in outs).backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None]
        assert not missing, f"{mode}: no gradient for {missing}"
        assert all(torch.isfinite(p.grad).all() for p in model.parameters())
        if mode == "eval":
            zero = [n for n, p in model.named_parameters() if not p.grad.abs().sum() > 0]
            assert not zero, f"zero gradient for {zero}"
    assert bias_cache_sizes(model) == 0


@pytest.mark.parametrize("cls,variant", [(EfficientFormer, "l1"), (EfficientFormerV2, "s0")])
def test_deepcopy_after_train_and_eval_forwards(cls, variant):
    model = cls(variant, **DETECTION)
    x = torch.rand(2, 3, 96, 128)
    model.train()
    loss = sum(o.sum() for o in model(x))  # graph alive while copying (YOLOv5 EMA / checkpoint save)
    copy.deepcopy(model)
    loss.backward()
    model.eval()
    with torch.no_grad():
        ref = model(x)
    assert bias_cache_sizes(model) > 0
    clone = copy.deepcopy(model)
    assert bias_cache_sizes(clone) == 0  # caches are not copied
    with torch.no_grad():
        for a, b in zip(clone(x), ref):
            assert torch.equal(a, b)


@pytest.mark.parametrize("cls,variant", [(EfficientFormer, "l1"), (EfficientFormerV2, "s0")])
def test_inplace_activations_and_half_precision(cls, variant):
    torch.manual_seed(0)
    model = cls(variant, **DETECTION).train()
    x = torch.rand(2, 3, 64, 96)
    ref = model(x)
    for m in model.modules():  # what YOLOv5 does to ReLU/SiLU/Hardswish/LeakyReLU at load time
        if isinstance(m, (nn.ReLU, nn.SiLU, nn.Hardswish, nn.LeakyReLU)):
            m.inplace = True
    model.load_state_dict(copy.deepcopy(model.state_dict()))  # undo the running-stat update of the 1st pass
    out = model(x)
    sum(o.sum() for o in out).backward()
    model.eval().half()
    assert all(t.dtype == torch.float16 for t in model.parameters())
    try:
        with torch.no_grad():
            half = model(x.half())
    except (RuntimeError, NotImplementedError) as e:
        if "not implemented" in str(e).lower():
            pytest.skip(f"fp16 kernel missing on this CPU build: {e}")
        raise
    assert all(o.dtype == torch.float16 and torch.isfinite(o).all() for o in half)
    assert len(ref) == len(out)


def test_safe_batchnorm_single_value_uses_running_stats():
    bn = SafeBatchNorm2d(4).train()
    with torch.no_grad():
        bn.running_mean.fill_(2.0)
        bn.running_var.fill_(4.0)
    y = bn(torch.full((1, 4, 1, 1), 4.0))
    torch.testing.assert_close(y, torch.full((1, 4, 1, 1), 1.0), atol=1e-4, rtol=0)
    assert torch.all(bn.running_mean == 2.0) and int(bn.num_batches_tracked) == 0
    bn(torch.randn(2, 4, 1, 1))  # more than one value per channel: normal batch statistics
    assert int(bn.num_batches_tracked) == 1


# ------------------------------------------------------------------------------------ export
@pytest.mark.parametrize("cls,variant", [(EfficientFormer, "l1"), (EfficientFormerV2, "s0")])
def test_jit_trace_and_onnx_match_eager(tmp_path, cls, variant):
    torch.manual_seed(0)
    model = cls(variant, **DETECTION).eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("attention_biases"):
                p.normal_()
    x = torch.rand(1, 3, 96, 160)  # non-native, non-square grids: the bias resize is in the graph
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python values
        ref = model(x)
        traced = torch.jit.trace(model, x, strict=False)
        for a, b in zip(traced(x), ref):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    f = tmp_path / f"{variant}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(f), opset_version=17, dynamo=False, input_names=["images"])
    outs = ort.InferenceSession(str(f), providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})
    for a, b in zip(outs, ref):
        torch.testing.assert_close(torch.from_numpy(a), b, atol=1e-4, rtol=1e-4)
