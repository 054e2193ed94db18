"""ultralytics loads checkpoints through :func:`yolo_backbones.load_checkpoint`, the project's safe loader.

Every ``.pt`` ultralytics reads as a model (``YOLO("best.pt")``, ``yolo val/predict/export model=...``,
resume, ``AutoBackend``, ``strip_optimizer``) goes through ``tasks.torch_safe_load`` or
``torch_utils.torch_load``, both of which call the name ``torch_load`` of their module: that name is
re-pointed to the safe loader there. ``ultralytics.utils.patches.torch_load`` itself stays ultralytics'
(full unpickling): the DDP launcher uses it to hand the trainer, callbacks included, to its rank processes.

The classes an ultralytics checkpoint holds (``DetectionModel``, ``Conv``, ``Detect``, ...,
``IterableSimpleNamespace`` for ``model.args``) may be rebuilt (never called): the ``ultralytics`` namespace is
registered with the loader.
"""
from __future__ import annotations

import sys
from typing import Any, Callable

from ...core.weights import safe_load
from ..common.patching import replace

__all__ = ["allow_ultralytics_classes", "patch_checkpoint_loading"]

def allow_ultralytics_classes() -> None:
    """Let the project's loader rebuild the classes of ultralytics checkpoints (idempotent)."""
    safe_load.register_model_namespace("ultralytics")


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
