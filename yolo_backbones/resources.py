"""Where the project's model YAMLs and datasets live, and bare-name lookup in them."""
from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent
# A source checkout (also `pip install -e .`) has models/ and data/ beside the package; a regular
# wheel install carries copies under the package (setup.py puts them there).
_ROOT = _PACKAGE_DIR.parent if (_PACKAGE_DIR.parent / "models").is_dir() else _PACKAGE_DIR / "_resources"
MODELS_DIR = _ROOT / "models"
DATA_DIR = _ROOT / "data"
RESOURCE_DIRS = (MODELS_DIR, DATA_DIR)


def is_project_file(path: str | Path) -> bool:
    """True if ``path`` lies inside this project's ``models/`` or ``data/`` folders."""
    real = Path(path).resolve()
    return any(real.is_relative_to(folder.resolve()) for folder in RESOURCE_DIRS)


def find_resource(name: str | Path) -> Path | None:
    """Return the project file a bare YAML name refers to, e.g. ``"yolov5_edgevit.yaml"`` -> ``.../models/...``.

    Returns ``None`` when ``name`` is an existing path (it is used as given) or no project file
    has that name; only plain file names (no directories) are looked up.
    """
    path = Path(name)
    if not str(name) or path.exists() or path.name != str(name):
        return None
    for folder in RESOURCE_DIRS:
        candidate = folder / path.name
        if candidate.is_file():
            return candidate
    return None
