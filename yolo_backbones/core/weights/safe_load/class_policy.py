"""The loader's registries: moved module paths, the layer classes users add to YAMLs, namespace-like data classes.

Nothing here decides which objects of a file are restored: no object is. :func:`allow_classes` names
``nn.Module`` classes of the user's own project that model YAMLs (and so the configs stored in checkpoints)
may use as layers; they are built from the YAML's arguments like every host layer, never from file state.
"""
from __future__ import annotations

import argparse
import types
from typing import Any

from torch import nn

# ----------------------------------------------------------------------------------- registries
aliases: dict[str, str] = {}  # pickled module path -> current module path
user_modules: dict[str, type[nn.Module]] = {}  # YAML name -> a user's nn.Module class (allow_classes)
# class path -> factory(**plain attributes) for namespace-like objects (register_plain_class)
plain_classes: dict[str, Any] = {"argparse.Namespace": argparse.Namespace,
                                 "types.SimpleNamespace": types.SimpleNamespace}
# class -> builder(record, interpreter, depth) for the plugin's own layers (register_layer_builder)
layer_builders: dict[type, Any] = {}


def register_plain_class(class_path: str, factory: Any) -> None:
    """Host hook: objects pickled as ``class_path`` with an attribute dict become ``factory(**attributes)``.

    For namespace-like classes only (e.g. ultralytics' ``IterableSimpleNamespace``): the attributes are plain
    data (converted and checked first) and ``factory`` must do nothing but store them.
    """
    plain_classes[class_path] = factory


def register_layer_builder(cls: type, builder: Any) -> None:
    """Let a standalone record of ``cls`` (a layer saved without a model config) be rebuilt by
    ``builder(record, interpreter, depth) -> nn.Module`` from the plain values its record holds."""
    layer_builders[cls] = builder


def allow_classes(*classes: type) -> None:
    """Let model YAMLs name these ``nn.Module`` classes of your project as layers (``[-1, 1, MyBlock, [64]]``).

    A checkpoint whose stored config names such a class is then rebuilt with it too: the class is called with
    the YAML row's arguments exactly as when the model was first built, and the weights are loaded into it.
    Objects are never restored from a file, so only ``nn.Module`` classes can be allowed; the class must be
    importable where the checkpoint is loaded. Raises ``TypeError`` for anything else.
    """
    for cls in classes:
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise TypeError(f"allow_classes() takes nn.Module classes (layers a model YAML may name), got {cls!r}; "
                            "checkpoints never restore other objects, so nothing else needs allowing")
        user_modules[cls.__name__] = cls


def user_module_classes() -> dict[str, type[nn.Module]]:
    """The layer classes given to :func:`allow_classes`, by YAML name."""
    return dict(user_modules)


def register_data_class(cls: type) -> type:
    """Host hook (usable as a decorator): pickled objects of ``cls``, a namespace class (``SimpleNamespace`` or
    ``argparse.Namespace`` subclass that only stores its keyword arguments), become ``cls(**plain attributes)``."""
    if not (isinstance(cls, type) and issubclass(cls, (types.SimpleNamespace, argparse.Namespace))
            and cls.__init__ in (types.SimpleNamespace.__init__, argparse.Namespace.__init__)):
        raise TypeError(f"register_data_class(): {cls!r} is not a namespace class that only stores its attributes")
    register_plain_class(f"{cls.__module__}.{cls.__qualname__}", cls)
    return cls


def register_model_namespace(prefix: str) -> None:
    """Kept for compatibility; no effect. Models are rebuilt by the builders hosts register
    (:func:`~.modules.register_model_builder`), so no class namespace needs opening any more."""
    ns = prefix.strip().rstrip(".")
    if not ns or not all(part.isidentifier() for part in ns.split(".")):
        raise ValueError(f"register_model_namespace(): {prefix!r} is not a dotted module prefix")


def register_module_alias(old_module: str, new_module: str) -> None:
    """Host hook: read class paths pickled under ``old_module`` (and its submodules) as ``new_module``'s.

    For classes that moved, e.g. ``register_module_alias('yolo_backbones.backbones', 'yolo_backbones.core')``
    (files saved by yolo-backbones 0.1).
    """
    for name in (old_module, new_module):
        if not name or not all(part.isidentifier() for part in name.split(".")):
            raise ValueError(f"register_module_alias(): {name!r} is not a dotted module name")
    aliases[old_module] = new_module


def resolve_alias(module: str) -> str:
    """Where ``module`` lives now, after :func:`register_module_alias`."""
    new = aliases.get(module)
    if new is not None:
        return new
    parts = module.split(".")
    for i in range(len(parts) - 1, 0, -1):  # longest aliased package prefix
        new = aliases.get(".".join(parts[:i]))
        if new is not None:
            return ".".join([new, *parts[i:]])
    return module


def describe(value: Any) -> str:
    """A short, safe description of a value from the file, for messages."""
    if isinstance(value, (str, bytes, int, float, bool, type(None))):
        return repr(value)[:40]
    return type(value).__name__
