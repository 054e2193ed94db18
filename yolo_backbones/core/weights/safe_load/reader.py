"""A pickle reader that builds plain containers and inert records, and calls nothing the file names.

:func:`read_pickle` runs the pickle program of a checkpoint with its own opcode loop. Builtin containers
(dict, list, tuple, set, frozenset, OrderedDict) and scalars are made directly; every global is a
:class:`~.records.Global` token (never imported); an object the file creates is an :class:`~.records.Obj`
record holding what BUILD / APPENDS / SETITEMS would have given it; a call is accepted only for the functions
``torch.save`` and numpy use to describe data, and is kept as a :class:`~.records.Call` record (tensors, numpy
values) or evaluated here when it makes a plain value from plain arguments (``OrderedDict(pairs)``,
``torch.Size``, ``pathlib`` paths, ...). Any other call is refused on the spot, naming the global.

Nothing the file set is checked here for later use: records are only interpreted (:mod:`.interpret`) after the
whole program ran, so a container the file mutates later through the memo is seen in its final state.
"""
from __future__ import annotations

import _compat_pickle
import codecs
import collections
import os
import pathlib
import re
from struct import unpack_from
from typing import Any, Callable

import torch

from . import limits
from .errors import Damaged, OverLimit, Refused
from .records import BoundMethod, Call, Global, Obj

_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_OrderedDict = collections.OrderedDict

# Calls kept as records and interpreted later (tensors need their storages; numpy values their BUILD state).
RECORDED_CALLS = frozenset({
    "torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor_v3",
    "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state",
    "torch._tensor._rebuild_from_type_v2",
    "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar",
    "numpy.core.numeric._frombuffer", "numpy._core.numeric._frombuffer", "numpy.dtype",
})
# Tensor kinds torch can pickle but a YOLO checkpoint never holds; refused with a clear reason.
_UNSUPPORTED_TENSORS = frozenset({
    "_rebuild_sparse_tensor", "_rebuild_nested_tensor", "_rebuild_qtensor", "_rebuild_meta_tensor_no_storage",
    "_rebuild_device_tensor_from_numpy", "_rebuild_device_tensor_from_cpu_tensor", "_rebuild_wrapper_subclass",
    "_rebuild_xla_tensor", "_rebuild_mtia_tensor", "_rebuild_typed_storage", "_rebuild_typed_storage_child",
})
_OBJECT_CREATORS = frozenset({"copyreg._reconstructor", "copyreg.__newobj__", "copyreg.__newobj_ex__"})


def _is_int(x: Any) -> bool:
    return type(x) is int


def _pairs(x: Any) -> bool:
    return type(x) in (list, tuple) and all(type(p) in (list, tuple) and len(p) == 2 for p in x)


def _path_value(cls_name: str) -> Callable[[tuple], Any]:
    pure = {"PosixPath": pathlib.PurePosixPath, "WindowsPath": pathlib.PureWindowsPath}.get(cls_name)
    native = "PosixPath" if os.name != "nt" else "WindowsPath"

    def make(args: tuple) -> Any:
        if not all(type(a) is str for a in args):
            raise Refused(f"pathlib.{cls_name}", "it is given something other than path parts as strings")
        if cls_name in ("Path", native):
            return pathlib.Path(*args)
        if pure is not None:
            return pure(*args)  # a path pickled on the other OS family
        return getattr(pathlib, cls_name)(*args)  # PurePath, PurePosixPath, PureWindowsPath

    return make


def _checked(name: str, accept: Callable[[tuple], bool], make: Callable[..., Any], expected: str) -> Callable:
    def handler(args: tuple) -> Any:
        if not accept(args):
            raise Refused(name, f"it is called with arguments torch.save never writes (it writes {expected})")
        return make(*args)

    return handler


_LAYOUTS = {str(x): x for x in (torch.strided, torch.sparse_coo, torch.sparse_csr, torch.sparse_csc,
                                 torch.sparse_bsr, torch.sparse_bsc, torch._mkldnn)}


def _value_calls() -> dict[str, Callable[[tuple], Any]]:
    """Calls evaluated while reading: each makes a plain value from plain, checked arguments."""
    calls = {
        "collections.OrderedDict": _checked("collections.OrderedDict", lambda a: a == () or (
            len(a) == 1 and _pairs(a[0])), _OrderedDict, "() or a list of pairs"),
        "collections.Counter": _checked("collections.Counter", lambda a: a == () or (
            len(a) == 1 and type(a[0]) is dict), collections.Counter, "() or a dict"),
        "builtins.set": _checked("builtins.set", lambda a: a == () or (
            len(a) == 1 and type(a[0]) in (list, tuple)), set, "() or a list"),
        "builtins.frozenset": _checked("builtins.frozenset", lambda a: a == () or (
            len(a) == 1 and type(a[0]) in (list, tuple)), frozenset, "() or a list"),
        "builtins.slice": _checked("builtins.slice", lambda a: 1 <= len(a) <= 3 and all(
            x is None or _is_int(x) for x in a), slice, "integers or None"),
        "builtins.complex": _checked("builtins.complex", lambda a: len(a) <= 2 and all(
            type(x) in (int, float) for x in a), complex, "two numbers"),
        "builtins.bytearray": _checked("builtins.bytearray", lambda a: a == () or (len(a) == 1 and type(
            a[0]) is bytes) or (len(a) == 2 and type(a[0]) is str and a[1] in ("latin1", "latin-1")),
            bytearray, "bytes"),
        "builtins.bytes": _checked("builtins.bytes", lambda a: a == (), bytes, "()"),
        "_codecs.encode": _checked("_codecs.encode", lambda a: len(a) == 2 and type(a[0]) is str and a[1] in (
            "latin1", "latin-1"), codecs.encode, "(text, 'latin1')"),
        "torch.device": _checked("torch.device", lambda a: 1 <= len(a) <= 2 and type(a[0]) is str and len(a[0]) < 64
                                 and (len(a) == 1 or a[1] is None or _is_int(a[1])), torch.device, "(type, index)"),
        "torch.Size": _checked("torch.Size", lambda a: len(a) == 1 and type(a[0]) in (tuple, list) and all(
            map(_is_int, a[0])), torch.Size, "a tuple of ints"),
        "torch.serialization._get_layout": _checked("torch.serialization._get_layout", lambda a: len(a) == 1 and a[
            0] in _LAYOUTS, _LAYOUTS.__getitem__, "a layout name"),
    }
    for module in ("pathlib", "pathlib._local"):  # Python 3.13 moved the classes to pathlib._local
        for cls_name in ("Path", "PosixPath", "WindowsPath", "PurePath", "PurePosixPath", "PureWindowsPath"):
            calls[f"{module}.{cls_name}"] = _path_value(cls_name)
    return calls


VALUE_CALLS = _value_calls()


class _Mark:
    __slots__ = ()


_MARK = _Mark()


def read_pickle(data: bytes | memoryview, persistent_load: Callable[[Any], Any], start: int = 0) -> tuple[Any, int]:
    """Run the pickle program at ``data[start:]``; return its result (plain containers, scalars and records) and the
    position after its STOP opcode.

    ``persistent_load(pid)`` resolves persistent ids (tensor storages of the archive). Raises
    :class:`~.errors.Refused` (a call or construct this loader never performs, naming the global),
    :class:`~.errors.OverLimit` or :class:`~.errors.Damaged` (malformed or truncated program).
    """
    try:
        return _run(data if type(data) is bytes else bytes(data), persistent_load, start)
    except (Refused, Damaged):
        raise
    except (IndexError, KeyError, ValueError, TypeError, UnicodeDecodeError, OverflowError) as e:
        raise Damaged(f"{type(e).__name__}: {e}") from None


def _line(data: bytes, pos: int) -> tuple[bytes, int]:
    """The text field at ``pos`` (up to the newline, at most 4096 bytes) and the position after it."""
    end = data.find(b"\n", pos, pos + 4096)
    if end < 0:
        raise Damaged("the pickle data ends inside a text field (truncated)")
    return data[pos:end], end + 1


def _short(pos: int, k: int, n: int) -> None:
    if pos + k > n:
        raise Damaged("the pickle data ends early (truncated)")


def _run(data: bytes, persistent_load: Callable[[Any], Any], pos: int) -> tuple[Any, int]:
    n = len(data)
    stack: list[Any] = []
    metastack: list[list[Any]] = []
    memo: dict[int, Any] = {}
    tuple_depth: dict[int, int] = {}
    proto = 0
    pushes = 0
    value_calls = VALUE_CALLS
    append = stack.append

    def make_tuple(items: Any) -> tuple:
        t = tuple(items)
        depth = 0
        for x in t:
            tx = type(x)
            if tx is tuple or tx is frozenset:
                d = tuple_depth.get(id(x), 1)
                if d > depth:
                    depth = d
        if depth:
            if depth >= limits.MAX_TUPLE_DEPTH:
                raise OverLimit("MAX_TUPLE_DEPTH", limits.MAX_TUPLE_DEPTH, "the nesting of tuples")
            tuple_depth[id(t)] = depth + 1
        return t

    def find_global(module: str, name: str) -> Global:
        if not (_DOTTED.match(module) and _DOTTED.match(name)):
            raise Damaged(f"it names the malformed global {module[:60]!r} {name[:60]!r}")
        if proto < 3:  # protocol 0-2 files say __builtin__, copy_reg, ...
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        return Global(module, name)

    def new_object(cls: Any, args: Any, kwargs: Any, how: str) -> Obj:
        if type(cls) is not Global:
            raise Refused(None, f"the file creates an object ({how}) of something that is not a class name")
        if args or kwargs:
            raise Refused(cls.path, f"it is created ({how}) with constructor arguments from the file; torch.save "
                                    "writes objects without any (their state follows)")
        return Obj(cls)

    def reduce(func: Any, args: Any) -> Any:
        if type(func) is not Global:
            what = "a method of an object from the file" if type(func) is BoundMethod else type(func).__name__
            raise Refused(None, f"the file calls {what}; a checkpoint only calls the functions torch.save uses to "
                                "rebuild tensors and plain data")
        if type(args) is not tuple:
            raise Refused(func.path, "it is called without an argument tuple")
        path = func.path
        handler = value_calls.get(path)
        if handler is not None:
            return handler(args)
        if path in RECORDED_CALLS:
            return Call(func, args)
        if path in _OBJECT_CREATORS:
            if path == "copyreg._reconstructor":  # protocols 0 and 1
                if len(args) == 3 and type(args[1]) is Global and args[1].path == "builtins.object" \
                        and args[2] is None:
                    return new_object(args[0], (), None, "copyreg._reconstructor")
            elif path == "copyreg.__newobj__":
                if args:
                    return new_object(args[0], args[1:], None, "copyreg.__newobj__")
            elif len(args) == 3:
                return new_object(args[0], args[1], args[2], "copyreg.__newobj_ex__")
            raise Refused(path, "it is called with arguments torch.save never writes")
        if path == "builtins.getattr":
            if len(args) == 2 and type(args[0]) is Obj and type(args[1]) is str and _IDENT.match(args[1]):
                return BoundMethod(args[0], args[1])
            raise Refused(path, "it fetches an attribute of something other than an object of the file "
                                "(torch.save writes getattr only for a fused module's bound forward method)")
        if func.module == "torch._utils" and func.name in _UNSUPPORTED_TENSORS:
            raise Refused(path, "it rebuilds a kind of tensor (sparse, nested, quantized, meta or device) that "
                                "YOLO checkpoints never hold and this loader does not read")
        if args == ():
            return Obj(func)  # `cls()` as SimpleNamespace subclasses pickle themselves; interpreted (or refused) later
        raise Refused(path, "it is called with arguments chosen by the file; a checkpoint may only call the "
                            "functions torch.save uses to rebuild tensors and plain data")

    def build(inst: Any, state: Any) -> None:
        ti = type(inst)
        if ti is Obj or ti is Call:
            if inst.built:
                raise Refused(inst.func.path if ti is Call else inst.cls.path,
                              "the file sets the state of the same object twice")
            inst.state, inst.built = state, True
            return
        if ti is _OrderedDict:
            # A saved state_dict restores `_metadata` (module versions) with BUILD; nothing else.
            if type(state) is dict and set(state) == {"_metadata"}:
                inst._metadata = state["_metadata"]
                return
            raise Refused("collections.OrderedDict", "the file sets attributes of an OrderedDict other than a "
                                                     "state_dict's _metadata")
        raise Refused(None, f"the file sets the state (BUILD) of a {ti.__name__} object, which is not an object "
                            "the file created")

    def set_items(target: Any, items: list) -> None:
        tt = type(target)
        if tt is dict or tt is _OrderedDict:
            for i in range(0, len(items), 2):
                target[items[i]] = items[i + 1]
        elif tt is Obj:
            if target.dictitems is None:
                target.dictitems = []
            target.dictitems.extend(zip(items[::2], items[1::2]))
        else:
            raise Refused(None, f"the file sets items on a {tt.__name__} object; only dicts are filled")

    def append_items(target: Any, items: list) -> None:
        tt = type(target)
        if tt is list:
            target.extend(items)
        elif tt is Obj:
            if target.listitems is None:
                target.listitems = []
            target.listitems.extend(items)
        else:
            raise Refused(None, f"the file appends items to a {tt.__name__} object; only lists are filled")

    while True:
        if pos >= n:
            raise Damaged("the pickle data ends before its STOP opcode (truncated)")
        op = data[pos]
        pos += 1
        pushes += 1
        if pushes > limits.MAX_PUSHES:
            raise OverLimit("MAX_PUSHES", limits.MAX_PUSHES, "the number of objects the pickle program makes")
        if op == 0x71:  # BINPUT (a read past the end raises IndexError: Damaged)
            memo[data[pos]] = stack[-1]
            pos += 1
        elif op == 0x68:  # BINGET
            append(memo[data[pos]])
            pos += 1
        elif op == 0x58:  # BINUNICODE
            _short(pos, 4, n)
            k = unpack_from("<I", data, pos)[0]
            pos += 4
            _short(pos, k, n)
            append(data[pos:pos + k].decode("utf-8", "surrogatepass"))
            pos += k
        elif op == 0x8C:  # SHORT_BINUNICODE
            k = data[pos]
            pos += 1
            _short(pos, k, n)
            append(data[pos:pos + k].decode("utf-8", "surrogatepass"))
            pos += k
        elif op == 0x4B:  # BININT1
            append(data[pos])
            pos += 1
        elif op == 0x28:  # MARK
            metastack.append(stack)
            stack = []
            append = stack.append
        elif op == 0x29:  # EMPTY_TUPLE
            append(())
        elif op == 0x7D:  # EMPTY_DICT
            append({})
        elif op == 0x5D:  # EMPTY_LIST
            append([])
        elif op == 0x88:  # NEWTRUE
            append(True)
        elif op == 0x89:  # NEWFALSE
            append(False)
        elif op == 0x4E:  # NONE
            append(None)
        elif op == 0x52:  # REDUCE
            args = stack.pop()
            stack[-1] = reduce(stack[-1], args)
        elif op == 0x74:  # TUPLE
            items, stack = stack, metastack.pop()
            append = stack.append
            append(make_tuple(items))
        elif op == 0x85:  # TUPLE1
            stack[-1] = make_tuple((stack[-1],))
        elif op == 0x86:  # TUPLE2
            b = stack.pop()
            stack[-1] = make_tuple((stack[-1], b))
        elif op == 0x87:  # TUPLE3
            c = stack.pop()
            b = stack.pop()
            stack[-1] = make_tuple((stack[-1], b, c))
        elif op == 0x75:  # SETITEMS
            items, stack = stack, metastack.pop()
            append = stack.append
            set_items(stack[-1], items)
        elif op == 0x73:  # SETITEM
            v = stack.pop()
            k = stack.pop()
            set_items(stack[-1], [k, v])
        elif op == 0x65:  # APPENDS
            items, stack = stack, metastack.pop()
            append = stack.append
            append_items(stack[-1], items)
        elif op == 0x61:  # APPEND
            v = stack.pop()
            append_items(stack[-1], [v])
        elif op == 0x62:  # BUILD
            state = stack.pop()
            build(stack[-1], state)
        elif op == 0x63:  # GLOBAL
            raw, pos = _line(data, pos)
            name_raw, pos = _line(data, pos)
            append(find_global(raw.decode("utf-8"), name_raw.decode("utf-8")))
        elif op == 0x93:  # STACK_GLOBAL
            name = stack.pop()
            module = stack.pop()
            if type(name) is not str or type(module) is not str:
                raise Damaged("STACK_GLOBAL with names that are not strings")
            append(find_global(module, name))
        elif op == 0x81:  # NEWOBJ
            args = stack.pop()
            stack[-1] = new_object(stack[-1], args, None, "NEWOBJ")
        elif op == 0x92:  # NEWOBJ_EX
            kwargs = stack.pop()
            args = stack.pop()
            stack[-1] = new_object(stack[-1], args, kwargs, "NEWOBJ_EX")
        elif op == 0x51:  # BINPERSID
            stack[-1] = persistent_load(stack[-1])
        elif op == 0x50:  # PERSID
            raw, pos = _line(data, pos)
            append(persistent_load(raw.decode("ascii")))
        elif op == 0x94:  # MEMOIZE
            memo[len(memo)] = stack[-1]
        elif op == 0x72:  # LONG_BINPUT
            _short(pos, 4, n)
            memo[unpack_from("<I", data, pos)[0]] = stack[-1]
            pos += 4
        elif op == 0x6A:  # LONG_BINGET
            _short(pos, 4, n)
            append(memo[unpack_from("<I", data, pos)[0]])
            pos += 4
        elif op == 0x4D:  # BININT2
            _short(pos, 2, n)
            append(unpack_from("<H", data, pos)[0])
            pos += 2
        elif op == 0x4A:  # BININT
            _short(pos, 4, n)
            append(unpack_from("<i", data, pos)[0])
            pos += 4
        elif op == 0x47:  # BINFLOAT
            _short(pos, 8, n)
            append(unpack_from(">d", data, pos)[0])
            pos += 8
        elif op == 0x8A or op == 0x8B:  # LONG1, LONG4
            _short(pos, 1 if op == 0x8A else 4, n)
            k = data[pos] if op == 0x8A else unpack_from("<i", data, pos)[0]
            pos += 1 if op == 0x8A else 4
            if k < 0 or k > limits.MAX_INT_BYTES:
                raise OverLimit("MAX_INT_BYTES", limits.MAX_INT_BYTES, "the size of a pickled integer")
            _short(pos, k, n)
            append(int.from_bytes(data[pos:pos + k], "little", signed=True))
            pos += k
        elif op == 0x80:  # PROTO
            _short(pos, 1, n)
            proto = data[pos]
            pos += 1
            if proto > 5:
                raise Damaged(f"unsupported pickle protocol {proto}")
        elif op == 0x95:  # FRAME
            _short(pos, 8, n)
            pos += 8
        elif op == 0x2E:  # STOP
            if len(stack) != 1 or metastack:
                raise Damaged("the pickle program ends with a malformed stack")
            return stack[0], pos
        elif op == 0x30:  # POP
            if stack:
                stack.pop()
            else:
                stack = metastack.pop()
                append = stack.append
        elif op == 0x31:  # POP_MARK
            stack = metastack.pop()
            append = stack.append
        elif op == 0x32:  # DUP
            append(stack[-1])
        elif op == 0x8F:  # EMPTY_SET
            append(set())
        elif op == 0x90:  # ADDITEMS
            items, stack = stack, metastack.pop()
            append = stack.append
            if type(stack[-1]) is not set:
                raise Refused(None, f"the file adds items to a {type(stack[-1]).__name__} object; only sets are "
                                    "filled")
            stack[-1].update(items)
        elif op == 0x91:  # FROZENSET
            items, stack = stack, metastack.pop()
            append = stack.append
            fs = frozenset(items)
            depth = max((tuple_depth.get(id(x), 1) for x in items if type(x) in (tuple, frozenset)), default=0)
            if depth:
                if depth >= limits.MAX_TUPLE_DEPTH:
                    raise OverLimit("MAX_TUPLE_DEPTH", limits.MAX_TUPLE_DEPTH, "the nesting of tuples")
                tuple_depth[id(fs)] = depth + 1
            append(fs)
        elif op == 0x6C:  # LIST
            items, stack = stack, metastack.pop()
            append = stack.append
            append(items)
        elif op == 0x64:  # DICT
            items, stack = stack, metastack.pop()
            append = stack.append
            d: dict = {}
            set_items(d, items)
            append(d)
        elif op in (0x43, 0x42, 0x8E, 0x96):  # SHORT_BINBYTES, BINBYTES, BINBYTES8, BYTEARRAY8
            width = {0x43: 1, 0x42: 4, 0x8E: 8, 0x96: 8}[op]
            _short(pos, width, n)
            k = data[pos] if width == 1 else int.from_bytes(data[pos:pos + width], "little")
            pos += width
            _short(pos, k, n)
            raw = data[pos:pos + k]
            pos += k
            append(bytearray(raw) if op == 0x96 else raw)
        elif op in (0x55, 0x54):  # SHORT_BINSTRING, BINSTRING (protocol 1-2 str, read as latin-1 like pickle)
            width = 1 if op == 0x55 else 4
            _short(pos, width, n)
            k = data[pos] if width == 1 else unpack_from("<i", data, pos)[0]
            pos += width
            if k < 0:
                raise Damaged("negative string length")
            _short(pos, k, n)
            append(data[pos:pos + k].decode("latin-1"))
            pos += k
        elif op == 0x8D:  # BINUNICODE8
            _short(pos, 8, n)
            k = unpack_from("<Q", data, pos)[0]
            pos += 8
            _short(pos, k, n)
            append(data[pos:pos + k].decode("utf-8", "surrogatepass"))
            pos += k
        elif op == 0x49:  # INT (protocol 0; also TRUE / FALSE)
            text, pos = _line(data, pos)
            append(True if text == b"01" else False if text == b"00" else int(text, 0))
        elif op == 0x4C:  # LONG (protocol 0)
            text, pos = _line(data, pos)
            append(int(text[:-1] if text.endswith(b"L") else text, 0))
        elif op == 0x46:  # FLOAT (protocol 0)
            raw, pos = _line(data, pos)
            append(float(raw))
        elif op == 0x53:  # STRING (protocol 0)
            text, pos = _line(data, pos)
            if len(text) >= 2 and text[0] == text[-1] and text[:1] in (b"'", b'"'):
                text = text[1:-1]
            else:
                raise Damaged("the pickle STRING opcode argument must be quoted")
            append(str(codecs.escape_decode(text)[0], "latin-1"))
        elif op == 0x56:  # UNICODE (protocol 0)
            raw, pos = _line(data, pos)
            append(str(raw, "raw-unicode-escape"))
        elif op == 0x70:  # PUT
            raw, pos = _line(data, pos)
            memo[int(raw)] = stack[-1]
        elif op == 0x67:  # GET
            raw, pos = _line(data, pos)
            append(memo[int(raw)])
        elif op == 0x69:  # INST
            raw, pos = _line(data, pos)
            name_raw, pos = _line(data, pos)
            cls = find_global(raw.decode("utf-8"), name_raw.decode("utf-8"))
            items, stack = stack, metastack.pop()
            append = stack.append
            append(new_object(cls, items, None, "INST"))
        elif op == 0x6F:  # OBJ
            items, stack = stack, metastack.pop()
            append = stack.append
            if not items:
                raise Damaged("OBJ without a class")
            append(new_object(items[0], items[1:], None, "OBJ"))
        elif op in (0x82, 0x83, 0x84):  # EXT1, EXT2, EXT4
            raise Refused(None, "the file uses a pickle extension code (copyreg.add_extension), which torch.save "
                                "never writes")
        elif op in (0x97, 0x98):  # NEXT_BUFFER, READONLY_BUFFER
            raise Refused(None, "the file uses out-of-band pickle buffers, which torch.save never writes")
        else:
            raise Damaged(f"unknown pickle opcode 0x{op:02x} at byte {pos - 1}")
