"""The `yolo-backbones` command and the argument preparation of the root train/val/detect/export wrappers."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from yolo_backbones import list_backbones
from yolo_backbones.cli import commands as cli
from yolo_backbones.resources import DATA_DIR, MODELS_DIR, find_resource

ROOT = Path(__file__).resolve().parents[1]


def test_bare_names_resolve_to_project_files(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert find_resource("yolov5_edgevit.yaml") == MODELS_DIR / "yolov5_edgevit.yaml"
    assert find_resource("coco8.yaml") == DATA_DIR / "coco8.yaml"
    assert find_resource("no_such_model.yaml") is None
    assert find_resource("models/yolov5_edgevit.yaml") is None, "paths with folders are used as given"
    (tmp_path / "coco8.yaml").write_text("local copy")
    assert find_resource("coco8.yaml") is None, "an existing file in the working directory wins"


def test_train_argv_gets_offline_defaults() -> None:
    argv = cli.prepare_argv("train", ["--cfg", "yolov5_edgevit.yaml", "--epochs", "1"])
    assert argv[argv.index("--cfg") + 1] == str(MODELS_DIR / "yolov5_edgevit.yaml")
    assert argv[argv.index("--data") + 1] == str(DATA_DIR / "coco8.yaml")
    assert argv[argv.index("--weights") + 1] == "", "a --cfg without --weights trains from scratch"


def test_explicit_flags_are_kept() -> None:
    argv = cli.prepare_argv("train", ["--cfg=yolov5_edgevit.yaml", "--weights", "my.pt", "--data", "my.yaml"])
    assert argv[0] == f"--cfg={MODELS_DIR / 'yolov5_edgevit.yaml'}"
    assert argv[argv.index("--weights") + 1] == "my.pt" and argv[argv.index("--data") + 1] == "my.yaml"
    assert argv.count("--data") == 1 and argv.count("--weights") == 1


def test_detect_defaults_to_the_embedded_images() -> None:
    argv = cli.prepare_argv("detect", ["--weights", "best.pt"])
    assert argv[argv.index("--source") + 1] == str(DATA_DIR / "coco8" / "images")
    assert "--data" not in argv
    assert cli.prepare_argv("export", ["--weights", "best.pt"]) == ["--weights", "best.pt"]


def test_yolov5_dir_must_be_a_clone(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="is not a YOLOv5 clone"):
        cli.run_yolov5_script("train", ["--yolov5-dir", str(tmp_path)])


def test_list_command_prints_every_backbone(capsys) -> None:
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for record in list_backbones():
        assert record["name"] in out
    row = next(line.split() for line in out.splitlines() if line.startswith("edgevit_xxs "))
    assert row == ["edgevit_xxs", "EdgeViT", "xxs", "4/8/16/32", "36/72/144/288", "-"]
    row = next(line.split(None, 5) for line in out.splitlines() if line.startswith("efficientformerv2_s0 "))
    assert row[5] == "imagenet, official, timm"


def test_weights_command_prints_the_table_and_resolves_a_local_file(capsys, tmp_path, monkeypatch) -> None:
    assert cli.main(["weights"]) == 0
    table = capsys.readouterr().out
    assert "eformer_s0_450.pth" in table and "timm/efficientformerv2_s0.snap_dist_in1k" in table
    monkeypatch.setenv("YOLO_BACKBONES_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("YOLO_BACKBONES_OFFLINE", "1")
    (tmp_path / "eformer_s0_450.pth").write_bytes(b"x")
    assert cli.main(["weights", "efficientformerv2_s0", "official"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "eformer_s0_450.pth")


def test_unknown_command_exits_2(capsys) -> None:
    assert cli.main(["trian"]) == 2
    assert "unknown command 'trian'" in capsys.readouterr().err


@pytest.mark.slow
def test_console_script_is_installed() -> None:
    exe = Path(sys.executable).with_name("yolo-backbones")
    if not exe.exists():
        pytest.skip("yolo-backbones console script not installed next to this Python")
    out = subprocess.run([str(exe), "list"], capture_output=True, text=True, timeout=300, check=True).stdout
    assert "mobileformer_26m" in out and "efficientformerv2_l" in out


@pytest.mark.skipif(not os.environ.get("YOLOV5_CLONE"), reason="set YOLOV5_CLONE=/path/to/ultralytics/yolov5 to test a clone")
def test_training_through_a_yolov5_clone(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--yolov5-dir", os.environ["YOLOV5_CLONE"], "--cfg",
         "yolov5_edgevit.yaml", "--epochs", "1", "--img", "128", "--batch-size", "4", "--workers", "0",
         "--device", "cpu", "--project", str(tmp_path), "--name", "clone"],
        capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (tmp_path / "clone" / "weights" / "best.pt").is_file()
