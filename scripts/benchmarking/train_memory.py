"""Peak memory of one training step, measured in a fresh process per model (``--train-memory``)."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import torch

from .models import build_model
from .results import HYP, SCRIPTS, Result, attempt


def profile_train_memory(cfg_path: Path, result: Result, args: argparse.Namespace) -> None:
    """Peak training-step memory of ``cfg_path`` without and (plugin models) with activation checkpointing."""
    for key, checkpointing in (("train_mem_gb", False), ("train_mem_ckpt_gb", True)):
        if checkpointing and not result.plugin:
            continue
        value = attempt(result, key, lambda checkpointing=checkpointing: train_peak_memory_gb(
            cfg_path, args.train_memory_batch, args.train_memory_img, checkpointing, args.threads))
        setattr(result, key, value)


def train_peak_memory_gb(cfg_path: Path, batch: int, img: int, checkpointing: bool, threads: int) -> float:
    """Peak memory (GB) of one training step above the process's memory before it, in a fresh process."""
    command = [sys.executable, str(SCRIPTS / "benchmark.py"), "--_train-memory-child", str(cfg_path), str(batch),
               str(img), str(int(checkpointing)), str(threads)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("PEAK_GB ")]
    if done.returncode or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"training-memory process failed ({done.returncode}): {tail}")
    return float(lines[-1].split()[1])


def resident_bytes() -> int:
    """Current resident memory of this process (Linux ``/proc/self/statm``)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def train_memory_child(cfg: str, batch: str, img: str, checkpointing: str, threads: str) -> int:
    """Child process of :func:`train_peak_memory_gb`: one training step, then ``PEAK_GB <value>`` on stdout.

    The step is forward + ``ComputeLoss`` + backward (gradients included, no optimizer state); the baseline is
    the resident memory once the model, loss and batch exist, the peak the process's peak resident memory.
    """
    import gc
    import resource

    from yolov5.utils.loss import ComputeLoss

    from yolo_backbones.core.base import Backbone

    torch.set_num_threads(int(threads))
    model = build_model(Path(cfg)).train()
    if int(checkpointing):
        for m in model.modules():
            if isinstance(m, Backbone):
                m.set_grad_checkpointing(True)
    model.hyp = HYP
    loss_fn = ComputeLoss(model)
    images = torch.rand(int(batch), 3, int(img), int(img))
    boxes = [[0, 0.5, 0.5, 0.4, 0.3], [3, 0.3, 0.6, 0.2, 0.5], [7, 0.7, 0.3, 0.3, 0.2]]
    targets = torch.tensor([[i, *b] for i in range(int(batch)) for b in boxes], dtype=torch.float32)
    gc.collect()
    before = resident_bytes()
    loss, _ = loss_fn(model(images), targets)
    loss.backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    print(f"PEAK_GB {(peak - before) / 1e9:.3f}")
    return 0
