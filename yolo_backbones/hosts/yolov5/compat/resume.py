"""``train.py --resume``: the run settings a checkpoint (or the ``opt.yaml`` beside it) brings are data, confined.

YOLOv5's ``main`` replaces the user's options by those of the run being resumed (``argparse.Namespace(**d)``
with ``d`` from ``opt.yaml`` or the checkpoint's ``opt``), so a file chose where training writes (``save_dir``),
whether hyperparameter evolution runs a shell command (``evolve`` + ``bucket``: ``gsutil cp gs://<bucket>``),
where results are uploaded (``s3_upload_dir``, loggers) and what dataset is read. :func:`patch_resume` gives the
``train`` module an ``argparse`` whose ``Namespace`` builds that replacement from the user's own options:

* the settings of :data:`RESUMED` (what the run was training with) are taken from the file when their type
  matches the option's; every other option keeps the user's value;
* ``save_dir`` is the checkpoint's own run folder (``runs/train/exp`` for ``runs/train/exp/weights/last.pt``);
* ``data`` and a ``hyp`` path are used only as existing local files, never URLs (else the user's value).
"""
from __future__ import annotations

import argparse
import contextlib
import contextvars
import types
from collections.abc import Iterator
from pathlib import Path, PurePath
from typing import Any

from ....core.weights.metadata import checkpoint_run_dir
from ...common.patching import LOG

__all__ = ["RESUMED", "patch_resume", "resumed_options", "resuming"]

# What a resumed run keeps from the file: the training settings of the original run.
RESUMED = frozenset({
    "weights", "cfg", "data", "hyp", "epochs", "batch_size", "imgsz", "rect", "nosave", "noval", "noautoanchor",
    "noplots", "cache", "image_weights", "device", "multi_scale", "single_cls", "optimizer", "sync_bn", "workers",
    "quad", "cos_lr", "label_smoothing", "patience", "freeze", "save_period", "seed", "mask_ratio", "no_overlap",
    "name", "project", "exist_ok",
})
_CONTEXT: contextvars.ContextVar[tuple[argparse.Namespace, Path] | None] = contextvars.ContextVar(
    "yolo_backbones_resume", default=None)


def _same_kind(value: Any, default: Any) -> bool:
    plain = (str, int, float, bool, type(None))
    if isinstance(default, PurePath):  # train.py's path defaults (hyp, data, project)
        default = str(default)
    if default is None:
        return isinstance(value, plain) or (isinstance(value, dict) and all(
            isinstance(k, str) and isinstance(v, (int, float, bool, str, type(None))) for k, v in value.items()))
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, (int, float)):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str) or (isinstance(value, dict) and all(
            isinstance(k, str) and isinstance(v, (int, float, bool, str, type(None))) for k, v in value.items()))
    if isinstance(default, list):
        return isinstance(value, list) and all(isinstance(v, (int, float, str)) for v in value)
    return False


def _local_file(value: Any) -> bool:
    return isinstance(value, str) and "://" not in value and Path(value).is_file()


def resumed_options(stored: dict, user: argparse.Namespace, last: Path) -> dict:
    """The options a resumed run gets: the user's, with the stored training settings of matching type."""
    out = dict(vars(user))
    for key, value in stored.items():
        if key in RESUMED and key in out and _same_kind(value, out[key]):
            out[key] = value
    for key in ("data", "hyp"):
        if isinstance(out.get(key), str) and out[key] != getattr(user, key, None) and not _local_file(out[key]):
            out[key] = getattr(user, key, None)  # a path the file names that is not a local file: not followed
    out["save_dir"] = str(checkpoint_run_dir(last))
    return out


class _ArgparseForTrain(types.ModuleType):
    """``argparse`` as the YOLOv5 ``train`` module sees it: ``Namespace(**d)`` inside a resume builds
    :func:`resumed_options`; everything else is the real module."""

    def __init__(self) -> None:
        super().__init__("argparse", argparse.__doc__)

    def __getattr__(self, name: str) -> Any:
        return getattr(argparse, name)

    @staticmethod
    def Namespace(**kwargs: Any) -> argparse.Namespace:
        context = _CONTEXT.get()
        if context is None:
            return argparse.Namespace(**kwargs)
        user, last = context
        LOG.info(f"resume: run settings of {last} confined (run folder {checkpoint_run_dir(last)})")
        return argparse.Namespace(**resumed_options(kwargs, user, last))


_ARGPARSE = _ArgparseForTrain()


def patch_resume(train: types.ModuleType) -> None:
    """Give a YOLOv5 ``train`` module the confining ``argparse`` (its ``main`` enters :func:`resuming`)."""
    if train.__dict__.get("argparse") is argparse:
        train.argparse = _ARGPARSE


@contextlib.contextmanager
def resuming(train: types.ModuleType, opt: Any) -> Iterator[None]:
    """The context of YOLOv5's ``main(opt)``: when it resumes, ``argparse.Namespace`` confines the stored settings."""
    resume = getattr(opt, "resume", False)
    if not resume or getattr(opt, "evolve", None) or (isinstance(resume, str) and resume.startswith("comet://")):
        yield
        return
    check_file, latest = train.__dict__.get("check_file"), train.__dict__.get("get_latest_run")
    last = Path(check_file(resume) if isinstance(resume, str) else latest())
    token = _CONTEXT.set((argparse.Namespace(**vars(opt)), last))
    try:
        yield
    finally:
        _CONTEXT.reset(token)
