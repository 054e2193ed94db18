"""The fast inference paths compute the plain function: channels-last layout, fused CPU kernels, algebraic rewrites.

Each rewrite is checked against the straightforward computation it replaces: channels-last vs NCHW
inference, a fused model on the oneDNN kernels vs the same model on the plain ops, the dynamic ReLU folded
into the next conv, the pixel->token bridge as matrix products, the explicit biased attention and talking
heads, the pooling mixer's lerp, and the allocator setting.
"""
from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import torch
from test_fuse import randomise
from torch import nn

from yolo_backbones.core import layers
from yolo_backbones.core.edgevit import EdgeViT
from yolo_backbones.core.efficientformer.v1 import EfficientFormer, Meta4D
from yolo_backbones.core.efficientformer.v2 import EfficientFormerV2
from yolo_backbones.core.inference import context, onednn
from yolo_backbones.core.layers import fused as fused_layers
from yolo_backbones.core.layers.layout import heads_to_map, is_channels_last, map_to_heads
from yolo_backbones.core.mobileformer import Global2Local, MobileFormer, dynamic_relu, dynamic_relu_conv

from helpers import DETECTION, single_thread  # noqa: F401  (autouse: one torch thread per test)

CASES = {
    "edgevit_xxs": (EdgeViT, "xxs"),
    "mobileformer_26m": (MobileFormer, "26m"),
    "mobileformer_52m": (MobileFormer, "52m"),
    "efficientformer_l1": (EfficientFormer, "l1"),
    "efficientformerv2_s0": (EfficientFormerV2, "s0"),
}
TOL = dict(atol=1e-4, rtol=1e-4)


def run(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        out = model(x)
    return list(out) if isinstance(out, (list, tuple)) else [out]


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request) -> tuple[str, nn.Module]:
    torch.manual_seed(0)
    cls, variant = CASES[request.param]
    return request.param, randomise(cls(variant, **DETECTION).eval())


# ------------------------------------------------------------------------------------------------ layout
def test_eval_runs_channels_last_with_the_nchw_values(case) -> None:
    _, model = case
    x = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    nchw = copy.deepcopy(model)
    nchw.inference_layout = lambda t: t  # the layout training uses
    got, ref = run(model, x), run(nchw, x)
    assert all(is_channels_last(t) for t in got)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, **TOL)


def test_training_keeps_the_input_layout(case) -> None:
    _, model = case
    x = torch.rand(2, 3, 64, 64)
    assert copy.deepcopy(model).train().inference_layout(x) is x


def test_heads_round_trip_in_both_layouts() -> None:
    x = torch.randn(2, 12, 5, 7)
    for t in (x, x.contiguous(memory_format=torch.channels_last)):
        heads = map_to_heads(t, 3)
        assert heads.shape == (2, 3, 35, 4)
        back = heads_to_map(heads.contiguous(), t)
        assert torch.equal(back, x) and is_channels_last(back) == is_channels_last(t)


# ------------------------------------------------------------------------------------- fused kernels
def test_fused_model_on_fused_kernels_matches_plain_ops(case, monkeypatch) -> None:
    name, model = case
    fused = copy.deepcopy(model).fuse()
    x = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(2))
    got = run(fused, x)
    monkeypatch.setattr(context, "_available", False)  # the same fused model on the plain torch ops
    ref = run(fused, x)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, **TOL)
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in fused.parameters() if w.ndim == 4)


def test_unfused_model_never_uses_fused_kernels(case, monkeypatch) -> None:
    _, model = case
    calls = []
    real = torch.ops.mkldnn._convolution_pointwise
    monkeypatch.setattr(context, "fused_kernels_available", lambda: calls.append(1) or True)
    run(model, torch.rand(1, 3, 64, 64))
    assert not calls  # an eval model without fuse() computes like its traced / exported graph
    assert torch.ops.mkldnn._convolution_pointwise is real


def test_fused_kernels_step_aside_for_hooks_and_flop_counting() -> None:
    conv = nn.Conv2d(8, 16, 1).eval()
    x = torch.randn(1, 8, 6, 6).contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), context.fused_forward():
        assert onednn.fusable(conv, x) == context.fused_kernels_available()
        seen = []
        handle = conv.register_forward_hook(lambda *a: seen.append(1))
        assert not onednn.fusable(conv, x)
        onednn.conv(conv, x, "gelu")
        handle.remove()
        assert seen  # the module ran, so hook-based counters (thop) see it
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            onednn.conv(conv, x, "relu")
        assert counter.get_total_flops() == 2 * 8 * 16 * 36
        from torch.utils._python_dispatch import TorchDispatchMode

        class Recorder(TorchDispatchMode):  # a mode without module hooks, entered inside the forward
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                return func(*args, **(kwargs or {}))

        with Recorder():
            assert not onednn.fusable(conv, x)
    assert not onednn.fusable(conv, x)  # outside a fused backbone's forward


# ------------------------------------------------------------------------------------- rewrites
@pytest.mark.parametrize("groups,mult", [(1, 1), (0, 1), (0, 3), (4, 1)])
@pytest.mark.parametrize("zero_slope", [False, True])
def test_dynamic_relu_folded_into_next_conv(groups, mult, zero_slope) -> None:
    g = torch.Generator().manual_seed(0)
    c = 12
    groups = groups or c
    conv = nn.Sequential(nn.Conv2d(c, c * mult if groups == c else 8, 3 if groups == c else 1,
                                   padding=1 if groups == c else 0, groups=groups, bias=False),
                         nn.BatchNorm2d(c * mult if groups == c else 8)).eval()
    randomise(conv)
    x = torch.randn(1, c, 9, 7, generator=g).contiguous(memory_format=torch.channels_last)
    coeffs = torch.rand(1, 2 * c, 1, 1, generator=g)
    if zero_slope:  # a1 = 0 and a2 <= 0 somewhere: p = 0, the fold does not apply
        coeffs[0, 0], coeffs[0, c] = 0.0, 0.2
    residual = torch.randn_like(conv(x))
    with torch.no_grad():
        ref = conv(dynamic_relu(x, coeffs)) + residual
        torch.testing.assert_close(dynamic_relu_conv(x, coeffs, conv, residual), ref, **TOL)
        batch = torch.cat([x, x.flip(0)]), torch.cat([coeffs, coeffs])
        torch.testing.assert_close(dynamic_relu_conv(*batch, conv), conv(dynamic_relu(*batch)), **TOL)


def test_global_to_local_matrix_form_matches_attention() -> None:
    torch.manual_seed(0)
    bridge = Global2Local(24, 32).eval()
    x = torch.randn(2, 24, 7, 9)
    tokens = torch.randn(2, 5, 32)
    ref = bridge(x, tokens)  # autograd on: the attention kernel path
    fused = copy.deepcopy(bridge)
    fused.fuse_()
    with torch.no_grad(), context.fused_forward():  # the fused form: two matrix products over the pixels
        got = fused(x.contiguous(memory_format=torch.channels_last), tokens)
    assert is_channels_last(got)
    torch.testing.assert_close(got, ref.detach(), **TOL)


@pytest.mark.parametrize("variant", ["52m", "294m", "26m"])
@pytest.mark.parametrize("classes", [0, 1000])
def test_fused_mobileformer_token_path_matches_unfused(variant, classes) -> None:
    """Single-image fused inference (merged slope / bridge Linears, narrow-head matmuls, one-thread token work)
    computes the unfused model's function, also where a slope a1 is 0 (the fold steps aside for that block)."""
    g = torch.Generator().manual_seed(3)
    model = randomise(MobileFormer(variant, num_classes=classes).eval())
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):  # varied slopes and gates, several saturated
                m.weight.normal_(0.0, 0.3, generator=g)
                m.bias.normal_(0.0, 1.0, generator=g)
        model.features[1].hyper1.hyper[2].bias[0] = -50.0  # a1 = 0 for one channel of block 1
    fused = copy.deepcopy(model).fuse()
    x = torch.rand(1, 3, 64, 96, generator=g)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        ref, got = run(model, x), run(fused, x)
        assert torch.get_num_threads() == 2  # the one-thread token sections restore the thread count
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, atol=1e-4 * float(b.abs().max()), rtol=1e-4)


@pytest.mark.parametrize("helpers", [layers, fused_layers], ids=["reference", "fused"])
@pytest.mark.parametrize("batch", [1, 3])
def test_explicit_attention_helpers(batch, helpers) -> None:
    biased_scores, mix_heads, softmax_attention = helpers.biased_scores, helpers.mix_heads, helpers.softmax_attention
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(batch, 4, 10, 8, generator=g), torch.randn(batch, 4, 14, 8, generator=g)
    v, bias = torch.randn(batch, 4, 14, 6, generator=g), torch.randn(4, 10, 14, generator=g)
    scores = biased_scores(q, k, bias, 0.3)
    torch.testing.assert_close(scores, q @ k.transpose(-1, -2) * 0.3 + bias, **TOL)
    ref = torch.softmax(q @ k.transpose(-1, -2) * 0.3 + bias, -1) @ v
    torch.testing.assert_close(softmax_attention(q, k, v, bias, 0.3), ref, **TOL)
    talk = nn.Conv2d(4, 4, 1)
    torch.testing.assert_close(mix_heads(scores, talk), talk(scores), **TOL)


def test_pooling_mixer_lerp_matches_formula() -> None:
    torch.manual_seed(0)
    block = randomise(Meta4D(16)).eval()
    x = torch.randn(2, 16, 9, 9)
    with torch.no_grad():
        mixed = x + block.layer_scale_1[:, None, None] * (block.token_mixer(x))
        ref = mixed + block.layer_scale_2[:, None, None] * block.mlp(mixed)
        torch.testing.assert_close(block(x), ref, **TOL)
        with context.fused_forward():  # the fused form: one lerp pass for the pooling mixer
            torch.testing.assert_close(block(x), ref, **TOL)


# ------------------------------------------------------------------------------------- allocator
@pytest.mark.slow
def test_allocator_tuning_is_opt_in_and_idempotent() -> None:
    code = ("import yolo_backbones, torch; from yolo_backbones.core.inference import runtime; "
            "yolo_backbones.create('edgevit_xxs', features_only=True).eval().fuse(); "
            "print(runtime._tuned, runtime.tune_cpu_allocator() is runtime.tune_cpu_allocator())")
    env = {k: v for k, v in os.environ.items() if k != "YOLO_BACKBONES_MALLOC_TUNING"}
    plain = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert plain.stdout.split()[0] == "None"  # fuse() left the allocator alone
    assert plain.stdout.split()[1] == "True"
    asked_code = code.replace("print(runtime._tuned", "print(runtime._tuned is not None")
    asked = subprocess.run([sys.executable, "-c", asked_code], capture_output=True, text=True,
                           env={**env, "YOLO_BACKBONES_MALLOC_TUNING": "1"}, check=True)
    assert asked.stdout.split()[0] == "True"  # fuse() tuned it: asked for in the environment
