"""Install yolo-backbones into a YOLO host as soon as the host is imported, in any Python process.

``yolo_backbones.pth`` (installed into site-packages by ``setup.py``) imports this module at
interpreter start. It imports nothing heavy: it only adds a meta-path finder that waits for a
host module to be imported (the PyPI package's ``yolov5.*``, a clone's ``models.yolo``,
``utils.general``, ..., or ``ultralytics.*``) and then runs ``yolo_backbones.install()``. That is
what makes the CLIs (``yolov5 val --weights best.pt``, ``yolo train model=yolo11_edgevit.yaml``), a
clone's own ``python train.py`` and every DDP rank (ultralytics starts them from a generated script)
find the plugin without an explicit import. Before ``ultralytics`` itself runs, the offline defaults
are set (its import-time online check is a DNS lookup that can hang without network). Set
``YOLO_BACKBONES_NO_AUTOLOAD=1`` to disable it.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import os
import sys
import types
import warnings

# Modules after whose import the plugin (re)installs itself; install() is idempotent and only
# touches modules already imported, so each of these is a point where new work may appear.
WATCHED = frozenset({
    "yolov5", "yolov5.models.yolo", "yolov5.models.experimental", "yolov5.utils.general", "yolov5.utils.plots",
    "yolov5.utils.downloads", "yolov5.train", "yolov5.val", "yolov5.detect", "yolov5.export", "yolov5.hubconf",
    "models.yolo", "models.experimental", "utils.general", "utils.plots", "utils.downloads",
    # ultralytics: every module the ultralytics host patches, and the package itself
    "ultralytics", "ultralytics.nn.tasks", "ultralytics.utils.checks", "ultralytics.utils.downloads",
    "ultralytics.utils.events", "ultralytics.utils.torch_utils", "ultralytics.data.utils",
    "ultralytics.models.yolo.detect.val", "ultralytics.utils.export.openvino", "ultralytics.nn.backends.base",
    "ultralytics.utils.export.litert", "ultralytics.utils.export.ncnn", "ultralytics.utils.export.executorch",
    "ultralytics.utils.export.coreml", "ultralytics.utils.export.mnn", "ultralytics.nn.backends.ncnn",
    "ultralytics.nn.backends.mnn",
})
# Modules before whose first line runs the plugin's offline defaults are set (see the module doc).
BEFORE = frozenset({"ultralytics"})


class _InstallAfterImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps the real loader of a watched module to call ``install()`` after it runs."""

    def find_spec(self, name: str, path=None, target=None):  # noqa: D102 (importlib protocol)
        if name not in WATCHED:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module") or getattr(loader, "_yolo_backbones_wrapped", False):
            return spec
        original = loader.exec_module
        before = name in BEFORE

        def exec_module(module: types.ModuleType) -> None:
            if before:
                _call(OFFLINE_DEFAULTS)
            original(module)
            _call(INSTALLER)

        loader.exec_module = exec_module
        loader._yolo_backbones_wrapped = True
        return spec


# The entry points run after a watched import and before a BEFORE module, as "module:function" (resolved
# then, so this file imports nothing of the plugin at interpreter start).
INSTALLER = "yolo_backbones:install"
OFFLINE_DEFAULTS = "yolo_backbones.hosts.common.offline:go_offline"


def _call(target: str) -> None:
    module, _, function = target.partition(":")
    getattr(importlib.import_module(module), function)()


def enable() -> None:
    """Add the finder to ``sys.meta_path`` once."""
    if not any(isinstance(f, _InstallAfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _InstallAfterImport())


if os.environ.get("YOLO_BACKBONES_NO_AUTOLOAD", "") not in ("1", "true", "yes"):
    # YOLOv5 7.0.14 imports pkg_resources (kept working by setuptools<81), which warns on every run
    # before the plugin could filter it; only that one warning is ignored.
    warnings.filterwarnings("ignore", message=r"pkg_resources is deprecated as an API", category=UserWarning)
    enable()
