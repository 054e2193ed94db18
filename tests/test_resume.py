"""Interrupted training resumes: ``train.py --resume RUN/weights/last.pt`` continues a plugin model's run.

The interruption is simulated without killing a process: ``--save-period 1`` makes YOLOv5 also save every
epoch's full checkpoint as ``epoch{N}.pt``, which — unlike the final ``last.pt`` that ``strip_optimizer``
turns into an inference checkpoint (``epoch`` -1, no optimizer) — keeps the optimizer state and the epoch
index, exactly what ``last.pt`` holds while training is still running. Putting ``epoch0.pt`` back as
``last.pt`` (and cutting ``results.csv`` to its first row) is the state of a run stopped after epoch 1 of 2.
"""
from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest

from conftest import IMG, run

pytestmark = pytest.mark.slow  # end-to-end: subprocesses, training, exports

ROOT = Path(__file__).resolve().parents[1]
CFG = "yolov5_mobileformer_52m.yaml"  # the smallest model; test_end_to_end.py trains EdgeViT
INSPECT = ("import sys, yolo_backbones; ck = yolo_backbones.load_checkpoint(sys.argv[1], map_location='cpu');"
           "print(ck['epoch'], ck['optimizer'] is None, type(ck['model'].model[0]).__name__)")


def _inspect(weights: Path) -> tuple[int, bool, str]:
    epoch, no_optimizer, backbone = run([sys.executable, "-c", INSPECT, str(weights)], cwd=weights.parent).stdout.split()[-3:]
    return int(epoch), no_optimizer == "True", backbone


def test_resume_continues_an_interrupted_run(tmp_path: Path) -> None:
    # No --noval: in yolov5 7.0.14 (pip) it crashes after the first epoch (UnboundLocalError: 'map50s').
    run([sys.executable, str(ROOT / "train.py"), "--cfg", CFG, "--epochs", "2", "--img", str(IMG), "--batch-size", "4",
         "--workers", "0", "--device", "cpu", "--save-period", "1", "--noplots",
         "--project", str(tmp_path / "runs"), "--name", "exp"], cwd=tmp_path)
    run_dir = tmp_path / "runs" / "exp"
    weights = run_dir / "weights"
    assert (run_dir / "opt.yaml").is_file(), "--resume reads the run's options from opt.yaml"
    assert _inspect(weights / "epoch0.pt") == (0, False, "MobileFormer"), "an unstripped epoch-1 checkpoint"
    assert _inspect(weights / "last.pt")[:2] == (-1, True), "the finished last.pt is stripped"

    # Interrupt after epoch 1 of 2: last.pt as it was then, results.csv with one row, no best.pt yet.
    shutil.copyfile(weights / "epoch0.pt", weights / "last.pt")
    (weights / "best.pt").unlink()
    results = run_dir / "results.csv"
    results.write_text("".join(results.read_text().splitlines(keepends=True)[:2]))

    proc = run([sys.executable, str(ROOT / "train.py"), "--resume", str(weights / "last.pt")], cwd=tmp_path)
    log = proc.stdout + proc.stderr
    assert re.search(r"Resuming training from \S*last\.pt from epoch 1 to 2 total epochs", log), log[-3000:]
    assert re.search(r"\b1 epochs completed", log), log[-3000:]
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["exp"], "resume must continue in the same run directory"
    rows = results.read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == [0, 1], rows
    assert _inspect(weights / "last.pt") == (-1, True, "MobileFormer"), "the resumed run finished and stripped last.pt"
    assert (weights / "best.pt").is_file()
