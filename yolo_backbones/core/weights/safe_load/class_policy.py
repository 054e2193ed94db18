"""Which classes a checkpoint may rebuild, the hooks that widen that, and every mutable registry of the loader.

Allowed classes reach the unpickler only as inert :class:`ClassRef` tokens; the registries and
caches live here alone so that one :func:`_invalidate` keeps them consistent.
"""
from __future__ import annotations

import argparse
import types
from typing import Any, Callable

from torch import nn

# ----------------------------------------------------------------------------------- registries
namespaces: list[str] = ["yolo_backbones"]  # dotted package prefixes whose classes may be rebuilt
extra_classes: set[type] = {argparse.Namespace}  # reconstruct-only classes outside the namespaces
user_setstate: set[type] = set()  # allowed classes whose own __setstate__ their registrant vouches for
aliases: dict[str, str] = {}  # pickled module path -> current module path
class_verdicts: dict[type, str | None] = {}  # class -> refusal reason (None: may be rebuilt)
build_handlers: dict[type, Callable[[Any, Any], None]] = {}  # class -> BUILD handler (build_policy)
global_cache: dict[tuple[str, str], Any] = {}  # pickled (module, name) -> what GLOBAL pushes (vetted_globals)


def _invalidate() -> None:
    # Every cached verdict may change when the allowed classes, namespaces or aliases do.
    class_verdicts.clear()
    build_handlers.clear()
    global_cache.clear()


def _check_class_arg(cls: Any, what: str) -> type:
    if not isinstance(cls, type):
        raise TypeError(f"{what}() takes classes, got {cls!r}: functions cannot be allowed, since the loader "
                        "would have to call them with arguments chosen by the file")
    if cls.__new__ not in _SAFE_NEW:
        raise TypeError(f"{what}(): {cls.__qualname__} defines its own __new__, so it cannot be rebuilt "
                        "without running code of it")
    return cls


def allow_classes(*classes: type) -> None:
    """Let checkpoints contain instances of ``classes`` (rebuilt without ``__init__``, never called).

    For classes outside the allowed namespaces, e.g. a custom ``nn.Module`` of your project. A
    ``__setstate__`` of the class runs with state from the file: by allowing the class you vouch for it.
    Raises ``TypeError`` for non-classes and classes with their own ``__new__``.
    """
    for cls in classes:
        extra_classes.add(_check_class_arg(cls, "allow_classes"))
        user_setstate.add(cls)
    _invalidate()


def register_data_class(cls: type) -> type:
    """Host hook (usable as a decorator): like :func:`allow_classes`, but a ``__setstate__`` of ``cls`` is refused."""
    extra_classes.add(_check_class_arg(cls, "register_data_class"))
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
    if ns not in namespaces:
        namespaces.append(ns)
        _invalidate()


def register_module_alias(old_module: str, new_module: str) -> None:
    """Host hook: read globals pickled under ``old_module`` (and its submodules) from ``new_module``.

    For classes that moved, e.g. ``register_module_alias('yolo_backbones.backbones', 'yolo_backbones.core')``
    makes ``yolo_backbones.backbones.edgevit.EdgeViT`` resolve to ``yolo_backbones.core.edgevit.EdgeViT``.
    The alias only changes where a name is looked up; the policy applies to the new location.
    """
    aliases[old_module.strip().rstrip(".")] = new_module.strip().rstrip(".")
    _invalidate()


def in_namespace(module: str, ns: str) -> bool:
    """Whether ``module`` is the package ``ns`` or one of its submodules."""
    return module == ns or module.startswith(ns + ".")


def resolve_alias(module: str) -> str:
    """Where ``module`` lives now, after :func:`register_module_alias`."""
    if module in aliases:
        return aliases[module]
    parts = module.split(".")
    for i in range(len(parts) - 1, 0, -1):  # longest aliased package prefix
        new = aliases.get(".".join(parts[:i]))
        if new is not None:
            return ".".join([new, *parts[i:]])
    return module


# --------------------------------------------------------------------------- class policy
# __new__ implementations that create an empty instance without running code of the class.
_SAFE_NEW = frozenset({object.__new__, dict.__new__, list.__new__, types.SimpleNamespace.__new__})
# __init__ implementations a no-argument call may run (SimpleNamespace subclasses pickle as cls()).
SAFE_INIT = frozenset({object.__init__, dict.__init__, list.__init__, types.SimpleNamespace.__init__})


def class_refusal(cls: type) -> str | None:
    """Why instances of ``cls`` may not be rebuilt from a file, or None if they may."""
    verdict = class_verdicts.get(cls, False)
    if verdict is not False:
        return verdict  # type: ignore[return-value]
    module = getattr(cls, "__module__", None) or ""
    if in_namespace(module, __package__):
        verdict = "it belongs to the checkpoint loader itself"  # e.g. ClassRef: never file-made
    elif cls in extra_classes:
        verdict = None
    elif in_namespace(module, "torch.nn"):
        if in_namespace(module, "torch.nn.parallel"):
            verdict = "torch.nn.parallel wrappers are never part of a saved model"
        elif not issubclass(cls, nn.Module):
            verdict = "of torch.nn only nn.Module classes may be rebuilt"
        else:
            verdict = None
    elif any(in_namespace(module, ns) for ns in namespaces):
        verdict = None
    else:
        verdict = f"its module {module} is outside the namespaces a checkpoint may use"
    if verdict is None:
        if cls.__new__ not in _SAFE_NEW:
            verdict = "it defines its own __new__, which would run with arguments from the file"
        elif getattr(cls, "__del__", None) is not None and cls not in user_setstate:
            verdict = "it defines __del__, which would run on attributes chosen by the file"
    class_verdicts[cls] = verdict
    return verdict


class ClassRef:
    """What the unpickler holds for an allowed class: usable to rebuild instances, inert otherwise.

    It is not callable and has no class behaviour, so a file that stores it as a model attribute or
    hook gets nothing the program could later call.
    """

    __slots__ = ("cls", "name")

    def __init__(self, cls: type, name: str) -> None:
        self.cls, self.name = cls, name

    def __repr__(self) -> str:
        return f"<class {self.name} (reconstruct-only)>"


def new_instance(ref: ClassRef) -> Any:
    """An empty instance of an allowed class."""
    cls = ref.cls
    return cls.__new__(cls)  # one of _SAFE_NEW: allocates, runs no code of the class


def describe_value(v: Any) -> str:
    """A short, safe description of a value from the file, for refusal messages."""
    if type(v) is ClassRef:
        return f"class {v.name}"
    if isinstance(v, (str, bytes, int, float, bool, type(None))):
        return repr(v)[:40]
    return type(v).__name__
