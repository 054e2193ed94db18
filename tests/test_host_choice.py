"""Picking the host from the model a command names, and translating YOLOv5 flags for ultralytics."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from yolo_backbones.cli import commands as cli
from yolo_backbones.cli.host_choice import choose_host, host_of_weights, host_of_yaml
from yolo_backbones.resources import DATA_DIR
from yolo_backbones.cli.ultralytics import to_ultralytics_args


def _fake_checkpoint(path: Path, module: str) -> Path:
    """A zip laid out like torch.save's, whose pickle names ``module`` (never unpickled by the chooser)."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", f"\x80\x02c{module}\nDetectionModel\nq\x00.".encode())
    return path


def test_yaml_decides_by_anchors_and_scales(tmp_path: Path) -> None:
    assert host_of_yaml("yolov5_edgevit.yaml") == "yolov5"
    v8 = tmp_path / "m.yaml"
    v8.write_text("nc: 80\nscales:\n  n: [0.33, 0.25, 1024]\nbackbone: []\nhead: []\n")
    assert host_of_yaml(v8) == "ultralytics"
    v5 = tmp_path / "v5.yaml"
    v5.write_text("nc: 80\nanchors: 3\nbackbone: []\nhead: []\n")
    assert host_of_yaml(v5) == "yolov5"


def test_checkpoint_decides_by_the_pickled_module_names(tmp_path: Path) -> None:
    assert host_of_weights(_fake_checkpoint(tmp_path / "a.pt", "ultralytics.nn.tasks")) == "ultralytics"
    assert host_of_weights(_fake_checkpoint(tmp_path / "b.pt", "models.yolo")) == "yolov5"
    assert host_of_weights(tmp_path / "missing.pt") == "yolov5"  # the host then reports the missing file
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    assert host_of_weights(tmp_path / "junk.pt") == "yolov5"


def test_explicit_host_flag_wins_and_is_removed(tmp_path: Path) -> None:
    argv = ["--cfg", "yolov5_edgevit.yaml", "--host", "ultralytics", "--epochs", "1"]
    assert choose_host(argv, cli._flag_value) == "ultralytics"
    assert argv == ["--cfg", "yolov5_edgevit.yaml", "--epochs", "1"]
    with pytest.raises(SystemExit, match="choose one of yolov5, ultralytics"):
        choose_host(["--host", "yolov9"], cli._flag_value)


def test_weights_checkpoint_picks_ultralytics(tmp_path: Path) -> None:
    ckpt = _fake_checkpoint(tmp_path / "best.pt", "ultralytics.nn.tasks")
    assert choose_host(["--weights", str(ckpt), "--img", "320"], cli._flag_value) == "ultralytics"
    assert choose_host(["model=" + str(ckpt)], cli._flag_value) == "ultralytics"
    assert choose_host(["--weights", "yolov5s.pt"], cli._flag_value) == "yolov5"


def test_yolov5_flags_translate_to_ultralytics_settings() -> None:
    args = to_ultralytics_args("train", ["--cfg", "yolov5_edgevit.yaml", "--data", "coco8.yaml", "--epochs", "3",
                                         "--img", "320", "--batch-size", "4", "--exist-ok", "lr0=0.02"])
    assert args[0] == "train" and args[1].startswith("model=") and args[1].endswith("models/yolov5_edgevit.yaml")
    assert {"epochs=3", "imgsz=320", "batch=4", "exist_ok=True", "lr0=0.02", f"data={DATA_DIR / 'coco8.yaml'}"} <= set(args)
    detect = to_ultralytics_args("detect", ["--weights", "best.pt", "--conf-thres", "0.4"])
    assert detect[:2] == ["predict", "model=best.pt"] and "conf=0.4" in detect
    assert f"source={DATA_DIR / 'coco8' / 'images'}" in detect
    export = to_ultralytics_args("export", ["--weights", "best.pt", "--include", "onnx", "--dynamic"])
    assert export == ["export", "model=best.pt", "format=onnx", "dynamic=True"]
    resume = to_ultralytics_args("train", ["--resume", "runs/detect/train/weights/last.pt"])
    assert resume[:2] == ["train", "model=runs/detect/train/weights/last.pt"] and "resume=True" in resume


def test_flag_without_counterpart_is_a_clear_error() -> None:
    with pytest.raises(SystemExit, match="--evolve has no counterpart on the ultralytics host"):
        to_ultralytics_args("train", ["--cfg", "x.yaml", "--evolve", "10"])


@pytest.mark.slow
def test_root_wrappers_run_a_yolo11_model_on_ultralytics(tmp_path: Path) -> None:
    """train.py --cfg yolo11_*.yaml goes to ultralytics; val.py --weights picks it again from the checkpoint."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]

    def run(*args: str) -> str:
        proc = subprocess.run([sys.executable, *args], cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        return proc.stdout + proc.stderr

    run(str(root / "train.py"), "--cfg", "yolo11_edgevit.yaml", "--epochs", "1", "--img", "64", "--batch-size", "4",
        "--workers", "0", "--device", "cpu", "--project", str(tmp_path / "runs"), "--name", "exp")
    best = tmp_path / "runs" / "exp" / "weights" / "best.pt"
    assert host_of_weights(best) == "ultralytics"
    out = run(str(root / "val.py"), "--weights", str(best), "--img", "64", "--device", "cpu",
              "--project", str(tmp_path / "runs"), "--name", "val")
    assert "Ultralytics" in out and (tmp_path / "runs" / "val").is_dir()
