"""Process-wide offline defaults for the hosts and huggingface_hub."""
from __future__ import annotations

import os
import sys


def env_true(name: str) -> bool:
    """Whether environment variable ``name`` is set to 1/true/yes/on."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def go_offline() -> None:
    # Why: huggingface_hub and ultralytics read these (HF at import, into constants.HF_HUB_OFFLINE;
    # ultralytics' is_online() at every call, and its ONLINE constant at import, which gates pip
    # auto-installs and update checks). Defaults only: a value the user set is kept.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("YOLO_OFFLINE", "1")
    hf = sys.modules.get("huggingface_hub.constants")
    if hf is not None and env_true("HF_HUB_OFFLINE"):
        hf.HF_HUB_OFFLINE = True
    if env_true("YOLO_OFFLINE"):
        for name in ("ultralytics.utils", "ultralytics.utils.checks", "ultralytics.utils.events",
                     "ultralytics.hub.utils", "ultralytics.hub"):
            module = sys.modules.get(name)
            if module is not None and module.__dict__.get("ONLINE") is True:
                module.ONLINE = False
