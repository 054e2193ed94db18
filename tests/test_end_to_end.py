"""The real YOLOv5 entry points on the embedded data: train -> best.pt -> val / detect / export, fresh processes.

Every step runs as its own process, like a user would run it, with no network access needed.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from conftest import IMG, run  # and the session fixture `trained`

pytestmark = pytest.mark.slow  # end-to-end: subprocesses, training, exports

ROOT = Path(__file__).resolve().parents[1]


def test_training_writes_a_plugin_checkpoint(trained: Path) -> None:
    assert trained.is_file() and (trained.parent / "last.pt").is_file()
    code = ("import sys, yolo_backbones; ck = yolo_backbones.load_checkpoint(sys.argv[1], map_location='cpu');"
            "m = ck['model']; b = m.model[0];"
            "print(type(b).__module__, type(b).__name__, b.variant, list(b.out_channels), m.yaml_file, ck['epoch'])")
    out = run([sys.executable, "-c", code, str(trained)], cwd=trained.parent).stdout.split()
    assert out[:5] == ["yolo_backbones.core.edgevit.model", "EdgeViT", "xxs", "[72,", "144,"]
    assert out[-1] == "-1", "strip_optimizer marks a finished checkpoint with epoch -1"


def test_val_reports_metrics_and_saves_coco_json(trained: Path, tmp_path: Path) -> None:
    proc = run([sys.executable, str(ROOT / "val.py"), "--weights", str(trained), "--img", str(IMG), "--device", "cpu",
                "--save-json", "--conf-thres", "0", "--project", str(tmp_path), "--name", "val"], cwd=tmp_path)
    # YOLOv5's summary row: class "all", 8 images, 52 labels, then P, R, mAP50, mAP50-95.
    row = re.search(r"\ball\s+8\s+52\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)", proc.stdout + proc.stderr)
    assert row, (proc.stdout + proc.stderr)[-3000:]
    assert all(0.0 <= float(v) <= 1.0 for v in row.groups())
    predictions = json.loads((tmp_path / "val" / "best_predictions.json").read_text())
    assert isinstance(predictions, list)
    for p in predictions[:20]:
        assert set(p) == {"image_id", "category_id", "bbox", "score"} and len(p["bbox"]) == 4


def test_detect_writes_annotated_images(trained: Path, tmp_path: Path) -> None:
    run([sys.executable, str(ROOT / "detect.py"), "--weights", str(trained), "--img", str(IMG), "--device", "cpu",
         "--save-txt", "--save-conf", "--conf-thres", "0.001", "--project", str(tmp_path), "--name", "det"],
        cwd=tmp_path)
    images = sorted((tmp_path / "det").glob("*.jpg"))
    assert len(images) == 8, "one annotated image per embedded image"


def test_export_onnx_matches_pytorch(trained: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    weights = tmp_path / "best.pt"
    weights.write_bytes(trained.read_bytes())
    run([sys.executable, str(ROOT / "export.py"), "--weights", str(weights), "--img", str(IMG), "--include", "onnx",
         "--device", "cpu"], cwd=tmp_path)
    onnx_file = weights.with_suffix(".onnx")
    assert onnx_file.is_file()
    code = f"""
import sys, numpy as np, torch, onnxruntime as ort
import yolo_backbones
from yolov5.models.experimental import attempt_load
model = attempt_load(sys.argv[1], device='cpu', fuse=True).float().eval()
x = torch.rand(2, 3, {IMG}, {IMG}, generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    ref = model(x)[0].numpy()
sess = ort.InferenceSession(sys.argv[2], providers=['CPUExecutionProvider'])
out = np.concatenate([sess.run(None, {{'images': x[i:i+1].numpy()}})[0] for i in range(2)])
print(ref.shape, out.shape, float(np.abs(ref - out).max()), float(np.abs(ref).max()))
"""
    shape_ref, _, shape_out, _, diff, scale = run([sys.executable, "-c", code, str(weights), str(onnx_file)],
                                                  cwd=tmp_path).stdout.split()[-6:]
    assert diff and float(diff) <= 1e-3 * max(1.0, float(scale)), f"ONNX differs from PyTorch by {diff}"


def test_pip_cli_finds_the_plugin_without_an_import(trained: Path, tmp_path: Path) -> None:
    """`yolov5 val` (the PyPI package's own CLI) loads a plugin checkpoint thanks to the .pth import hook."""
    cli = Path(sys.executable).with_name("yolov5")
    if not cli.exists():
        pytest.skip("the yolov5 console script is not installed next to this Python")
    proc = run([str(cli), "val", "--weights", str(trained), "--data", "coco8.yaml", "--img", str(IMG),
                "--device", "cpu", "--project", str(tmp_path), "--name", "cli"], cwd=tmp_path)
    assert re.search(r"\ball\s+8\s+52\s", proc.stdout + proc.stderr), (proc.stdout + proc.stderr)[-3000:]


def test_hub_style_loading_of_best_pt(trained: Path, tmp_path: Path) -> None:
    """The PyPI package's torch.hub-style API (`yolov5.load`) wraps a plugin checkpoint in AutoShape and detects."""
    code = ("import sys, yolov5; m = yolov5.load(sys.argv[1], device='cpu'); m.conf = 0.0;"
            f"r = m(sys.argv[2], size={IMG}); print(type(m).__name__, len(r.xyxy), r.xyxy[0].shape[1])")
    image = ROOT / "data" / "coco8" / "images" / "000000000009.jpg"
    out = run([sys.executable, "-c", code, str(trained), str(image)], cwd=tmp_path).stdout.split()
    assert out[-3:] == ["AutoShape", "1", "6"], out[-10:]


def test_freeze_keeps_the_backbone_fixed(trained: Path, tmp_path: Path) -> None:
    """`--freeze 1` freezes YAML layer 0, i.e. the whole backbone; the neck and head still train."""
    run([sys.executable, str(ROOT / "train.py"), "--weights", str(trained), "--freeze", "1", "--epochs", "1",
         "--img", str(IMG), "--batch-size", "4", "--workers", "0", "--device", "cpu", "--project", str(tmp_path),
         "--name", "frozen"], cwd=tmp_path)
    code = """
import sys, torch, yolo_backbones
before, after = (yolo_backbones.load_checkpoint(p, map_location='cpu')['model'].float() for p in sys.argv[1:3])
b = dict(before.named_parameters()); a = dict(after.named_parameters())
same = lambda prefix: all(torch.equal(a[k], b[k]) for k in a if k.startswith(prefix))
print(same('model.0.'), all(same(f'model.{i}.') for i in range(1, len(after.model))))
"""
    out = run([sys.executable, "-c", code, str(trained), str(tmp_path / "frozen" / "weights" / "last.pt")],
              cwd=tmp_path).stdout.split()
    assert out[-2:] == ["True", "False"], "backbone unchanged, neck/head trained"
