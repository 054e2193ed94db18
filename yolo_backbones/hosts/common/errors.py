"""One clear line instead of a traceback for the errors this plugin raises on purpose (bad files, bad rows).

Only the project's own command lines format errors this way: the root scripts (``train.py`` ...) and
``yolo-backbones`` (see :mod:`yolo_backbones.cli`), and the host commands ``yolov5`` / ``yolo`` when the plugin
is installed into them (:func:`host_command_running`). They print ``error: <message>`` and exit with status 1.
Importing or installing the plugin anywhere else leaves ``sys.excepthook`` alone, and even in those commands
the hook formats only the plugin's own errors (:func:`user_error`); everything else keeps its traceback.
``YOLO_BACKBONES_TRACEBACK=1`` shows the full traceback again.
"""
from __future__ import annotations

import os
import sys
import types
from pathlib import Path
from typing import Callable

TRACEBACK_ENV = "YOLO_BACKBONES_TRACEBACK"
# Console commands of the hosts (``yolov5 detect ...``, ``yolo predict ...``) that count as the plugin's entry points.
HOST_COMMANDS = frozenset({"yolov5", "yolo", "ultralytics"})
_PACKAGE = __name__.split(".")[0]
_Hook = Callable[[type[BaseException], BaseException, types.TracebackType | None], object]


def _raised_by_plugin(exc: BaseException) -> bool:
    """Whether the innermost frame of ``exc``'s traceback is code of this package (a built-in such as ``open``
    adds no frame, so a missing file the plugin itself opens counts)."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    module = tb.tb_frame.f_globals.get("__name__", "")
    return module == _PACKAGE or module.startswith(_PACKAGE + ".")


def user_error(exc: BaseException | None) -> BaseException | None:
    """The first exception in ``exc``'s cause/context chain that the plugin raised for the user, else ``None``.

    Those are the exception types defined by yolo_backbones (model rows, checkpoints, weights, input sizes,
    offline refusals) and file errors (``OSError``, e.g. ``FileNotFoundError``) raised by the plugin's own code.
    A ``FileNotFoundError`` from anyone else's code is not one of them.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        module = type(exc).__module__
        if module == _PACKAGE or module.startswith(_PACKAGE + "."):
            return exc
        if isinstance(exc, OSError) and _raised_by_plugin(exc):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def one_line(exc: BaseException) -> str:
    """``error: <message>`` on one line (multi-line reports are joined with '; ')."""
    text = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__
    return f"error: {text}"


def tracebacks_wanted() -> bool:
    """``YOLO_BACKBONES_TRACEBACK`` is set to a true value: show full tracebacks."""
    return os.environ.get(TRACEBACK_ENV, "").strip().lower() in ("1", "true", "yes")


def make_excepthook(previous: _Hook) -> _Hook:
    """An excepthook that prints :func:`one_line` for the plugin's errors and defers to ``previous`` otherwise."""

    def excepthook(kind: type[BaseException], exc: BaseException, tb: types.TracebackType | None) -> None:
        found = user_error(exc)
        if found is None or tracebacks_wanted():
            previous(kind, exc, tb)
            return
        print(one_line(found), file=sys.stderr)

    excepthook.previous = previous
    return excepthook


def install_excepthook() -> None:
    """Install the hook once per process; only the project's entry points call this."""
    if getattr(sys.excepthook, "previous", None) is None:
        sys.excepthook = make_excepthook(sys.excepthook)


def host_command_running() -> bool:
    """True when this process is a host's console command (``yolov5 ...``, ``yolo ...``), not a user's script."""
    main = sys.modules.get("__main__")
    script = getattr(main, "__file__", None)
    if not sys.argv or not sys.argv[0] or script is None:
        return False
    name = Path(sys.argv[0]).name.removesuffix(".exe")
    return name in HOST_COMMANDS and Path(script).name.removesuffix(".exe") == name
