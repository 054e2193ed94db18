#!/usr/bin/env python
"""Fit a detector that detects something on a few images: the FP32 reference of the INT8 agreement measurement.

INT8 agreement (docs/int8.md) scores a quantized model's detections against its FP32 original's own detections
(conf >= 0.25), so it needs a model with confident detections, not a converged one. This script overfits any model
YAML on a handful of images (default: the 8 embedded coco8 images at 160 px, batch 8, 300 AdamW steps, no mosaic,
random horizontal flips) with the host's own loss (YOLOv5 ``ComputeLoss`` / ultralytics ``model.loss``) in a short
loop of its own, seeded, and saves a checkpoint that both hosts' ``val``/``export`` take.

Example:
    python scripts/fit_probe_model.py --cfg yolo11_edgevit.yaml --out runs/probe/yolo11_edgevit.pt
"""
from __future__ import annotations

import argparse
import contextlib
import io
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

import yolo_backbones  # noqa: F401  (installs the plugin into the hosts imported below)
from yolo_backbones.cli.host_choice import host_of_yaml
from yolo_backbones.deploy.int8.calibration import dataset_images, image_labels, load_images
from yolo_backbones.resources import find_resource

DEFAULTS = {"data": "coco8.yaml", "imgsz": 160, "steps": 300, "batch": 8, "lr": 2e-3, "seed": 0}


def resolve_cfg(cfg: str | Path) -> tuple[Path | str, str]:
    """``(YAML path or stock name, host)``: a project or local YAML, or a stock CNN (``yolov5n.yaml`` of the YOLOv5
    package, ``yolo11n.yaml`` of ultralytics) measured as a baseline."""
    path = find_resource(str(cfg)) or Path(cfg)
    if path.is_file():
        return path, host_of_yaml(path)
    if Path(str(cfg)).name.startswith("yolov5"):
        return Path(sys.modules["yolov5"].__file__).parent / "models" / Path(str(cfg)).name, "yolov5"
    return str(cfg), "ultralytics"  # ultralytics finds its own model YAMLs by name


def build_model(cfg: str | Path, nc: int) -> tuple[torch.nn.Module, str]:
    """``(training-mode detector, host)`` for a model YAML; ``host`` is ``"yolov5"`` or ``"ultralytics"``."""
    import yolov5  # noqa: F401  (resolve_cfg finds the stock YOLOv5 YAMLs beside it)

    path, host = resolve_cfg(cfg)
    with contextlib.redirect_stdout(io.StringIO()):
        if host == "yolov5":
            import yaml
            from yolov5.models.yolo import Model

            model = Model(str(path), nc=nc)
            model.nc = nc  # as train.py sets it: val.py reads model.nc from a checkpoint
            hyp_file = Path(sys.modules["yolov5"].__file__).parent / "data" / "hyps" / "hyp.scratch-low.yaml"
            model.hyp = yaml.safe_load(hyp_file.read_text())
            model.hyp["cls"] *= nc / 80  # train.py's scaling of the class gain to the number of classes
        else:
            from ultralytics.cfg import get_cfg
            from ultralytics.nn.tasks import DetectionModel

            model = DetectionModel(str(path), nc=nc, verbose=False)
            model.args = get_cfg()  # the loss reads its gains (box, cls, dfl) from here, as the trainer sets them
    return model.train(), host


def _targets(labels: list[np.ndarray], letterboxed: list, size: int, flips: list[bool]) -> torch.Tensor:
    """(n, 6) image index, class, x, y, w, h (normalised to the letterboxed square), flipped where asked."""
    rows = []
    for k, (lab, lb, flip) in enumerate(zip(labels, letterboxed, flips)):
        if not len(lab):
            continue
        h, w = lb.original_shape
        xy = lab[:, 1:3] * (w, h) * lb.scale + lb.pad
        wh = lab[:, 3:5] * (w, h) * lb.scale
        box = np.concatenate([xy, wh], 1) / size
        if flip:
            box[:, 0] = 1 - box[:, 0]
        rows.append(np.concatenate([np.full((len(lab), 1), k), lab[:, :1], box], 1))
    return torch.from_numpy(np.concatenate(rows).astype(np.float32)) if rows else torch.zeros(0, 6)


def fit(cfg: str | Path, data: str | Path = DEFAULTS["data"], imgsz: int = DEFAULTS["imgsz"],
        steps: int = DEFAULTS["steps"], batch: int = DEFAULTS["batch"], lr: float = DEFAULTS["lr"],
        seed: int = DEFAULTS["seed"], images: int | None = None, log_every: int = 50) -> tuple[torch.nn.Module, str]:
    """Overfit ``cfg`` on the first ``images`` images of ``data``'s train split; return ``(eval model, host)``.

    Each step draws ``batch`` images (with replacement when fewer) and flips each with probability 0.5;
    AdamW with a cosine learning-rate decay and 10 % warm-up. Seeded: the same arguments give the same model.
    """
    import yaml

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    files = dataset_images(data, "train", images)
    names = yaml.safe_load((find_resource(str(data)) or Path(data)).read_text())["names"]
    nc = len(names)
    model, host = build_model(cfg, nc)
    model.names = dict(names) if isinstance(names, dict) else dict(enumerate(names))
    boxes = load_images(files, imgsz)
    labels = [image_labels(f) for f in files]
    if host == "yolov5":
        from yolov5.utils.loss import ComputeLoss

        criterion = ComputeLoss(model)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 5e-4}, {"params": no_decay, "weight_decay": 0}],
                                  lr=lr)
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) * (
        0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))))
    t0 = time.perf_counter()
    for step in range(steps):
        pick = rng.choice(len(files), batch, replace=len(files) < batch)
        flips = list(rng.random(batch) < 0.5)
        chosen = [boxes[k] for k in pick]
        img = torch.from_numpy(np.stack([lb.image[:, :, ::-1] if f else lb.image for lb, f in zip(chosen, flips)]))
        targets = _targets([labels[k] for k in pick], chosen, imgsz, flips)
        if host == "yolov5":
            loss, _ = criterion(model(img), targets)
        else:
            loss, _ = model.loss({"img": img, "batch_idx": targets[:, 0], "cls": targets[:, 1:2],
                                  "bboxes": targets[:, 2:]})
            loss = loss.sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        schedule.step()
        if log_every and (step + 1) % log_every == 0:
            print(f"step {step + 1}/{steps} loss {loss.item():.3f} ({time.perf_counter() - t0:.0f}s)", flush=True)
    return model.eval(), host


def save(model: torch.nn.Module, host: str, path: Path) -> Path:
    """Write ``model`` (float32) as the host's training checkpoint dict, which its val/export/predict load."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if host == "yolov5":
        torch.save({"model": model, "epoch": -1}, path)
    else:
        train_args = {k: v for k, v in vars(model.args).items() if isinstance(v, (int, float, str, bool, type(None)))}
        torch.save({"model": model, "epoch": -1, "train_args": train_args}, path)
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line of the script (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfg", required=True, help="model YAML (bare name of models/ or a path)")
    parser.add_argument("--data", default=DEFAULTS["data"], help="dataset YAML (its train: split is fitted)")
    parser.add_argument("--images", type=int, default=None, help="fit the first N images only")
    parser.add_argument("--imgsz", type=int, default=DEFAULTS["imgsz"])
    parser.add_argument("--steps", type=int, default=DEFAULTS["steps"])
    parser.add_argument("--batch", type=int, default=DEFAULTS["batch"])
    parser.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--out", type=Path, required=True, help="checkpoint to write (.pt)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Fit and save; print the mAP50 of the fitted model on the fitted images."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, host = fit(args.cfg, args.data, args.imgsz, args.steps, args.batch, args.lr, args.seed, args.images)
    save(model, host, args.out)
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
