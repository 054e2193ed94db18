"""One clear line instead of a traceback for the errors this plugin raises on purpose (bad files, bad rows).

Installed as ``sys.excepthook`` in processes that run a host, so ``python detect.py``, the pip ``yolov5``
command and ``yolo`` print ``error: <message>`` and exit with status 1. ``YOLO_BACKBONES_TRACEBACK=1``
shows the full traceback again.
"""
from __future__ import annotations

import os
import sys
import types
from typing import Callable

TRACEBACK_ENV = "YOLO_BACKBONES_TRACEBACK"
_Hook = Callable[[type[BaseException], BaseException, types.TracebackType | None], object]


def user_error(exc: BaseException | None) -> BaseException | None:
    """The first exception in ``exc``'s cause/context chain that is meant for the user, else ``None``.

    Those are the exceptions defined by yolo_backbones (model rows, checkpoints, weights, input sizes) and
    ``FileNotFoundError`` (missing files, refused downloads).
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if type(exc).__module__.startswith("yolo_backbones") or isinstance(exc, FileNotFoundError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def one_line(exc: BaseException) -> str:
    """``error: <message>`` on one line (multi-line reports are joined with '; ')."""
    text = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__
    return f"error: {text}"


def make_excepthook(previous: _Hook) -> _Hook:
    """An excepthook that prints :func:`one_line` for user errors and defers to ``previous`` otherwise."""

    def excepthook(kind: type[BaseException], exc: BaseException, tb: types.TracebackType | None) -> None:
        found = user_error(exc)
        if found is None or os.environ.get(TRACEBACK_ENV, "").strip() in ("1", "true", "yes"):
            previous(kind, exc, tb)
            return
        print(one_line(found), file=sys.stderr)

    excepthook.previous = previous
    return excepthook


def install_excepthook() -> None:
    """Install the hook once per process."""
    if getattr(sys.excepthook, "previous", None) is None:
        sys.excepthook = make_excepthook(sys.excepthook)
