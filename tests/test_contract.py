"""The contract every registered backbone keeps, one parametrised test per property (timm's feature API included).

For each name of ``backbone_names()``: ``create()`` builds what the class builds; the classifier, pooled and
feature-extractor modes and their outputs; ``feature_info``, ``forward_intermediates`` and
``prune_intermediate_layers`` as timm defines them; fusing is exact; a state_dict round trip and a pickle
round trip (through the plugin's checkpoint loader) give the same outputs.
"""
from __future__ import annotations

import copy
import io

import pytest
import torch
from test_fuse import randomise

from yolo_backbones import backbone_names, create, load_checkpoint
from yolo_backbones.core.features import FeatureInfo
from yolo_backbones.core.registry import backbone_classes

from helpers import n_params, single_thread  # noqa: F401  (autouse: one torch thread per test)

# The largest variants only in the full run: building them twice per test takes seconds.
LARGE = {"efficientformer_l3", "efficientformer_l7", "efficientformerv2_l", "efficientformerv2_s2", "edgevit_s",
         "mobileformer_508m", "mobileformer_294m", "mobileformer_214m"}
NAMES = [pytest.param(n, marks=pytest.mark.slow) if n in LARGE else n for n in backbone_names()]
IMG = (1, 3, 64, 96)  # multiples of 32 (EdgeViT), non-square
TOL = dict(atol=1e-4, rtol=1e-4)


def _image(seed: int = 0, batch: int = 1) -> torch.Tensor:
    return torch.rand(batch, *IMG[1:], generator=torch.Generator().manual_seed(seed))


def _features(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return randomise(create(name, features_only=True, **kwargs)).eval()


def _run(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        out = model(x)
    return list(out) if isinstance(out, (list, tuple)) else [out]


def _assert_same(got: list[torch.Tensor], expected: list[torch.Tensor], **tol) -> None:
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, **(tol or dict(atol=0.0, rtol=0.0)))


@pytest.mark.parametrize("name", NAMES)
def test_create_builds_what_the_class_builds(name) -> None:
    family, _, variant = name.rpartition("_")
    cls = next(c for c in backbone_classes().values() if c.family == family)
    torch.manual_seed(0)
    made = create(name)
    torch.manual_seed(0)
    direct = cls(variant)
    assert type(made) is cls and made.num_classes == direct.num_classes == 1000 and not made.features_only
    sd, ref = made.state_dict(), direct.state_dict()
    assert list(sd) == list(ref) and all(torch.equal(sd[k], ref[k]) for k in sd)
    with pytest.raises(ValueError, match="features_only"):
        create(name, out_indices=(1, 2, 3))  # stage maps need the feature switch, as in timm


@pytest.mark.parametrize("name", NAMES)
def test_classifier_pooled_and_feature_modes(name) -> None:
    torch.manual_seed(0)
    classifier = create(name, num_classes=7).eval()
    pooled = create(name, num_classes=0).eval()
    features = create(name, features_only=True).eval()
    x = _image(1, batch=2)
    logits, = _run(classifier, x)
    assert logits.shape == (2, 7) and torch.isfinite(logits).all()
    feats, = _run(pooled, x)
    assert feats.ndim == 2 and feats.shape[0] == 2 and torch.isfinite(feats).all()
    # The pooled model is the classifier without its last layer(s): fewer parameters, same trunk keys.
    assert n_params(pooled) < n_params(classifier)
    assert set(pooled.state_dict()) < set(classifier.state_dict())
    maps = _run(features, x)
    info = features.feature_info
    assert isinstance(info, FeatureInfo) and len(info) == 4
    assert features.out_indices == (1, 2, 3) and info.channels() == features.out_channels
    assert info.reduction() == [8, 16, 32] == features.out_strides
    for m, c, s in zip(maps, info.channels(), info.reduction()):
        assert m.shape == (2, c, -(-IMG[2] // s), -(-IMG[3] // s))
    assert [d["module"] for d in info.get_dicts()] == info.module_name()
    assert all(features.get_submodule(n) is not None for n in info.module_name())
    # Nothing of the classifier is left in a feature extractor.
    assert not any(k.startswith(tuple(features.classifier_prefixes)) for k in features.state_dict())


@pytest.mark.parametrize("name", NAMES)
def test_forward_intermediates_and_pruning(name) -> None:
    whole = _features(name, out_indices=(0, 1, 2, 3))
    x = _image(2)
    maps = _run(whole, x)
    with torch.no_grad():
        # The feature extractor's forward is forward_intermediates with the final norm on the stride-32 map.
        _assert_same(whole.forward_intermediates(x, whole.out_indices, norm=True, intermediates_only=True), maps)
        final, picked = whole.forward_intermediates(x, indices=2, norm=True)  # timm's rule: an int is the last n
        _assert_same(picked, maps[2:])
        _assert_same([final], maps[3:])
        _assert_same(whole.forward_intermediates(x, [0, -3], stop_early=True, intermediates_only=True), maps[:2])
        assert torch.equal(whole.forward_features(x), maps[3])
    with pytest.raises(ValueError, match="out of range"):
        whole.forward_intermediates(x, [4])
    # Pruning to stages 0-1 leaves the feature extractor that returns them, with the same values.
    short = copy.deepcopy(whole)
    assert short.prune_intermediate_layers((0, 1)) == [0, 1]
    assert short.features_only and short.out_indices == (0, 1) and short.num_built_stages == 2
    _assert_same(_run(short, x), maps[:2])
    with pytest.raises(ValueError, match="out of range"):
        short.forward_intermediates(x, [2])
    # The same structure as a feature extractor built for stages 0-1, or a pruned pooled model.
    built = create(name, features_only=True, out_indices=(0, 1))
    pooled = create(name, num_classes=0)
    pooled.prune_intermediate_layers((0, 1))
    for other in (built, pooled):
        assert list(other.state_dict()) == list(short.state_dict()) and n_params(other) == n_params(short)
        assert set(other.pruned_modules()) == set(short.pruned_modules()) != set()
        other.load_state_dict(short.state_dict())
        _assert_same(_run(other.eval(), x), maps[:2])


@pytest.mark.parametrize("name", NAMES)
def test_fusing_is_exact(name) -> None:
    model = _features(name, input_norm=True)
    model.set_eval_fusion(False)
    fused = copy.deepcopy(model).fuse()
    assert fused.fused and fused.fused_forms
    for batch in (1, 2):
        x = _image(3, batch)
        expected = _run(model, x)
        got = _run(fused, x)
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b, atol=1e-4 * float(b.abs().max()), rtol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_and_pickle_round_trips(name, tmp_path) -> None:
    model = _features(name, input_norm=True)
    x = _image(4)
    expected = _run(model, x)
    torch.manual_seed(1)
    other = create(name, features_only=True, input_norm=True).eval()
    other.load_state_dict(model.state_dict(), strict=True)
    _assert_same(_run(other, x), expected)
    path = tmp_path / "model.pt"
    torch.save({"model": model, "epoch": 1}, path)
    loaded = load_checkpoint(path, map_location="cpu")["model"].eval()
    assert type(loaded) is type(model) and loaded.features_only and loaded.out_indices == model.out_indices
    _assert_same(_run(loaded, x), expected)
    buffer = io.BytesIO()
    torch.save(copy.deepcopy(model).fuse(), buffer)  # a fused model pickles too (its fused forms included)
    buffer.seek(0)
    fused = load_checkpoint(buffer, map_location="cpu").eval()
    _assert_same(_run(fused, x), expected, atol=1e-4 * max(float(e.abs().max()) for e in expected), rtol=1e-4)
