"""Offline replacements for YOLOv5's ``utils.general`` checks (online, git, requirements, font, files, datasets,
AMP)."""
from __future__ import annotations

import glob
import importlib
import logging
import os
import types
import urllib.parse
from copy import deepcopy
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ....resources import RESOURCE_DIRS, is_project_file
from ...common.patching import LOG, replace, say_once
from .requirements import _requirement_strings, _satisfied


def _patch_general(g: types.ModuleType) -> None:
    if not (hasattr(g, "check_file") and hasattr(g, "check_dataset")):
        return  # a namesake `utils.general`, not YOLOv5's
    log = getattr(g, "LOGGER", LOG)
    prefix = g.__name__[: -len("utils.general")]  # "yolov5." (pip) or "" (clone)

    def check_online() -> bool:
        """Always ``False``: yolo_backbones runs YOLOv5 offline.

        Why: the original opens a socket to 1.1.1.1:443 (5 s timeout, twice); some sandboxes accept
        that connection without being online, which would make check_amp fetch a URL image.
        """
        return False

    def check_git_status(*args: Any, **kwargs: Any) -> None:
        """No-op. Why: the original runs `git fetch` against github.com to say whether YOLOv5 is outdated."""

    def check_requirements(requirements: Any = None, exclude: tuple = (), install: bool = True, cmds: str = "",
                           **kwargs: Any) -> bool:
        """Report unmet requirements as a warning and return ``False``; never ``pip install``.

        Why: the original (pip: ultralytics' checker) installs missing packages with pip. Without
        ``requirements`` the host's own requirements are checked: a clone's requirements.txt, or
        the installed distribution's metadata for the pip package (the pip default points at a
        requirements.txt that does not exist).
        """
        missing = [r if isinstance(r, str) else " or ".join(r)  # a nested tuple lists alternatives
                   for r in _requirement_strings(requirements, g.ROOT, exclude) if not _satisfied(r)]
        if missing:
            log.warning(f"requirements: not installed or too old: {', '.join(missing)}. Nothing is installed "
                        "automatically (yolo_backbones runs YOLOv5 offline); install them yourself with pip.")
        return not missing

    def check_font(font: str | Path = getattr(g, "FONT", "Arial.ttf"), progress: bool = False) -> None:  # noqa: B008
        """Never download a font. Why: the original downloads Arial.ttf from ultralytics.com."""
        font = Path(font)
        if not font.exists() and not (g.CONFIG_DIR / font.name).exists():
            say_once(f"font:{font.name}", f"{font.name} not found locally; not downloading it, plots use "
                                          "PIL's built-in font", log)

    replace(g, "check_online", lambda orig: check_online)
    replace(g, "check_git_status", lambda orig: check_git_status)
    replace(g, "check_requirements", lambda orig: check_requirements)
    replace(g, "check_font", lambda orig: check_font)
    replace(g, "check_file", lambda orig: _make_check_file(orig, g))
    replace(g, "check_dataset", lambda orig: _make_check_dataset(orig, g))
    replace(g, "check_amp", lambda orig: _make_check_amp(g, prefix, log))


def _make_check_file(original: Callable, g: types.ModuleType) -> Callable:
    def check_file(file: Any, suffix: Any = "") -> str:
        """Find a file by path or bare name; never download.

        Why: a bare name was only searched in the host's data/, models/, utils/ folders, so this
        project's YAMLs were not found; it is now also searched in <project>/models and
        <project>/data. A URL was downloaded into the working directory; now it is refused.
        """
        text = str(file)
        if not text or os.path.isfile(text) or text.startswith("clearml://"):
            return original(file, suffix)
        g.check_suffix(file, suffix)
        if text.startswith(("http:/", "https:/")):
            local = Path(urllib.parse.unquote(text).split("?")[0]).name
            if os.path.isfile(local):
                return local
            raise FileNotFoundError(f"{text}: yolo_backbones does not download files (it runs YOLOv5 offline). "
                                    "Download it yourself and pass the local path.")
        dirs = [g.ROOT / d for d in ("data", "models", "utils")] + [d for d in RESOURCE_DIRS if d.is_dir()]
        found = {os.path.realpath(p): p for d in dirs for p in glob.glob(str(d / "**" / text), recursive=True)}
        where = ", ".join(str(d) for d in dirs)
        assert found, f"File not found: {text} (not a path from {os.getcwd()}, and no file of that name in {where})"
        assert len(found) == 1, f"Multiple files match '{text}', specify exact path: {sorted(found.values())}"
        return next(iter(found.values()))

    return check_file


def _make_check_dataset(original: Callable, g: types.ModuleType) -> Callable:
    def check_dataset(data: Any, autodownload: bool = True) -> dict:
        """Load and check a dataset YAML (or dict); never download the dataset.

        Why: (1) val.run(data='coco8.yaml') passed bare names to yaml_load; they are now resolved
        with check_file. (2) The host resolves a relative ``path:`` against its own root
        (site-packages/yolov5 for pip); for this project's YAMLs it is relative to the YAML file,
        so they work from any working directory. (3) A missing dataset was downloaded from the
        YAML's ``download:`` URL or script; now it is an error.
        """
        if isinstance(data, (str, Path)) and Path(data).suffix in (".yaml", ".yml"):
            data = g.check_file(data, (".yaml", ".yml"))
            if is_project_file(data):
                text, data = str(data), g.yaml_load(data)
                if isinstance(data, dict) and not Path(str(data.get("path") or "")).is_absolute():
                    data["path"] = str((Path(text).resolve().parent / str(data.get("path") or "")).resolve())
        try:
            return original(data, autodownload=False)
        except Exception as e:
            if "Dataset not found" not in str(e):
                raise
            raise FileNotFoundError("Dataset not found (the missing paths are listed above). yolo_backbones never "
                                    "downloads datasets, so the YAML's download: entry was not run; put the images "
                                    "there yourself, or try the embedded coco8.yaml.") from e

    return check_dataset


def _make_check_amp(g: types.ModuleType, prefix: str, log: logging.Logger) -> Callable:
    def check_amp(model: nn.Module) -> bool:
        """Decide whether to train with AMP, without downloading anything.

        Why: when the model's own FP32-vs-AMP comparison failed, the original downloaded
        yolov5n.pt to compare again. Now only the model's own check runs (CUDA only; CPU/MPS never
        use AMP) and a failure disables AMP with a message.
        """
        device = next(model.parameters()).device
        if device.type in ("cpu", "mps"):
            return False
        image = g.ROOT / "data" / "images" / "bus.jpg"
        image = image if image.exists() else np.ones((640, 640, 3), dtype=np.uint8)
        try:
            wrapped = importlib.import_module(prefix + "models.common").AutoShape(deepcopy(model), verbose=False)
            fp32 = wrapped(image).xywhn[0]
            wrapped.amp = True
            amp = wrapped(image).xywhn[0]
            ok, why = fp32.shape == amp.shape and bool(torch.allclose(fp32, amp, atol=0.1)), "results differ"
        except Exception as e:  # noqa: BLE001  the model cannot run the check (e.g. a backbone's input-size limits)
            ok, why = False, f"{type(e).__name__}: {e}"
        if ok:
            log.info("AMP: checks passed ✅")
        else:
            log.warning(f"AMP: the model's FP32 vs AMP self-check failed ({why}); training without AMP. "
                        "(The yolov5n.pt reference check is skipped: nothing is downloaded.)")
        return ok

    return check_amp
