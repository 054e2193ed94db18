"""ultralytics loads checkpoints through :func:`yolo_backbones.load_checkpoint`, the project's safe loader.

Every ``.pt`` ultralytics reads as a model (``YOLO("best.pt")``, ``yolo val/predict/export model=...``,
resume, ``AutoBackend``, ``strip_optimizer``) goes through ``tasks.torch_safe_load`` or
``torch_utils.torch_load``, both of which call the name ``torch_load`` of their module: that name is
re-pointed to the safe loader there. ``ultralytics.utils.patches.torch_load`` itself stays ultralytics'
(full unpickling): the DDP launcher uses it to hand the trainer, callbacks included, to its rank processes.

The classes an ultralytics checkpoint holds (``DetectionModel``, ``Conv``, ``Detect``, ...,
``IterableSimpleNamespace`` for ``model.args``) are allowed by namespace when the loader has
``register_model_namespace``, else put on its allow-list before each load.
"""
from __future__ import annotations

import sys
from typing import Any, Callable

from torch import nn

from ...core.weights import safe_load
from ..common.patching import replace

__all__ = ["allow_ultralytics_classes", "patch_checkpoint_loading"]

# Modules whose classes checkpoints pickle: the model layers, model.args, and (in checkpoints written
# before ultralytics stripped it) the training criterion.
_CLASS_MODULES = ("ultralytics.nn.", "ultralytics.utils.loss", "ultralytics.utils.tal")


def allow_ultralytics_classes() -> None:
    """Let the project's loader rebuild the classes of ultralytics checkpoints (idempotent)."""
    register = getattr(safe_load, "register_model_namespace", None)
    if register is not None:
        register("ultralytics.")
        return
    found: list[Any] = []
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith(_CLASS_MODULES):
            continue
        found += [obj for obj in list(vars(module).values())
                  if isinstance(obj, type) and obj.__module__ == name
                  and (issubclass(obj, nn.Module) or name.startswith("ultralytics.utils."))]
    utils = sys.modules.get("ultralytics.utils")
    if utils is not None and isinstance(getattr(utils, "IterableSimpleNamespace", None), type):
        found.append(utils.IterableSimpleNamespace)
    safe_load.allow_classes(*found)


def _make_torch_load(original: Callable) -> Callable:
    def torch_load(*args: Any, **kwargs: Any) -> Any:
        """``torch_load`` as ultralytics calls it, served by :func:`yolo_backbones.load_checkpoint`."""
        allow_ultralytics_classes()
        return safe_load.load_checkpoint(*args, **kwargs)

    return torch_load


def _make_torch_safe_load(original: Callable) -> Callable:
    def torch_safe_load(weight: Any, *args: Any, **kwargs: Any) -> Any:
        """ultralytics' ``torch_safe_load``; a file the safe loader refuses raises the loader's error.

        ultralytics would report any unpickling error as "empty, truncated or corrupted" file.
        """
        try:
            return original(weight, *args, **kwargs)
        except TypeError as e:
            if isinstance(e.__cause__, safe_load.UntrustedCheckpointError):
                raise e.__cause__ from None
            raise

    return torch_safe_load


def patch_checkpoint_loading() -> None:
    """Route the checkpoint loads of the ultralytics modules imported so far through the safe loader."""
    for name in ("ultralytics.nn.tasks", "ultralytics.utils.torch_utils"):
        module = sys.modules.get(name)
        if module is not None and callable(module.__dict__.get("torch_load")):
            # tops=(): the name is re-pointed in this module only (see the module docstring)
            replace(module, "torch_load", _make_torch_load, tops=())
    tasks = sys.modules.get("ultralytics.nn.tasks")
    if tasks is not None and callable(tasks.__dict__.get("torch_safe_load")):
        replace(tasks, "torch_safe_load", _make_torch_safe_load, tops=("ultralytics",))
