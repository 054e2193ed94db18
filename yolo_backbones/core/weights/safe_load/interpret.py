"""Turning the reader's records into what ``load_checkpoint`` returns: plain data, tensors and rebuilt models.

Everything reachable from the root is converted once (shared objects stay shared), depth-first with a depth
limit; containers are copied, so nothing the reader made is handed out. What is returned:

* scalars, strings, bytes, tuples, lists, dicts, ``OrderedDict`` (with a state_dict's ``_metadata``), sets,
  ``torch.Size`` / ``torch.device`` / dtypes, ``pathlib`` paths (values, never opened here);
* numpy arrays, scalars and dtypes of numeric, boolean or string kinds (never object arrays);
* dense CPU tensors and ``nn.Parameter`` s, each a view checked to lie inside its storage
  (:func:`tensor_from_call`);
* ``argparse.Namespace`` / ``types.SimpleNamespace`` (and classes a host registered with
  :func:`~.class_policy.register_plain_class`) made from plain attributes;
* models, rebuilt by :mod:`.modules` from their config and tensors.

Anything else (an object of any other class, a function or class reference used as data, a bound method
outside a fused module, a bare storage) is refused naming what it is.
"""
from __future__ import annotations

import collections
import pathlib
import re
from typing import Any

import numpy as np
import torch
from torch import nn

from . import limits
from .class_policy import plain_classes
from .errors import Damaged, OverLimit, Refused
from .records import BoundMethod, Call, Global, Obj, StorageRef

_OrderedDict = collections.OrderedDict
_PLAIN_SCALARS = frozenset({str, int, float, bool, type(None), bytes, complex, slice, torch.Size, torch.device,
                            torch.dtype, torch.layout, torch.memory_format})


def _torch_values() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in dir(torch):
        value = getattr(torch, name, None)
        if isinstance(value, (torch.dtype, torch.layout, torch.memory_format)):
            out[f"torch.{name}"] = value
    return out


GLOBAL_VALUES = _torch_values()  # dtypes, layouts and memory formats pickled as globals of torch

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Interpreter:
    """Converts one archive's records; ``models=False`` refuses model objects (``weights_only=True``)."""

    def __init__(self, archive: Any, map_location: Any = None, models: bool = True) -> None:
        self.archive, self.map_location, self.models = archive, map_location, models
        self.cache: dict[int, Any] = {}
        self.templates: dict[tuple, Any] = {}  # built, unloaded models by config (see modules._build)
        self.configs: list[str] | None = None
        self.root: Any = None
        self.active: set[int] = set()
        self.view_bytes = 0
        self.view_limit = limits.VIEW_BYTES_FACTOR * max(archive.file_bytes, 0) + (1 << 20)
        self._swapped: dict[str, torch.dtype] = {}

    # ------------------------------------------------------------------------------------------ dispatch
    def convert(self, root: Any) -> Any:
        """The plain value of the reader's whole output ``root``."""
        self.root = root
        return self.value(root)

    def value(self, x: Any, depth: int = 0) -> Any:
        """The plain value (tensor, model, ...) for ``x`` of the reader's output."""
        tx = type(x)
        if tx in _PLAIN_SCALARS:
            return x
        key = id(x)
        hit = self.cache.get(key, _MISSING)
        if hit is not _MISSING:
            return hit
        if depth > limits.MAX_DEPTH:
            raise OverLimit("MAX_DEPTH", limits.MAX_DEPTH, "the nesting of its objects and containers")
        if key in self.active:
            raise Refused(None, f"the file holds a reference cycle through a {tx.__name__}, which a checkpoint "
                                "never has")
        d = depth + 1
        if tx is list:
            out: Any = []
            self.cache[key] = out
            out.extend(self.value(v, d) for v in x)
            return out
        if tx is dict or tx is _OrderedDict or tx is collections.Counter:
            out = tx()
            self.cache[key] = out
            for k, v in x.items():
                out[self._key(k, d)] = self.value(v, d)
            meta = getattr(x, "_metadata", None) if tx is _OrderedDict else None
            if meta is not None:
                out._metadata = self._metadata(meta, d)
            return out
        self.active.add(key)
        try:
            if tx is tuple:
                out = tuple(self.value(v, d) for v in x)
            elif tx is set or tx is frozenset:
                out = tx(self._key(v, d) for v in x)
            elif tx is bytearray or isinstance(x, pathlib.PurePath):
                out = x
            elif tx is Call:
                out = self._call(x, d)
            elif tx is Obj:
                out = self._object(x, d)
            elif tx is Global:
                out = GLOBAL_VALUES.get(x.path, _MISSING)
                if out is _MISSING:
                    raise Refused(x.path, "the file stores this function or class as data, where the program could "
                                          "later call it")
            elif tx is BoundMethod:
                raise Refused(f"{x.obj.cls.path}.{x.name}", "the file stores a bound method outside the one place "
                                                             "torch.save writes it (a fused module's forward)")
            elif tx is StorageRef:
                raise Refused(None, "the file stores a bare tensor storage, which YOLO checkpoints never hold")
            else:
                raise Damaged(f"unexpected {tx.__name__} from the reader")
        finally:
            self.active.discard(key)
        self.cache[key] = out
        return out

    def _key(self, k: Any, depth: int) -> Any:
        out = self.value(k, depth)
        try:
            hash(out)
        except TypeError:
            raise Refused(None, f"the file uses a {type(out).__name__} as a dictionary key or set item") from None
        return out

    def _metadata(self, meta: Any, depth: int) -> Any:
        out = self.value(meta, depth)
        if type(out) not in (dict, _OrderedDict) or not all(
                type(k) is str and type(v) is dict and all(type(x) is str for x in v) for k, v in out.items()):
            raise Refused("collections.OrderedDict", "a state_dict's _metadata is not a dict of version dicts")
        return out

    # ------------------------------------------------------------------------------------------- objects
    def _object(self, obj: Obj, depth: int) -> Any:
        path = obj.cls.path
        factory = plain_classes.get(path)
        if factory is not None:
            return factory(**self.attributes(obj, depth, path))
        if is_module_record(obj):
            if not self.models:
                raise Refused(path, "the file holds a model object and weights_only=True allows tensors and "
                                    "plain data only")
            from .modules import rebuild_module

            return rebuild_module(self, obj, depth)
        raise Refused(path, "it is an object of a class this loader does not rebuild: a checkpoint may hold models "
                            "(rebuilt from their config and tensors), tensors and plain data")

    def attributes(self, obj: Obj, depth: int, path: str) -> dict[str, Any]:
        """The attribute dict an object's BUILD state gives, converted; names must be plain identifiers."""
        if obj.listitems or obj.dictitems:
            raise Refused(path, "the file adds items to an object that is not a container")
        state = obj.state
        if type(state) is tuple and len(state) == 2 and state[1] is None:
            state = state[0]
        if state is None:
            return {}
        if type(state) is not dict:
            raise Refused(path, f"its state is a {type(state).__name__}, not an attribute dict")
        out = {}
        for k, v in state.items():
            if type(k) is not str or not _IDENT.match(k) or k.startswith("__"):
                raise Refused(path, f"its state sets the attribute {str(k)[:40]!r}")
            out[k] = self.value(v, depth)
        return out

    # --------------------------------------------------------------------------------- calls (data)
    def _call(self, call: Call, depth: int) -> Any:
        path = call.func.path
        if path.startswith("torch."):
            return self.tensor(call, depth)
        return self._numpy(call, depth)

    def tensor(self, call: Any, depth: int) -> torch.Tensor:
        """A tensor (or Parameter) from one of torch's rebuild calls; see :func:`tensor_from_call`."""
        if type(call) is not Call:
            raise Refused(None, f"a tensor of the file is built from a {type(call).__name__}")
        key = id(call)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        path, args = call.func.path, call.args
        if call.built:
            raise Refused(path, "the file sets the state of a tensor it rebuilt")
        name = path.rpartition(".")[2]
        if name in ("_rebuild_parameter", "_rebuild_parameter_with_state"):
            if len(args) != (3 if name == "_rebuild_parameter" else 4) or type(args[1]) is not bool:
                raise Refused(path, "it is called with arguments torch.save never writes")
            self._no_hooks(path, args[2])
            if name == "_rebuild_parameter_with_state":
                self._no_state(path, args[3])
            data = self.tensor(args[0], depth)
            out: torch.Tensor = nn.Parameter(data, requires_grad=args[1])
        elif name == "_rebuild_from_type_v2":
            if len(args) != 4 or type(args[0]) is not Global or type(args[2]) is not tuple:
                raise Refused(path, "it is called with arguments torch.save never writes")
            new_type = args[1].path if type(args[1]) is Global else None
            if new_type not in ("torch.Tensor", "torch._tensor.Tensor", "torch.nn.parameter.Parameter"):
                raise Refused(path, f"it turns a tensor into {getattr(args[1], 'path', type(args[1]).__name__)}; "
                                    "only Tensor and Parameter are allowed")
            self._no_state(path, args[3])
            inner = Call(args[0], args[2])
            data = self.tensor(inner, depth)
            out = nn.Parameter(data, requires_grad=data.requires_grad) if new_type.endswith("Parameter") else data
        else:
            out = tensor_from_call(self, path, args)
        self.cache[key] = out
        return out

    @staticmethod
    def _no_hooks(path: str, hooks: Any) -> None:
        if not (type(hooks) in (dict, _OrderedDict) and not hooks):
            raise Refused(path, "it attaches backward hooks to a tensor (torch.save never stores hooks)")

    @staticmethod
    def _no_state(path: str, state: Any) -> None:
        if state is None or (type(state) in (dict, _OrderedDict) and not state):
            return
        if type(state) is tuple and all(s is None or (type(s) is dict and not s) for s in state):
            return
        raise Refused(path, "it gives a tensor attributes of its own, which YOLO checkpoints never hold")

    def storage(self, ref: Any, dtype: torch.dtype) -> torch.UntypedStorage:
        """The storage of ``ref`` read for elements of ``dtype`` (byte order fixed once)."""
        if type(ref) is not StorageRef:
            raise Refused(None, "a tensor of the file is built from something that is not a storage of the archive")
        storage = self.archive.storage(ref)
        if self.archive.byteorder == "big" and torch._utils._element_size(dtype) > 1:
            seen = self._swapped.get(ref.key)
            if seen is None:
                size = torch._utils._element_size(dtype)
                raw = torch.empty(0, dtype=torch.uint8).set_(storage, 0, (storage.nbytes(),), (1,))
                raw.copy_(raw.view(-1, size).flip(1).reshape(-1))
                self._swapped[ref.key] = dtype
            elif seen != dtype:
                raise Refused(None, "a big-endian storage is read with two element types")
        return storage

    def device_of(self, location: str) -> torch.device | None:
        """Where ``map_location`` sends tensors saved at ``location`` (None: stay on the CPU)."""
        ml = self.map_location
        if ml is None:
            return None
        if isinstance(ml, (str, torch.device)):
            dev = torch.device(ml)
        elif isinstance(ml, dict):
            target = ml.get(location)
            if target is None:
                return None
            dev = torch.device(target)
        else:
            return None
        return None if dev.type == "cpu" else dev

    # ---------------------------------------------------------------------------------------- numpy
    def _numpy(self, call: Call, depth: int) -> Any:
        path, args = call.func.path, call.args
        name = path.rpartition(".")[2]
        if name == "dtype":
            return _numpy_dtype(path, args, call.state)
        if name == "scalar":
            if len(args) != 2 or type(args[1]) is not bytes:
                raise Refused(path, "it holds something other than (dtype, bytes): numpy object scalars are refused")
            dtype = self._np_dtype(args[0], depth)
            if len(args[1]) != dtype.itemsize:
                raise Damaged("a numpy scalar's bytes do not match its dtype")
            return np.frombuffer(args[1], dtype)[0]
        if name == "_reconstruct":
            if len(args) != 3 or type(args[0]) is not Global or args[0].path not in ("numpy.ndarray",):
                raise Refused(path, "it reconstructs something other than a numpy array")
            state = call.state
            if type(state) is not tuple or len(state) != 5:
                raise Refused(path, "a numpy array of the file has a malformed state")
            _, shape, dtype, fortran, raw = state
            return _array(path, shape, self._np_dtype(dtype, depth), fortran, raw)
        if name == "_frombuffer":
            if len(args) != 4 or type(args[0]) not in (bytes, bytearray):
                raise Refused(path, "it is called with arguments numpy never writes")
            return _array(path, args[2], self._np_dtype(args[1], depth), args[3] == "F", bytes(args[0]))
        raise Refused(path, "it is not one of the numpy calls this loader reads")

    def _np_dtype(self, x: Any, depth: int) -> np.dtype:
        out = self.value(x, depth)
        if not isinstance(out, np.dtype):
            raise Refused(None, "a numpy value of the file has a dtype that is not a numpy dtype")
        return out


_MISSING = object()
_NP_KINDS = frozenset("biufc?US")  # never 'O' (pickled Python objects) or 'V' (structured)
_NP_SPEC = re.compile(r"^[<>|=]?[a-zA-Z?]\d{0,3}$")


def _numpy_dtype(path: str, args: tuple, state: Any) -> np.dtype:
    if not (1 <= len(args) <= 3 and type(args[0]) is str and _NP_SPEC.match(args[0])):
        raise Refused(path, "it names a dtype this loader does not read")
    dtype = np.dtype(args[0])
    if dtype.kind not in _NP_KINDS:
        raise Refused(path, f"it is a numpy dtype of kind {dtype.kind!r}; object and structured arrays are refused")
    if state is not None:
        if type(state) is not tuple or len(state) < 8 or state[2:5] != (None, None, None) \
                or state[1] not in ("<", ">", "|", "="):
            raise Refused(path, "its state describes a structured or sub-array dtype, which this loader refuses")
        if state[1] in "<>" and dtype.itemsize > 1:
            dtype = dtype.newbyteorder(state[1])
        if dtype.kind in "US" and _is_int(state[5]) and 0 < state[5] <= 1 << 16:
            dtype = np.dtype((dtype.str[:2], state[5] // (4 if dtype.kind == "U" else 1)))
    return dtype


def _is_int(x: Any) -> bool:
    return type(x) is int


def _array(path: str, shape: Any, dtype: np.dtype, fortran: Any, raw: Any) -> np.ndarray:
    if type(shape) is not tuple or not all(_is_int(s) and s >= 0 for s in shape) or type(raw) not in (bytes, str):
        raise Refused(path, "a numpy array of the file has a malformed shape or content (object arrays are refused)")
    data = raw.encode("latin-1") if type(raw) is str else raw  # protocol 0-2 store bytes as latin-1 text
    count = 1
    for s in shape:
        count *= s
    if count * dtype.itemsize != len(data):
        raise Damaged("a numpy array's bytes do not match its shape")
    return np.frombuffer(data, dtype).reshape(shape, order="F" if fortran else "C").copy()


def is_module_record(obj: Obj) -> bool:
    """Whether ``obj`` describes an ``nn.Module`` (its state has the module bookkeeping dicts)."""
    state = obj.state
    if type(state) is tuple and len(state) == 2:
        state = state[0]
    return (type(state) is dict and "_modules" in state and "_parameters" in state) \
        or obj.cls.module.startswith("torch.nn.")


def _dense(size: Any, stride: tuple) -> bool:
    """Row-major contiguous strides (what torch.save writes for ordinary tensors): no element shared."""
    expected = 1
    for s, st in zip(reversed(size), reversed(stride)):
        if s != 1 and st != expected:
            return False
        expected *= s
    return True


_ITEMSIZE = {d: torch.empty((), dtype=d).element_size() for d in (
    torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16, torch.int8,
    torch.uint8, torch.bool, torch.complex64, torch.complex128)}


def tensor_from_call(interp: Interpreter, path: str, args: tuple) -> torch.Tensor:
    """A dense tensor from ``torch._utils._rebuild_tensor[_v2|_v3]`` arguments, as a checked view of its storage.

    The view must lie inside the storage (offset and strides non-negative); it may have more elements than the
    storage (stride 0, overlapping strides) only up to :data:`~.limits.MAX_EXPANDED_ELEMENTS`; all views
    together stay under :data:`~.limits.VIEW_BYTES_FACTOR` times the file size. Overlapping views are copied,
    so no two elements of a returned tensor share memory.
    """
    name = path.rpartition(".")[2]
    want = {"_rebuild_tensor": (4, 4), "_rebuild_tensor_v2": (6, 7), "_rebuild_tensor_v3": (7, 8)}.get(name)
    if want is None or not (want[0] <= len(args) <= want[1]):
        raise Refused(path, "it is not one of torch's dense tensor rebuild calls, or has the wrong arguments")
    ref, offset, size, stride = args[:4]
    requires_grad = args[4] if len(args) > 4 else False
    if name == "_rebuild_tensor_v3":
        dtype = GLOBAL_VALUES.get(getattr(args[6], "path", ""))
        if not isinstance(dtype, torch.dtype):
            raise Refused(path, "its element type is not a torch dtype")
    else:
        dtype = getattr(ref, "dtype", None)
    if len(args) > 5:
        Interpreter._no_hooks(path, args[5])
    meta = args[7] if name == "_rebuild_tensor_v3" and len(args) > 7 else args[6] if name != "_rebuild_tensor_v3" \
        and len(args) > 6 else None
    if meta:
        raise Refused(path, "it sets tensor metadata flags, which YOLO checkpoints never hold")
    if type(requires_grad) is not bool or not _is_int(offset) or type(size) not in (tuple, torch.Size) \
            or type(stride) is not tuple or len(size) != len(stride) or len(size) > 64 \
            or not all(_is_int(s) and s >= 0 for s in (*size, *stride)) or offset < 0:
        raise Refused(path, "its offset, sizes or strides are not the non-negative integers torch.save writes")
    storage = interp.storage(ref, dtype)
    itemsize = _ITEMSIZE.get(dtype) or torch._utils._element_size(dtype)
    available = storage.nbytes() // itemsize
    numel = 1
    for s in size:
        numel *= s
    if numel:
        last = offset + sum((s - 1) * st for s, st in zip(size, stride))
        if last >= available:
            raise Refused(path, f"a tensor view reaches element {last} of a storage of {available}: views beyond "
                                "their storage are refused")
        if numel > available and numel > limits.MAX_EXPANDED_ELEMENTS:
            raise OverLimit("MAX_EXPANDED_ELEMENTS", limits.MAX_EXPANDED_ELEMENTS,
                            f"a tensor view of {numel} elements over a storage of {available} (stride 0 or "
                            "overlapping strides)")
    interp.view_bytes += numel * itemsize
    if interp.view_bytes > interp.view_limit:
        raise OverLimit("VIEW_BYTES_FACTOR", limits.VIEW_BYTES_FACTOR,
                        "the bytes its tensor views cover, as a multiple of the file size,")
    t = torch.empty(0, dtype=dtype).set_(storage, offset, tuple(size), stride)
    if numel > 1 and not _dense(size, stride) and torch._debug_has_internal_overlap(t) != 0:
        t = t.clone(memory_format=torch.contiguous_format)
    device = interp.device_of(ref.location)
    if device is not None:
        t = t.to(device)
    if requires_grad:
        if not (t.is_floating_point() or t.is_complex()):
            raise Refused(path, "it asks for gradients of an integer tensor")
        t.requires_grad_(True)
    return t
