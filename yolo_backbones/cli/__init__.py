"""The project's command lines: ``yolo-backbones``, the root wrappers (train.py ...) and the host choice.

* :mod:`.commands` — ``yolo-backbones train|val|detect|export|list|weights`` and :func:`run_script` (root wrappers);
* :mod:`.host_choice` — YOLOv5 or ultralytics, from the YAML, the checkpoint or ``--host``;
* :mod:`.ultralytics` — YOLOv5-style flags translated to ``yolo <mode> key=value``.
"""
from .commands import main, run_script

__all__ = ["main", "run_script"]
