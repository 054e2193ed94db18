"""Type checks for the plain attributes a rebuilt model gets from its record (names, hyperparameters, settings).

A host's builder lists the attributes its models carry with one checker each (:data:`ATTRIBUTE_CHECKS` has the
common ones); a checker returns the value to set or raises :class:`~.errors.Refused`. Values arrive already
converted by :mod:`.interpret`, so they can only be plain data or tensors; the checks pin down which.
"""
from __future__ import annotations

import argparse
import types
from typing import Any, Callable

import torch

from ..metadata import MetadataError, check_names
from .errors import Refused

Checker = Callable[[Any, str], Any]


def is_plain(value: Any, depth: int = 0, tensors: bool = False) -> bool:
    """Scalars, strings, None and lists / tuples / dicts (str or int keys) of them, at most 32 levels deep."""
    if depth > 32:
        return False
    t = type(value)
    if t in (str, int, float, bool, type(None)):
        return True
    if tensors and isinstance(value, torch.Tensor):
        return True
    if t in (list, tuple):
        return all(is_plain(v, depth + 1, tensors) for v in value)
    if t is dict:
        return all(type(k) in (str, int) and is_plain(v, depth + 1, tensors) for k, v in value.items())
    return False


def plain(value: Any, where: str) -> Any:
    """Any plain value (see :func:`is_plain`)."""
    if not is_plain(value):
        raise Refused(None, f"{where} is not plain data (scalars, strings, lists, dicts)")
    return value


def settings(value: Any, where: str) -> Any:
    """Run settings: a dict, or a namespace (converted to a dict), of plain values with string keys."""
    if isinstance(value, (argparse.Namespace, types.SimpleNamespace)):
        value = vars(value)
    if type(value) is not dict or not all(type(k) is str for k in value) or not is_plain(value):
        raise Refused(None, f"{where} is not a dict of plain settings")
    return value


def integer(value: Any, where: str) -> int:
    """A non-negative int."""
    if type(value) is not int or value < 0:
        raise Refused(None, f"{where} is not a non-negative integer")
    return value


def flag(value: Any, where: str) -> bool:
    """A bool."""
    if type(value) is not bool:
        raise Refused(None, f"{where} is not True or False")
    return value


def text(value: Any, where: str) -> str:
    """A string of at most 4096 characters."""
    if type(value) is not str or len(value) > 4096:
        raise Refused(None, f"{where} is not a short string")
    return value


def names(value: Any, where: str) -> Any:
    """Class names (list or ``{int: str}``), each safe as a file-name component (see :mod:`..metadata`)."""
    try:
        return check_names(value, where)
    except MetadataError as e:
        raise Refused(None, str(e)) from None


def vector(value: Any, where: str) -> torch.Tensor:
    """A 1-D floating tensor of at most 100000 elements (e.g. YOLOv5's ``class_weights``)."""
    if not (isinstance(value, torch.Tensor) and value.dim() == 1 and value.is_floating_point()
            and value.numel() <= 100_000):
        raise Refused(None, f"{where} is not a 1-D float tensor")
    return value


ATTRIBUTE_CHECKS: dict[str, Checker] = {
    "names": names, "nc": integer, "hyp": settings, "args": settings, "yaml_file": text, "pt_path": text,
    "task": text, "inplace": flag, "class_weights": vector, "date": text,
}


def copy_attributes(model: torch.nn.Module, values: dict[str, Any], checks: dict[str, Checker], owner: str) -> None:
    """Set ``model.<name> = check(value)`` for each attribute of ``values`` that ``checks`` lists."""
    for key, check in checks.items():
        if key in values:
            setattr(model, key, check(values[key], f"{owner}.{key}"))
