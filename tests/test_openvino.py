"""OpenVINO: export.py --include openvino (static and --dynamic), val.py/detect.py on the exported folder, parity.

The export and inference run through the real entry points in fresh processes (root ``export.py`` for the
static model, the PyPI package's ``yolov5 export`` for the dynamic one); parity is checked in-process through
``DetectMultiBackend``, the class val.py and detect.py use, against the PyTorch model from the same checkpoint.
A cheap check over every model YAML converts the ONNX graph of ``test_onnx_dynamic`` (Detect output plus the
backbone maps, randomly perturbed weights) and compares OpenVINO with PyTorch at sizes other than the export size.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import run
from helpers import single_thread  # noqa: F401  (autouse: one torch thread per test)

pytest.importorskip("onnx")
if importlib.util.find_spec("openvino") is None:  # found, not imported: a plain import would start its telemetry
    pytest.skip("openvino is not installed", allow_module_level=True)

from test_onnx_dynamic import WithFeatures, export_dynamic, perturb  # noqa: E402
from yolo_backbones.deploy import openvino as ovc  # noqa: E402

pytestmark = pytest.mark.slow  # end-to-end: subprocesses, training, exports

ROOT = Path(__file__).resolve().parents[1]
# One YAML per backbone family (the conversion path is per operator set; the other variants repeat it).
MODELS = [ROOT / "models" / f"yolov5_{name}.yaml" for name in ("edgevit", "mobileformer", "efficientformer",
                                                               "efficientformerv2_s0")]
CFG = ROOT / "models" / "yolov5_edgevit.yaml"
IMG = 128
RTOL = 1e-3  # of the largest absolute Detect output (boxes are in pixels)
SCORE_ATOL = 1e-3  # objectness / class scores on their own
FEATURE_RTOL = 1e-4  # backbone maps, of each map's largest absolute value (f32 OpenVINO is at ~1e-6)
NAMES = {i: f"class_{i}" for i in range(80)}


def build(cfg: Path) -> torch.nn.Module:
    """An eval-mode detector from ``cfg`` with seeded, perturbed weights (see test_onnx_dynamic.perturb)."""
    from yolov5.models.yolo import Model

    torch.manual_seed(0)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        model = Model(str(cfg)).eval()
    perturb(model)
    return model


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """A float32 checkpoint of yolov5_edgevit with class names, as train.py's ``{'model': ...}`` dict."""
    model = build(CFG)
    model.names = dict(NAMES)
    path = tmp_path_factory.mktemp("ov") / "best.pt"
    torch.save({"model": model, "epoch": -1}, path)
    return path


@pytest.fixture(scope="module")
def static_model(weights: Path) -> Path:
    """``python export.py --include openvino`` (root wrapper, argparse) at IMG x IMG."""
    run([sys.executable, str(ROOT / "export.py"), "--weights", str(weights), "--img", str(IMG), "--include",
         "openvino", "--device", "cpu"], cwd=weights.parent)
    return weights.parent / "best_openvino_model"


@pytest.fixture(scope="module")
def dynamic_model(weights: Path) -> Path:
    """``yolov5 export --include openvino --dynamic`` (the PyPI package's python-fire CLI) on a copy of the weights."""
    cli = Path(sys.executable).with_name("yolov5")
    if not cli.exists():
        pytest.skip("the yolov5 console script is not installed next to this Python")
    copy = weights.with_name("dyn.pt")
    copy.write_bytes(weights.read_bytes())
    proc = run([str(cli), "export", "--weights", str(copy), "--img", str(IMG), "--include", "openvino", "--dynamic"],
               cwd=weights.parent)
    assert "OpenVINO: export success" in re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)
    return weights.parent / "dyn_openvino_model"


def test_export_writes_ir_and_yolov5_metadata(static_model: Path) -> None:
    assert sorted(p.name for p in static_model.iterdir()) == ["best.bin", "best.xml", "best.yaml"]
    meta = yaml.safe_load((static_model / "best.yaml").read_text())
    assert meta == {"stride": 32, "names": NAMES}
    core_model = ovc.import_openvino().Core().read_model(str(static_model / "best.xml"))
    assert str(core_model.inputs[0].get_partial_shape()) == f"[1,3,{IMG},{IMG}]"
    assert all(str(c.get_element_type()) == "<Type: 'float32'>" for c in core_model.get_ordered_ops()
               if c.get_type_name() == "Constant" and c.get_element_type().is_real()), "weights stay FP32"


def test_val_and_detect_run_on_the_openvino_folder(static_model: Path, tmp_path: Path) -> None:
    proc = run([sys.executable, str(ROOT / "val.py"), "--weights", f"{static_model}/", "--img", str(IMG),
                "--device", "cpu", "--project", str(tmp_path), "--name", "val"], cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert "for OpenVINO inference (f32)" in out
    assert re.search(r"\ball\s+8\s+52\s", out), out[-3000:]  # YOLOv5's summary row over the 8 coco8 images
    run([sys.executable, str(ROOT / "detect.py"), "--weights", str(static_model), "--img", str(IMG),
         "--device", "cpu", "--conf-thres", "0.001", "--project", str(tmp_path), "--name", "det"], cwd=tmp_path)
    assert len(list((tmp_path / "det").glob("*.jpg"))) == 8


def _backends(weights: Path, folder: Path):
    from yolov5.models.common import DetectMultiBackend

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return DetectMultiBackend(str(weights)), DetectMultiBackend(str(folder))


def _assert_close(out: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    assert out.shape == ref.shape, f"{what}: OpenVINO {tuple(out.shape)} vs PyTorch {tuple(ref.shape)}"
    err = (out - ref).abs().max().item()
    assert err <= RTOL * ref.abs().max().item(), f"{what}: max |ov - torch| {err:.3g}"
    score_err = (out[..., 4:] - ref[..., 4:]).abs().max().item()
    assert score_err <= SCORE_ATOL, f"{what}: scores max |ov - torch| {score_err:.3g}"


def test_static_openvino_matches_pytorch(weights: Path, static_model: Path) -> None:
    pt, ov = _backends(weights, static_model)
    assert (ov.xml, ov.pt, ov.stride, ov.names, ov.batch_size) == (True, False, 32, NAMES, 1)
    assert str(ov.ov_compiled_model.get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'float32'>"
    x = torch.rand(1, 3, IMG, IMG, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        _assert_close(ov(x), pt(x)[0], "static")
    with pytest.raises(ValueError, match=r"takes input shape \[1,3,128,128\].*--dynamic"):
        ov(torch.rand(1, 3, IMG + 32, IMG))


def test_dynamic_openvino_matches_pytorch(weights: Path, dynamic_model: Path) -> None:
    pt, ov = _backends(weights, dynamic_model)
    assert (ov.stride, ov.names) == (32, NAMES)
    g = torch.Generator().manual_seed(2)
    for shape in [(1, 3, IMG, IMG), (2, 3, 96, 160), (1, 3, 192, 64)]:
        x = torch.rand(*shape, generator=g)
        with torch.no_grad():
            _assert_close(ov(x), pt(x)[0], f"dynamic {shape}")


@pytest.mark.parametrize("cfg", MODELS, ids=[p.stem for p in MODELS])
def test_every_yaml_converts_with_parity(cfg: Path, tmp_path: Path, monkeypatch) -> None:
    """ONNX (dynamic, with the backbone maps as extra outputs) -> OpenVINO IR -> f32 CPU, vs PyTorch."""
    monkeypatch.setattr("test_onnx_dynamic.EXPORT_SIZE", 96)  # small and cheap; checked at other sizes below
    model = build(cfg)
    onnx_file = tmp_path / f"{cfg.stem}.onnx"
    with torch.no_grad():
        names = export_dynamic(model, onnx_file)
    xml = ovc.convert_onnx_to_openvino(onnx_file, tmp_path / "ov", {"stride": 32, "names": ["a"]})
    compiled = ovc.compile_openvino(xml, threads=1)
    g = torch.Generator().manual_seed(1)
    for shape in [(1, 3, 64, 128), (2, 3, 96, 64)]:
        x = torch.rand(*shape, generator=g)
        with torch.no_grad():
            refs = WithFeatures(model)(x)
        result = compiled(x.numpy())
        outs = [torch.from_numpy(result[compiled.output(n)]) for n in names]
        for name, out, ref in zip(names[1:], outs[1:], refs[1:]):
            assert out.shape == ref.shape, f"{shape} {name}: OpenVINO {tuple(out.shape)} vs {tuple(ref.shape)}"
            err = (out - ref).abs().max().item()
            assert err <= FEATURE_RTOL * ref.abs().max().item(), f"{shape} {name}: max |ov - torch| {err:.3g}"
        _assert_close(outs[0], refs[0], str(shape))


# --------------------------------------------------------------------------------------------- small pieces
def test_metadata_round_trip(tmp_path: Path) -> None:
    xml = tmp_path / "m.xml"
    ovc.write_metadata(xml.with_suffix(".yaml"), {"stride": np.int64(32), "names": {np.int64(0): np.str_("cat")}})
    assert ovc.read_metadata(xml) == (32, {0: "cat"})
    ovc.write_metadata(xml.with_suffix(".yaml"), {"stride": 16, "names": ["a", "b"]})
    assert ovc.read_metadata(xml) == (16, ["a", "b"])
    assert ovc.read_metadata(tmp_path / "none.xml") == (None, None)


def test_find_openvino_xml(tmp_path: Path) -> None:
    assert ovc.find_openvino_xml("best.pt") is None and ovc.find_openvino_xml("best.onnx") is None
    with pytest.raises(FileNotFoundError, match="not found"):
        ovc.find_openvino_xml(tmp_path / "gone_openvino_model")
    folder = tmp_path / "best_openvino_model"
    folder.mkdir()
    with pytest.raises(FileNotFoundError, match="holds no .xml"):
        ovc.find_openvino_xml(folder)
    (folder / "other.xml").write_text("")
    assert ovc.find_openvino_xml(f"{folder}/") == folder / "other.xml"
    (folder / "best.xml").write_text("")
    assert ovc.find_openvino_xml(folder) == folder / "best.xml"  # the one export.py names after the folder


def test_missing_openvino_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(ImportError, match="pip install openvino"):
        ovc.import_openvino()


def test_openvino_telemetry_stays_off(tmp_path: Path) -> None:
    """Once YOLOv5 is loaded with the plugin, even a plain ``import openvino`` (a clone's own export code) uses
    OpenVINO's no-op telemetry stub and writes no client-id files under ``~/intel``."""
    code = "import yolov5.export, openvino, openvino.tools.ovc.telemetry_utils as t; print(t.tm.__name__)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-1] == "openvino.tools.ovc.telemetry_stub"
    assert not (tmp_path / "intel").exists()
