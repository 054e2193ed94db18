"""Replacing functions inside host modules, once, and re-pointing the modules that imported them by name."""
from __future__ import annotations

import logging
import sys
import types
from typing import Any, Callable, Iterator

MARK = "_yolo_backbones_compat"  # set on every replacement function
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


def host_modules() -> Iterator[types.ModuleType]:
    """Loaded modules that may hold host functions imported by name (``from utils.general import x``)."""
    for name, module in list(sys.modules.items()):
        if module is not None and (name.partition(".")[0] in _HOST_TOPS
                                   or (name == "__main__" and any(f(module) for f in _MAIN_IS_HOST))):
            yield module


def replace(module: types.ModuleType | None, name: str, make: Callable[[Callable], Callable]) -> None:
    """Set ``module.<name> = make(original)`` once; re-point host modules that imported the original by name."""
    current = module.__dict__.get(name) if module is not None else None
    if not callable(current):
        return
    if getattr(current, MARK, False):
        original, new = current.__wrapped__, current
    else:
        original, new = current, make(current)
        new.__wrapped__ = original
        setattr(new, MARK, True)
        setattr(module, name, new)
    repoint(original, new, name)


def repoint(original: Any, new: Any, name: str) -> None:
    for module in host_modules():
        if module.__dict__.get(name) is original:
            setattr(module, name, new)


def say_once(key: str, message: str, logger: logging.Logger = LOG) -> None:
    if key not in _said:
        _said.add(key)
        logger.info(message)
