"""How pickle's BUILD may set the state of a rebuilt object: which ``__setstate__`` may run, what state is refused."""
from __future__ import annotations

import collections
import types
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .class_policy import ClassRef, class_refusal, describe_value, in_namespace, user_setstate
from .errors import Refused
from .vetted_globals import BOUND_METHODS

_OrderedDict = collections.OrderedDict


def _module_setstate_is_vetted(fn: Any) -> bool:
    # nn.Module.__setstate__ and the overrides in torch.nn.modules (conv, pooling, rnn, upsampling,
    # activation, transformer; read on torch 2.14) only update __dict__ and fill in defaults
    # of old checkpoints. torch.nn.parallel (DDP) is excluded: its classes are never rebuilt.
    return fn is nn.Module.__setstate__ or (
        isinstance(fn, types.FunctionType) and in_namespace(fn.__module__ or "", "torch.nn.modules"))


def _check_state(inst: Any, state: dict, cls_name: str) -> None:
    """Refuse state that sets dunders or stores something callable the program would later call.

    Looks at each attribute and one level into dict / list / tuple attributes (hook dicts, lists of
    layers). Deeper values need no check for safety: class references are inert tokens, and the
    only other callables the unpickler can produce run torch / allowed-class code or nothing.
    """
    for k, v in state.items():
        if type(k) is not str:
            raise Refused(cls_name, f"its state sets a non-string attribute name {describe_value(k)}")
        if k[:2] == "__" and k[-2:] == "__":
            raise Refused(cls_name, f"its state sets the special attribute {k!r}")
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
    if tv is ClassRef:
        raise Refused(cls_name, f"its state stores the class {v.name} as {where}, where the program could "
                                "later call it")
    if tv is types.MethodType:
        if top and key == "forward" and v.__self__ is inst and v.__func__.__name__ in BOUND_METHODS:
            return  # fuse(): m.forward = m.forward_fuse
        raise Refused(cls_name, f"its state stores the bound method {v.__func__.__qualname__} as {where}; only "
                                "m.forward = m.forward_fuse of the same module is written by fuse()")
    if callable(v) and not isinstance(v, nn.Module) and class_refusal(tv) is not None:
        raise Refused(cls_name, f"its state stores the callable {describe_value(v)} as {where}, where the program "
                                "could later call it")


_LEAF_TYPES = frozenset({str, int, float, bool, type(None), bytes, set, torch.Tensor, nn.Parameter, torch.Size,
                         torch.device, torch.dtype, np.ndarray})


def _slot_names(cls: type) -> set[str]:
    names: set[str] = set()
    for klass in cls.__mro__:
        slots = klass.__dict__.get("__slots__", ())
        names.update([slots] if isinstance(slots, str) else slots)
    return names


def make_build_handler(cls: type) -> Callable[[Any, Any], None]:
    """How BUILD may set state on an instance of ``cls`` (raises Refused if it may not)."""
    if cls is np.ndarray or (isinstance(cls, type) and issubclass(cls, np.dtype)):
        def numpy_setstate(inst: Any, state: Any) -> None:  # numpy's C __setstate__: parses, runs no Python
            if type(state) is not tuple:
                raise Refused(f"numpy.{cls.__name__}", f"it gets a state of type {type(state).__name__}")
            inst.__setstate__(state)

        return numpy_setstate

    name = f"{cls.__module__}.{cls.__qualname__}"
    if cls is collections.OrderedDict:
        # A saved state_dict is an OrderedDict whose BUILD restores `_metadata` (module versions); nothing else.
        def state_dict_build(inst: Any, state: Any) -> None:
            if type(state) is not dict or set(state) != {"_metadata"}:
                raise Refused("collections.OrderedDict", "the file sets attributes of an OrderedDict other than a "
                                                         "state_dict's _metadata")
            _check_state(inst, state, "collections.OrderedDict")
            inst.__dict__.update(state)

        return state_dict_build
    if cls is not types.SimpleNamespace:
        reason = class_refusal(cls)
        if reason is not None:
            raise Refused(name, f"the file sets the state (BUILD) of a {cls.__qualname__} object, which is not "
                                "an object the loader rebuilt")
    setstate = getattr(cls, "__setstate__", None)
    if setstate is None:
        slots = _slot_names(cls)

        def default_build(inst: Any, state: Any) -> None:
            dict_state, slot_state = (state if type(state) is tuple and len(state) == 2 else (state, None))
            if dict_state:
                if type(dict_state) is not dict:
                    raise Refused(name, f"it gets a state of type {type(dict_state).__name__}")
                _check_state(inst, dict_state, name)
                inst.__dict__.update(dict_state)
            if slot_state:
                if type(slot_state) is not dict:
                    raise Refused(name, f"it gets a slot state of type {type(slot_state).__name__}")
                _check_state(inst, slot_state, name)
                for k, v in slot_state.items():
                    if k not in slots:
                        raise Refused(name, f"its state sets {k!r}, which is not a slot of the class")
                    object.__setattr__(inst, k, v)

        return default_build
    if _module_setstate_is_vetted(setstate) or cls in user_setstate:
        def vetted_setstate(inst: Any, state: Any) -> None:
            if type(state) is dict:
                _check_state(inst, state, name)
            elif cls not in user_setstate:
                raise Refused(name, f"it gets a state of type {type(state).__name__}, not an attribute dict")
            setstate(inst, state)

        return vetted_setstate
    raise Refused(name, f"its class defines __setstate__ ({getattr(setstate, '__qualname__', setstate)}), which "
                        "would run with state chosen by the file; allow the class only if you vouch for that method")
