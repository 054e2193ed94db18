"""ultralytics without network: no downloads, no package installs, no analytics, no waiting on timeouts.

While ``YOLO_OFFLINE`` is true (the default :func:`~yolo_backbones.hosts.common.offline.go_offline` sets;
``YOLO_OFFLINE=0`` restores ultralytics' own behaviour for downloads):

* ``downloads.safe_download`` of a URL raises :class:`OfflineError`, ``is_url(..., check=True)`` is
  ``False`` without asking the server, ``get_github_assets`` lists nothing, and
  ``attempt_download_asset`` returns local files only, else raises :class:`OfflineError` in one line.
  That covers fonts (``check_font`` then finds no font and plots use PIL's), the AMP check's
  ``yolo26n.pt`` (its ``except ConnectionError`` skips the check), datasets and weights;
* usage analytics (``events``) are off.

Always: ``check_requirements`` never runs pip (e.g. ``onnxslim`` on ONNX export, which then just skips
the simplification); it says what is missing instead. A missing package of the ``edge`` extra (LiteRT, Core ML,
NCNN, ExecuTorch, MNN) is an error naming the extra; a pin the extra overrides on purpose (pnnx) is not checked.
"""
from __future__ import annotations

import importlib.metadata
import inspect
import logging
import re
import sys
from pathlib import Path
from typing import Any, Callable

from ...deploy.requirements import DELIBERATE_VERSIONS, EDGE_EXTRA, FORMAT_PACKAGES, EdgeExtraMissingError
from ..common.offline import env_true, go_offline
from ..common.patching import replace, say_once
from .model_patch import TOPS

__all__ = ["OfflineError", "patch_offline"]

_LOG = logging.getLogger("ultralytics")


class OfflineError(FileNotFoundError, ConnectionError):
    """A file is not present locally and would have to be downloaded, which yolo_backbones does not do.

    A ``ConnectionError`` too, so ultralytics' own "offline" handling (e.g. skipping the AMP check) applies.
    """


def _offline() -> bool:
    return env_true("YOLO_OFFLINE")


def _is_remote(url: Any) -> bool:
    text = str(url)
    return "://" in text or not Path(text).is_file()


def _make_safe_download(original: Callable) -> Callable:
    def safe_download(url: Any, *args: Any, **kwargs: Any) -> Any:
        """ultralytics' ``safe_download``; offline, a URL raises :class:`OfflineError` (local archives still unzip)."""
        if _offline() and _is_remote(url):
            raise OfflineError(f"not downloading {url}: yolo_backbones runs ultralytics offline (YOLO_OFFLINE=1). "
                               "Download it yourself and pass the local path.")
        return original(url, *args, **kwargs)

    return safe_download


def _make_is_url(original: Callable) -> Callable:
    def is_url(url: Any, check: bool = False) -> bool:
        """ultralytics' ``is_url``; offline, ``check=True`` (does it exist online?) is ``False`` without a request."""
        if check and _offline():
            return False
        return original(url, check=check)

    return is_url


def _make_get_github_assets(original: Callable) -> Callable:
    def get_github_assets(*args: Any, **kwargs: Any) -> tuple[str, list[str]]:
        """ultralytics' GitHub release listing; offline, no request and no assets."""
        return ("", []) if _offline() else original(*args, **kwargs)

    return get_github_assets


def _make_attempt_download_asset(original: Callable, downloads: Any) -> Callable:
    def attempt_download_asset(file: Any, *args: Any, **kwargs: Any) -> str:
        """ultralytics' weights lookup; offline, a file found neither locally nor in the weights folder is an error."""
        if not _offline():
            return original(file, *args, **kwargs)
        from ultralytics.utils import SETTINGS

        name = str(file).strip().replace("'", "")
        renamed = downloads.checks.check_yolov5u_filename(name, verbose=False)  # yolov5n.pt -> yolov5nu.pt, as the original
        weights_dir = Path(SETTINGS["weights_dir"])
        if any(Path(x).exists() or (weights_dir / x).exists() for x in (name, renamed)):
            return original(file, *args, **kwargs)
        raise OfflineError(f"{name}: not found locally (looked in {Path.cwd()} and {weights_dir}) and not downloaded: "
                           "yolo_backbones runs ultralytics offline (YOLO_OFFLINE=1). Pass the path of a local .pt "
                           "file, or a model YAML such as yolo11_edgevit.yaml to train from scratch.")

    return attempt_download_asset


def _make_check_requirements(original: Callable) -> Callable:
    signature = inspect.signature(original)

    def check_requirements(*args: Any, **kwargs: Any) -> bool:
        """ultralytics' requirement check without the pip install: warns what is missing and returns ``False``."""
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError:
            return original(*args, **kwargs)  # ultralytics' own error
        bound.arguments["install"] = False
        bound.arguments["requirements"] = _without_deliberate(bound.arguments.get("requirements"))
        ok = original(*bound.args, **bound.kwargs) if bound.arguments["requirements"] != [] else True
        if not ok:
            wanted = bound.arguments.get("requirements")
            items = list(wanted) if isinstance(wanted, (list, tuple)) else [wanted]
            # a tuple inside the list means "any one of these"
            missing = [" or ".join(r) if isinstance(r, tuple) else str(r) for r in items
                       if isinstance(r, Path) or not original([r], install=False)]
            edge = [m for m in missing if _package(m) in _EDGE_PACKAGES and not _installed(_package(m))]
            if edge:
                raise EdgeExtraMissingError(f"{', '.join(edge)} not installed (this export or runtime needs it; "
                                            f"nothing is installed at run time): {EDGE_EXTRA}")
            say_once(f"requirements:{missing}", f"requirements: {', '.join(missing)} not installed; yolo_backbones "
                     "does not install packages automatically (install them with pip if this step needs them)",
                     _LOG, logging.WARNING)
        return ok

    return check_requirements


_EDGE_PACKAGES = {dist.lower() for packages in FORMAT_PACKAGES.values() for _, dist in packages}


def _package(requirement: str) -> str:
    return re.split(r"[\[<>=!~;@ ]", str(requirement).strip(), maxsplit=1)[0].lower()


def _installed(name: str) -> bool:
    try:
        importlib.metadata.version(name)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def _without_deliberate(requirements: Any) -> Any:
    """``requirements`` without the pins the edge extra overrides on purpose (installed in another version)."""
    items = [requirements] if isinstance(requirements, str) else requirements
    if not isinstance(items, (list, tuple)):
        return requirements
    kept = [r for r in items
            if not (isinstance(r, str) and _package(r) in DELIBERATE_VERSIONS and _installed(_package(r)))]
    return requirements if len(kept) == len(items) else kept


def patch_offline() -> None:
    """Apply the replacements above to the ultralytics modules imported so far (idempotent)."""
    go_offline()
    downloads = sys.modules.get("ultralytics.utils.downloads")
    if downloads is not None and hasattr(downloads, "safe_download"):
        replace(downloads, "safe_download", _make_safe_download, tops=TOPS)
        replace(downloads, "is_url", _make_is_url, tops=TOPS)
        replace(downloads, "get_github_assets", _make_get_github_assets, tops=TOPS)
        replace(downloads, "attempt_download_asset",
                lambda original: _make_attempt_download_asset(original, downloads), tops=TOPS)
    checks = sys.modules.get("ultralytics.utils.checks")
    if checks is not None and hasattr(checks, "check_requirements"):
        replace(checks, "check_requirements", _make_check_requirements, tops=TOPS)
    events = sys.modules.get("ultralytics.utils.events")
    if events is not None and _offline() and getattr(events, "events", None) is not None:
        events.events.enabled = False  # decided at import from ONLINE, which may predate YOLO_OFFLINE
