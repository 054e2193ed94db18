"""OpenVINO INT8 end to end: one small model of each backbone family, fitted on the embedded coco8 images,
quantized on them, and held to the targets of docs/int8.md against its FP32 IR; the hosts' export routes
(``export.py --include openvino --int8``, ``yolo export format=openvino quantize=8``) write INT8 models that
``val.py`` / ``yolo val`` run with the FP32 model's mAP.

The reference detectors are fitted here (scripts/fit_probe_model.py, seeded) at a small size and few steps to keep
the CI cost down; the fit only has to make the FP32 model detect something (agreement is scored against its own
detections).
"""
from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run

pytestmark = pytest.mark.slow
pytest.importorskip("onnx")
if importlib.util.find_spec("openvino") is None or importlib.util.find_spec("nncf") is None:
    pytest.skip("openvino and nncf are not installed (pip install 'yolo-backbones[openvino]')", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]
IMG = 128  # fitting, calibration and evaluation size
STEPS = 120  # fitting steps of batch 8: enough for confident detections on the 8 images at this size
# one small model per backbone family, both hosts (the last is also the ultralytics route's model)
MODELS = ["yolov5_edgevit", "yolov5_mobileformer_52m", "yolo11_efficientformerv2_s0"]
ULTRALYTICS_MODEL = "yolo11_efficientformerv2_s0"
AGREEMENT = 0.9  # target of docs/int8.md
# docs/int8.md's score-cosine target is 0.99 for reference models fitted with the full recipe (160 px, 300 steps);
# the quicker fit here leaves less confident scores, whose relative INT8 error is larger (yolo11_edgevit: 0.974 at
# 128 px / 150 steps, 0.9996 with the full recipe), so the test holds the score cosine to this lower bound.
COSINE = 0.97


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> dict[str, Path]:
    """Checkpoints of MODELS fitted on coco8 (lazily, one per model, cached for the module)."""
    folder = tmp_path_factory.mktemp("int8")
    fit = _script("fit_probe_model")
    cache: dict[str, Path] = {}

    class Lazy(dict):
        def __missing__(self, name: str) -> Path:
            model, host = fit.fit(f"{name}.yaml", "coco8.yaml", imgsz=IMG, steps=STEPS, seed=0, log_every=0)
            cache[name] = fit.save(model, host, folder / name / f"{name}.pt")
            return cache[name]

    return Lazy()


@pytest.mark.parametrize("name", MODELS)
def test_int8_keeps_detections(fitted, name):
    """Agreement mAP50 of the INT8 model against its FP32 IR reaches the target; score cosine its lower bound."""
    acc = _script("int8_accuracy")
    row = acc.measure(f"{name}.yaml", acc.parse_args(["--imgsz", str(IMG), "--probe-dir", str(fitted[name].parent)]))
    print(row)  # the figures, for docs/int8.md (pytest -s)
    assert row["reference_boxes"] >= 8, f"the fitted FP32 model detects too little to score agreement: {row}"
    assert row["cosine_scores"] >= COSINE, row
    assert row["agreement_map50"] >= AGREEMENT, row
    assert row["sqnr_boxes_db"] > 20 and row["cosine_all"] >= 0.99, row


def _map50(text: str) -> float:
    """mAP50 of the 'all' row of a YOLOv5 / ultralytics validation printout."""
    match = re.search(r"^\s*all\s+\d+\s+\d+\s+[\d.]+\s+[\d.]+\s+([\d.]+)\s+[\d.]+", text, re.M)
    assert match, text[-3000:]
    return float(match.group(1))


def test_yolov5_export_int8_and_val(fitted):
    """export.py --include openvino --int8 --data coco8.yaml writes an INT8 IR; val.py runs it at the FP32 mAP."""
    weights = fitted["yolov5_edgevit"]
    work = weights.parent
    run([sys.executable, str(ROOT / "export.py"), "--weights", str(weights), "--img", str(IMG), "--include",
         "openvino", "--int8", "--data", "coco8.yaml", "--device", "cpu"], cwd=work)
    folder = work / f"{weights.stem}_int8_openvino_model"
    xml = (folder / f"{weights.stem}.xml").read_text()
    assert "FakeQuantize" in xml or 'element_type="i8"' in xml
    assert (folder / f"{weights.stem}.yaml").is_file()
    maps = []
    for model in (weights, folder):
        proc = run([sys.executable, str(ROOT / "val.py"), "--weights", str(model), "--img", str(IMG), "--data",
                    "coco8.yaml", "--device", "cpu", "--project", str(work / "val"), "--name", model.name], cwd=work)
        maps.append(_map50(proc.stdout + proc.stderr))
    assert maps[0] > 0.1, f"the fitted model detects little: mAP50 {maps[0]}"
    assert abs(maps[1] - maps[0]) <= 0.1 * maps[0] + 0.02, f"FP32 mAP50 {maps[0]} vs INT8 {maps[1]}"


def test_ultralytics_export_int8_and_val(fitted):
    """yolo export format=openvino quantize=8 data=coco8.yaml, then yolo val on it: the FP32 mAP, kept."""
    weights = fitted[ULTRALYTICS_MODEL]
    work = weights.parent
    yolo = str(Path(sys.executable).with_name("yolo"))
    run([yolo, "export", f"model={weights}", "format=openvino", "quantize=8", "data=coco8.yaml", f"imgsz={IMG}"],
        cwd=work)
    folder = work / f"{weights.stem}_int8_openvino_model"
    xml = (folder / f"{weights.stem}.xml").read_text()
    assert "FakeQuantize" in xml or 'element_type="i8"' in xml
    maps = []
    for model in (weights, folder):
        proc = run([yolo, "val", f"model={model}", "data=coco8.yaml", f"imgsz={IMG}", "batch=1",
                    f"project={work / 'val'}", f"name={model.name}", "plots=False"], cwd=work)
        maps.append(_map50(proc.stdout + proc.stderr))
    assert maps[0] > 0.1, f"the fitted model detects little: mAP50 {maps[0]}"
    assert abs(maps[1] - maps[0]) <= 0.1 * maps[0] + 0.02, f"FP32 mAP50 {maps[0]} vs INT8 {maps[1]}"


def test_int8_export_without_nncf_names_the_fix(monkeypatch):
    """A missing NNCF is a one-line error with the install command, not a traceback from inside the exporter."""
    from yolo_backbones.deploy.int8 import openvino as int8_ov

    monkeypatch.setitem(sys.modules, "nncf", None)
    with pytest.raises(int8_ov.NNCFUnavailableError, match=r"yolo-backbones\[openvino\]"):
        int8_ov.quantize_openvino(object(), [np.zeros((1, 3, 32, 32), np.float32)])
