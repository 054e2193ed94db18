"""Tests of the EdgeViT backbone: official parameter counts and state_dict layout, checkpoint loading,
detection-mode shapes, input validation, gradients, and the sparse attention against an explicit reference."""
from __future__ import annotations

import argparse
import re
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import yolo_backbones
from yolo_backbones import CheckpointFileError
from yolo_backbones.core.base import InputSizeError
from yolo_backbones.core.edgevit import EdgeViT, GlobalSparseAttn
from yolo_backbones.core.weights.state_dict import CheckpointMismatchError

from helpers import DETECTION, key_shapes, model_shapes, n_params, random_state_dict, single_thread  # noqa: F401 (autouse fixture)

CHANNELS = {"xxs": (36, 72, 144, 288), "xs": (48, 96, 240, 384), "s": (48, 96, 240, 384)}


def official_shapes(variant: str) -> dict[str, tuple[int, ...]]:
    """``{key: shape}`` of the official EdgeViT-<variant> checkpoint (``data/keys/official_edgevit_<variant>.txt``)."""
    return key_shapes(f"official_edgevit_{variant}")


def official_checkpoint(variant: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state_dict with exactly the official key names and shapes."""
    return random_state_dict(official_shapes(variant), seed)


# ----------------------------------------------------------------------------- official layout
@pytest.mark.parametrize("name,expected", [("edgevit_xxs", 4_067_704), ("edgevit_xs", 6_770_056),
                                           ("edgevit_s", 13_108_168)])
def test_param_count_matches_official(name, expected):
    model = yolo_backbones.create(name, num_classes=1000)
    assert n_params(model) == expected


@pytest.mark.parametrize("variant", ["xxs", "s"])
def test_state_dict_keys_and_shapes_match_official(variant):
    model = yolo_backbones.create(f"edgevit_{variant}", num_classes=1000)
    assert model_shapes(model) == official_shapes(variant)


def test_detection_state_dict_is_official_without_head():
    model = EdgeViT("xxs", out_indices=(0, 1, 2, 3), **DETECTION)
    expected = {k: v for k, v in official_shapes("xxs").items() if not k.startswith("head.")}
    assert model_shapes(model) == expected


def test_first_parameter_is_stem_conv():
    name, p = next(iter(EdgeViT("xxs", **DETECTION).named_parameters()))
    assert name == "patch_embed1.proj.weight" and p.shape == (36, 3, 4, 4)


def test_norm_types_and_eps_match_official():
    model = EdgeViT("xxs", num_classes=1000)
    mods = dict(model.named_modules())
    assert isinstance(mods["norm"], nn.BatchNorm2d)
    for s in (1, 2, 3):
        assert isinstance(mods[f"blocks{s}.0.LocalAgg.norm1"], nn.BatchNorm2d)
        assert isinstance(mods[f"blocks{s}.0.LocalAgg.norm2"], nn.BatchNorm2d)
        assert isinstance(mods[f"blocks{s}.0.SelfAttn.attn.norm"], nn.LayerNorm)
        assert mods[f"blocks{s}.0.SelfAttn.attn.norm"].eps == 1e-5
    for s in (1, 2, 3, 4):
        assert isinstance(mods[f"patch_embed{s}.norm"], nn.LayerNorm) and mods[f"patch_embed{s}.norm"].eps == 1e-5
        for n in ("norm1", "norm2"):
            ln = mods[f"blocks{s}.0.SelfAttn.{n}"]
            assert isinstance(ln, nn.LayerNorm) and ln.eps == 1e-6
    heads = [mods[f"blocks{s}.0.SelfAttn.attn"].num_heads for s in (1, 2, 3, 4)]
    assert heads == [1, 2, 4, 8]
    mods = dict(EdgeViT("s", **DETECTION).named_modules())
    assert [mods[f"blocks{s}.0.SelfAttn.attn"].num_heads for s in (1, 2, 3, 4)] == [1, 2, 5, 8]


def test_variant_channels_and_metadata():
    for v, ch in CHANNELS.items():
        assert EdgeViT.variant_channels(v) == ch
        assert EdgeViT.variant_channels(v.upper()) == ch
    m = EdgeViT("xs", out_indices=(1, 2, 3), **DETECTION)
    assert m.out_channels == [96, 240, 384] and m.out_strides == [8, 16, 32]


# ------------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("wrapped", [False, True])
def test_official_checkpoint_loads(tmp_path, wrapped):
    sd = official_checkpoint("xxs")
    path = tmp_path / "edgevit_xxs.pth"
    obj = {"state_dict": sd, "args": argparse.Namespace(model="edgevit_xxs", lr=1e-3)} if wrapped else sd
    torch.save(obj, path)

    model = yolo_backbones.create("edgevit_xxs", num_classes=1000, pretrained=str(path))
    own = model.state_dict()
    assert set(own) == set(sd)
    for k, v in sd.items():
        assert torch.equal(own[k], v), k

    # Detection mode: the classifier keys are skipped, everything else is loaded.
    det = EdgeViT("xxs", out_indices=(0, 1, 2, 3), pretrained=str(path), **DETECTION)
    det_sd = det.state_dict()
    assert not any(k.startswith("head.") for k in det_sd)
    for k, v in det_sd.items():
        assert torch.equal(v, sd[k]), k


def test_checkpoint_wrong_shape_raises(tmp_path):
    sd = official_checkpoint("xxs")
    sd["blocks3.1.SelfAttn.attn.qkv.weight"] = torch.zeros(10, 144)
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointMismatchError, match=re.escape("blocks3.1.SelfAttn.attn.qkv.weight")):
        yolo_backbones.create("edgevit_xxs", num_classes=1000, pretrained=str(path))


def test_checkpoint_missing_key_raises(tmp_path):
    sd = official_checkpoint("xxs")
    del sd["blocks1.0.LocalAgg.attn.weight"]
    path = tmp_path / "missing.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointMismatchError, match=re.escape("blocks1.0.LocalAgg.attn.weight")):
        EdgeViT("xxs", out_indices=(1, 2, 3), pretrained=str(path), **DETECTION)


def test_checkpoint_of_other_variant_raises(tmp_path):
    path = tmp_path / "s.pth"
    torch.save(official_checkpoint("s"), path)
    with pytest.raises(CheckpointMismatchError):
        yolo_backbones.create("edgevit_xxs", num_classes=1000, pretrained=str(path))


# ------------------------------------------------------------------------------ detection mode
@pytest.mark.parametrize("variant", ["xxs", "xs"])
@pytest.mark.parametrize("hw", [(256, 256), (320, 640), (64, 96)])
def test_detection_output_shapes(variant, hw):
    model = yolo_backbones.create(f"edgevit_{variant}", **DETECTION, out_indices=(0, 1, 2, 3)).eval()
    h, w = hw
    with torch.no_grad():
        outs = model(torch.rand(2, 3, h, w))
    assert isinstance(outs, list) and len(outs) == 4
    expected = [(2, c, h // s, w // s) for c, s in zip(CHANNELS[variant], (4, 8, 16, 32))]
    assert [tuple(o.shape) for o in outs] == expected
    assert all(torch.isfinite(o).all() for o in outs)


def test_s_variant_and_out_indices_subset():
    model = EdgeViT("s", out_indices=(1, 2, 3), **DETECTION).eval()
    with torch.no_grad():
        outs = model(torch.rand(1, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 96, 8, 8), (1, 240, 4, 4), (1, 384, 2, 2)]
    # Stopping early: only stages 0..1 are built and computed, and they equal the full run's.
    early = EdgeViT("s", out_indices=(0, 1), **DETECTION)
    kept = ("patch_embed1.", "patch_embed2.", "blocks1.", "blocks2.")
    early.load_state_dict({k: v for k, v in model.state_dict().items() if k.startswith(kept)})
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        a = early.eval()(x)
        b = model.forward_stages((x - model.input_mean) / model.input_std, 3)
    assert len(a) == 2 and torch.allclose(a[1], b[1])


def test_training_batch1_forward():
    # The YOLOv5 stride probe: a single 256x256 image in training mode.
    model = EdgeViT("xxs", out_indices=(1, 2, 3), **DETECTION).train()
    outs = model(torch.zeros(1, 3, 256, 256))
    assert [tuple(o.shape) for o in outs] == [(1, 72, 32, 32), (1, 144, 16, 16), (1, 288, 8, 8)]


def test_smallest_input():
    model = EdgeViT("xxs", out_indices=(0, 1, 2, 3), **DETECTION).eval()
    with torch.no_grad():
        outs = model(torch.rand(1, 3, 32, 32))
    assert [tuple(o.shape[-2:]) for o in outs] == [(8, 8), (4, 4), (2, 2), (1, 1)]


# --------------------------------------------------------------------------- argument checking
def test_bad_input_size_raises():
    model = EdgeViT("xxs", **DETECTION)
    with pytest.raises(InputSizeError, match="multiples of 32"):
        model(torch.rand(1, 3, 100, 100))
    with pytest.raises(InputSizeError, match="multiples of 32"):
        model(torch.rand(1, 3, 64, 80))


def test_unknown_variant_raises():
    with pytest.raises(ValueError, match="xxs, xs, s"):
        EdgeViT("tiny", **DETECTION)
    with pytest.raises(ValueError, match="edgevit_xxs"):
        yolo_backbones.create("edgevit_tiny")


@pytest.mark.parametrize("bad", [(4,), (2, 1), (), (-1, 2), (1, 1)])
def test_bad_out_indices_raise(bad):
    with pytest.raises(ValueError, match="out_indices"):
        EdgeViT("xxs", out_indices=bad, **DETECTION)


# ------------------------------------------------------------------------- training behaviour
def test_backward_reaches_every_parameter():
    torch.manual_seed(0)
    model = EdgeViT("xxs", out_indices=(0, 1, 2, 3), **DETECTION)
    assert not any(k.startswith("head.") for k in model.state_dict())  # no classifier in detection mode
    x = torch.rand(2, 3, 64, 64)
    for mode in ("train", "eval"):
        model.train(mode == "train")
        model.zero_grad(set_to_none=True)
        outs = model(x)
        # Random weights, so the loss is not invariant to per-channel shifts (as a plain sum would be
        # after the training-mode BatchNorm).
        loss = sum((o * torch.randn_like(o)).sum() for o in outs)
        loss.backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None]
        assert not missing, f"{mode}: no gradient for {missing}"
        assert all(torch.isfinite(p.grad).all() for p in model.parameters())
        if mode == "eval":  # with running statistics no branch is cancelled by a norm
            zero = [n for n, p in model.named_parameters() if not p.grad.abs().sum() > 0]
            assert not zero, f"zero gradient for {zero}"


def test_drop_path_rate_builds_stochastic_depth():
    model = EdgeViT("xxs", drop_path_rate=0.1, **DETECTION)
    # Linear decay over the 7 blocks: block 0 has rate 0 (no DropPath module), the last block 0.1.
    rates = sorted({m.drop_prob for m in model.modules() if type(m).__name__ == "DropPath"})
    assert len(rates) == 6 and rates[0] > 0 and rates[-1] == pytest.approx(0.1)
    model.train()
    outs = model(torch.rand(2, 3, 64, 64))
    assert len(outs) == 3


def test_inplace_activation_flags_do_not_change_outputs():
    # YOLOv5 sets `inplace = True` on every activation module that has the attribute.
    model = EdgeViT("xxs", out_indices=(0, 1, 2, 3), **DETECTION).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        for m in model.modules():
            if hasattr(m, "inplace"):
                m.inplace = True
        out = model(x)
    for a, b in zip(ref, out):
        assert torch.equal(a, b)


def test_jit_trace_matches_eager():
    model = EdgeViT("xxs", out_indices=(1, 2, 3), **DETECTION).eval()
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about the input-size check and deprecation
        traced = torch.jit.trace(model, x, strict=False)
    with torch.no_grad():
        for a, b in zip(traced(x), model(x)):
            # The graph holds the export formulation (transposed conv for the local propagation, pooling for the
            # delegates) where eager inference runs a multiply-add: the same function up to float rounding.
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6 * float(b.abs().max()))


def test_half_precision_has_no_fp32_leftovers():
    model = EdgeViT("xxs", out_indices=(1, 2, 3), **DETECTION).eval().half()
    tensors = list(model.parameters()) + [b for b in model.buffers() if b.is_floating_point()]
    assert all(t.dtype == torch.float16 for t in tensors)
    try:
        with torch.no_grad():
            outs = model(torch.rand(1, 3, 64, 64).half())
    except (RuntimeError, NotImplementedError) as e:  # some CPU builds lack fp16 kernels
        if "not implemented" in str(e).lower():
            pytest.skip(f"fp16 kernel missing on this CPU build: {e}")
        raise
    assert all(o.dtype == torch.float16 and torch.isfinite(o).all() for o in outs)


# ------------------------------------------------------------------ sparse attention reference
def reference_sparse_attention(attn: GlobalSparseAttn, x: torch.Tensor) -> torch.Tensor:
    """Explicit EdgeViT global sparse attention on a ``(B, H, W, C)`` grid, written with loops/einsum."""
    B, H, W, C = x.shape
    r, nh = attn.sr_ratio, attn.num_heads
    hd = C // nh
    idx_h, idx_w = torch.arange(0, H, r), torch.arange(0, W, r)
    sub = x[:, idx_h][:, :, idx_w]  # delegates: every r-th row and column
    h, w = sub.shape[1:3]
    tokens = sub.reshape(B, h * w, C)
    qkv = tokens @ attn.qkv.weight.T + attn.qkv.bias
    q, k, v = qkv[..., :C], qkv[..., C:2 * C], qkv[..., 2 * C:]
    heads = []
    for i in range(nh):
        qi, ki, vi = (t[..., i * hd:(i + 1) * hd] for t in (q, k, v))
        weights = torch.softmax(qi @ ki.transpose(-1, -2) / hd ** 0.5, dim=-1)
        heads.append(weights @ vi)
    y = torch.cat(heads, dim=-1).reshape(B, h, w, C)
    if r > 1:
        # Depth-wise transposed conv with kernel = stride = r: each delegate paints its r x r cell.
        kern = attn.LocalProp.weight[:, 0]  # (C, r, r)
        y = torch.einsum("bijc,cuv->biujvc", y, kern).reshape(B, h * r, w * r, C) + attn.LocalProp.bias
        y = F.layer_norm(y, (C,), attn.norm.weight, attn.norm.bias, attn.norm.eps)
    return y @ attn.proj.weight.T + attn.proj.bias


@pytest.mark.parametrize("sr,heads,hw", [(4, 1, (8, 12)), (2, 2, (6, 10)), (2, 5, (4, 4)), (1, 4, (3, 5))])
def test_global_sparse_attention_matches_explicit_reference(sr, heads, hw):
    torch.manual_seed(0)
    dim = 20 * heads if heads != 4 else 32
    attn = GlobalSparseAttn(dim, heads, sr_ratio=sr).eval()
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_(0, 0.3)
        x = torch.randn(2, *hw, dim)
        out, ref = attn(x), reference_sparse_attention(attn, x)
    assert out.shape == (2, *hw, dim)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------- whole-network reference
def _bn(m: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    return F.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)


def _conv(m: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    return F.conv2d(x, m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups)


def _ln_tokens(m: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, m.normalized_shape, m.weight, m.bias, m.eps)


def reference_edgevit(model: EdgeViT, x: torch.Tensor) -> torch.Tensor:
    """Eval-mode EdgeViT classifier written out with functional ops on flat ``(B, N, C)`` tokens."""
    for s in range(1, 5):
        pe = getattr(model, f"patch_embed{s}")
        x = _conv(pe.proj, x)
        B, C, H, W = x.shape
        x = _ln_tokens(pe.norm, x.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(B, C, H, W)
        for blk in getattr(model, f"blocks{s}"):
            la = blk.LocalAgg
            if isinstance(la, nn.Module) and hasattr(la, "conv1"):
                x = x + _conv(la.pos_embed, x)
                x = x + _conv(la.conv2, _conv(la.attn, _conv(la.conv1, _bn(la.norm1, x))))
                x = x + _conv(la.mlp.fc2, F.gelu(_conv(la.mlp.fc1, _bn(la.norm2, x))))
            sa = blk.SelfAttn
            x = x + _conv(sa.pos_embed, x)
            t = x.flatten(2).transpose(1, 2)
            grid = _ln_tokens(sa.norm1, t).reshape(B, H, W, C)
            t = t + reference_sparse_attention(sa.attn, grid).reshape(B, H * W, C)
            h = _ln_tokens(sa.norm2, t)
            hidden = F.gelu(F.linear(h, sa.mlp.fc1.weight, sa.mlp.fc1.bias))
            t = t + F.linear(hidden, sa.mlp.fc2.weight, sa.mlp.fc2.bias)
            x = t.transpose(1, 2).reshape(B, C, H, W)
    x = _bn(model.norm, x)
    return F.linear(x.flatten(2).mean(-1), model.head.weight, model.head.bias)


def _randomise(model: nn.Module, seed: int = 0) -> None:
    """Give every float tensor (incl. BN statistics) random values so no branch is near-identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, t in model.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) + 0.5 if k.endswith("running_var")
                        else torch.randn(t.shape, generator=g) * 0.2)


def test_whole_network_matches_functional_reference():
    model = EdgeViT("xxs", num_classes=7).eval()
    _randomise(model)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        out, ref = model(x), reference_edgevit(model, x)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


def test_final_norm_applied_to_stride32_output():
    model = EdgeViT("xxs", out_indices=(2, 3), **DETECTION).eval()
    _randomise(model)
    captured = {}
    model.blocks4[-1].register_forward_hook(lambda m, i, o: captured.update(pre=o))
    with torch.no_grad():
        outs = model(torch.rand(1, 3, 64, 64))
        torch.testing.assert_close(outs[-1], model.norm(captured["pre"]))


def test_batch1_training_at_32x32_for_yolov5_flops_probe():
    # YOLOv5's model_info profiles a deep copy in training mode at stride x stride (32x32): the final
    # BatchNorm then sees a 1x1 map of one image and must not raise.
    model = EdgeViT("xxs", **DETECTION).train()
    outs = model(torch.rand(1, 3, 32, 32))
    assert [tuple(o.shape) for o in outs] == [(1, 72, 4, 4), (1, 144, 2, 2), (1, 288, 1, 1)]


def test_detection_mode_builds_only_the_stages_it_returns(tmp_path):
    model = EdgeViT("xxs", out_indices=(0, 1, 2), **DETECTION)
    names = {n.split(".")[0] for n, _ in model.named_parameters()}
    assert "blocks4" not in names and "patch_embed4" not in names and "norm" not in names
    outs = model(torch.rand(2, 3, 64, 64))
    sum(o.sum() for o in outs).backward()
    assert all(p.grad is not None for p in model.parameters()), "every built parameter is used"
    # A full ImageNet checkpoint still loads: the unbuilt stage's keys are skipped.
    full = EdgeViT("xxs", num_classes=1000)
    path = tmp_path / "full.pth"
    torch.save(full.state_dict(), path)
    loaded = EdgeViT("xxs", out_indices=(0, 1, 2), pretrained=str(path), **DETECTION)
    torch.testing.assert_close(loaded.blocks3[0].SelfAttn.attn.qkv.weight, full.blocks3[0].SelfAttn.attn.qkv.weight)


def test_truncated_checkpoint_file_gives_a_clear_error(tmp_path):
    full = tmp_path / "full.pth"
    torch.save(EdgeViT("xxs", num_classes=1000).state_dict(), full)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(CheckpointFileError, match=r"cut\.pth: is a damaged or truncated checkpoint"):
        yolo_backbones.create("edgevit_xxs", num_classes=1000, pretrained=str(cut))
