"""Files that would take a machine (memory, time, a crash) are refused in one line, in a fresh process under a
memory limit (``resource.setrlimit``) and a timeout, so a regression fails the test instead of the test machine.

Each case is a small file whose plain ``torch.load`` would need gigabytes, hang or segfault (issue 20's list);
the child loads it with ``yolo_backbones.load_checkpoint`` and prints the error line.
"""
from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from gadgets import write_raw

pytestmark = pytest.mark.slow

HEADROOM = 1 << 30  # the child may allocate 1 GiB above what its imports mapped
CHILD = f"""
import resource, sys
import yolo_backbones
from yolo_backbones import load_checkpoint
vm = int(open('/proc/self/status').read().split('VmSize:')[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + {HEADROOM}, resource.RLIM_INFINITY))
try:
    load_checkpoint(sys.argv[1], map_location="cpu")
except (yolo_backbones.UntrustedCheckpointError, yolo_backbones.CheckpointFileError) as e:
    print("error:", str(e))
    sys.exit(1)
print("loaded")
"""


def _load_in_child(path: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("YOLO_BACKBONES_TRUST_CHECKPOINTS", None)
    return subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, timeout=timeout,
                          env=env)


def _assert_refused(proc: subprocess.CompletedProcess, path: Path, *words: str) -> None:
    assert proc.returncode == 1, f"exit {proc.returncode} (negative: killed by a signal)\n{proc.stdout}\n{proc.stderr}"
    lines = [line for line in proc.stdout.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    assert str(path) in lines[0], lines[0]
    for word in words:
        assert word in lines[0], lines[0]


def test_nested_tuples_of_a_200kb_file_do_not_crash(tmp_path):
    path = write_raw(tmp_path / "tuples.pt", b"\x80\x02)" + b"\x85" * 200_000 + b".")
    _assert_refused(_load_in_child(path), path, "MAX_TUPLE_DEPTH")


def test_nested_lists_do_not_exhaust_the_stack(tmp_path):
    path = write_raw(tmp_path / "lists.pt", b"\x80\x02" + b"]" * 200_000 + b"a" * 199_999 + b".")
    _assert_refused(_load_in_child(path), path, "MAX_DEPTH")


def test_lstm_with_a_huge_layer_count_does_not_hang(tmp_path):
    lstm = nn.LSTM(2, 2, 1)
    lstm.num_layers = 100_000
    path = tmp_path / "lstm.pt"
    torch.save({"model": lstm}, path)
    assert path.stat().st_size < 10_000
    _assert_refused(_load_in_child(path, timeout=60), path, "BUILD_TENSORS_FACTOR")


def test_compressed_member_expanding_to_gigabytes_is_never_expanded(tmp_path):
    """A 2 GiB storage stored deflated (a few MB): refused from the zip directory, under a 1 GiB headroom."""
    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(4)}, buffer)
    path = tmp_path / "bomb.pt"
    chunk = bytes(1 << 24)
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            if info.filename.endswith("data/0"):
                member = zipfile.ZipInfo(info.filename)
                member.compress_type = zipfile.ZIP_DEFLATED
                with dst.open(member, "w", force_zip64=True) as out:
                    for _ in range(128):
                        out.write(chunk)
            else:
                dst.writestr(info.filename, src.read(info))
    assert path.stat().st_size < 20 << 20
    _assert_refused(_load_in_child(path), path, "compressed")


def test_stride_zero_buffer_of_gigabytes_is_refused(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    expanded = torch.zeros(1, dtype=torch.float16).expand(1 << 16, 1 << 16)  # 8 GiB as a float32 copy
    model[1].register_buffer("extra", expanded)
    path = tmp_path / "stride0.pt"
    torch.save({"model": model}, path)
    assert path.stat().st_size < 10_000
    _assert_refused(_load_in_child(path), path, "MAX_EXPANDED_ELEMENTS")


def test_absurd_channels_in_a_stored_yaml_are_refused_before_allocating(tmp_path):
    pytest.importorskip("yolov5")
    script = f"""
import copy, torch, yaml, yolo_backbones
from pathlib import Path
import yolov5.models.yolo as yolo
cfg = yaml.safe_load((Path(yolo.__file__).parent / "yolov5n.yaml").read_text())
model = yolo.DetectionModel(copy.deepcopy(cfg))
model.yaml["width_multiple"] = 4000.0  # channels x16000: terabytes of weights from a config of a small file
torch.save({{"model": model.half(), "epoch": 1}}, {str(tmp_path / "wide.pt")!r})
"""
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, timeout=300)
    path = tmp_path / "wide.pt"
    _assert_refused(_load_in_child(path, timeout=300), path, "BUILD_BYTES_FACTOR")
