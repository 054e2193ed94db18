"""Activation checkpointing of the backbones: same outputs, gradients and BatchNorm statistics as without it."""
from __future__ import annotations

import contextlib
import copy

import pytest
import torch
import yaml
from torch import nn

from yolo_backbones.core.edgevit import EdgeViT
from yolo_backbones.core.efficientformer.v1 import EfficientFormer
from yolo_backbones.core.efficientformer.v2 import EfficientFormerV2
from yolo_backbones.core.mobileformer import MobileFormer
from yolo_backbones.resources import MODELS_DIR

from helpers import DETECTION, single_thread  # noqa: F401  (autouse: one torch thread per test)

# (constructor, variant, extra kwargs): stochastic depth where the family has it, so masks must be replayed.
CASES = {
    "edgevit_xxs": (EdgeViT, "xxs", {"drop_path_rate": 0.2}),
    "mobileformer_26m": (MobileFormer, "26m", {}),
    "mobileformer_294m": (MobileFormer, "294m", {}),
    "efficientformer_l1": (EfficientFormer, "l1", {"drop_path_rate": 0.2}),
    "efficientformerv2_s0": (EfficientFormerV2, "s0", {"drop_path_rate": 0.2}),
}


def step(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    torch.manual_seed(1)  # the same stochastic-depth masks in both models
    outs = model(x)
    sum((o.float() ** 2).mean() for o in outs).backward()
    return outs


@pytest.mark.parametrize("name", sorted(CASES))
def test_checkpointing_changes_nothing_but_memory(name) -> None:
    cls, variant, kwargs = CASES[name]
    torch.manual_seed(0)
    plain = cls(variant, **kwargs, **DETECTION)
    checkpointed = copy.deepcopy(plain).set_grad_checkpointing()
    assert checkpointed.grad_checkpointing and "grad_checkpointing=True" in checkpointed.extra_repr()
    x = torch.rand(2, 3, 64, 64)
    for a, b in zip(step(plain, x), step(checkpointed, x)):
        assert torch.equal(a, b)
    for (n, p), q in zip(plain.named_parameters(), checkpointed.parameters()):
        assert p.grad is not None and torch.equal(p.grad, q.grad), n
    # The recomputation in backward is not a second BatchNorm update.
    for (n, s), t in zip(plain.state_dict().items(), checkpointed.state_dict().values()):
        assert torch.equal(s, t), n


def test_checkpointing_keeps_less_for_backward() -> None:
    """Tensors saved for backward by a training forward: only block boundaries remain with checkpointing."""
    torch.manual_seed(0)
    model = EfficientFormerV2("s0", **DETECTION)
    x = torch.rand(2, 3, 128, 128)

    def saved_bytes(m: nn.Module) -> int:
        seen: dict[int, int] = {}

        def pack(t: torch.Tensor, seen: dict[int, int] = seen) -> torch.Tensor:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            m(x)
        return sum(seen.values())

    plain = saved_bytes(model)
    checkpointed = saved_bytes(copy.deepcopy(model).set_grad_checkpointing())
    assert checkpointed < plain / 4


def test_checkpointing_off_in_eval_and_without_grad() -> None:
    model = MobileFormer("52m", grad_checkpointing=True, **DETECTION).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 64))
    assert all(o.grad_fn is None for o in out)


def test_yaml_keyword_options() -> None:
    yolo = pytest.importorskip("yolov5.models.yolo")
    import yolo_backbones  # noqa: F401  (patches YOLOv5)
    from yolo_backbones.hosts.common.rows import ModelConfigError

    cfg = yaml.safe_load((MODELS_DIR / "yolov5_mobileformer_52m.yaml").read_text())
    cfg["backbone"][0][3] = ["52m", [1, 2, 3], {"grad_checkpointing": True}]
    model = yolo.Model(copy.deepcopy(cfg))
    assert model.model[0].grad_checkpointing
    cfg["backbone"][0][3] = ["52m", [1, 2, 3], {"no_such_option": 1}]
    with pytest.raises(ModelConfigError, match="no_such_option"):
        yolo.Model(copy.deepcopy(cfg))


def test_dynamic_relu_keeps_only_its_input_for_backward() -> None:
    from yolo_backbones.core.mobileformer import dynamic_relu

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 5, 5, generator=g, requires_grad=True)
    coeffs = torch.rand(2, 12, 1, 1, generator=g, requires_grad=True)
    grad = torch.randn(2, 6, 5, 5, generator=g)
    h1, h2 = coeffs.chunk(2, dim=1)
    a1, a2 = (h1 - 0.5) * 2.0 + 1.0, (h2 - 0.5) * 2.0
    expected = torch.autograd.grad(torch.maximum(x * a1, x * a2), (x, coeffs), grad)
    saved: list[int] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        out = dynamic_relu(x, coeffs)
    assert sum(n for n in saved if n == x.numel()) == x.numel()  # one full-size map, not three
    for a, b in zip(torch.autograd.grad(out, (x, coeffs), grad), expected):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name, at_most", [("efficientformer_l1", 0.97), ("efficientformerv2_s0", 0.85)])
def test_recomputed_intermediates_change_nothing_but_memory(name, at_most) -> None:
    """BN -> GELU chains and attention matrices recomputed in backward (always on in training): the same
    outputs, gradients and BatchNorm statistics as keeping them, and less kept for backward."""
    from yolo_backbones.core import checkpointing

    cls, variant, kwargs = CASES[name]
    torch.manual_seed(0)
    recomputing = cls(variant, **kwargs, **DETECTION)
    keeping = copy.deepcopy(recomputing)
    x = torch.rand(2, 3, 64, 64)
    saved = {}
    for key, model in (("recompute", recomputing), ("keep", keeping)):
        seen: dict[int, int] = {}

        def pack(t: torch.Tensor, seen: dict[int, int] = seen) -> torch.Tensor:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        # Inside a checkpointed block nothing is recomputed locally: that is the "keep everything" baseline.
        flag = checkpointing._flag(checkpointing._IN_CHECKPOINT) if key == "keep" else contextlib.nullcontext()
        with flag, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            outs = step(model, x)
        saved[key] = (sum(seen.values()), outs)
    for a, b in zip(saved["recompute"][1], saved["keep"][1]):
        assert torch.equal(a, b)
    for (n, p), q in zip(recomputing.named_parameters(), keeping.parameters()):
        assert p.grad is not None and torch.equal(p.grad, q.grad), n
    for (n, s), t in zip(recomputing.state_dict().items(), keeping.state_dict().values()):
        assert torch.equal(s, t), n
    assert saved["recompute"][0] < at_most * saved["keep"][0]
