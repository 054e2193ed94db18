"""Every entry point refuses malicious checkpoints before anything runs, and reports bad files in one line.

Each command runs in a fresh process, as a user would run it. A refused or unreadable file must make the
command exit non-zero, print one ``error: ...`` line (no traceback), and leave the gadget's marker file absent.
"""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from gadgets import write_gadget

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
COCO8 = ROOT / "data" / "coco8.yaml"
IMAGE = next((ROOT / "data" / "coco8" / "images").rglob("*.jpg"))


def _commands(weights: Path, out: Path) -> dict[str, list[str]]:
    py = sys.executable
    common = ["--img", "64", "--device", "cpu"]
    return {
        "detect.py": [py, str(ROOT / "detect.py"), "--weights", str(weights), "--source", str(IMAGE),
                      "--project", str(out), *common],
        "val.py": [py, str(ROOT / "val.py"), "--weights", str(weights), "--data", str(COCO8), "--project", str(out),
                   *common],
        "export.py": [py, str(ROOT / "export.py"), "--weights", str(weights), "--include", "onnx", *common],
        "train.py --weights": [py, str(ROOT / "train.py"), "--weights", str(weights), "--cfg", "yolov5_edgevit.yaml",
                               "--epochs", "1", "--workers", "0", "--project", str(out), *common],
        "train.py --resume": [py, str(ROOT / "train.py"), "--resume", str(weights)],
        "yolov5 detect (pip CLI)": [str(BIN / "yolov5"), "detect", "--weights", str(weights), "--source", str(IMAGE),
                                    "--project", str(out), *common],
        "yolov5.load": [py, "-c", "import sys, yolov5; yolov5.load(sys.argv[1], device='cpu')", str(weights)],
        "yolo-backbones val": [str(BIN / "yolo-backbones"), "val", "--weights", str(weights), "--project", str(out),
                               *common],
    }


ENTRY_POINTS = list(_commands(Path("x"), Path("y")))


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("YOLO_BACKBONES_TRUST_CHECKPOINTS", None)
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


# A user's own script (not an entry point of the project): Python's normal traceback, ending in the plugin's error.
USER_SCRIPTS = {"yolov5.load"}


def _assert_one_line_error(proc: subprocess.CompletedProcess, *expected: str, entry: str = "") -> str:
    assert proc.returncode != 0, f"exit 0 after a bad file:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    if entry in USER_SCRIPTS:  # no exception hook in a user's process: the error is the traceback's last line
        last = proc.stderr.strip().splitlines()[-1]
        assert "Traceback" in proc.stderr and last.startswith("yolo_backbones."), proc.stderr[-3000:]
        for text in expected:
            assert text in last, last
        return last
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-3000:]
    for text in expected:
        assert text in errors[0], errors[0]
    return errors[0]


# Two gadgets in turn over the entry points: the issue-9 attack (YOLOv5's Model called with a config that
# parse_model would eval) and os.system hidden under 'ema'. tests/test_safe_load.py covers every gadget in-process.
GADGET_CASES = [(entry, *(("yolov5_pip_model_cfg", "top") if k % 2 == 0 else ("os_system", "ema")))
                for k, entry in enumerate(ENTRY_POINTS)]


@pytest.mark.parametrize("entry,gadget,nest", GADGET_CASES)
def test_malicious_checkpoint_is_refused_by_every_entry_point(entry, gadget, nest, tmp_path):
    path, marker = write_gadget(gadget, tmp_path, nest_in=nest)
    proc = _run(_commands(path, tmp_path / "runs")[entry], cwd=tmp_path)
    _assert_one_line_error(proc, "Refusing to load", "Nothing from the file was executed", entry=entry)
    assert not marker.exists(), f"{entry} ran the payload of {gadget}"


def test_pretrained_backbone_file_in_a_yaml_is_refused(tmp_path):
    path, marker = write_gadget("builtins_eval", tmp_path, nest_in="dict")
    cfg = tmp_path / "evil_backbone.yaml"
    text = (ROOT / "models" / "yolov5_edgevit.yaml").read_text()
    cfg.write_text(text.replace("[xxs, [1, 2, 3]]", f"[xxs, [1, 2, 3], '{path}']"))
    assert str(path) in cfg.read_text()
    proc = _run([sys.executable, str(ROOT / "train.py"), "--cfg", str(cfg), "--epochs", "1", "--img", "64",
                 "--device", "cpu", "--workers", "0", "--project", str(tmp_path / "runs")], cwd=tmp_path)
    _assert_one_line_error(proc, "Refusing to load", "builtins.eval")
    assert not marker.exists()


def _bad_files(folder: Path) -> dict[str, Path]:
    """One file of each kind a user may pass by mistake."""
    import onnx
    from onnx import TensorProto, helper
    from PIL import Image
    from safetensors.torch import save_file

    files = {}
    files["empty"] = folder / "empty.pt"
    files["empty"].write_bytes(b"")
    genuine = folder / "genuine.pt"
    torch.save({"model": torch.nn.Conv2d(3, 8, 3), "epoch": 1}, genuine)
    data = genuine.read_bytes()
    files["truncated"] = folder / "truncated.pt"
    files["truncated"].write_bytes(data[: len(data) // 2])
    files["random"] = folder / "random.pt"
    files["random"].write_bytes(os.urandom(4096))
    files["directory"] = folder / "a_directory.pt"
    files["directory"].mkdir()
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    files["onnx"] = folder / "model_onnx.pt"
    onnx.save(helper.make_model(graph), str(files["onnx"]))
    files["safetensors"] = folder / "weights_st.pt"
    save_file({"w": torch.zeros(2)}, str(files["safetensors"]))
    files["yaml"] = folder / "config.pt"
    files["yaml"].write_text("nc: 80\nbackbone: []\n")
    files["image"] = folder / "picture.pt"
    Image.new("RGB", (8, 8)).save(files["image"], format="PNG")
    return files


KINDS = ["empty", "truncated", "random", "directory", "onnx", "safetensors", "yaml", "image"]


@pytest.mark.parametrize("kind", KINDS)
def test_bad_file_gives_one_clear_line_from_val(kind, tmp_path):
    path = _bad_files(tmp_path)[kind]
    proc = _run(_commands(path, tmp_path / "runs")["val.py"], cwd=tmp_path)
    _assert_one_line_error(proc, path.name)


@pytest.mark.parametrize("entry,kind", [("detect.py", "truncated"), ("train.py --weights", "random"),
                                        ("yolov5.load", "truncated")])
def test_bad_files_give_one_line_from_other_entry_points(entry, kind, tmp_path):
    path = _bad_files(tmp_path)[kind]
    proc = _run(_commands(path, tmp_path / "runs")[entry], cwd=tmp_path)
    _assert_one_line_error(proc, path.name, entry=entry)


def test_zip_truncated_at_many_offsets_is_a_clear_error_in_process(tmp_path):
    from yolo_backbones import CheckpointFileError, load_checkpoint

    genuine = tmp_path / "genuine.pt"
    torch.save({"model": torch.nn.Conv2d(3, 8, 3)}, genuine)
    data = genuine.read_bytes()
    assert zipfile.is_zipfile(genuine)
    for cut in range(1, len(data), max(1, len(data) // 40)):
        part = tmp_path / "part.pt"
        part.write_bytes(data[:cut])
        with pytest.raises(CheckpointFileError) as info:
            load_checkpoint(part)
        assert "\n" not in str(info.value)
