"""Shared by the end-to-end tests: running a command in a fresh process, and one trained checkpoint per session.

Test modules import ``run`` and ``IMG`` with ``from conftest import ...`` (``tests/`` is on ``sys.path``, as for
``helpers``).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IMG = 128


def run(args: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run a command in a fresh process; fail with its output if it exits non-zero."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, \
        f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    return proc


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> Path:
    """Train EdgeViT-XXS YOLOv5 for one epoch on the embedded coco8 data via the root train.py."""
    work = tmp_path_factory.mktemp("e2e")
    run([sys.executable, str(ROOT / "train.py"), "--cfg", "yolov5_edgevit.yaml", "--epochs", "1", "--img", str(IMG),
         "--batch-size", "4", "--workers", "0", "--device", "cpu", "--project", str(work / "runs"), "--name", "exp"],
        cwd=work)
    return work / "runs" / "exp" / "weights" / "best.pt"


@pytest.fixture(autouse=True)
def own_layers_in_eval(request, monkeypatch):
    """In-process tests run eval-mode backbones on their own layers (eval fusion off), so every comparison of an
    unfused eval model with a fused one, a reference or a gradient compares what it names; tests marked
    ``eval_fusion`` (and every subprocess: the CLI end-to-end runs) use the default."""
    if request.node.get_closest_marker("eval_fusion") is None:
        from yolo_backbones.core.inference import eval_fusion

        monkeypatch.setattr(eval_fusion, "ENABLED", False)
