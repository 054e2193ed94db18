"""yolo-backbones: EdgeViT, Mobile-Former and EfficientFormer (v1/v2) as backbones of YOLO detectors.

``import yolo_backbones`` registers the backbones and installs the plugin into every supported YOLO
host that is (or later gets) imported: YOLOv5 (the PyPI package ``yolov5.models.yolo`` or a clone's
``models.yolo``) and the ``ultralytics`` package (YOLOv8 / YOLO11 / YOLO26, ``ultralytics.nn.tasks``).
It never imports a host itself.
"""
from __future__ import annotations

from . import legacy
from .core import Backbone, InputSizeError, Select, backbone_names, create, list_backbones
from .core.weights import plugin_layers
from .core.weights.safe_load import CheckpointFileError, UntrustedCheckpointError, allow_classes, load_checkpoint
from .hosts.common.rows import ModelConfigError

__all__ = ["create", "list_backbones", "backbone_names", "install", "load_checkpoint", "allow_classes", "Select",
           "Backbone", "InputSizeError", "ModelConfigError", "CheckpointFileError", "UntrustedCheckpointError"]
__version__ = "0.2.0"

legacy.install_aliases()
plugin_layers.register()


def install() -> list[str]:
    """Install the plugin into every YOLO host module already imported; return the names patched now.

    Idempotent. Applies the compatibility fixes (offline, torch >= 2.6) and the model-building patch.
    Modules imported later are handled by the import hook that this also enables. Nothing outside the hosts
    changes: no exception hook (except in the hosts' own ``yolov5`` / ``yolo`` commands, see
    :mod:`yolo_backbones.hosts.common.errors`), allocator or thread settings.
    """
    import yolo_backbones_autoload

    from .hosts import ultralytics, yolov5
    from .hosts.common.errors import host_command_running, install_excepthook

    yolo_backbones_autoload.enable()
    patched = yolov5.install() + ultralytics.install()
    if host_command_running():  # `yolov5 ...` / `yolo ...`: the host's command is an entry point of the plugin too
        install_excepthook()
    return patched


install()
