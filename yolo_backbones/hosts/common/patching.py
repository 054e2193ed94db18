"""Replacing functions inside host modules, once, and re-pointing the modules that imported them by name."""
from __future__ import annotations

import logging
import sys
import types
from typing import Any, Callable, Iterable, Iterator

MARK = "_yolo_backbones_compat"  # set on every replacement function: "<module>.<name>" it was made for
LOG = logging.getLogger("yolov5")  # the pip host's logger; used where no host module is at hand
_said: set[str] = set()  # one-time messages already logged
_HOST_TOPS: set[str] = {"yolo_backbones"}
_MAIN_IS_HOST: list[Callable[[types.ModuleType], bool]] = []


def register_host_tops(*tops: str, main_is_host: Callable[[types.ModuleType], bool] | None = None) -> None:
    """Declare top-level package names whose modules may hold host functions imported by name.

    ``main_is_host(module)`` tells whether ``__main__`` is a host script (e.g. a clone's train.py).
    """
    _HOST_TOPS.update(tops)
    if main_is_host is not None and main_is_host not in _MAIN_IS_HOST:
        _MAIN_IS_HOST.append(main_is_host)


def host_modules(tops: Iterable[str] | None = None) -> Iterator[types.ModuleType]:
    """Loaded modules that may hold host functions imported by name (``from utils.general import x``).

    ``tops``: only modules of these top-level packages; ``None``: those of :func:`register_host_tops`
    (and a host ``__main__``).
    """
    wanted = _HOST_TOPS if tops is None else set(tops)
    for name, module in list(sys.modules.items()):
        if module is not None and (name.partition(".")[0] in wanted
                                   or (tops is None and name == "__main__" and any(f(module) for f in _MAIN_IS_HOST))):
            yield module


def replace(module: types.ModuleType | None, name: str, make: Callable[[Callable], Callable], *,
            tops: Iterable[str] | None = None, layer: str = MARK) -> None:
    """Set ``module.<name> = make(original)`` once; re-point host modules that imported the original by name.

    ``module`` may be any object with a ``__dict__`` (a class, for methods). ``tops`` limits the re-pointing to
    modules of those top-level packages (default: the registered host packages). ``layer`` names the patch: two
    patches of one function (e.g. OpenVINO's and the edge formats' ``export.run``) stack, each applied once
    however often both are re-applied. A replacement made for another module (one host's function imported by
    name into another host's module) counts as an original here, so each host keeps its own replacement.
    """
    current = module.__dict__.get(name) if module is not None else None
    if not callable(current):
        return
    target = f"{module.__name__}.{name}"
    applied = current
    while applied is not None and getattr(applied, layer, None) not in (target, True):
        applied = getattr(applied, "__wrapped__", None)  # down the stack of other layers' replacements
    if applied is not None:
        original, new = applied.__wrapped__, current
    else:
        original, new = current, make(current)
        new.__wrapped__ = original
        setattr(new, layer, target)
        setattr(module, name, new)
    repoint(original, new, name, tops=tops)


def repoint(original: Any, new: Any, name: str, *, tops: Iterable[str] | None = None) -> None:
    """Where a host module holds ``original`` under ``name``, put ``new`` there instead (see :func:`host_modules`)."""
    for module in host_modules(tops):
        if module.__dict__.get(name) is original:
            setattr(module, name, new)


def say_once(key: str, message: str, logger: logging.Logger = LOG, level: int = logging.INFO) -> None:
    """Log ``message`` the first time ``key`` is seen in this process."""
    if key not in _said:
        _said.add(key)
        logger.log(level, message)
