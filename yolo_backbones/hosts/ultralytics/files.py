"""Bare YAML names find this project's ``models/`` and ``data/`` first; its dataset YAMLs work from any folder.

* ``checks.check_file`` (behind ``check_yaml``, ``check_det_dataset``, ``YOLO("...yaml")``): a plain file
  name that is not a path from the working directory and names a file of this project
  (``yolo11_edgevit.yaml``, ``coco8.yaml``) resolves to that file, before ultralytics searches its own
  package (whose ``coco8.yaml`` would download COCO8).
* ``data.utils.YAML``: a relative ``path:`` in a dataset YAML of this project is relative to the YAML
  file (ultralytics reads it relative to the working directory, else its datasets folder).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

from ...resources import find_resource, is_project_file
from ..common.patching import replace
from .model_patch import TOPS

__all__ = ["patch_files"]


def _make_check_file(original: Callable) -> Callable:
    def check_file(file: Any, *args: Any, **kwargs: Any) -> Any:
        """ultralytics' ``check_file``; a bare name of a project file resolves to that file first."""
        found = find_resource(str(file).strip()) if isinstance(file, (str, Path)) else None
        return original(str(found) if found is not None else file, *args, **kwargs)

    return check_file


def _make_yaml_class(base: type) -> type:
    class ProjectYAML(base):  # type: ignore[misc, valid-type]
        """ultralytics' ``YAML``; a dataset YAML of this project reads a relative ``path:`` from its own folder."""

        @classmethod
        def load(cls, file: Any = "data.yaml", append_filename: bool = False) -> Any:
            data = super().load(file, append_filename)
            path = data.get("path") if isinstance(data, dict) else None
            if path and not Path(str(path)).is_absolute() and is_project_file(file):
                data["path"] = str((Path(file).resolve().parent / str(path)).resolve())
            return data

    ProjectYAML.__qualname__ = ProjectYAML.__name__ = base.__name__
    ProjectYAML.__module__ = __name__
    return ProjectYAML


def patch_files() -> None:
    """Apply both replacements to the ultralytics modules imported so far (idempotent)."""
    checks = sys.modules.get("ultralytics.utils.checks")
    if checks is not None and hasattr(checks, "check_file"):
        replace(checks, "check_file", _make_check_file, tops=TOPS)
    data_utils = sys.modules.get("ultralytics.data.utils")
    if data_utils is not None and isinstance(data_utils.__dict__.get("YAML"), type):
        # Only in data/utils.py, where dataset YAMLs are read: no other module sees the subclass.
        replace(data_utils, "YAML", _make_yaml_class, tops=())
