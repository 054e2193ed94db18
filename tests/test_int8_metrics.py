"""INT8 accuracy figures (yolo_backbones.deploy.int8.accuracy) and calibration images, on hand-made inputs.

Fast: no model, no quantization. The end-to-end INT8 tests are in test_int8.py.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from yolo_backbones.deploy.int8 import accuracy as acc
from yolo_backbones.deploy.int8.calibration import calibration_batches, dataset_images, image_labels, letterbox

ROOT = Path(__file__).resolve().parents[1]


def test_cosine_and_sqnr_known_values():
    a = np.array([3.0, 4.0])
    assert acc.cosine(a, a * 2) == pytest.approx(1.0)
    assert acc.cosine(a, np.array([-4.0, 3.0])) == pytest.approx(0.0, abs=1e-12)
    assert acc.cosine(a, -a) == pytest.approx(-1.0)
    # signal power 25, noise power 0.25 -> 20 dB
    assert acc.sqnr_db(a, a + np.array([0.3, 0.4])) == pytest.approx(20.0)
    assert acc.sqnr_db(a, a) == math.inf


def test_guess_layout_and_head_parts():
    assert acc.guess_layout((1, 100, 85), 80) == "yolov5"
    assert acc.guess_layout((1, 84, 100), 80) == "ultralytics"
    assert acc.guess_layout((1, 300, 6), 80) == "end2end"
    with pytest.raises(ValueError, match="none of"):
        acc.guess_layout((1, 100, 7), 80)
    out = np.arange(2 * 84 * 5, dtype=np.float32).reshape(2, 84, 5)
    boxes, scores = acc.head_parts(out, "ultralytics")
    assert boxes.shape == (2, 5, 4) and scores.shape == (2, 5, 80)
    assert boxes[1, 2, 3] == out[1, 3, 2]


def _ultralytics_output(boxes_xywh, class_scores, nc=3):
    """(1, 4 + nc, N) from per-box xywh and per-box score vectors."""
    return np.concatenate([np.array(boxes_xywh, np.float32), np.array(class_scores, np.float32)], 1).T[None]


def test_detections_nms_and_yolov5_objectness():
    out = _ultralytics_output([[50, 50, 20, 20], [51, 50, 20, 20], [150, 150, 10, 10]],
                              [[0.9, 0, 0], [0.8, 0, 0], [0, 0.5, 0]])
    (d,) = acc.detections(out, "ultralytics")
    assert len(d.boxes) == 2  # the overlapping same-class box is suppressed
    np.testing.assert_allclose(d.boxes[0], [40, 40, 60, 60])
    assert list(d.classes) == [0, 1] and d.scores[0] == pytest.approx(0.9)
    v5 = np.array([[[50, 50, 20, 20, 0.5, 0.2, 0.8]]], np.float32)  # objectness 0.5 x class 0.8
    (d5,) = acc.detections(v5, "yolov5")
    assert d5.classes[0] == 1 and d5.scores[0] == pytest.approx(0.4)


def test_agreement_identical_is_one_and_drops_with_errors():
    boxes = [[40, 40, 20, 20], [120, 60, 30, 40], [60, 130, 16, 24]]
    ref = _ultralytics_output(boxes, [[0.9, 0, 0], [0, 0.7, 0], [0, 0, 0.6]])
    assert acc.compare_outputs([ref], [ref], "ultralytics")["agreement_map50"] == pytest.approx(1.0)
    moved = _ultralytics_output([[40, 40, 20, 20], [140, 60, 30, 40], [60, 130, 16, 24]],
                                [[0.9, 0, 0], [0, 0.7, 0], [0, 0, 0.6]])  # second box shifted by 2/3 of its width
    wrong_class = _ultralytics_output(boxes, [[0.9, 0, 0], [0.7, 0, 0], [0, 0, 0.6]])
    shifted = acc.compare_outputs([ref], [moved], "ultralytics")
    assert shifted["agreement_map50"] < 0.75 and shifted["reference_boxes"] == 3
    assert acc.compare_outputs([ref], [wrong_class], "ultralytics")["agreement_map50"] < 0.75
    # a low-confidence reference box is not ground truth: missing it costs nothing
    faint = _ultralytics_output(boxes, [[0.9, 0, 0], [0, 0.7, 0], [0, 0, 0.1]])
    dropped = _ultralytics_output(boxes[:2], [[0.9, 0, 0], [0, 0.7, 0]])
    assert acc.agreement_map50(acc.detections(faint, "ultralytics"),
                               acc.detections(dropped, "ultralytics"))[0] == pytest.approx(1.0)


def test_agreement_undefined_without_reference_detections():
    quiet = _ultralytics_output([[40, 40, 20, 20]], [[0.1, 0, 0]])
    with pytest.raises(ValueError, match="detects something"):
        acc.compare_outputs([quiet], [quiet], "ultralytics")


def test_end2end_layout():
    out = np.array([[[10, 10, 30, 30, 0.9, 2], [50, 50, 70, 90, 0.3, 0], [0, 0, 1, 1, 0.0, 0]]], np.float32)
    (d,) = acc.detections(out, "end2end")
    assert list(d.classes) == [2, 0] and len(d.boxes) == 2
    assert acc.compare_outputs([out], [out], "end2end")["agreement_map50"] == pytest.approx(1.0)


def test_calibration_images_from_embedded_coco8():
    files = dataset_images("coco8.yaml", "val")
    assert len(files) == 8 and all(f.suffix == ".jpg" for f in files)
    assert dataset_images(ROOT / "data" / "coco8.yaml", "val", limit=3) == files[:3]
    batches = list(calibration_batches("coco8.yaml", 64, limit=4, batch=2))
    assert len(batches) == 2 and batches[0].shape == (2, 3, 64, 64) and batches[0].dtype == np.float32
    assert 0.0 <= batches[0].min() and batches[0].max() <= 1.0
    assert image_labels(files[0]).shape[1] == 5
    with pytest.raises(ValueError, match="no test: split"):
        dataset_images("coco8.yaml", "test")
    with pytest.raises(FileNotFoundError, match="not found"):
        dataset_images("no_such_data.yaml")


def test_letterbox_keeps_aspect_and_centres():
    image = np.zeros((50, 100, 3), np.uint8)
    image[..., 2] = 255  # red in BGR
    lb = letterbox(image, 64)
    assert lb.image.shape == (3, 64, 64) and lb.scale == pytest.approx(0.64)
    assert lb.pad == (0.0, 16.0)
    assert lb.image[0, 32, 32] == pytest.approx(1.0) and lb.image[2, 32, 32] == 0.0  # RGB order
    assert lb.image[0, 2, 32] == pytest.approx(114 / 255)  # gray padding above


@pytest.mark.slow
def test_litert_int8_quantizer_keeps_outputs_and_float_io(tmp_path):
    """quantize_litert: a small conv net converted by litert-torch, quantized on 8 images: int8 inside (smaller
    file), float32 input/output, outputs close to the float model's."""
    pytest.importorskip("litert_torch")
    pytest.importorskip("ai_edge_quantizer")
    import litert_torch
    from ai_edge_litert.interpreter import Interpreter

    from yolo_backbones.deploy.int8.litert import quantize_litert

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, 2, 1), torch.nn.SiLU(), torch.nn.Conv2d(16, 32, 3, 2, 1),
                                torch.nn.SiLU(), torch.nn.Conv2d(32, 8, 1)).eval()
    rng = np.random.default_rng(0)
    images = [rng.random((1, 3, 64, 64), dtype=np.float32) for _ in range(8)]
    litert_torch.convert(model, (torch.from_numpy(images[0]),)).export(str(tmp_path / "float.tflite"))
    quantize_litert(tmp_path / "float.tflite", tmp_path / "int8.tflite", images)

    def run(path):
        runner = Interpreter(model_path=str(path)).get_signature_runner("serving_default")
        return np.concatenate([next(iter(runner(args_0=x).values())) for x in images])

    reference, quantized = run(tmp_path / "float.tflite"), run(tmp_path / "int8.tflite")
    assert quantized.dtype == np.float32
    assert acc.cosine(reference, quantized) > 0.999 and acc.sqnr_db(reference, quantized) > 30
    assert (tmp_path / "int8.tflite").stat().st_size < 0.6 * (tmp_path / "float.tflite").stat().st_size
    # float_ops: every CONV_2D left in float keeps the float file's weights (and its size)
    quantize_litert(tmp_path / "float.tflite", tmp_path / "conv_float.tflite", images, float_ops=["CONV_2D"])
    assert (tmp_path / "conv_float.tflite").stat().st_size > 0.9 * (tmp_path / "float.tflite").stat().st_size
    assert acc.sqnr_db(reference, run(tmp_path / "conv_float.tflite")) > 30
    with pytest.raises(ValueError, match="unknown TFLite operator.*'ATTENTION'.*known: ADD"):
        quantize_litert(tmp_path / "float.tflite", tmp_path / "x.tflite", images, float_ops=["ATTENTION"])


class _DeadGate(torch.nn.Module):
    """A conv map scaled by a gate from an MLP whose hidden ReLU never fires (as a Mobile-Former hyper-function's
    can on a few calibration images): its int8 ranges are empty."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, 2, 1)
        self.hidden, self.out = torch.nn.Linear(8, 16), torch.nn.Linear(16, 8)
        with torch.no_grad():
            self.hidden.bias.fill_(-100.0)

    def forward(self, x):
        y = self.conv(x)
        return y * self.out(torch.relu(self.hidden(y.mean((2, 3)))))[:, :, None, None]


@pytest.mark.slow
def test_litert_int8_leaves_operators_xnnpack_cannot_run_in_float(tmp_path, monkeypatch):
    """An empty calibrated range makes a layer's requantization scale one XNNPACK refuses, and the interpreter then
    refuses the whole file; quantize_litert finds such layers and leaves them in float."""
    pytest.importorskip("litert_torch")
    pytest.importorskip("ai_edge_quantizer")
    import litert_torch
    from ai_edge_litert.interpreter import Interpreter

    import yolo_backbones.deploy.int8.litert as litert_int8
    from yolo_backbones.deploy.int8.xnnpack_limits import xnnpack_unfit_outputs

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    images = [rng.random((1, 3, 32, 32), dtype=np.float32) for _ in range(8)]
    model = _DeadGate().eval()
    litert_torch.convert(model, (torch.from_numpy(images[0]),)).export(str(tmp_path / "float.tflite"))

    monkeypatch.setattr(litert_int8, "_MAX_REQUANTIZATIONS", 1)  # the plain quantization only
    with pytest.raises(RuntimeError, match="XNNPACK cannot run 2 quantized operator"):
        litert_int8.quantize_litert(tmp_path / "float.tflite", tmp_path / "plain.tflite", images)
    assert len(xnnpack_unfit_outputs(tmp_path / "plain.tflite")) == 2
    with pytest.raises(RuntimeError, match="XNNPACK"):
        Interpreter(model_path=str(tmp_path / "plain.tflite")).allocate_tensors()

    monkeypatch.undo()
    litert_int8.quantize_litert(tmp_path / "float.tflite", tmp_path / "int8.tflite", images)
    assert xnnpack_unfit_outputs(tmp_path / "int8.tflite") == []
    runner = Interpreter(model_path=str(tmp_path / "int8.tflite")).get_signature_runner("serving_default")
    quantized = np.concatenate([next(iter(runner(args_0=x).values())) for x in images])
    with torch.no_grad():
        reference = np.concatenate([model(torch.from_numpy(x)).numpy() for x in images])
    assert acc.cosine(reference, quantized) > 0.99


def test_module_paths_of_both_converters_and_keep_rules():
    """Node names of TorchScript- and ONNX-converted graphs give the same module path; rules match it."""
    from yolo_backbones.deploy.int8.openvino import module_path
    from yolo_backbones.deploy.int8.scopes import HEAD_SCORE_BRANCH, KeepRule

    ts = "__module.model.0.blocks1.0.SelfAttn.attn.qkv/aten::linear/MatMul"
    onnx = "/model.0/blocks1.0/SelfAttn/attn/qkv/MatMul"
    assert module_path(ts) == module_path(onnx) == "model.0.blocks1.0.SelfAttn.attn.qkv"
    assert module_path("MVN_35") is None and module_path("/Concat") is None
    rule = KeepRule(r"\.attn\.qkv$", "test")
    assert rule.matches(module_path(ts)) and not rule.matches("model.0.blocks1.0.SelfAttn.attn.proj")
    assert HEAD_SCORE_BRANCH.matches("model.23.cv3.1.2", head="model.23")
    assert not HEAD_SCORE_BRANCH.matches("model.23.cv2.1.2", head="model.23")
    assert not HEAD_SCORE_BRANCH.matches("model.2.cv3.0", head="model.23")  # a neck C2f's cv3 is not the head's
    assert not HEAD_SCORE_BRANCH.matches("model.23.cv3.1.2", head=None)
    with pytest.raises(ValueError, match="within"):
        KeepRule("x", "test", within="neck")


def test_export_int8_without_data_calibrates_on_embedded_coco8():
    """The root export.py adds --data coco8.yaml for --int8 (and only then); an explicit --data is kept."""
    from yolo_backbones.cli.commands import prepare_argv

    argv = prepare_argv("export", ["--weights", "best.pt", "--include", "openvino", "--int8"])
    assert Path(argv[argv.index("--data") + 1]) == ROOT / "data" / "coco8.yaml"
    assert "--data" not in prepare_argv("export", ["--weights", "best.pt", "--include", "openvino"])
    mine = prepare_argv("export", ["--weights", "best.pt", "--int8", "--data", "/data/mine.yaml"])
    assert mine.count("--data") == 1 and "/data/mine.yaml" in mine


def test_nncf_keeps_left_weight_matmul_in_float_and_quantizes():
    """A talking-heads product ``W @ x + b`` (constant on the left, EfficientFormerV2's ``mix_heads``) is found by
    structure and kept out of NNCF, whose fast bias correction fails on it; the conv around it is still INT8."""
    ov = pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    from openvino import opset13 as ops

    from yolo_backbones.deploy.int8.openvino import fp32_nodes, left_constant_matmuls, quantize_openvino

    rng = np.random.default_rng(0)
    image = ops.parameter([1, 3, 8, 8], np.float32, name="images")
    conv = ops.convolution(image, ops.constant(rng.standard_normal((8, 3, 1, 1)).astype(np.float32)),
                           [1, 1], [0, 0], [0, 0], [1, 1], name="/model.0/conv/Conv")
    conv = ops.add(conv, ops.constant(rng.standard_normal((1, 8, 1, 1)).astype(np.float32)))
    flat = ops.reshape(conv, ops.constant(np.array([1, 8, 64])), False)  # (B, heads, Nq * Nk)
    mixed = ops.matmul(ops.constant(rng.standard_normal((8, 8)).astype(np.float32)), flat, False, False,
                       name="/model.0/attn/MatMul")
    # a bias large beside the shift INT8 causes: NNCF then applies its correction (the reshape that failed)
    mixed = ops.add(mixed, ops.constant(np.full((1, 8, 1), 100, np.float32)))
    model = ov.Model([ops.reshape(mixed, ops.constant(np.array([1, 8, 8, 8])), False)], [image])
    assert left_constant_matmuls(model) == ["/model.0/attn/MatMul"]
    assert "/model.0/attn/MatMul" in fp32_nodes(model, ())

    images = [rng.random((1, 3, 8, 8), dtype=np.float32) for _ in range(4)]
    quantized = quantize_openvino(model, images)  # NNCF 3.4 raised "cannot reshape array ..." here before
    quantized_inputs = {t.get_node().get_friendly_name() for op in quantized.get_ops()
                        if op.get_type_name() == "FakeQuantize" for t in op.output(0).get_target_inputs()}
    assert "/model.0/conv/Conv" in quantized_inputs and "/model.0/attn/MatMul" not in quantized_inputs
