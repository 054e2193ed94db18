"""Checkpoint loading that rebuilds what ``torch.save`` wrote and never calls what the file chooses.

Threat model
------------
A YOLO checkpoint pickles whole models, so it cannot be read with ``torch.load(weights_only=True)``
alone, and ``weights_only=False`` lets the file call any importable function. Widening torch's
``weights_only`` allow-list with model classes is not enough either: its unpickler lets every allowed
global be *called* (pickle ``REDUCE``) with arguments stored in the file, and a model class whose
constructor parses a config (YOLOv5's ``Model(cfg)`` ``eval``s strings of it) runs the file's code.

:func:`load_checkpoint` therefore unpickles with its own restricted pure-Python unpickler (torch keeps
doing the zip and storage handling) under one policy, *reconstruct, never call*:

* Classes of the allowed namespaces (``nn.Module`` classes of ``torch.nn`` except
  ``torch.nn.parallel``; everything in ``yolo_backbones``; namespaces a host registered with
  :func:`register_model_namespace`; classes given to :func:`allow_classes` /
  :func:`register_data_class`) are only ever *created without running* ``__init__`` (pickle's
  ``NEWOBJ`` / ``copyreg`` reconstruction, as ``torch.save`` writes them) and get their attributes
  from the file (``BUILD``). Calling such a class, or any method or function of these modules, is
  refused. A class object fetched from the file is an inert token, so it cannot end up in a model
  attribute or hook and be called later either.
* ``BUILD`` updates the instance ``__dict__``; only vetted ``__setstate__`` implementations run:
  ``nn.Module.__setstate__`` and the ``torch.nn`` overrides (all of them only fill in defaults of
  old checkpoints), numpy's C ``ndarray``/``dtype`` ones, and those of classes a user or host
  explicitly allowed (they vouch for them). Any other class defining ``__setstate__`` is refused, as
  is one defining ``__del__`` or its own ``__new__``. The state may not set dunder names nor store
  callables other than modules/allowed instances and the one bound method torch.save writes for
  fused layers (``m.forward = m.forward_fuse``).
* A short list of vetted callables may be called, each with its arguments checked: torch's tensor,
  storage and parameter rebuild functions, ``OrderedDict``/``set``/``frozenset``/``slice``/
  ``complex``/``bytearray``/``Counter``, ``torch.device``/``torch.Size``/layouts, numpy's array,
  scalar and dtype reconstruction, ``_codecs.encode`` (bytes in protocol <= 2), ``pathlib`` paths,
  ``types.SimpleNamespace`` and ``builtins.getattr(<allowed module>, 'forward' | 'forward_fuse')``.

Anything else raises :class:`UntrustedCheckpointError` naming the global and why, before any of it
runs. Files that are no checkpoint at all (empty, truncated, another format, a directory) raise
:class:`CheckpointFileError` with one line saying what the file is and what to do.
``YOLO_BACKBONES_TRUST_CHECKPOINTS=1`` switches to plain ``torch.load(weights_only=False)`` with an
:class:`UnsafeCheckpointLoadWarning`; a caller's explicit ``weights_only=True`` keeps torch's own
semantics.

Objects of allowed classes whose own ``__reduce__`` pickles them as a call with arguments (enums,
namedtuples) are refused too; no YOLOv5 / ultralytics / yolo_backbones checkpoint contains them.
What the policy cannot cover: code that later *uses* trusted-but-file-chosen data as code, e.g. a
host rebuilding a model from ``ckpt['model'].yaml`` with a parser that ``eval``s strings. Hosts must
validate such data themselves.
"""
from __future__ import annotations

import _compat_pickle
import argparse
import codecs
import collections
import copyreg
import importlib
import io
import os
import pathlib
import pickle
import re
import sys
import types
import warnings
import zipfile
from typing import IO, Any, Callable, Union

import numpy as np
import torch
from torch import nn

__all__ = [
    "load_checkpoint", "allow_classes", "register_model_namespace", "register_data_class",
    "register_module_alias", "UntrustedCheckpointError", "CheckpointFileError",
    "UnsafeCheckpointLoadWarning", "TRUST_ENV",
]

TRUST_ENV = "YOLO_BACKBONES_TRUST_CHECKPOINTS"
_HINT = (f"If you trust this file: allow a missing class with yolo_backbones.allow_classes(...) (it is then "
         f"rebuilt, never called), or set {TRUST_ENV}=1 to load it with plain torch.load(weights_only=False), "
         "which runs any code the file contains.")

FileLike = Union[str, os.PathLike, IO[bytes]]


# ----------------------------------------------------------------------------------------- errors
class UntrustedCheckpointError(pickle.UnpicklingError):
    """The checkpoint asks for something the restricted loader refuses; nothing it asked for ran.

    Attributes: ``global_name`` (the pickled global, e.g. ``'models.yolo.Model'``, or ``None``),
    ``reason`` (why it was refused) and ``path`` (the file, when known).
    """

    def __init__(self, message: str, global_name: str | None = None, reason: str | None = None,
                 path: str | None = None) -> None:
        super().__init__(message)
        self.global_name, self.reason, self.path = global_name, reason or message, path


class CheckpointFileError(ValueError):
    """The file is not a readable PyTorch checkpoint (missing, empty, truncated, another format, ...).

    ``str(error)`` is one line naming the file, what it is and what to do; ``path`` is the file.
    """

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(_one_line(message))
        self.path = path


class UnsafeCheckpointLoadWarning(RuntimeWarning):
    """A checkpoint is loaded with ``torch.load(weights_only=False)`` because the user opted in.

    Not a UserWarning on purpose: YOLOv5 ignores every UserWarning process-wide.
    """


class _Refused(Exception):
    """Internal: raised inside the unpickler, turned into UntrustedCheckpointError with the file name."""

    def __init__(self, global_name: str | None, reason: str) -> None:
        super().__init__(reason)
        self.global_name, self.reason = global_name, reason


class _Damaged(Exception):
    """Internal: the pickle stream is broken (or, with ``version=True``, names a class this code lacks)."""

    def __init__(self, detail: str, version: bool = False) -> None:
        super().__init__(detail)
        self.version = version


def _one_line(text: Any, limit: int = 400) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


# ----------------------------------------------------------------------------------- registries
_namespaces: list[str] = ["yolo_backbones"]  # dotted package prefixes whose classes may be rebuilt
_extra_classes: set[type] = {argparse.Namespace}  # reconstruct-only classes outside the namespaces
_user_setstate: set[type] = set()  # allowed classes whose own __setstate__ their registrant vouches for
_aliases: dict[str, str] = {}  # pickled module path -> current module path
_class_verdicts: dict[type, str | None] = {}  # class -> refusal reason (None: may be rebuilt)
_build_handlers: dict[type, Callable[[Any, Any], None]] = {}
_global_cache: dict[tuple[str, str], Any] = {}


def _invalidate() -> None:
    _class_verdicts.clear()
    _build_handlers.clear()
    _global_cache.clear()


def _check_class_arg(cls: Any, what: str) -> type:
    if not isinstance(cls, type):
        raise TypeError(f"{what}() takes classes, got {cls!r}: functions cannot be allowed, since the loader "
                        "would have to call them with arguments chosen by the file")
    if cls.__new__ not in _SAFE_NEW:
        raise TypeError(f"{what}(): {cls.__qualname__} defines its own __new__, so it cannot be rebuilt "
                        "without running code of it")
    return cls


def allow_classes(*classes: type) -> None:
    """Let checkpoints contain instances of ``classes`` (reconstruct-only).

    For a class a checkpoint legitimately holds that lies outside the allowed namespaces, e.g. a
    custom ``nn.Module`` of your project. Instances are created without ``__init__`` and their
    attributes restored from the file; the class itself is never called. If the class defines
    ``__setstate__`` it runs with state from the file: by allowing the class you vouch for it.
    Raises ``TypeError`` for non-classes and classes with their own ``__new__``.
    """
    for cls in classes:
        _extra_classes.add(_check_class_arg(cls, "allow_classes"))
        _user_setstate.add(cls)
    _invalidate()


def register_data_class(cls: type) -> type:
    """Host hook: allow instances of the plain data class ``cls`` (reconstruct-only); returns ``cls``.

    Unlike :func:`allow_classes` a custom ``__setstate__`` of ``cls`` is not run (the load is refused).
    Usable as a decorator.
    """
    _extra_classes.add(_check_class_arg(cls, "register_data_class"))
    _invalidate()
    return cls


def register_model_namespace(prefix: str) -> None:
    """Host hook: classes defined in package ``prefix`` (e.g. ``'models.'``, ``'ultralytics.nn.'``) may be rebuilt.

    ``'models'`` and ``'models.'`` both mean the module ``models`` and its submodules. Modules of the
    namespace are imported on demand while loading (as pickle would), never modules outside it.
    """
    ns = prefix.strip().rstrip(".")
    if not ns or not all(part.isidentifier() for part in ns.split(".")):
        raise ValueError(f"register_model_namespace(): {prefix!r} is not a dotted module prefix")
    if ns not in _namespaces:
        _namespaces.append(ns)
        _invalidate()


def register_module_alias(old_module: str, new_module: str) -> None:
    """Host hook: read globals pickled under ``old_module`` (and its submodules) from ``new_module``.

    For classes that moved, e.g. ``register_module_alias('yolo_backbones.backbones', 'yolo_backbones.core')``
    makes ``yolo_backbones.backbones.edgevit.EdgeViT`` resolve to ``yolo_backbones.core.edgevit.EdgeViT``.
    The alias only changes where a name is looked up; the policy applies to the new location.
    """
    _aliases[old_module.strip().rstrip(".")] = new_module.strip().rstrip(".")
    _invalidate()


def _in_namespace(module: str, ns: str) -> bool:
    return module == ns or module.startswith(ns + ".")


def _resolve_alias(module: str) -> str:
    if module in _aliases:
        return _aliases[module]
    parts = module.split(".")
    for i in range(len(parts) - 1, 0, -1):  # longest aliased package prefix
        new = _aliases.get(".".join(parts[:i]))
        if new is not None:
            return ".".join([new, *parts[i:]])
    return module


# --------------------------------------------------------------------------- class policy
# __new__ implementations that create an empty instance without running code of the class.
_SAFE_NEW = frozenset({object.__new__, dict.__new__, list.__new__, types.SimpleNamespace.__new__})
# __init__ implementations a no-argument call may run (SimpleNamespace subclasses pickle as cls()).
_SAFE_INIT = frozenset({object.__init__, dict.__init__, list.__init__, types.SimpleNamespace.__init__})


def _class_refusal(cls: type) -> str | None:
    """Why instances of ``cls`` may not be rebuilt from a file, or None if they may."""
    verdict = _class_verdicts.get(cls, False)
    if verdict is not False:
        return verdict  # type: ignore[return-value]
    module = getattr(cls, "__module__", None) or ""
    if module == __name__:
        verdict = "it belongs to the checkpoint loader itself"  # e.g. _ClassRef: never file-made
    elif cls in _extra_classes:
        verdict = None
    elif _in_namespace(module, "torch.nn"):
        if _in_namespace(module, "torch.nn.parallel"):
            verdict = "torch.nn.parallel wrappers are never part of a saved model"
        elif not issubclass(cls, nn.Module):
            verdict = "of torch.nn only nn.Module classes may be rebuilt"
        else:
            verdict = None
    elif any(_in_namespace(module, ns) for ns in _namespaces):
        verdict = None
    else:
        verdict = f"its module {module} is outside the namespaces a checkpoint may use"
    if verdict is None:
        if cls.__new__ not in _SAFE_NEW:
            verdict = "it defines its own __new__, which would run with arguments from the file"
        elif getattr(cls, "__del__", None) is not None and cls not in _user_setstate:
            verdict = "it defines __del__, which would run on attributes chosen by the file"
    _class_verdicts[cls] = verdict
    return verdict


class _ClassRef:
    """What the unpickler holds for an allowed class: usable to rebuild instances, inert otherwise.

    It is not callable and has no class behaviour, so a file that stores it as a model attribute or
    hook gets nothing the program could later call.
    """

    __slots__ = ("cls", "name")

    def __init__(self, cls: type, name: str) -> None:
        self.cls, self.name = cls, name

    def __repr__(self) -> str:
        return f"<class {self.name} (reconstruct-only)>"


def _new_instance(ref: _ClassRef) -> Any:
    cls = ref.cls
    return cls.__new__(cls)  # one of _SAFE_NEW: allocates, runs no code of the class


# ------------------------------------------------------------------------- vetted callables
def _refuse(name: str | None, reason: str) -> _Refused:
    return _Refused(name, reason)


def _bad_args(name: str, args: tuple, expected: str) -> _Refused:
    shown = ", ".join(_describe_value(a) for a in args)[:200]
    return _Refused(name, f"it is called with ({shown}), but torch.save only writes {expected}")


def _describe_value(v: Any) -> str:
    if type(v) is _ClassRef:
        return f"class {v.name}"
    if isinstance(v, (str, bytes, int, float, bool, type(None))):
        return repr(v)[:40]
    return type(v).__name__


def _is_empty_hooks(h: Any) -> bool:
    return type(h) in (dict, collections.OrderedDict) and not h


def _no_class_refs(args: tuple) -> bool:
    return not any(type(a) is _ClassRef for a in args)


def _check_plain_state(owner: str, state: Any, name: str) -> None:
    """Attribute dicts of tensors: string names, no dunders, no callables."""
    dict_state, slot_state = (state if type(state) is tuple and len(state) == 2 else (state, None))
    for part in (dict_state, slot_state):
        if part is None:
            continue
        if type(part) is not dict:
            raise _refuse(name, f"it gives {owner} a state of type {type(part).__name__}")
        for k, v in part.items():
            if type(k) is not str or (k.startswith("__") and k.endswith("__")):
                raise _refuse(name, f"it sets the attribute {k!r} of {owner}")
            if type(v) is _ClassRef or callable(v):
                raise _refuse(name, f"it stores {_describe_value(v)} as attribute {k!r} of {owner}, "
                                    "where the program could later call it")


def _tensor_rebuilder(fn: Callable, hooks_at: int | None, state_at: int | None = None,
                      min_args: int = 1, max_args: int = 16) -> Callable:
    name = f"torch._utils.{fn.__name__}"

    def handler(args: tuple) -> Any:
        if not (min_args <= len(args) <= max_args) or not _no_class_refs(args):
            raise _bad_args(name, args, "tensor data, shapes and flags")
        if hooks_at is not None and len(args) > hooks_at:
            if not _is_empty_hooks(args[hooks_at]):
                raise _refuse(name, "it attaches backward hooks to a tensor (torch.save never stores hooks)")
            # A fresh dict: the file's one stays reachable through the memo and could be filled later.
            args = (*args[:hooks_at], collections.OrderedDict(), *args[hooks_at + 1:])
        if state_at is not None:
            _check_plain_state("a parameter", args[state_at], name)
        return fn(*args)

    return handler


def _storage_rebuilder(fn: Callable, hooks_at: int) -> Callable:
    inner = _tensor_rebuilder(fn, hooks_at, min_args=4)
    storage_types = (torch.storage.TypedStorage, torch.UntypedStorage)

    def handler(args: tuple) -> Any:
        if not args or not isinstance(args[0], storage_types):
            raise _bad_args(f"torch._utils.{fn.__name__}", args, "a storage loaded from the archive first")
        return inner(args)

    return handler


def _rebuild_from_type_v2(args: tuple) -> Any:
    name = "torch._tensor._rebuild_from_type_v2"
    if len(args) != 4 or type(args[2]) is not tuple:
        raise _bad_args(name, args, "(rebuild function, tensor class, args, state)")
    func, new_type, inner_args, state = args
    entry = _VETTED.get(id(func))
    if entry is None or entry[0] is not func or not entry[1].startswith("torch._utils._rebuild"):
        raise _refuse(name, f"it rebuilds a tensor with {_describe_value(func)}, not with one of torch's "
                            "rebuild functions")
    if new_type not in (torch.Tensor, nn.Parameter):
        raise _refuse(name, f"it turns a tensor into {_describe_value(new_type)}; only Tensor and Parameter "
                            "are allowed")
    _check_plain_state("a tensor", state, name)
    tensor = entry[2](inner_args)
    return torch._tensor._rebuild_from_type_v2(lambda: tensor, new_type, (), state)


def _simple(name: str, fn: Callable, accept: Callable[[tuple], bool], expected: str) -> Callable:
    def handler(args: tuple) -> Any:
        if not accept(args):
            raise _bad_args(name, args, expected)
        return fn(*args)

    return handler


def _is_int(x: Any) -> bool:
    return type(x) is int


def _is_num(x: Any) -> bool:
    return type(x) in (int, float, bool)


def _pairs(x: Any) -> bool:
    return type(x) in (list, tuple) and all(type(p) in (list, tuple) and len(p) == 2 for p in x)


def _make_getattr_handler() -> Callable:
    def handler(args: tuple) -> Any:
        # Only `m.forward = m.forward_fuse` (YOLOv5 / ultralytics fuse()) pickles a bound method.
        if len(args) != 2 or args[1] not in _BOUND_METHODS or not isinstance(args[0], nn.Module) \
                or _class_refusal(type(args[0])) is not None:
            raise _refuse("builtins.getattr", f"it fetches {_describe_value(args[1] if len(args) > 1 else None)} "
                                              f"from {_describe_value(args[0] if args else None)}; only the "
                                              "'forward'/'forward_fuse' method of an allowed module may be "
                                              "fetched")
        func = getattr(type(args[0]), args[1], None)  # from the class: never an instance attribute
        if not isinstance(func, types.FunctionType):
            raise _refuse("builtins.getattr", f"it fetches {args[1]!r} of {type(args[0]).__qualname__}, which is "
                                              "not a method")
        return types.MethodType(func, args[0])

    return handler


_BOUND_METHODS = ("forward", "forward_fuse")


def _reconstructor(args: tuple) -> Any:  # copyreg._reconstructor, pickle protocols 0 and 1
    if len(args) == 3 and type(args[0]) is _ClassRef and args[1] is object and args[2] is None:
        return _new_instance(args[0])
    raise _bad_args("copyreg._reconstructor", args, "(allowed class, object, None)")


def _newobj(args: tuple) -> Any:  # copyreg.__newobj__ written as a REDUCE
    if len(args) == 1 and type(args[0]) is _ClassRef:
        return _new_instance(args[0])
    raise _bad_args("copyreg.__newobj__", args, "(allowed class,) without constructor arguments")


def _newobj_ex(args: tuple) -> Any:
    if len(args) == 3 and type(args[0]) is _ClassRef and args[1] == () and args[2] == {}:
        return _new_instance(args[0])
    raise _bad_args("copyreg.__newobj_ex__", args, "(allowed class, (), {})")


def _np_core() -> Any:
    return np._core if hasattr(np, "_core") else np.core  # numpy 2 / numpy 1


_DTYPE_SPEC = re.compile(r"^[<>|=]?[a-zA-Z?]\w{0,8}(\[\w+\])?$")


def _numpy_handlers() -> dict[tuple[str, str], tuple[Any, Callable]]:
    core = _np_core()
    multiarray = core.multiarray
    reconstruct, scalar = multiarray._reconstruct, multiarray.scalar
    frombuffer = getattr(core.numeric, "_frombuffer", None)

    def h_reconstruct(args: tuple) -> Any:
        if len(args) == 3 and args[0] is np.ndarray and type(args[1]) is tuple and all(map(_is_int, args[1])) \
                and type(args[2]) is bytes and len(args[2]) <= 8:
            return reconstruct(*args)
        raise _bad_args("numpy.core.multiarray._reconstruct", args, "(numpy.ndarray, shape, b'b')")

    def h_scalar(args: tuple) -> Any:
        if len(args) in (1, 2) and isinstance(args[0], np.dtype) and (
                len(args) == 1 or type(args[1]) is bytes or args[0].kind == "O"):
            return scalar(*args)
        raise _bad_args("numpy.core.multiarray.scalar", args, "(dtype, bytes)")

    def h_dtype(args: tuple) -> Any:
        if 1 <= len(args) <= 3 and type(args[0]) is str and _DTYPE_SPEC.match(args[0]) \
                and all(a in (0, 1) and type(a) in (bool, int) for a in args[1:]):
            # Always a copy (as numpy pickles say): BUILD then fills it in, and must never reach
            # numpy's shared builtin dtype objects.
            return np.dtype(args[0], bool(args[1]) if len(args) > 1 else False, True)
        raise _bad_args("numpy.dtype", args, "(type string, align, copy)")

    def h_frombuffer(args: tuple) -> Any:
        if len(args) == 4 and isinstance(args[0], (bytes, bytearray, memoryview, pickle.PickleBuffer)) \
                and isinstance(args[1], np.dtype) and type(args[2]) is tuple and args[3] in ("C", "F"):
            return frombuffer(*args)
        raise _bad_args("numpy.core.numeric._frombuffer", args, "(buffer, dtype, shape, order)")

    out: dict[tuple[str, str], tuple[Any, Callable]] = {("numpy", "dtype"): (np.dtype, h_dtype)}
    for pkg in ("numpy.core", "numpy._core"):  # files written under numpy 1 and numpy 2
        out[(f"{pkg}.multiarray", "_reconstruct")] = (reconstruct, h_reconstruct)
        out[(f"{pkg}.multiarray", "scalar")] = (scalar, h_scalar)
        if frombuffer is not None:
            out[(f"{pkg}.numeric", "_frombuffer")] = (frombuffer, h_frombuffer)
    return out


def _path_handler(cls: type, name: str) -> Callable:
    # A path pickled on the other OS family cannot be instantiated here; its pure form can.
    if cls is pathlib.WindowsPath and os.name != "nt":
        cls = pathlib.PureWindowsPath
    elif cls is pathlib.PosixPath and os.name == "nt":
        cls = pathlib.PurePosixPath
    return _simple(name, cls, lambda a: all(type(p) is str for p in a), "path parts as strings")


def _build_vetted() -> tuple[dict[int, tuple[Any, str, Callable]], dict[tuple[str, str], Any]]:
    """The callables a checkpoint may call (by id, with handler) and every vetted global (by name)."""
    OrderedDict = collections.OrderedDict
    calls: dict[tuple[str, str], tuple[Any, Callable]] = {
        ("collections", "OrderedDict"): (OrderedDict, _simple(
            "collections.OrderedDict", OrderedDict, lambda a: a == () or (len(a) == 1 and _pairs(a[0])),
            "() or a list of pairs")),
        ("collections", "Counter"): (collections.Counter, _simple(
            "collections.Counter", collections.Counter, lambda a: a == () or (len(a) == 1 and type(a[0]) is dict),
            "() or a dict")),
        ("builtins", "set"): (set, _simple("builtins.set", set, lambda a: a == () or (
            len(a) == 1 and type(a[0]) in (list, tuple, set, frozenset)), "() or a list")),
        ("builtins", "frozenset"): (frozenset, _simple("builtins.frozenset", frozenset, lambda a: a == () or (
            len(a) == 1 and type(a[0]) in (list, tuple, set, frozenset)), "() or a list")),
        ("builtins", "slice"): (slice, _simple("builtins.slice", slice, lambda a: 1 <= len(a) <= 3 and all(
            x is None or _is_int(x) for x in a), "integers or None")),
        ("builtins", "complex"): (complex, _simple("builtins.complex", complex, lambda a: len(a) <= 2 and all(
            map(_is_num, a)), "two numbers")),
        ("builtins", "bytearray"): (bytearray, _simple("builtins.bytearray", bytearray, lambda a: a == () or (
            len(a) == 1 and type(a[0]) is bytes) or (len(a) == 2 and type(a[0]) is str and a[1] in (
                "latin1", "latin-1")), "bytes")),
        ("builtins", "bytes"): (bytes, _simple("builtins.bytes", bytes, lambda a: a == (), "()")),
        ("builtins", "getattr"): (getattr, _make_getattr_handler()),
        ("_codecs", "encode"): (codecs.encode, _simple("_codecs.encode", codecs.encode, lambda a: len(a) == 2 and type(
            a[0]) is str and a[1] in ("latin1", "latin-1"), "(text, 'latin1')")),
        ("copyreg", "_reconstructor"): (copyreg._reconstructor, _reconstructor),
        ("copyreg", "__newobj__"): (copyreg.__newobj__, _newobj),
        ("copyreg", "__newobj_ex__"): (copyreg.__newobj_ex__, _newobj_ex),
        ("types", "SimpleNamespace"): (types.SimpleNamespace, _simple(
            "types.SimpleNamespace", types.SimpleNamespace, lambda a: a == (), "()")),
        ("torch", "device"): (torch.device, _simple("torch.device", torch.device, lambda a: 1 <= len(a) <= 2 and type(
            a[0]) is str and len(a[0]) < 64 and (len(a) == 1 or a[1] is None or _is_int(a[1])), "(type, index)")),
        ("torch", "Size"): (torch.Size, _simple("torch.Size", torch.Size, lambda a: len(a) == 1 and type(a[0]) in (
            tuple, list) and all(map(_is_int, a[0])), "a tuple of ints")),
        ("torch.serialization", "_get_layout"): (torch.serialization._get_layout, _simple(
            "torch.serialization._get_layout", torch.serialization._get_layout,
            lambda a: len(a) == 1 and type(a[0]) is str, "a layout name")),
        ("torch._tensor", "_rebuild_from_type_v2"): (torch._tensor._rebuild_from_type_v2, _rebuild_from_type_v2),
    }
    u = torch._utils
    rebuilders: list[tuple[str, Callable]] = [
        ("_rebuild_tensor", _storage_rebuilder(u._rebuild_tensor, hooks_at=99)),
        ("_rebuild_tensor_v2", _storage_rebuilder(u._rebuild_tensor_v2, hooks_at=5)),
        ("_rebuild_tensor_v3", _storage_rebuilder(u._rebuild_tensor_v3, hooks_at=5)),
        ("_rebuild_qtensor", _storage_rebuilder(u._rebuild_qtensor, hooks_at=6)),
        ("_rebuild_parameter", _tensor_rebuilder(u._rebuild_parameter, hooks_at=2, min_args=3, max_args=3)),
        ("_rebuild_parameter_with_state", _tensor_rebuilder(
            u._rebuild_parameter_with_state, hooks_at=2, state_at=3, min_args=4, max_args=4)),
        ("_rebuild_sparse_tensor", _tensor_rebuilder(u._rebuild_sparse_tensor, None, min_args=2, max_args=2)),
        ("_rebuild_nested_tensor", _tensor_rebuilder(u._rebuild_nested_tensor, None, min_args=4, max_args=4)),
        ("_rebuild_meta_tensor_no_storage", _tensor_rebuilder(u._rebuild_meta_tensor_no_storage, None, 4, 4)),
        ("_rebuild_device_tensor_from_numpy", _tensor_rebuilder(u._rebuild_device_tensor_from_numpy, None, 4, 4)),
    ]
    if hasattr(u, "_rebuild_device_tensor_from_cpu_tensor"):
        rebuilders.append(("_rebuild_device_tensor_from_cpu_tensor", _tensor_rebuilder(
            u._rebuild_device_tensor_from_cpu_tensor, None, 4, 4)))
    for fname, handler in rebuilders:
        calls[("torch._utils", fname)] = (getattr(u, fname), handler)
    calls.update(_numpy_handlers())
    for mod in ("pathlib", "pathlib._local"):  # Python 3.13 moved the classes to pathlib._local
        for cls in (pathlib.Path, pathlib.PosixPath, pathlib.WindowsPath, pathlib.PurePath,
                    pathlib.PurePosixPath, pathlib.PureWindowsPath):
            calls[(mod, cls.__name__)] = (cls, _path_handler(cls, f"pathlib.{cls.__name__}"))

    by_id = {id(obj): (obj, f"{m}.{n}", h) for (m, n), (obj, h) in calls.items()}
    names: dict[tuple[str, str], Any] = {k: v[0] for k, v in calls.items()}
    # Plain values: classes passed as arguments to the callables above (calling them later is harmless).
    values: dict[tuple[str, str], Any] = {
        ("builtins", "object"): object, ("torch", "Tensor"): torch.Tensor, ("torch._tensor", "Tensor"): torch.Tensor,
        ("torch.nn.parameter", "Parameter"): nn.Parameter, ("numpy", "ndarray"): np.ndarray,
        ("torch.storage", "UntypedStorage"): torch.UntypedStorage, ("torch", "UntypedStorage"): torch.UntypedStorage,
        ("torch.storage", "TypedStorage"): torch.storage.TypedStorage,
    }
    if hasattr(np, "dtypes"):
        values.update({("numpy.dtypes", k): v for k, v in vars(np.dtypes).items()
                       if isinstance(v, type) and issubclass(v, np.dtype)})
    names.update(values)
    return by_id, names


_VETTED, _VETTED_NAMES = _build_vetted()
_TORCH_VALUE_TYPES = (torch.dtype, torch.layout, torch.memory_format, torch.qscheme)


def _resolve_global(module: str, name: str) -> Any:
    """What a GLOBAL / STACK_GLOBAL may push, or raise _Refused before importing anything foreign."""
    key = (module, name)
    hit = _global_cache.get(key)
    if hit is not None:
        return hit
    full = f"{module}.{name}"
    module = _resolve_alias(module)
    obj = _VETTED_NAMES.get((module, name))
    if obj is not None:
        _global_cache[key] = obj
        return obj
    if module == "torch":  # dtypes, memory formats, qschemes pickle as torch.<name>
        value = getattr(torch, name, None) if name.isidentifier() else None
        if isinstance(value, _TORCH_VALUE_TYPES):
            _global_cache[key] = value
            return value
    in_ns = _in_namespace(module, "torch.nn") or any(_in_namespace(module, ns) for ns in _namespaces)
    extra = next((c for c in _extra_classes if c.__module__ == module and c.__qualname__ == name), None)
    if not in_ns and extra is None:
        raise _refuse(full, "it is neither a class of an allowed namespace (torch.nn modules, yolo_backbones, "
                            "registered host models) nor one of the functions torch.save uses to rebuild tensors "
                            "and plain data")
    if not name.isidentifier():
        raise _refuse(full, "it is a dotted or invalid name; a checkpoint references classes directly")
    if extra is not None:
        obj = extra
    else:
        try:
            mod = sys.modules.get(module) or importlib.import_module(module)
        except ImportError as e:
            raise ImportError(f"the checkpoint needs {full}, but module {module} cannot be imported ({e}); "
                              "run from the project that trained it or install its package") from None
        obj = getattr(mod, name, None)
        if obj is None:
            raise _Damaged(f"it needs {full}, which this version of {module} does not have; load it with the "
                           "code version that wrote it", version=True)
    if not isinstance(obj, type):
        raise _refuse(full, f"it is a {type(obj).__name__}, not a class; of these modules a checkpoint may only "
                            "reference classes, and those are rebuilt, never called")
    if obj.__module__ != module and extra is None and not any(
            _in_namespace(obj.__module__, ns) for ns in (*_namespaces, "torch.nn")):
        raise _refuse(full, f"it is {obj.__module__}.{obj.__qualname__}, imported from outside the allowed namespaces")
    reason = _class_refusal(obj)
    if reason is not None:
        raise _refuse(full, f"it cannot be rebuilt safely: {reason}")
    ref = _ClassRef(obj, full)
    _global_cache[key] = ref
    return ref


# ------------------------------------------------------------------------------ BUILD policy
def _module_setstate_is_vetted(fn: Any) -> bool:
    # nn.Module.__setstate__ and the overrides in torch.nn.modules (conv, pooling, rnn, upsampling,
    # activation, transformer; read on torch 2.14) only update __dict__ and fill in defaults
    # of old checkpoints. torch.nn.parallel (DDP) is excluded: its classes are never rebuilt.
    return fn is nn.Module.__setstate__ or (
        isinstance(fn, types.FunctionType) and _in_namespace(fn.__module__ or "", "torch.nn.modules"))


def _check_state(inst: Any, state: dict, cls_name: str) -> None:
    """Refuse state that sets dunders or stores something callable the program would later call.

    Looks at each attribute and one level into dict / list / tuple attributes (hook dicts, lists of
    layers). Deeper values need no check for safety: class references are inert tokens, and the
    only other callables the unpickler can produce run torch / allowed-class code or nothing.
    """
    for k, v in state.items():
        if type(k) is not str:
            raise _refuse(cls_name, f"its state sets a non-string attribute name {_describe_value(k)}")
        if k[:2] == "__" and k[-2:] == "__":
            raise _refuse(cls_name, f"its state sets the special attribute {k!r}")
        tv = type(v)
        if tv in _LEAF_TYPES:
            continue
        if tv is dict or tv is _OrderedDict:
            items: Any = v.values()
        elif tv is list or tv is tuple:
            items = v
        else:
            _check_callable(inst, k, v, cls_name, top=True)
            continue
        for item in items:
            if type(item) not in _LEAF_TYPES:
                _check_callable(inst, k, item, cls_name, top=False)


def _check_callable(inst: Any, key: str, v: Any, cls_name: str, top: bool) -> None:
    where = f"attribute {key!r}" if top else f"an item of attribute {key!r}"
    tv = type(v)
    if tv is _ClassRef:
        raise _refuse(cls_name, f"its state stores the class {v.name} as {where}, where the program could "
                                "later call it")
    if tv is types.MethodType:
        if top and key == "forward" and v.__self__ is inst and v.__func__.__name__ in _BOUND_METHODS:
            return  # fuse(): m.forward = m.forward_fuse
        raise _refuse(cls_name, f"its state stores the bound method {v.__func__.__qualname__} as {where}; only "
                                "m.forward = m.forward_fuse of the same module is written by fuse()")
    if callable(v) and not isinstance(v, nn.Module) and _class_refusal(tv) is not None:
        raise _refuse(cls_name, f"its state stores the callable {_describe_value(v)} as {where}, where the program "
                                "could later call it")


_LEAF_TYPES = frozenset({str, int, float, bool, type(None), bytes, set, torch.Tensor, nn.Parameter, torch.Size,
                         torch.device, torch.dtype, np.ndarray})


def _slot_names(cls: type) -> set[str]:
    names: set[str] = set()
    for klass in cls.__mro__:
        slots = klass.__dict__.get("__slots__", ())
        names.update([slots] if isinstance(slots, str) else slots)
    return names


def _make_build_handler(cls: type) -> Callable[[Any, Any], None]:
    """How BUILD may set state on an instance of ``cls`` (raises _Refused if it may not)."""
    if cls is np.ndarray or (isinstance(cls, type) and issubclass(cls, np.dtype)):
        def numpy_setstate(inst: Any, state: Any) -> None:  # numpy's C __setstate__: parses, runs no Python
            if type(state) is not tuple:
                raise _refuse(f"numpy.{cls.__name__}", f"it gets a state of type {type(state).__name__}")
            inst.__setstate__(state)

        return numpy_setstate

    name = f"{cls.__module__}.{cls.__qualname__}"
    if cls is collections.OrderedDict:
        # A saved state_dict is an OrderedDict whose BUILD restores `_metadata` (module versions); nothing else.
        def state_dict_build(inst: Any, state: Any) -> None:
            if type(state) is not dict or set(state) != {"_metadata"}:
                raise _refuse("collections.OrderedDict", "the file sets attributes of an OrderedDict other than a "
                                                         "state_dict's _metadata")
            _check_state(inst, state, "collections.OrderedDict")
            inst.__dict__.update(state)

        return state_dict_build
    if cls is not types.SimpleNamespace:
        reason = _class_refusal(cls)
        if reason is not None:
            raise _refuse(name, f"the file sets the state (BUILD) of a {cls.__qualname__} object, which is not "
                                "an object the loader rebuilt")
    setstate = getattr(cls, "__setstate__", None)
    if setstate is None:
        slots = _slot_names(cls)

        def default_build(inst: Any, state: Any) -> None:
            dict_state, slot_state = (state if type(state) is tuple and len(state) == 2 else (state, None))
            if dict_state:
                if type(dict_state) is not dict:
                    raise _refuse(name, f"it gets a state of type {type(dict_state).__name__}")
                _check_state(inst, dict_state, name)
                inst.__dict__.update(dict_state)
            if slot_state:
                if type(slot_state) is not dict:
                    raise _refuse(name, f"it gets a slot state of type {type(slot_state).__name__}")
                _check_state(inst, slot_state, name)
                for k, v in slot_state.items():
                    if k not in slots:
                        raise _refuse(name, f"its state sets {k!r}, which is not a slot of the class")
                    object.__setattr__(inst, k, v)

        return default_build
    if _module_setstate_is_vetted(setstate) or cls in _user_setstate:
        def vetted_setstate(inst: Any, state: Any) -> None:
            if type(state) is dict:
                _check_state(inst, state, name)
            elif cls not in _user_setstate:
                raise _refuse(name, f"it gets a state of type {type(state).__name__}, not an attribute dict")
            setstate(inst, state)

        return vetted_setstate
    raise _refuse(name, f"its class defines __setstate__ ({getattr(setstate, '__qualname__', setstate)}), which "
                        "would run with state chosen by the file; allow the class only if you vouch for that method")


# ---------------------------------------------------------------------------------- unpickler
_OrderedDict = collections.OrderedDict
_dispatch = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]


def _op(opcode: bytes) -> Callable:
    def register(fn: Callable) -> Callable:
        _dispatch[opcode[0]] = fn
        return fn

    return register


def _describe_callable(func: Any) -> tuple[str | None, str]:
    if type(func) is _ClassRef:
        return func.name, ("it is an allowed class, which may only be rebuilt as torch.save writes it; calling it "
                           "would run its constructor with arguments chosen by the file")
    if isinstance(func, types.MethodType):
        owner = type(func.__self__)
        return (f"{owner.__module__}.{owner.__qualname__}.{func.__func__.__name__}",
                "it is a method of an object from the file; a checkpoint never calls methods")
    entry_name = getattr(func, "__qualname__", None) or type(func).__name__
    module = getattr(func, "__module__", None)
    return (f"{module}.{entry_name}" if module else entry_name,
            "it is not one of the callables torch.save uses to rebuild tensors and plain data")


_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


class _RestrictedUnpickler(pickle._Unpickler):  # type: ignore[name-defined]
    """pickle's pure-Python unpickler with every opcode that can run code replaced by a checked one."""

    dispatch = _dispatch
    persistent_load: Callable[[Any], Any]

    def find_class(self, module: str, name: str) -> Any:
        sys.audit("pickle.find_class", module, name)
        if not (_DOTTED.match(module) and _DOTTED.match(name)):
            raise _Damaged(f"it names the malformed global {module[:60]!r} {name[:60]!r}")
        if self.proto < 3 and self.fix_imports:  # protocol 0-2 files say __builtin__, copy_reg, ...
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        return _resolve_global(module, name)

    def _line(self) -> str:
        line = self.readline()
        if not line.endswith(b"\n"):
            raise _Damaged("the pickle data ends inside a global name (truncated)")
        return line[:-1].decode("utf-8")

    @_op(pickle.GLOBAL)
    def load_global(self) -> None:
        module = self._line()
        self.append(self.find_class(module, self._line()))

    def load(self) -> Any:
        try:
            return super().load()
        except (_Refused, ImportError, _DevicePassthrough):
            raise
        except _Damaged:
            raise
        except Exception as e:  # truncated / corrupted stream, wrong types for a vetted callable, ...
            raise _Damaged(f"{type(e).__name__}: {_one_line(e, 200)}") from e

    @_op(pickle.REDUCE)
    def load_reduce(self) -> None:
        stack = self.stack
        args = stack.pop()
        func = stack[-1]
        entry = _VETTED.get(id(func))
        if entry is None or entry[0] is not func:
            if type(func) is _ClassRef and args == () and func.cls.__init__ in _SAFE_INIT:
                stack[-1] = _new_instance(func)  # e.g. a SimpleNamespace subclass: cls() runs no class code
                return
            raise _refuse(*_describe_callable(func))
        if type(args) is not tuple:
            raise _refuse(entry[1], "it is called without an argument tuple")
        stack[-1] = entry[2](args)

    @_op(pickle.NEWOBJ)
    def load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._newobj(cls, args, {}))

    @_op(pickle.NEWOBJ_EX)
    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._newobj(cls, args, kwargs))

    def _newobj(self, cls: Any, args: Any, kwargs: Any) -> Any:
        if type(cls) is _ClassRef:
            if args == () and kwargs == {}:
                return _new_instance(cls)
            raise _refuse(cls.name, "it is created with constructor arguments from the file; torch.save writes "
                                    "allowed classes without any")
        if cls is nn.Parameter and kwargs == {} and type(args) is tuple and 1 <= len(args) <= 2 \
                and isinstance(args[0], torch.Tensor) and (len(args) == 1 or type(args[1]) is bool):
            return nn.Parameter(*args)  # old parameter pickles; torch's weights_only allows the same
        name, _ = _describe_callable(cls)
        raise _refuse(name, "it is created through NEWOBJ, which only allowed classes may be")

    @_op(pickle.INST)
    def load_inst(self) -> None:
        module = self._line()
        self._instantiate(self.find_class(module, self._line()), self.pop_mark())

    @_op(pickle.OBJ)
    def load_obj(self) -> None:
        args = self.pop_mark()
        cls = args.pop(0)
        self._instantiate(cls, args)

    def _instantiate(self, klass: Any, args: list) -> None:
        if type(klass) is _ClassRef and not args:
            self.append(_new_instance(klass))
            return
        name, reason = _describe_callable(klass)
        raise _refuse(name, f"it is called with arguments (INST/OBJ opcode): {reason}")

    @_op(pickle.BUILD)
    def load_build(self) -> None:
        stack = self.stack
        state = stack.pop()
        inst = stack[-1]
        handler = _build_handlers.get(type(inst))
        if handler is None:
            handler = _build_handlers[type(inst)] = _make_build_handler(type(inst))
        handler(inst, state)

    def load_ext(self) -> None:
        raise _refuse(None, "the file uses a pickle extension code (copyreg.add_extension), which torch.save "
                            "never writes")

    # Containers: only the builtin ones, filled without calling methods of file-made objects.
    @_op(pickle.APPEND)
    def load_append(self) -> None:
        value = self.stack.pop()
        target = self.stack[-1]
        if type(target) is list:
            target.append(value)
        else:
            self._fill_list(target, [value])

    @_op(pickle.APPENDS)
    def load_appends(self) -> None:
        items = self.pop_mark()
        target = self.stack[-1]
        if type(target) is list:
            target.extend(items)
        else:
            self._fill_list(target, items)

    def _fill_list(self, target: Any, items: list) -> None:
        if isinstance(target, list) and _class_refusal(type(target)) is None:
            list.extend(target, items)  # an allowed list subclass: its own methods are not called
        else:
            raise _refuse(None, f"the file appends items to a {type(target).__name__} object; only lists are filled")

    @_op(pickle.SETITEM)
    def load_setitem(self) -> None:
        stack = self.stack
        value = stack.pop()
        key = stack.pop()
        target = stack[-1]
        if type(target) is dict or type(target) is _OrderedDict:
            target[key] = value
        else:
            self._fill_dict(target, [key, value])

    @_op(pickle.SETITEMS)
    def load_setitems(self) -> None:
        items = self.pop_mark()
        target = self.stack[-1]
        if type(target) is dict or type(target) is _OrderedDict:
            for i in range(0, len(items), 2):
                target[items[i]] = items[i + 1]
        else:
            self._fill_dict(target, items)

    def _fill_dict(self, target: Any, items: list) -> None:
        if type(target) is collections.Counter:
            setitem = dict.__setitem__
        elif isinstance(target, dict) and _class_refusal(type(target)) is None:
            setitem = _OrderedDict.__setitem__ if isinstance(target, _OrderedDict) else dict.__setitem__
        else:
            raise _refuse(None, f"the file sets items on a {type(target).__name__} object; only dicts are filled")
        for i in range(0, len(items), 2):
            setitem(target, items[i], items[i + 1])

    @_op(pickle.ADDITEMS)
    def load_additems(self) -> None:
        items = self.pop_mark()
        target = self.stack[-1]
        if type(target) is not set:
            raise _refuse(None, f"the file adds items to a {type(target).__name__} object; only sets are filled")
        target.update(items)

    @_op(pickle.BINPERSID)
    def load_binpersid(self) -> None:
        self.append(self._persistent(self.stack.pop()))

    @_op(pickle.PERSID)
    def load_persid(self) -> None:
        self.append(self._persistent(self.readline()[:-1].decode("ascii")))

    def _persistent(self, pid: Any) -> Any:
        if type(pid) is tuple and pid and pid[0] in ("module", b"module"):
            # torch < 1.6 files reference a module class once by persistent id (with its source text,
            # which torch only compares); the class itself is resolved like any GLOBAL.
            ref = pid[1] if len(pid) > 1 else None
            if type(ref) is not _ClassRef or not issubclass(ref.cls, nn.Module):
                raise _refuse(None, "a legacy module record of the file names something other than an allowed "
                                    "module class")
            return ref
        try:
            return self.persistent_load(pid)
        except RuntimeError as e:  # device problems (e.g. CUDA tensors without CUDA) are the caller's to see
            text = str(e)
            if "device" in text or "CUDA" in text or "map_location" in text:
                raise _DevicePassthrough(e) from e
            raise


for _code in (pickle.EXT1, pickle.EXT2, pickle.EXT4):
    _dispatch[_code[0]] = _RestrictedUnpickler.load_ext


class _DevicePassthrough(Exception):
    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def _restricted_load(file: IO[bytes], **kwargs: Any) -> Any:
    return _RestrictedUnpickler(file, **kwargs).load()


# The `pickle_module` handed to torch.load: torch subclasses `Unpickler` (to map storage types and
# attach persistent_load) and uses `load` for the small pickles of the legacy format.
_PICKLE_MODULE = types.ModuleType(f"{__name__}._restricted_pickle")
_PICKLE_MODULE.Unpickler = _RestrictedUnpickler  # type: ignore[attr-defined]
_PICKLE_MODULE.load = _restricted_load  # type: ignore[attr-defined]
_PICKLE_MODULE.UnpicklingError = pickle.UnpicklingError  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------ file checks
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
_ZIP_MAGIC = b"PK\x03\x04"
_IMAGES = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF8", "GIF"), (b"BM", "BMP"),
           (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))
_NOT_CHECKPOINT = "is not a PyTorch checkpoint"


def _name_of(f: Any) -> str:
    if isinstance(f, (str, os.PathLike)):
        return os.fspath(f)  # type: ignore[return-value]
    name = getattr(f, "name", None)
    return str(name) if isinstance(name, (str, os.PathLike)) else f"<{type(f).__name__}>"


def _check_file(f: Any) -> str | None:
    """Raise CheckpointFileError unless ``f`` looks like a torch checkpoint; returns 'zip' / 'legacy' / None."""
    if isinstance(f, (str, os.PathLike)):
        path = os.fspath(f)
        if not os.path.exists(path):
            raise CheckpointFileError(f"{path}: no such file", path)
        if os.path.isdir(path):
            found = [os.path.join(path, "weights", n) for n in ("best.pt", "last.pt")]
            found = [p for p in found if os.path.isfile(p)]
            tip = f"; did you mean {found[0]}?" if found else \
                "; pass the .pt file inside it (exported model folders are run by detect.py / val.py)"
            raise CheckpointFileError(f"{path}: is a directory, not a checkpoint file{tip}", path)
        try:
            size = os.path.getsize(path)
            with open(path, "rb") as fh:
                return _sniff(fh, size, path)
        except OSError as e:
            raise CheckpointFileError(f"{path}: cannot be read ({e.strerror or e})", path) from None
    if hasattr(f, "read") and hasattr(f, "seek") and hasattr(f, "tell"):
        name = _name_of(f)
        try:
            start = f.tell()
            size = f.seek(0, io.SEEK_END) - start
            f.seek(start)
        except (OSError, ValueError):
            return None  # unseekable: torch will say what it can
        try:
            return _sniff(f, size, name)
        finally:
            f.seek(start)
    return None


def _sniff(fh: IO[bytes], size: int, name: str) -> str:
    def fail(what: str) -> CheckpointFileError:
        return CheckpointFileError(f"{name}: {what}", name)

    if size <= 0:
        raise fail("is empty (0 bytes); the save or download did not complete, so re-download or re-save it")
    start = fh.tell()
    head = fh.read(512)
    if head.startswith(_ZIP_MAGIC):
        fh.seek(start)
        _check_zip(fh, size, fail)
        return "zip"
    if head.startswith(_LEGACY_MAGIC):
        return "legacy"  # torch < 1.6 format: loaded through the same restricted unpickler
    if len(head) < len(_LEGACY_MAGIC) and (_ZIP_MAGIC.startswith(head) or _LEGACY_MAGIC.startswith(head)):
        raise fail(f"is truncated ({size} bytes); re-download or re-save it")
    if head[257:262] == b"ustar":
        raise fail(f"{_NOT_CHECKPOINT} but a tar archive (the format of PyTorch < 0.4, which is not supported); "
                   "re-save the checkpoint with a current torch")
    raise fail(_identify(head, size, name))


def _check_zip(fh: IO[bytes], size: int, fail: Callable[[str], CheckpointFileError]) -> None:
    try:
        with zipfile.ZipFile(fh) as zf:  # reads only the central directory at the end
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError, IndexError) as e:
        raise fail(f"is a damaged or truncated checkpoint ({size} bytes; its zip directory cannot be read: "
                   f"{_one_line(e, 120)}); re-download or re-save it") from None
    names = [i.filename for i in infos]
    if any(n.endswith("/constants.pkl") or n == "constants.pkl" for n in names):
        raise fail(f"{_NOT_CHECKPOINT} but a TorchScript model (export.py --include torchscript); run it with "
                   "detect.py / val.py --weights, or torch.jit.load it")
    if not any(n.endswith("/data.pkl") or n == "data.pkl" for n in names):
        kind = "a NumPy .npz archive" if names and all(n.endswith(".npy") for n in names) else "a zip archive"
        raise fail(f"{_NOT_CHECKPOINT} but {kind} without the data.pkl a torch.save file has")
    for info in infos:
        if info.header_offset + info.compress_size > size:
            raise fail("is a damaged or truncated checkpoint (a record ends past the end of the file); "
                       "re-download or re-save it")


def _identify(head: bytes, size: int, name: str) -> str:
    """One phrase saying what a non-checkpoint file is and what to do with it."""
    for magic, kind in _IMAGES:
        if head.startswith(magic):
            return f"{_NOT_CHECKPOINT} but a {kind} image; pass images with --source"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return f"{_NOT_CHECKPOINT} but a WEBP image; pass images with --source"
    if len(head) >= 9:
        n = int.from_bytes(head[:8], "little")
        if 2 <= n <= size - 8 and head[8:9] == b"{":
            return (f"{_NOT_CHECKPOINT} but a safetensors file (tensor weights, no model); use it as pretrained "
                    "backbone weights (the weights argument of a backbone row, or create(..., pretrained=path)) "
                    "instead")
    if name.lower().endswith(".onnx") or (len(head) >= 3 and head[0] == 0x08 and 1 <= head[1] <= 30
                                          and head[2] in (0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42)):
        return (f"{_NOT_CHECKPOINT} but an ONNX model; run it with detect.py / val.py --weights (they pick the "
                "ONNX runtime by the .onnx suffix)")
    if head.startswith(b"\x89HDF"):
        return f"{_NOT_CHECKPOINT} but an HDF5 file (Keras / TensorFlow weights)"
    if head.startswith(b"\x1f\x8b"):
        return f"{_NOT_CHECKPOINT} but gzip-compressed data; decompress it first"
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return (f"{_NOT_CHECKPOINT} but a plain pickle file (not written by torch.save); re-save the object "
                "with torch.save")
    text = _as_text(head)
    if text is not None:
        if text.lstrip().startswith("version https://git-lfs"):
            return f"{_NOT_CHECKPOINT} but a Git LFS pointer; run `git lfs pull` to fetch the real file"
        if text.lstrip()[:1] == "<":
            return f"{_NOT_CHECKPOINT} but an HTML/XML page (a failed download?); download the file again"
        if re.search(r"^\s*[\w.-]+\s*:", text, re.M):
            return (f"{_NOT_CHECKPOINT} but a YAML/text file; pass model YAMLs with --cfg and dataset YAMLs "
                    "with --data")
        return f"{_NOT_CHECKPOINT} but a text file"
    return (f"{_NOT_CHECKPOINT}: its content is not recognised (starts with {head[:8].hex(' ')}); the file is "
            "corrupt or of another format, so re-download or re-save it")


def _as_text(head: bytes) -> str | None:
    if b"\x00" in head:
        return None
    for cut in range(4):  # the 512-byte head may end inside a multi-byte character
        try:
            text = head[:len(head) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
        printable = sum(c.isprintable() or c in "\r\n\t" for c in text)
        return text if text and printable >= 0.95 * len(text) else None
    return None


# ---------------------------------------------------------------------------------- public
def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on", "y")


_ZIP_READER_ERRORS = ("PytorchStreamReader", "inline_container", "zip archive", "central directory", "miniz",
                      "file not found", "unexpected EOF", "might be corrupted")


def load_checkpoint(f: FileLike, map_location: Any = None, pickle_module: Any = None, *,
                    weights_only: bool | None = None, mmap: bool | None = None, **pickle_load_args: Any) -> Any:
    """Load a checkpoint written by ``torch.save`` without letting it run code: ``torch.load``'s signature.

    Takes a path or binary file object (``f``), and ``map_location``, ``mmap`` and extra unpickler
    arguments as ``torch.load`` does. Returns the unpickled object, e.g. YOLOv5's
    ``{'model': DetectionModel, 'ema': ..., 'optimizer': {...}, 'epoch': int, ...}`` with tensors on
    ``map_location``. ``weights_only=None`` or ``False`` (and any ``pickle_module``, which is ignored)
    select the restricted loader described in the module docstring; ``weights_only=True`` is plain
    ``torch.load(weights_only=True)``. With ``YOLO_BACKBONES_TRUST_CHECKPOINTS=1`` the file is loaded with
    ``torch.load(weights_only=False)`` after an :class:`UnsafeCheckpointLoadWarning`.

    Raises :class:`CheckpointFileError` (one line) for a missing, empty, truncated, damaged or
    non-checkpoint file and :class:`UntrustedCheckpointError` naming the global the file asks for
    and why it is refused; in both cases nothing from the file has run.
    """
    name = _name_of(f)
    _check_file(f)
    kwargs: dict[str, Any] = dict(pickle_load_args)
    if mmap is not None:
        kwargs["mmap"] = mmap
    try:
        if weights_only or _env_true("TORCH_FORCE_WEIGHTS_ONLY_LOAD"):
            return torch.load(f, map_location, weights_only=True, **kwargs)
        if _env_true(TRUST_ENV):
            warnings.warn(f"{TRUST_ENV}=1: loading {name} with torch.load(weights_only=False), which runs any "
                          "code the file contains. Only do this for files you trust.",
                          UnsafeCheckpointLoadWarning, stacklevel=2)
            return torch.load(f, map_location, pickle_module, weights_only=False, **kwargs)
        # Sparse tensors are validated as under weights_only=True (bad indices would read out of bounds).
        with torch.sparse.check_sparse_tensor_invariants(enable=True):
            return torch.load(f, map_location, _PICKLE_MODULE, weights_only=False, **kwargs)
    except _Refused as e:
        what = f"the file asks for `{e.global_name}`; {e.reason}" if e.global_name else e.reason
        raise UntrustedCheckpointError(
            _one_line(f"Refusing to load {name}: {what}. Nothing from the file was executed. {_HINT}", 1000),
            e.global_name, e.reason, name) from None
    except _Damaged as e:
        text = f"{name}: cannot be loaded: {e}" if e.version else \
            f"{name}: is a damaged or malformed checkpoint ({e}); re-download or re-save it"
        raise CheckpointFileError(text, name) from None
    except _DevicePassthrough as e:
        raise e.error from None
    except RuntimeError as e:
        text = str(e)
        if any(marker in text for marker in _ZIP_READER_ERRORS):
            raise CheckpointFileError(f"{name}: is a damaged or truncated checkpoint ({_one_line(text, 160)}); "
                                      "re-download or re-save it", name) from None
        raise
    except (EOFError, pickle.UnpicklingError) as e:
        if isinstance(e, UntrustedCheckpointError) or weights_only:
            raise
        raise CheckpointFileError(f"{name}: is a damaged or truncated checkpoint ({type(e).__name__}: "
                                  f"{_one_line(e, 160)}); re-download or re-save it", name) from None
