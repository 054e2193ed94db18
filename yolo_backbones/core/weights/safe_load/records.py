"""Inert records: what the pickle reader makes of everything in a checkpoint that is not plain data.

Nothing here imports, calls or instantiates what a file names. A record only remembers what the file said
(a class path, constructor arguments, state, items); :mod:`.interpret` later turns reachable records into
plain values, tensors and rebuilt models, or refuses them.
"""
from __future__ import annotations

from typing import Any


class Global:
    """A global the file names (``module.name``): a token, never imported or called."""

    __slots__ = ("module", "name", "path")

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name
        self.path = f"{module}.{name}"  # ``module.name``

    def __repr__(self) -> str:
        return f"<global {self.path}>"


class Obj:
    """An object the file describes: its class (a :class:`Global`), and what pickle would have given it.

    ``state`` is what BUILD would have set (``None`` if no BUILD), ``listitems`` / ``dictitems`` what
    APPENDS / SETITEMS would have added (for list and dict subclasses).
    """

    __slots__ = ("cls", "state", "listitems", "dictitems", "built")

    def __init__(self, cls: Global) -> None:
        self.cls = cls
        self.state: Any = None
        self.listitems: list | None = None
        self.dictitems: list | None = None
        self.built = False

    def __repr__(self) -> str:
        return f"<object of {self.cls.path}>"


class Call:
    """A call of one of the few functions torch.save / numpy use to rebuild data (tensors, numpy values).

    ``func`` is the :class:`Global`, ``args`` its arguments (records and plain values); ``state`` a later
    BUILD (numpy dtypes and arrays receive their content that way).
    """

    __slots__ = ("func", "args", "state", "built")

    def __init__(self, func: Global, args: tuple) -> None:
        self.func, self.args = func, args
        self.state: Any = None
        self.built = False

    def __repr__(self) -> str:
        return f"<call of {self.func.path}>"


class BoundMethod:
    """``getattr(obj, name)`` as pickled for a bound method (``m.forward = m.forward_fuse`` after fusing)."""

    __slots__ = ("obj", "name")

    def __init__(self, obj: Any, name: str) -> None:
        self.obj, self.name = obj, name


class StorageRef:
    """A tensor storage of the archive: record ``key``, element type and count; read only when a tensor uses it."""

    __slots__ = ("key", "dtype", "numel", "location")

    def __init__(self, key: str, dtype: Any, numel: int, location: str) -> None:
        self.key, self.dtype, self.numel, self.location = key, dtype, numel, location


RECORD_TYPES = (Global, Obj, Call, BoundMethod, StorageRef)
