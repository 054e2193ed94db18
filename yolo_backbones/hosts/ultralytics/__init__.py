"""The ultralytics host (YOLOv8 / YOLO11 / YOLO26 of the ``ultralytics`` package).

:func:`install` patches the ultralytics modules imported so far, each at most once:

* ``ultralytics.nn.tasks``: backbone classes and ``Select`` nameable in model YAMLs, ``parse_model``
  (:mod:`.parse_model`), ``fuse``/``is_fused`` covering the backbones (:mod:`.model_patch`);
* no network and no pip (:mod:`.offline`); bare YAML names find this project's files (:mod:`.files`);
* checkpoints load through the project's safe loader (:mod:`.checkpoints`); exported models' metadata is
  checked (:mod:`.exported`);
* COCO mAP with pycocotools for datasets with ``coco_json:`` (:mod:`.coco_val`);
* OpenVINO INT8 export of plugin models through :mod:`yolo_backbones.deploy.int8` (:mod:`.int8`);
* edge exports and their loaders for plugin models (:mod:`.edge`).

Modules imported later are handled by the next call, which ``yolo_backbones``' import hook makes.
"""
from __future__ import annotations

import sys

from .checkpoints import patch_checkpoint_loading
from .coco_val import patch_detection_validator
from .edge import patch_edge
from .exported import patch_exported_metadata
from .files import patch_files
from .int8 import patch_openvino_int8
from .model_patch import is_tasks_module, patch_tasks_module
from .offline import OfflineError, patch_offline

__all__ = ["install", "is_tasks_module", "patch_tasks_module", "OfflineError"]


def install() -> list[str]:
    """Patch the ultralytics modules imported so far; return the names whose model building was patched now.

    Idempotent; imports nothing of ultralytics itself.
    """
    if sys.modules.get("ultralytics.utils") is None:  # nothing of ultralytics is imported yet
        return []
    patch_offline()
    patch_files()
    patch_checkpoint_loading()
    patch_exported_metadata()
    patch_detection_validator()
    patch_openvino_int8()
    patch_edge()
    tasks = sys.modules.get("ultralytics.nn.tasks")
    return [tasks.__name__] if tasks is not None and patch_tasks_module(tasks) else []
