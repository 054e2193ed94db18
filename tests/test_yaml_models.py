"""Every model YAML in models/ as a YOLOv5 detector: build, info, training step, EMA, checkpoint, ONNX.

These are the checks YOLOv5 itself relies on, run for each plugin YAML (the backbone-specific tests
live in test_<backbone>.py).
"""
from __future__ import annotations

import copy
import io
import logging

import numpy as np
import pytest
import torch
import yaml

import yolo_backbones
from yolo_backbones.resources import MODELS_DIR

yolo = pytest.importorskip("yolov5.models.yolo")
from yolov5.utils.loss import ComputeLoss  # noqa: E402
from yolov5.utils.torch_utils import ModelEMA, model_info  # noqa: E402

YAMLS = sorted(p.name for p in MODELS_DIR.glob("yolov5_*.yaml"))
HYP = {"box": 0.05, "cls": 0.5, "cls_pw": 1.0, "obj": 1.0, "obj_pw": 1.0, "anchor_t": 4.0, "fl_gamma": 0.0,
       "label_smoothing": 0.0}


@pytest.fixture(scope="module", params=YAMLS)
def detector(request) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = yaml.safe_load((MODELS_DIR / request.param).read_text())
    model = yolo.Model(cfg)
    model.hyp = HYP
    return model


def test_yamls_exist() -> None:
    assert "yolov5_edgevit.yaml" in YAMLS


@pytest.mark.slow
def test_backbone_row_and_strides(detector) -> None:
    backbone = detector.model[0]
    assert isinstance(backbone, yolo_backbones.core.base.Backbone)
    assert detector.stride.tolist() == [8.0, 16.0, 32.0]
    # The first parameter is the stem conv weight: YOLOv5's FLOP count reads the input channels from it.
    first = next(detector.parameters())
    assert first.ndim == 4 and first.shape[1] == 3


@pytest.mark.slow
def test_model_info_reports_gflops(detector) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("yolov5")
    logger.addHandler(handler)
    try:
        model_info(detector, False, 640)  # (model, verbose, imgsz): the keyword differs between YOLOv5 versions
    finally:
        logger.removeHandler(handler)
    assert "GFLOPs" in stream.getvalue(), f"GFLOPs silently dropped: {stream.getvalue()!r}"


@pytest.mark.slow
def test_training_step_reaches_every_parameter(detector) -> None:
    """YOLOv5's loss on a rect batch: every parameter gets a finite gradient (DDP needs no unused params)."""
    detector.train()
    detector.zero_grad(set_to_none=True)
    images = torch.rand(2, 3, 192, 256)
    targets = torch.tensor([[0, 0, 0.5, 0.5, 0.4, 0.3], [1, 3, 0.3, 0.6, 0.2, 0.5]])
    loss, _ = ComputeLoss(detector)(detector(images), targets)
    loss.backward()
    missing = [n for n, p in detector.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:10]}"
    assert all(torch.isfinite(p.grad).all() for p in detector.parameters())


@pytest.mark.slow
def test_ema_and_checkpoint_round_trip(detector, tmp_path) -> None:
    """What train.py does: EMA (deepcopy), an FP16 checkpoint of the whole model, safe reload, same outputs."""
    ema = ModelEMA(detector)
    ema.update(detector)
    ckpt = {"epoch": 0, "model": copy.deepcopy(detector).half(), "ema": copy.deepcopy(ema.ema).half(),
            "best_fitness": np.array([0.0]), "optimizer": None, "opt": {}}
    path = tmp_path / "last.pt"
    torch.save(ckpt, path)
    loaded = yolo_backbones.load_checkpoint(path, map_location="cpu")["ema"].float().eval()
    reference = copy.deepcopy(ema.ema).half().float().eval()
    x = torch.rand(1, 3, 160, 224)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)[0], reference(x)[0])


@pytest.mark.slow
def test_onnx_export_matches_pytorch(detector, tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    model = copy.deepcopy(detector).float().eval()
    model.fuse()
    model.model[-1].export = True  # what export.py sets: Detect returns only the inference tensor
    x = torch.rand(1, 3, 160, 224)
    with torch.no_grad():
        model(x)  # dry run, as export.py does (builds Detect grids)
        expected = model(x)[0].numpy()
    path = tmp_path / "model.onnx"
    torch.onnx.export(model, x, str(path), opset_version=17, input_names=["images"], output_names=["output0"],
                      dynamo=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": x.numpy()})[0]
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3 * max(1.0, float(np.abs(expected).max())))
