"""Make YOLOv5 usable offline and on torch >= 2.6, without loosening checkpoint security.

The host is the PyPI package ``yolov5==7.0.14`` (modules ``yolov5.*``) or a clone of
ultralytics/yolov5 (top-level ``utils.*``, ``models.*``, ``train`` ...). :func:`apply_compat`
replaces a few host functions, only those that exist, and is idempotent:

* checkpoints: ``torch.load`` in the host (and a clone's ``torch_load``) keep
  ``weights_only=True``; the allowlist grows by the classes a YOLOv5 checkpoint legitimately
  contains (:func:`allow_classes` adds more). Anything else is refused with a clear error, unless
  ``YOLO_BACKBONES_TRUST_CHECKPOINTS=1`` is set;
* nothing is downloaded: fonts, weights (GitHub or the Hugging Face Hub), datasets, files given as
  URLs, the ``yolov5n.pt`` AMP reference; ``pip install`` never runs and no online check connects;
* bare YAML names are also looked up in this project's ``models/`` and ``data/`` folders, and a
  relative ``path:`` in our own dataset YAMLs is relative to the YAML file;
* ``train`` with ``--cfg`` and no ``--weights`` trains from scratch instead of loading ``yolov5s.pt``;
* numpy >= 2.4: the host's mAP code finds ``np.trapz`` again;
* ``val.run`` with ``save_json`` computes pycocotools mAP for any dataset that has a COCO annotation
  file, not only COCO (:mod:`yolo_backbones.coco_val`).
"""
from __future__ import annotations

import glob
import importlib
import importlib.metadata
import importlib.util
import inspect
import logging
import os
import re
import sys
import types
import urllib.parse
import warnings
from copy import deepcopy
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from .checkpoints import _env_true, _refresh_allowlist, _try_import, load_checkpoint
from .resources import RESOURCE_DIRS, is_project_file

__all__ = ["apply_compat"]

_MARK = "_yolo_backbones_compat"  # set on every replacement function
_LOG = logging.getLogger("yolov5")  # the pip host's logger; used where no host module is at hand
_said: set[str] = set()  # one-time messages already logged


def _silence_pkg_resources_warning() -> None:
    # Why: every `import yolov5` prints "pkg_resources is deprecated as an API" (utils/general.py and
    # utils/loggers import pkg_resources; setuptools<81 still ships it). Only that warning is ignored.
    warnings.filterwarnings("ignore", message=r"pkg_resources is deprecated as an API", category=UserWarning)


_silence_pkg_resources_warning()  # at import too: the warning fires on YOLOv5's first import


class _OnnxWithLegacyExport(types.ModuleType):
    """``torch.onnx`` as seen by the host's export.py: ``export`` defaults to the TorchScript exporter.

    Why: since torch 2.9 ``torch.onnx.export`` defaults to ``dynamo=True``, which needs the
    ``onnxscript`` package and handles ``dynamic_axes`` differently; YOLOv5's export.py was written
    for the TorchScript-based exporter (``dynamo=False``). An explicit ``dynamo=`` is respected.
    """

    def __init__(self) -> None:
        super().__init__("torch.onnx", torch.onnx.__doc__)

    def __getattr__(self, name: str) -> Any:
        return getattr(torch.onnx, name)

    @staticmethod
    def export(*args: Any, **kwargs: Any) -> Any:
        if "dynamo" in inspect.signature(torch.onnx.export).parameters:
            kwargs.setdefault("dynamo", False)
        return torch.onnx.export(*args, **kwargs)


class _TorchForHost(types.ModuleType):
    """Stands in for the name ``torch`` inside the host modules that load checkpoints or export ONNX.

    Everything is the real torch except ``load`` (the safe loader) and ``onnx`` (legacy export).
    Why: pip's yolov5 calls ``torch.load(f, map_location=...)`` inside function bodies (attempt_load,
    train, strip_optimizer, hubconf); replacing the module-global name ``torch`` there reroutes
    those calls without changing ``torch.load`` for the rest of the process.
    """

    load = staticmethod(load_checkpoint)
    onnx = _OnnxWithLegacyExport()

    def __init__(self) -> None:
        super().__init__("torch", torch.__doc__)

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)


_TORCH = _TorchForHost()


class _NumpyForHost(types.ModuleType):
    """Stands in for the name ``np`` in pip yolov5's ``utils/metrics.py``: the real numpy plus ``trapz``.

    Why: numpy 2.4 removed ``np.trapz`` (``trapezoid`` since 2.0) and ``compute_ap`` calls it, so val.py
    crashed with AttributeError as soon as one detection was correct.
    """

    trapz = staticmethod(getattr(np, "trapezoid", None))

    def __init__(self) -> None:
        super().__init__("numpy", np.__doc__)

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)


_TORCH_USERS = ("models.experimental", "train", "utils.general", "hubconf", "segment.train", "export")


# ----------------------------------------------------------------------------------------------
# Replacing host functions
# ----------------------------------------------------------------------------------------------

_HOST_TOPS = frozenset({"yolov5", "models", "utils", "train", "val", "detect", "export", "hubconf", "benchmarks",
                        "segment", "classify", "yolo_backbones"})


def _is_yolov5_file(module: types.ModuleType) -> bool:
    """True if ``module`` is a file of a YOLOv5 tree (pip package or clone), not a namesake."""
    file = getattr(module, "__file__", None)
    if not file:
        return False
    here = Path(file).resolve().parent
    return any((d / "models" / "yolo.py").is_file() and (d / "utils" / "general.py").is_file()
               for d in (here, here.parent))


def _host_modules() -> Iterator[types.ModuleType]:
    """Loaded modules that may hold host functions imported by name (``from utils.general import x``)."""
    for name, module in list(sys.modules.items()):
        if module is not None and (name.partition(".")[0] in _HOST_TOPS
                                   or (name == "__main__" and _is_yolov5_file(module))):
            yield module


def _replace(module: types.ModuleType | None, name: str, make: Callable[[Callable], Callable]) -> None:
    """Set ``module.<name> = make(original)`` once; re-point host modules that imported the original by name."""
    current = module.__dict__.get(name) if module is not None else None
    if not callable(current):
        return
    if getattr(current, _MARK, False):
        original, new = current.__wrapped__, current
    else:
        original, new = current, make(current)
        new.__wrapped__ = original
        setattr(new, _MARK, True)
        setattr(module, name, new)
    _repoint(original, new, name)


def _repoint(original: Any, new: Any, name: str) -> None:
    for module in _host_modules():
        if module.__dict__.get(name) is original:
            setattr(module, name, new)


def _say_once(key: str, message: str, logger: logging.Logger = _LOG) -> None:
    if key not in _said:
        _said.add(key)
        logger.info(message)


# --- utils.general ------------------------------------------------------------------------------

def _patch_general(g: types.ModuleType) -> None:
    if not (hasattr(g, "check_file") and hasattr(g, "check_dataset")):
        return  # a namesake `utils.general`, not YOLOv5's
    log = getattr(g, "LOGGER", _LOG)
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

    def check_font(font: str | Path = getattr(g, "FONT", "Arial.ttf"), progress: bool = False) -> None:
        """Never download a font. Why: the original downloads Arial.ttf from ultralytics.com."""
        font = Path(font)
        if not font.exists() and not (g.CONFIG_DIR / font.name).exists():
            _say_once(f"font:{font.name}", f"{font.name} not found locally; not downloading it, plots use "
                                          "PIL's built-in font", log)

    _replace(g, "check_online", lambda orig: check_online)
    _replace(g, "check_git_status", lambda orig: check_git_status)
    _replace(g, "check_requirements", lambda orig: check_requirements)
    _replace(g, "check_font", lambda orig: check_font)
    _replace(g, "check_file", lambda orig: _make_check_file(orig, g))
    _replace(g, "check_dataset", lambda orig: _make_check_dataset(orig, g))
    _replace(g, "check_amp", lambda orig: _make_check_amp(g, prefix, log))


def _requirement_strings(requirements: Any, root: Path, exclude: tuple) -> list[str]:
    if requirements is None:  # the host's own requirements
        requirements = root / "requirements.txt"
        if not requirements.is_file():
            try:
                requirements = importlib.metadata.requires(root.name) or []
            except importlib.metadata.PackageNotFoundError:
                requirements = []
    if isinstance(requirements, Path):
        lines = requirements.read_text().splitlines() if requirements.is_file() else []
        requirements = [x.split("#")[0].strip() for x in lines if x.strip() and not x.strip().startswith(("#", "-"))]
    if isinstance(requirements, str):
        requirements = [requirements]
    names = [r for r in requirements if r]
    return [r for r in names if isinstance(r, (list, tuple)) or _req_name(r) not in exclude]


def _req_name(requirement: str) -> str:
    return re.split(r"[\[<>=!~;@ ]", requirement.strip(), maxsplit=1)[0]


def _satisfied(requirement: str | tuple | list) -> bool:
    """Installed and in range; a tuple/list nested in the requirements means any one of its items."""
    if isinstance(requirement, (list, tuple)):
        return any(_satisfied(r) for r in requirement)
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        req = Requirement(requirement)
    except InvalidRequirement:
        return True  # e.g. a git URL: not checkable offline, not our business to fail on
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        return True
    try:
        version = importlib.metadata.version(req.name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return req.specifier.contains(version, prereleases=True)


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
        except Exception as e:  # the model cannot run the check (e.g. a backbone's input-size limits)
            ok, why = False, f"{type(e).__name__}: {e}"
        if ok:
            log.info("AMP: checks passed ✅")
        else:
            log.warning(f"AMP: the model's FP32 vs AMP self-check failed ({why}); training without AMP. "
                        "(The yolov5n.pt reference check is skipped: nothing is downloaded.)")
        return ok

    return check_amp


# --- utils.plots ----------------------------------------------------------------------------------

def _patch_plots(plots: types.ModuleType, g: types.ModuleType) -> None:
    from PIL import ImageFont

    log = getattr(g, "LOGGER", _LOG)

    def check_pil_font(font: str | Path = getattr(g, "FONT", "Arial.ttf"), size: int = 10) -> Any:
        """A local TrueType font, else PIL's built-in font; never download.

        Why: the original downloads Arial.ttf when missing and, offline, fails the plotting threads
        (train_batch*.jpg, val_batch*.jpg). The returned font also has ``getsize`` again: the host's
        Annotator calls it and Pillow >= 10 removed it.
        """
        font = Path(font)
        local = font if font.exists() else g.CONFIG_DIR / font.name
        try:
            result = ImageFont.truetype(str(local) if local.exists() else font.name, size)
        except OSError:
            _say_once(f"font:{font.name}", f"{font.name} not found locally; not downloading it, plots use "
                                          "PIL's built-in font", log)
            try:
                result = ImageFont.load_default(size=size)
            except TypeError:  # Pillow < 10.1: fixed-size bitmap font
                result = ImageFont.load_default()
        if not hasattr(result, "getsize"):
            result.getsize = lambda text: tuple(result.getbbox(text)[2:4])  # (width, height) from the origin
        return result

    _replace(plots, "check_pil_font", lambda orig: check_pil_font)


# --- utils.downloads ------------------------------------------------------------------------------

_WEIGHT_SUFFIXES = (".pt", ".pth", ".torchscript", ".onnx", ".engine", ".mlmodel", ".pb", ".tflite", ".xml", ".bin",
                    ".yaml", ".yml")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _looks_like_hub_id(name: Any) -> bool:
    text = str(name).strip() if isinstance(name, (str, Path)) else ""
    return (bool(_HUB_ID.match(text)) and not os.path.exists(text)
            and not text.lower().endswith(_WEIGHT_SUFFIXES) and not text.endswith(("_model", "_saved_model")))


def _patch_downloads(d: types.ModuleType, g: types.ModuleType | None) -> None:
    log = getattr(g, "LOGGER", _LOG)

    def attempt_download(file: Any, repo: str = "ultralytics/yolov5", release: str = "v7.0", hf_token: Any = None,
                         **kwargs: Any) -> str:
        """Return the local weights path; never download.

        Why: for a missing file (e.g. the default yolov5s.pt) the original asked the GitHub API and
        downloaded the release asset, or downloaded a URL; offline that fails late and unclearly.
        """
        hub = getattr(d, "attempt_download_from_hub", None)
        if hub is not None:
            file = hub(file, hf_token=hf_token) or file
        path = Path(str(file).strip().replace("'", ""))
        if path.exists():
            return str(path)
        raise FileNotFoundError(
            f"Weights file {str(file)!r} is not present locally (looked in {os.getcwd()}); nothing is downloaded "
            "(yolo_backbones runs YOLOv5 offline). Pass the path of a local .pt file, or --weights '' "
            "(weights='') to train from scratch with --cfg <model.yaml>.")

    def attempt_download_from_hub(repo_id: Any, hf_token: Any = None, revision: Any = None) -> str | None:
        """A Hugging Face Hub model id -> local .pt path; ``None`` for local files and non-hub strings.

        Why: the original sends every weights string to the Hub, local files included, and raises
        OfflineModeIsEnabled for names like 'weights/best.pt'. Offline (HF_HUB_OFFLINE=1, the
        default set by apply_compat) a hub id resolves only from the local Hugging Face cache.
        """
        if not _looks_like_hub_id(repo_id):
            return None
        from huggingface_hub import constants, snapshot_download

        if not constants.HF_HUB_OFFLINE:
            return original_hub(repo_id, hf_token=hf_token, revision=revision)
        try:
            folder = snapshot_download(repo_id, revision=revision, token=hf_token, local_files_only=True)
        except Exception:  # LocalEntryNotFoundError and friends: not in the cache
            folder = None
        weights = sorted(Path(folder).glob("*.pt")) if folder else []
        if not weights:
            raise FileNotFoundError(f"{repo_id!r} is not a local file; as a Hugging Face Hub model id it is not in "
                                    "the local Hugging Face cache either, and hub access is off (HF_HUB_OFFLINE=1). "
                                    "Pass the path of a local .pt file, or set HF_HUB_OFFLINE=0 to allow the download.")
        log.info(f"{repo_id}: using {weights[0]} from the local Hugging Face cache")
        return str(weights[0])

    def is_url(url: Any, check: bool = True) -> bool:
        """Whether ``url`` looks like a URL; with ``check`` always ``False`` (existence is not checked online).

        Why: the original opens the URL to check that it exists.
        """
        try:
            parts = urllib.parse.urlparse(str(url))
        except ValueError:
            return False
        return bool(parts.scheme and parts.netloc) and not check

    original_hub = d.__dict__.get("attempt_download_from_hub")
    if getattr(original_hub, _MARK, False):
        original_hub = original_hub.__wrapped__
    _replace(d, "attempt_download", lambda orig: attempt_download)
    _replace(d, "attempt_download_from_hub", lambda orig: attempt_download_from_hub)
    _replace(d, "is_url", lambda orig: is_url)


# --- train ----------------------------------------------------------------------------------------

class _DefaultWeights(str):
    """A ``--weights`` value that came from train.py's default, not from the user."""


def _weights_on_command_line(argv: list[str]) -> bool:
    # argparse accepts unambiguous prefixes, so "--we", "--weight", "--weights=x" all count
    return any(a.startswith("--we") and "--weights".startswith(a.split("=", 1)[0]) for a in argv[1:])


def _patch_train(train: types.ModuleType) -> None:
    """``--cfg`` without ``--weights`` trains from scratch instead of loading the default yolov5s.pt.

    Why: train.py's ``--weights`` defaults to yolov5s.pt, so ``train --cfg model.yaml`` tried to
    download it and copied its matching layers into the new model. parse_opt marks the default
    value; main (reached by run, run_cli and the yolov5 CLI alike) replaces a marked value by ''
    when a cfg is given, after run(**kwargs) had the chance to set weights explicitly.
    """
    if not (callable(train.__dict__.get("parse_opt")) and callable(train.__dict__.get("main"))):
        return
    log = getattr(train, "LOGGER", _LOG)

    def make_parse_opt(original: Callable) -> Callable:
        def parse_opt(known: bool = False) -> Any:
            opt = original(known)
            if isinstance(getattr(opt, "weights", None), str) and not _weights_on_command_line(sys.argv):
                opt.weights = _DefaultWeights(opt.weights)
            return opt

        return parse_opt

    def make_main(original: Callable) -> Callable:
        def main(opt: Any, callbacks: Any = None) -> Any:
            weights = getattr(opt, "weights", None)
            if isinstance(weights, _DefaultWeights):
                opt.weights = str(weights)
                if getattr(opt, "cfg", "") and not getattr(opt, "resume", False):
                    opt.weights = ""
                    log.info(f"train: --cfg {opt.cfg} without --weights: training from scratch (weights=''), not from "
                             f"the default {weights}; pass --weights <file.pt> to start from a checkpoint")
            # Why a new Callbacks: pip's main() shares one default instance, so a second run in the
            # same process would register every logger action twice.
            if callbacks is None and "Callbacks" in train.__dict__:
                callbacks = train.Callbacks()
            return original(opt) if callbacks is None else original(opt, callbacks)

        return main

    _replace(train, "parse_opt", make_parse_opt)
    _replace(train, "main", make_main)


# ----------------------------------------------------------------------------------------------
# Process-wide settings
# ----------------------------------------------------------------------------------------------

def _go_offline() -> None:
    # Why: huggingface_hub and ultralytics read these (HF at import, into constants.HF_HUB_OFFLINE;
    # ultralytics' is_online() at every call, and its ONLINE constant at import, which gates pip
    # auto-installs and update checks). Defaults only: a value the user set is kept.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("YOLO_OFFLINE", "1")
    hf = sys.modules.get("huggingface_hub.constants")
    if hf is not None and _env_true("HF_HUB_OFFLINE"):
        hf.HF_HUB_OFFLINE = True
    if _env_true("YOLO_OFFLINE"):
        for name in ("ultralytics.utils", "ultralytics.utils.checks", "ultralytics.utils.events",
                     "ultralytics.hub.utils", "ultralytics.hub"):
            module = sys.modules.get(name)
            if module is not None and module.__dict__.get("ONLINE") is True:
                module.ONLINE = False


def _patch_ultralytics_font() -> None:
    # Why: a clone's detect.py draws with ultralytics' Annotator, whose check_font asks
    # ultralytics.com (3 s timeout) for a missing Arial.ttf on every new Annotator, i.e. every image.
    plotting = sys.modules.get("ultralytics.utils.plotting")
    if plotting is None:
        return

    def check_font(font: str = "Arial.ttf") -> Path | None:
        """ultralytics' font lookup without the download: a local copy, else None (Annotator then uses PIL's font)."""
        for file in (Path(font), sys.modules["ultralytics.utils"].USER_CONFIG_DIR / Path(font).name):
            if file.is_file():
                return file
        return None

    _replace(plotting, "check_font", lambda orig: check_font)


# ----------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------

_PIP_ENTRY_MODULES = ("yolov5.train", "yolov5.val", "yolov5.detect", "yolov5.export")


def _layout_prefixes(host: types.ModuleType | None) -> list[str]:
    """Module-name prefixes of the hosts to patch: "yolov5." (pip package) and/or "" (clone layout)."""
    if host is not None:
        if host.__name__ == "yolov5":
            for name in ("yolov5.utils.general", "yolov5.models.experimental", *_PIP_ENTRY_MODULES):
                importlib.import_module(name)
            return ["yolov5."]
        if host.__name__ in ("utils", "models"):
            for name in ("utils.general", "utils.downloads", "utils.plots", "models.common", "models.experimental"):
                _try_import(name)
            return [""]
        raise ValueError(f"apply_compat: {host.__name__!r} is not a YOLOv5 host package "
                         "(expected yolov5, or a clone's utils or models)")
    prefixes = []
    if any(n == "yolov5" or n.startswith("yolov5.") for n in sys.modules):
        prefixes.append("yolov5.")
    if any(n in sys.modules for n in ("utils.general", "utils.downloads", "models.yolo", "models.experimental")):
        prefixes.append("")
    if not prefixes and importlib.util.find_spec("yolov5") is not None:
        return _layout_prefixes(importlib.import_module("yolov5"))
    return prefixes


def apply_compat(host: types.ModuleType | None = None) -> None:
    """Make a YOLOv5 work offline and load its checkpoints safely on torch >= 2.6. Idempotent.

    Args:
        host: the YOLOv5 to patch: the pip ``yolov5`` package (its train/val/detect/export modules
            are imported and patched too), or a clone's top-level ``utils`` or ``models`` package.
            ``None`` patches every YOLOv5 module already imported (pip and/or clone layout); if
            none is, the pip package is imported and patched when installed. Modules imported
            later are patched by the next call (yolo_backbones' import hook makes that call).
    """
    _silence_pkg_resources_warning()
    _go_offline()
    for prefix in _layout_prefixes(host):
        general = sys.modules.get(prefix + "utils.general")
        if general is not None:
            _patch_general(general)
            if prefix + "utils.plots" in sys.modules:
                _patch_plots(sys.modules[prefix + "utils.plots"], general)
        if prefix + "utils.downloads" in sys.modules:
            _patch_downloads(sys.modules[prefix + "utils.downloads"], general)
        for name in _TORCH_USERS:
            module = sys.modules.get(prefix + name)
            if module is not None and module.__dict__.get("torch") is torch and _is_yolov5_file(module):
                module.torch = _TORCH
        for name in ("train", "segment.train"):
            module = sys.modules.get(prefix + name)
            if module is not None and (prefix or _is_yolov5_file(module)):
                _patch_train(module)
        metrics = sys.modules.get(prefix + "utils.metrics")
        if metrics is not None and metrics.__dict__.get("np") is np and not hasattr(np, "trapz"):
            metrics.np = _NumpyForHost()
        val = sys.modules.get(prefix + "val")
        if val is not None and (prefix or _is_yolov5_file(val)):
            from .coco_val import patch_val

            patch_val(val)  # val.py --save-json: pycocotools mAP for any dataset with a COCO annotation file
        if not prefix and general is not None and hasattr(general, "check_dataset"):
            _patch_ultralytics_font()
    patches = sys.modules.get("ultralytics.utils.patches")
    if patches is not None and callable(getattr(patches, "torch_load", None)):
        # Why: a clone loads every checkpoint with ultralytics' torch_load, which defaults to weights_only=False
        _repoint(patches.torch_load, load_checkpoint, "torch_load")
    _refresh_allowlist()
