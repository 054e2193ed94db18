"""What a pickled global may resolve to: vetted callables (each checking its arguments), plain values,
and allowed classes as inert :class:`ClassRef` tokens."""
from __future__ import annotations

import codecs
import collections
import copyreg
import importlib
import os
import pathlib
import pickle
import re
import sys
import types
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .class_policy import (
    ClassRef,
    class_refusal,
    describe_value,
    extra_classes,
    global_cache,
    in_namespace,
    namespaces,
    new_instance,
    resolve_alias,
)
from .errors import Damaged, Refused


# ------------------------------------------------------------------------- vetted callables
def _bad_args(name: str, args: tuple, expected: str) -> Refused:
    shown = ", ".join(describe_value(a) for a in args)[:200]
    return Refused(name, f"it is called with ({shown}), but torch.save only writes {expected}")


def _is_empty_hooks(h: Any) -> bool:
    return type(h) in (dict, collections.OrderedDict) and not h


def _no_class_refs(args: tuple) -> bool:
    return not any(type(a) is ClassRef for a in args)


def _check_plain_state(owner: str, state: Any, name: str) -> None:
    """Attribute dicts of tensors: string names, no dunders, no callables."""
    dict_state, slot_state = (state if type(state) is tuple and len(state) == 2 else (state, None))
    for part in (dict_state, slot_state):
        if part is None:
            continue
        if type(part) is not dict:
            raise Refused(name, f"it gives {owner} a state of type {type(part).__name__}")
        for k, v in part.items():
            if type(k) is not str or (k.startswith("__") and k.endswith("__")):
                raise Refused(name, f"it sets the attribute {k!r} of {owner}")
            if type(v) is ClassRef or callable(v):
                raise Refused(name, f"it stores {describe_value(v)} as attribute {k!r} of {owner}, "
                                    "where the program could later call it")


def _tensor_rebuilder(fn: Callable, hooks_at: int | None, state_at: int | None = None,
                      min_args: int = 1, max_args: int = 16) -> Callable:
    name = f"torch._utils.{fn.__name__}"

    def handler(args: tuple) -> Any:
        if not (min_args <= len(args) <= max_args) or not _no_class_refs(args):
            raise _bad_args(name, args, "tensor data, shapes and flags")
        if hooks_at is not None and len(args) > hooks_at:
            if not _is_empty_hooks(args[hooks_at]):
                raise Refused(name, "it attaches backward hooks to a tensor (torch.save never stores hooks)")
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
    entry = VETTED.get(id(func))
    if entry is None or entry[0] is not func or not entry[1].startswith("torch._utils._rebuild"):
        raise Refused(name, f"it rebuilds a tensor with {describe_value(func)}, not with one of torch's "
                            "rebuild functions")
    if new_type not in (torch.Tensor, nn.Parameter):
        raise Refused(name, f"it turns a tensor into {describe_value(new_type)}; only Tensor and Parameter "
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
        if len(args) != 2 or args[1] not in BOUND_METHODS or not isinstance(args[0], nn.Module) \
                or class_refusal(type(args[0])) is not None:
            raise Refused("builtins.getattr", f"it fetches {describe_value(args[1] if len(args) > 1 else None)} "
                                              f"from {describe_value(args[0] if args else None)}; only the "
                                              "'forward'/'forward_fuse' method of an allowed module may be "
                                              "fetched")
        func = getattr(type(args[0]), args[1], None)  # from the class: never an instance attribute
        if not isinstance(func, types.FunctionType):
            raise Refused("builtins.getattr", f"it fetches {args[1]!r} of {type(args[0]).__qualname__}, which is "
                                              "not a method")
        return types.MethodType(func, args[0])

    return handler


BOUND_METHODS = ("forward", "forward_fuse")  # the methods fuse() pickles as `m.forward = m.forward_fuse`


def _reconstructor(args: tuple) -> Any:  # copyreg._reconstructor, pickle protocols 0 and 1
    if len(args) == 3 and type(args[0]) is ClassRef and args[1] is object and args[2] is None:
        return new_instance(args[0])
    raise _bad_args("copyreg._reconstructor", args, "(allowed class, object, None)")


def _newobj(args: tuple) -> Any:  # copyreg.__newobj__ written as a REDUCE
    if len(args) == 1 and type(args[0]) is ClassRef:
        return new_instance(args[0])
    raise _bad_args("copyreg.__newobj__", args, "(allowed class,) without constructor arguments")


def _newobj_ex(args: tuple) -> Any:
    if len(args) == 3 and type(args[0]) is ClassRef and args[1] == () and args[2] == {}:
        return new_instance(args[0])
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


VETTED, _VETTED_NAMES = _build_vetted()  # VETTED: id(callable) -> (callable, dotted name, checking handler)
_TORCH_VALUE_TYPES = (torch.dtype, torch.layout, torch.memory_format, torch.qscheme)


def resolve_global(module: str, name: str) -> Any:
    """What a GLOBAL / STACK_GLOBAL may push, or raise Refused before importing anything foreign."""
    key = (module, name)
    hit = global_cache.get(key)
    if hit is not None:
        return hit
    full = f"{module}.{name}"
    module = resolve_alias(module)
    obj = _VETTED_NAMES.get((module, name))
    if obj is not None:
        global_cache[key] = obj
        return obj
    if module == "torch":  # dtypes, memory formats, qschemes pickle as torch.<name>
        value = getattr(torch, name, None) if name.isidentifier() else None
        if isinstance(value, _TORCH_VALUE_TYPES):
            global_cache[key] = value
            return value
    in_ns = in_namespace(module, "torch.nn") or any(in_namespace(module, ns) for ns in namespaces)
    extra = next((c for c in extra_classes if c.__module__ == module and c.__qualname__ == name), None)
    if not in_ns and extra is None:
        raise Refused(full, "it is neither a class of an allowed namespace (torch.nn modules, yolo_backbones, "
                            "registered host models) nor one of the functions torch.save uses to rebuild tensors "
                            "and plain data")
    if not name.isidentifier():
        raise Refused(full, "it is a dotted or invalid name; a checkpoint references classes directly")
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
            raise Damaged(f"it needs {full}, which this version of {module} does not have; load it with the "
                           "code version that wrote it", version=True)
    if not isinstance(obj, type):
        raise Refused(full, f"it is a {type(obj).__name__}, not a class; of these modules a checkpoint may only "
                            "reference classes, and those are rebuilt, never called")
    if obj.__module__ != module and extra is None and not any(
            in_namespace(obj.__module__, ns) for ns in (*namespaces, "torch.nn")):
        raise Refused(full, f"it is {obj.__module__}.{obj.__qualname__}, imported from outside the allowed namespaces")
    reason = class_refusal(obj)
    if reason is not None:
        raise Refused(full, f"it cannot be rebuilt safely: {reason}")
    ref = ClassRef(obj, full)
    global_cache[key] = ref
    return ref
