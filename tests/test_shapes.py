"""Every YAML at the sizes YOLOv5 feeds: square 256-1280, rect batches, batch 1 and 16, train and eval mode."""
from __future__ import annotations

import pytest
import torch
import yaml

from yolo_backbones.core.base import InputSizeError
from yolo_backbones.resources import MODELS_DIR

yolo = pytest.importorskip("yolov5.models.yolo")

YAMLS = sorted(p.name for p in MODELS_DIR.glob("yolov5_*.yaml"))
SIZES = [(256, 256), (320, 320), (640, 640), (1280, 1280), (640, 480), (480, 640), (320, 192)]


@pytest.fixture(scope="module", params=YAMLS)
def detector(request) -> torch.nn.Module:
    torch.manual_seed(0)
    return yolo.Model(yaml.safe_load((MODELS_DIR / request.param).read_text()))


def expected_anchors(h: int, w: int) -> int:
    return 3 * sum((h // s) * (w // s) for s in (8, 16, 32))


@torch.no_grad()
def test_every_size_in_train_and_eval_mode(detector) -> None:
    """Batch 1 at every size; train mode returns the three raw maps, eval mode the decoded boxes."""
    for h, w in SIZES:
        x = torch.rand(1, 3, h, w)
        detector.train()
        maps = detector(x)
        assert [tuple(m.shape) for m in maps] == [(1, 3, h // s, w // s, 85) for s in (8, 16, 32)], (h, w)
        detector.eval()
        pred = detector(x)[0]
        assert pred.shape == (1, expected_anchors(h, w), 85) and torch.isfinite(pred).all(), (h, w)


@torch.no_grad()
def test_batch_16(detector) -> None:
    """Batch 16 (YOLOv5's default batch size) in both modes; each image's result equals its batch-1 result."""
    x = torch.rand(16, 3, 320, 192)
    detector.train()
    assert detector(x)[0].shape == (16, 3, 40, 24, 85)
    detector.eval()
    batched = detector(x)[0]
    assert batched.shape == (16, expected_anchors(320, 192), 85)
    torch.testing.assert_close(batched[5:6], detector(x[5:6])[0], rtol=1e-4, atol=1e-3)


def test_sizes_the_model_cannot_take_fail_before_computing(detector) -> None:
    """Sides must be multiples of 32 for every detector (the neck joins the stride-16 and stride-32 maps)."""
    backbone = detector.model[0]
    assert backbone.input_multiple == 32
    stem = next(backbone.children())
    stem_calls = []
    handle = stem.register_forward_hook(lambda m, a, o: stem_calls.append(1))
    try:
        with pytest.raises(InputSizeError, match=r"multiples of 32.*got 200x136"):
            detector.eval()(torch.rand(1, 3, 200, 136))
    finally:
        handle.remove()
    assert not stem_calls, "the size is rejected before the stem runs"
