"""The restricted unpickler: pickle's pure-Python one with every opcode that could run code replaced.

:data:`PICKLE_MODULE` is what load_checkpoint hands to ``torch.load`` as ``pickle_module``.
"""
from __future__ import annotations

import _compat_pickle
import collections
import pickle
import re
import sys
import types
from typing import IO, Any, Callable

import torch
from torch import nn

from .build_policy import make_build_handler
from .class_policy import SAFE_INIT, ClassRef, build_handlers, class_refusal, new_instance
from .errors import Damaged, DevicePassthrough, Refused, one_line
from .vetted_globals import VETTED, resolve_global

_OrderedDict = collections.OrderedDict
_dispatch = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]


def _op(opcode: bytes) -> Callable:
    def register(fn: Callable) -> Callable:
        _dispatch[opcode[0]] = fn
        return fn

    return register


def _describe_callable(func: Any) -> tuple[str | None, str]:
    if type(func) is ClassRef:
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
            raise Damaged(f"it names the malformed global {module[:60]!r} {name[:60]!r}")
        if self.proto < 3 and self.fix_imports:  # protocol 0-2 files say __builtin__, copy_reg, ...
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        return resolve_global(module, name)

    def _line(self) -> str:
        line = self.readline()
        if not line.endswith(b"\n"):
            raise Damaged("the pickle data ends inside a global name (truncated)")
        return line[:-1].decode("utf-8")

    @_op(pickle.GLOBAL)
    def load_global(self) -> None:
        module = self._line()
        self.append(self.find_class(module, self._line()))

    def load(self) -> Any:
        try:
            return super().load()
        except (Refused, ImportError, DevicePassthrough):
            raise
        except Damaged:
            raise
        except Exception as e:  # truncated / corrupted stream, wrong types for a vetted callable, ...
            raise Damaged(f"{type(e).__name__}: {one_line(e, 200)}") from e

    @_op(pickle.REDUCE)
    def load_reduce(self) -> None:
        stack = self.stack
        args = stack.pop()
        func = stack[-1]
        entry = VETTED.get(id(func))
        if entry is None or entry[0] is not func:
            if type(func) is ClassRef and args == () and func.cls.__init__ in SAFE_INIT:
                stack[-1] = new_instance(func)  # e.g. a SimpleNamespace subclass: cls() runs no class code
                return
            raise Refused(*_describe_callable(func))
        if type(args) is not tuple:
            raise Refused(entry[1], "it is called without an argument tuple")
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
        if type(cls) is ClassRef:
            if args == () and kwargs == {}:
                return new_instance(cls)
            raise Refused(cls.name, "it is created with constructor arguments from the file; torch.save writes "
                                    "allowed classes without any")
        if cls is nn.Parameter and kwargs == {} and type(args) is tuple and 1 <= len(args) <= 2 \
                and isinstance(args[0], torch.Tensor) and (len(args) == 1 or type(args[1]) is bool):
            return nn.Parameter(*args)  # old parameter pickles; torch's weights_only allows the same
        name, _ = _describe_callable(cls)
        raise Refused(name, "it is created through NEWOBJ, which only allowed classes may be")

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
        if type(klass) is ClassRef and not args:
            self.append(new_instance(klass))
            return
        name, reason = _describe_callable(klass)
        raise Refused(name, f"it is called with arguments (INST/OBJ opcode): {reason}")

    @_op(pickle.BUILD)
    def load_build(self) -> None:
        stack = self.stack
        state = stack.pop()
        inst = stack[-1]
        handler = build_handlers.get(type(inst))
        if handler is None:
            handler = build_handlers[type(inst)] = make_build_handler(type(inst))
        handler(inst, state)

    def load_ext(self) -> None:
        raise Refused(None, "the file uses a pickle extension code (copyreg.add_extension), which torch.save "
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
        if isinstance(target, list) and class_refusal(type(target)) is None:
            list.extend(target, items)  # an allowed list subclass: its own methods are not called
        else:
            raise Refused(None, f"the file appends items to a {type(target).__name__} object; only lists are filled")

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
        elif isinstance(target, dict) and class_refusal(type(target)) is None:
            setitem = _OrderedDict.__setitem__ if isinstance(target, _OrderedDict) else dict.__setitem__
        else:
            raise Refused(None, f"the file sets items on a {type(target).__name__} object; only dicts are filled")
        for i in range(0, len(items), 2):
            setitem(target, items[i], items[i + 1])

    @_op(pickle.ADDITEMS)
    def load_additems(self) -> None:
        items = self.pop_mark()
        target = self.stack[-1]
        if type(target) is not set:
            raise Refused(None, f"the file adds items to a {type(target).__name__} object; only sets are filled")
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
            if type(ref) is not ClassRef or not issubclass(ref.cls, nn.Module):
                raise Refused(None, "a legacy module record of the file names something other than an allowed "
                                    "module class")
            return ref
        try:
            return self.persistent_load(pid)
        except RuntimeError as e:  # device problems (e.g. CUDA tensors without CUDA) are the caller's to see
            text = str(e)
            if "device" in text or "CUDA" in text or "map_location" in text:
                raise DevicePassthrough(e) from e
            raise


for _code in (pickle.EXT1, pickle.EXT2, pickle.EXT4):
    _dispatch[_code[0]] = _RestrictedUnpickler.load_ext


def _restricted_load(file: IO[bytes], **kwargs: Any) -> Any:
    return _RestrictedUnpickler(file, **kwargs).load()


# The `pickle_module` handed to torch.load: torch subclasses `Unpickler` (to map storage types and
# attach persistent_load) and uses `load` for the small pickles of the legacy format.
PICKLE_MODULE = types.ModuleType(f"{__package__}._restricted_pickle")
PICKLE_MODULE.Unpickler = _RestrictedUnpickler  # type: ignore[attr-defined]
PICKLE_MODULE.load = _restricted_load  # type: ignore[attr-defined]
PICKLE_MODULE.UnpicklingError = pickle.UnpicklingError  # type: ignore[attr-defined]
