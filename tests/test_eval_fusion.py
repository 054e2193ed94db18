"""Eval fusion: eval-mode forwards without autograd run a fused copy, and only when no one can tell the difference."""
from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from test_fuse import randomise
from torch import nn

from yolo_backbones import create
from yolo_backbones.core.inference.eval_fusion import TWIN_ATTRIBUTE

from helpers import DETECTION, single_thread  # noqa: F401  (autouse: one torch thread per test)

pytestmark = pytest.mark.eval_fusion
TOL = dict(atol=1e-4, rtol=0.0)
NAMES = ("edgevit_xxs", "mobileformer_26m", "efficientformer_l1", "efficientformerv2_s0")


def own_layers(model: nn.Module, x: torch.Tensor):
    """The module's own eval forward (eval fusion off for this call)."""
    model.set_eval_fusion(False)
    try:
        with torch.no_grad():
            return model(x)
    finally:
        model.set_eval_fusion(True)


def as_list(out) -> list[torch.Tensor]:
    return list(out) if isinstance(out, (list, tuple)) else [out]


@pytest.fixture(scope="module", params=NAMES)
def backbone(request) -> nn.Module:
    torch.manual_seed(0)
    return randomise(create(request.param, **DETECTION, out_indices=(1, 2, 3))).eval()


def test_eval_forward_runs_the_fused_twin_with_the_same_outputs(backbone) -> None:
    x = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = as_list(backbone(x))
        twin = backbone.eval_twin()
    assert twin is not None and twin.fused and twin is not backbone
    with torch.no_grad():
        assert backbone.eval_twin() is twin  # built once, reused while the weights are unchanged
    expected = as_list(own_layers(backbone, x))
    assert not getattr(backbone, "fused", False)  # the module itself is untouched
    for g, e in zip(got, expected, strict=True):
        assert g.shape == e.shape
        torch.testing.assert_close(g, e, **TOL)


def test_autograd_tracing_hooks_and_training_use_the_own_layers(backbone) -> None:
    x = torch.rand(1, 3, 64, 64)
    out = as_list(backbone(x))  # grad enabled and parameters require grad: a graph must reach them
    assert out[0].grad_fn is not None and backbone.eval_twin() is None
    with torch.no_grad():
        assert backbone.eval_twin() is not None
        seen = []
        handle = next(m for m in backbone.modules() if isinstance(m, nn.Conv2d)).register_forward_hook(
            lambda *args: seen.append(1))
        try:
            assert backbone.eval_twin() is None
            backbone(x)
        finally:
            handle.remove()
        assert seen == [1]  # the hook saw the real layer
    traced = torch.jit.trace(backbone, x, check_trace=False, strict=False)
    assert "batch_norm" in str(traced.inlined_graph)  # the exported graph records the module's own layers
    backbone.train()
    assert TWIN_ATTRIBUTE not in backbone.__dict__  # training frees the copy
    backbone.eval()


def test_weight_changes_rebuild_the_twin(backbone) -> None:
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    model = copy.deepcopy(backbone)
    with torch.no_grad():
        model(x)
        first = model.eval_twin()
        bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
        bn.running_mean.add_(0.5)  # an in-place update (optimizer step, EMA, BN statistics)
        second = model.eval_twin()
        assert second is not None and second is not first
        for g, e in zip(as_list(model(x)), as_list(own_layers(model, x)), strict=True):
            torch.testing.assert_close(g, e, **TOL)
        state = model.state_dict()
        stem = next(k for k, v in state.items() if v.ndim == 4)
        state[stem] = state[stem] * 1.01
        model.load_state_dict(state)  # copies in place
        assert model.eval_twin() is not second
        for g, e in zip(as_list(model(x)), as_list(own_layers(model, x)), strict=True):
            torch.testing.assert_close(g, e, **TOL)


def test_structure_and_dtype_changes_drop_the_twin(backbone) -> None:
    model = copy.deepcopy(backbone)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        model(x)
    assert TWIN_ATTRIBUTE in model.__dict__
    parent, name = next((p, n) for p in model.modules() for n, c in p.named_children() if isinstance(c, nn.Conv2d))
    setattr(parent, name, copy.deepcopy(getattr(parent, name)))  # a layer swapped in
    assert TWIN_ATTRIBUTE not in model.__dict__
    with torch.no_grad():
        model(x)
        model.double()
        assert TWIN_ATTRIBUTE not in model.__dict__
        out = as_list(model(x.double()))
    assert all(o.dtype == torch.float64 for o in out)


def test_the_twin_is_never_copied_pickled_or_listed(backbone) -> None:
    model = copy.deepcopy(backbone)
    keys = list(model.state_dict())
    n_modules = len(list(model.modules()))
    with torch.no_grad():
        model(torch.rand(1, 3, 64, 64))
    assert TWIN_ATTRIBUTE in model.__dict__
    assert list(model.state_dict()) == keys and len(list(model.modules())) == n_modules
    assert TWIN_ATTRIBUTE not in copy.deepcopy(model).__dict__
    buffer = io.BytesIO()
    torch.save(model, buffer)
    assert b"_eval_twin" not in buffer.getvalue() and b"_Twin" not in buffer.getvalue()
    assert TWIN_ATTRIBUTE not in pickle.loads(pickle.dumps(model)).__dict__


def test_switches_turn_it_off(backbone, monkeypatch) -> None:
    from yolo_backbones.core.inference import eval_fusion

    with torch.no_grad():
        backbone.set_eval_fusion(False)
        assert backbone.eval_twin() is None and TWIN_ATTRIBUTE not in backbone.__dict__
        backbone.set_eval_fusion(True)
        assert backbone.eval_twin() is not None
        monkeypatch.setattr(eval_fusion, "ENABLED", False)
        assert backbone.eval_twin() is None


def test_imagenet_classifier_in_inference_mode() -> None:
    torch.manual_seed(0)
    model = randomise(create("efficientformerv2_s0", num_classes=10)).eval()
    x = torch.rand(1, 3, 224, 224)
    with torch.inference_mode():
        got = model(x)
        assert model.eval_twin() is not None
    torch.testing.assert_close(got, own_layers(model, x), **TOL)
