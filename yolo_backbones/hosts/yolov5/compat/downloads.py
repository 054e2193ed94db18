"""YOLOv5's ``utils.downloads`` offline: local weights or a clear error, hub ids from the local cache only."""
from __future__ import annotations

import os
import re
import types
import urllib.parse
from pathlib import Path
from typing import Any

from ...common.patching import LOG, MARK, replace

_WEIGHT_SUFFIXES = (".pt", ".pth", ".torchscript", ".onnx", ".engine", ".mlmodel", ".pb", ".tflite", ".xml", ".bin",
                    ".yaml", ".yml")


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _looks_like_hub_id(name: Any) -> bool:
    text = str(name).strip() if isinstance(name, (str, Path)) else ""
    return (bool(_HUB_ID.match(text)) and not os.path.exists(text)
            and not text.lower().endswith(_WEIGHT_SUFFIXES) and not text.endswith(("_model", "_saved_model")))


def _patch_downloads(d: types.ModuleType, g: types.ModuleType | None) -> None:
    log = getattr(g, "LOGGER", LOG)

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
        except Exception:  # noqa: BLE001  LocalEntryNotFoundError and friends: not in the cache
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
    if getattr(original_hub, MARK, False):
        original_hub = original_hub.__wrapped__
    replace(d, "attempt_download", lambda orig: attempt_download)
    replace(d, "attempt_download_from_hub", lambda orig: attempt_download_from_hub)
    replace(d, "is_url", lambda orig: is_url)
