"""Rebuilding a model that a checkpoint describes: from its config, then its tensors; never from its objects.

:func:`rebuild_module` takes a module record (an :class:`~.records.Obj` whose state has ``_modules``) and:

1. builds a fresh model with a *builder*: a host's (registered with :func:`register_model_builder` for the
   host's model classes, e.g. ``models.yolo.DetectionModel``: the host's constructor on the ``yaml`` config
   the model stores, through the plugin's ``parse_model``, which resolves module classes only) or the generic
   one (``torch.nn`` layers from their constructor arguments, ``nn.Sequential`` / ``ModuleList`` /
   ``ModuleDict`` from their children, the plugin's backbones from variant / stages / channels, ``Select``);
   the build runs in :func:`~.build_guard.rebuilding` (bounded, no random init, no pretrained download);
2. fuses it if the file's model was fused (``m.forward = m.forward_fuse``, or a fused backbone);
3. checks that every layer of the record tree is the layer the build made (class by path), then loads the
   tensors with ``load_state_dict(strict=True, assign=True)``;
4. restores the dtype, each module's ``training`` flag, and copies the plain attributes the builder names
   (class names, hyperparameters, ...), each type-checked.

No object of the file is used: only tensors, and scalars / strings / containers after checks.
"""
from __future__ import annotations

import collections
import copy
import importlib
import inspect
import sys
from collections.abc import Iterable
from typing import Any, Callable

import torch
from torch import nn

from .attributes import ATTRIBUTE_CHECKS, Checker, copy_attributes, is_plain
from .build_guard import rebuilding
from .class_policy import layer_builders, resolve_alias
from .errors import Mismatch, OverLimit, Refused
from .records import BoundMethod, Call, Obj

_OrderedDict = collections.OrderedDict
_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
               "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs", "_forward_hooks_always_called",
               "_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
               "_load_state_dict_post_hooks")


_BOOKKEEPING = frozenset({"_parameters", "_buffers", "_modules", "training"})


class ModuleRecord:
    """A module as the file describes it: class path (old paths mapped to today's), attributes, children."""

    def __init__(self, obj: Obj) -> None:
        state = obj.state
        if type(state) is tuple and len(state) == 2:
            state = state[0]
        if type(state) is not dict or not _BOOKKEEPING <= state.keys():
            raise Refused(obj.cls.path, "its state is not that of a module torch.save wrote (an attribute dict with "
                                        "_parameters, _buffers, _modules and training)")
        bad = next((k for k in state if type(k) is not str or k.startswith("__")), None)
        if bad is not None or obj.listitems or obj.dictitems:
            raise Refused(obj.cls.path, f"its state sets {str(bad)[:40]!r} or adds container items to a module")
        self.obj, self.attrs = obj, state
        self.path = f"{resolve_alias(obj.cls.module)}.{obj.cls.name}"
        self.name = obj.cls.name

    def children(self) -> list[tuple[str, Obj | None]]:
        """``(name, record or None)`` of the registered sub-modules, in order."""
        mods = self.attrs.get("_modules", {})
        if type(mods) not in (dict, _OrderedDict):
            raise Refused(self.path, "its sub-module table is not a dict")
        out = []
        for k, v in mods.items():
            if type(k) is not str or not (v is None or type(v) is Obj):
                raise Refused(self.path, f"its sub-module {str(k)[:40]!r} is not a module of the file")
            out.append((k, v))
        return out

    def tensors(self, table: str) -> list[tuple[str, Any]]:
        """``(name, tensor record)`` of ``_parameters`` or of the persistent ``_buffers`` (None entries skipped)."""
        entries = self.attrs.get(table, {})
        if type(entries) not in (dict, _OrderedDict):
            raise Refused(self.path, f"its {table} table is not a dict")
        skip = self.attrs.get("_non_persistent_buffers_set", set()) if table == "_buffers" else set()
        if type(skip) is not set:
            raise Refused(self.path, "its non-persistent buffer names are not a set")
        return [(k, v) for k, v in entries.items() if v is not None and k not in skip]

    @property
    def fused(self) -> bool:
        """The module's ``forward`` was replaced by its own ``forward_fuse`` (YOLO hosts' fuse())."""
        fwd = self.attrs.get("forward")
        return type(fwd) is BoundMethod and fwd.obj is self.obj and fwd.name == "forward_fuse"

    def check(self) -> None:
        """Refuse hooks and an instance ``forward`` other than the fused one (they would run file-chosen code)."""
        for name in _HOOK_DICTS:
            hooks = self.attrs.get(name)
            if hooks is not None and not (type(hooks) in (dict, _OrderedDict) and not hooks):
                raise Refused(self.path, f"the module carries {name} (torch.save never stores hooks of a model)")
        if "forward" in self.attrs and not self.fused:
            raise Refused(self.path, "its instance attribute 'forward' replaces the method, other than with the "
                                     "module's own forward_fuse")


def walk(obj: Obj, prefix: str = "", depth: int = 0,
         seen: set[int] | None = None) -> Iterable[tuple[str, ModuleRecord]]:
    """Every module record of the tree under ``obj``: ``(dotted path, record)``, parents first."""
    from . import limits

    if depth > limits.MAX_DEPTH:
        raise OverLimit("MAX_DEPTH", limits.MAX_DEPTH, "the nesting of its modules")
    seen = set() if seen is None else seen
    if id(obj) in seen:
        raise Refused(obj.cls.path, "the module tree of the file contains itself")
    seen.add(id(obj))
    rec = ModuleRecord(obj)
    rec.check()
    yield prefix, rec
    for name, child in rec.children():
        if child is not None:
            yield from walk(child, f"{prefix}.{name}" if prefix else name, depth + 1, seen)
    seen.discard(id(obj))


# ----------------------------------------------------------------------------------------- builders
class ModelBuilder:
    """Builds the module for a record and copies its plain attributes; hosts subclass it for their models.

    ``loggers``: host loggers silenced (for this thread) while building.
    """

    loggers: tuple[str, ...] = ()

    def build(self, rec: ModuleRecord, interp: Any, depth: int) -> nn.Module:
        """A fresh module of the record's class, built from its config (runs inside the rebuild guard)."""
        raise NotImplementedError

    def fuse(self, model: nn.Module) -> nn.Module:
        """Fuse ``model`` as the host's ``fuse()`` did before the file was saved."""
        return model.fuse() if callable(getattr(model, "fuse", None)) else model

    def copy_attributes(self, model: nn.Module, rec: ModuleRecord, interp: Any, depth: int) -> None:
        """Copy the plain attributes the host needs from the record onto ``model`` (none by default)."""


class ConfigModelBuilder(ModelBuilder):
    """A host model rebuilt by the host's own constructor from the ``yaml`` dict its record stores.

    Subclasses give :meth:`model_class` and :meth:`construct`; :attr:`attribute_checks` lists the plain
    attributes copied afterwards (see :mod:`.attributes`).
    """

    attribute_checks: dict[str, Checker] = ATTRIBUTE_CHECKS

    def model_class(self, rec: ModuleRecord) -> type:
        """The host class to build for ``rec`` (one of the host's model classes)."""
        raise NotImplementedError

    def construct(self, cls: type, cfg: dict) -> nn.Module:
        """``cls`` built from the config dict ``cfg`` (a copy the constructor may change)."""
        raise NotImplementedError

    def build(self, rec: ModuleRecord, interp: Any, depth: int) -> nn.Module:
        cfg = interp.value(rec.attrs.get("yaml"), depth)
        if type(cfg) is not dict or not is_plain(cfg) or not all(type(k) is str for k in cfg):
            raise Refused(rec.path, "its model config (the yaml attribute) is not a plain dict")
        return self.construct(self.model_class(rec), copy.deepcopy(cfg))

    def copy_attributes(self, model: nn.Module, rec: ModuleRecord, interp: Any, depth: int) -> None:
        values = {k: interp.value(rec.attrs[k], depth) for k in self.attribute_checks if k in rec.attrs}
        copy_attributes(model, values, self.attribute_checks, rec.name)


_host_builders: dict[str, Callable[[str], ModelBuilder]] = {}


def register_model_builder(class_paths: Iterable[str], factory: Callable[[str], ModelBuilder]) -> None:
    """Host hook: records of these class paths (``'models.yolo.DetectionModel'``) are rebuilt by ``factory(path)``.

    ``factory`` runs only when such a record is loaded (it may import the host then) and returns the builder.
    """
    for path in class_paths:
        _host_builders[path] = factory


def builder_for(rec: ModuleRecord) -> ModelBuilder:
    """The builder of a record: the host's for its class path, else the generic one."""
    factory = _host_builders.get(rec.path) or _host_builders.get(rec.obj.cls.path)
    return factory(rec.path) if factory is not None else GENERIC


# ----------------------------------------------------------------------------------------- generic
def _plain(value: Any) -> bool:
    if type(value) in (int, float, bool, str, type(None)):
        return type(value) is not str or len(value) <= 64
    return type(value) in (tuple, list) and len(value) <= 16 and all(_plain(v) for v in value)


class GenericBuilder(ModelBuilder):
    """torch.nn layers and containers, and the plugin's own classes, built from what their records hold."""

    def build(self, rec: ModuleRecord, interp: Any, depth: int) -> nn.Module:
        return self._build(rec, interp, depth)

    def _build(self, rec: ModuleRecord, interp: Any, depth: int) -> nn.Module:
        module, _, name = rec.path.rpartition(".")
        if module == "torch.nn.modules.container" and name in ("Sequential", "ModuleList", "ModuleDict"):
            children = [(k, None if c is None else self._build(ModuleRecord(c), interp, depth + 1))
                        for k, c in rec.children()]
            if name == "ModuleList":
                return nn.ModuleList([c for _, c in children])
            container = nn.Sequential() if name == "Sequential" else nn.ModuleDict()
            for k, c in children:
                container.add_module(k, c)
            return container
        if module.startswith("torch.nn.modules."):
            return self._torch_layer(rec, interp, depth, module, name)
        if module == "yolo_backbones" or module.startswith("yolo_backbones."):
            return self._plugin_layer(rec, interp, depth, module, name)
        raise Refused(rec.obj.cls.path, "it is a layer saved without the model config that built it; this loader "
                                        "rebuilds whole YOLO models (from their config), torch.nn layers and the "
                                        "plugin's backbones, never objects from the file")

    @staticmethod
    def _class(module: str, name: str, rec: ModuleRecord) -> type:
        mod = sys.modules.get(module)
        if mod is None:
            try:
                mod = importlib.import_module(module)
            except ImportError:
                raise Refused(rec.obj.cls.path, f"its module {module} does not exist in this version") from None
        cls = mod.__dict__.get(name)
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise Refused(rec.obj.cls.path, "it is not an nn.Module class")
        return cls

    def _torch_layer(self, rec: ModuleRecord, interp: Any, depth: int, module: str, name: str) -> nn.Module:
        cls = self._class(module, name, rec)
        if module.startswith("torch.nn.modules.lazy") or "Lazy" in name or cls.__module__.startswith(
                "torch.nn.parallel") or rec.children():
            raise Refused(rec.obj.cls.path, "this torch.nn module cannot be rebuilt from its record alone")
        params = rec.attrs.get("_parameters", {})
        kwargs: dict[str, Any] = {}
        # LSTM / GRU / RNN take RNNBase's arguments through *args (their mode is fixed by the class)
        init = nn.RNNBase.__init__ if issubclass(cls, nn.RNNBase) else cls.__init__
        for p in inspect.signature(init).parameters.values():
            if p.name in ("self", "device", "dtype", "mode") or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            if p.name == "bias" and type(rec.attrs.get("bias")) is not bool:
                present = params.get("in_proj_bias", params.get("bias")) if type(params) in (dict, _OrderedDict) \
                    else None
                kwargs["bias"] = present is not None
                continue
            if p.name == "add_bias_kv" and "bias_k" in rec.attrs:
                kwargs[p.name] = rec.attrs["bias_k"] is not None
                continue
            if p.name in rec.attrs:
                value = interp.value(rec.attrs[p.name], depth)
                if not _plain(value):
                    raise Refused(rec.obj.cls.path, f"its constructor argument {p.name!r} is not a plain value")
                kwargs[p.name] = value
            elif p.default is inspect.Parameter.empty:
                raise Refused(rec.obj.cls.path, f"its record lacks the constructor argument {p.name!r}")
        try:
            return cls(**kwargs)
        except (TypeError, ValueError, RuntimeError, AssertionError) as e:
            raise Mismatch(f"{rec.obj.cls.path} cannot be rebuilt from its record ({type(e).__name__}: {e})") from None

    def _plugin_layer(self, rec: ModuleRecord, interp: Any, depth: int, module: str, name: str) -> nn.Module:
        cls = self._class(module, name, rec)
        build = layer_builders.get(cls)
        if build is None:
            raise Refused(rec.path, "this plugin class is rebuilt only as part of a backbone or model, not on its own")
        return build(rec, interp, depth)


GENERIC = GenericBuilder()


# ------------------------------------------------------------------------------------------ rebuild
def rebuild_module(interp: Any, obj: Obj, depth: int) -> nn.Module:
    """The model ``obj`` describes, rebuilt (see the module docstring)."""
    records = list(walk(obj))
    top = records[0][1]
    builder = builder_for(top)
    model = _build(builder, top, records, interp, depth)
    _check_structure(records, model)
    state, dtypes = _state_dict(records, interp, depth)
    grads = {k: t.requires_grad for k, t in state.items() if isinstance(t, nn.Parameter)}  # assign=True resets them
    try:
        missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    except RuntimeError as e:  # shape mismatches
        raise Mismatch(f"its tensors do not fit the model its config builds ({e})") from None
    if missing or unexpected:
        what = (f"missing {', '.join(missing[:5])}" if missing else "") + ("; " if missing and unexpected else "") + (
            f"unexpected {', '.join(unexpected[:5])}" if unexpected else "")
        raise Mismatch(f"its tensors do not match the model its config builds ({what})")
    for key, param in model.named_parameters(remove_duplicate=False):
        if key in grads:
            param.requires_grad_(grads[key])  # assign=True keeps the built model's flag
    if len(dtypes) == 1:
        dtype = dtypes.pop()
        if dtype != torch.get_default_dtype():
            model.to(dtype)
    modules = dict(model.named_modules(remove_duplicate=False))
    for path, rec in records:
        flag = rec.attrs.get("training", True)
        if type(flag) is bool and path in modules:
            modules[path].training = flag
    builder.copy_attributes(model, top, interp, depth)
    device = interp.device_of("cpu")
    if device is not None:
        model.to(device)
    return model


def _build(builder: ModelBuilder, top: ModuleRecord, records: list, interp: Any, depth: int) -> nn.Module:
    """The built (not yet loaded) model: from a template when the same config was built before in this load."""
    key = (type(builder), top.path, repr(top.attrs.get("yaml")), any(rec.fused for _, rec in records))
    template = interp.templates.get(key) if isinstance(builder, ConfigModelBuilder) else None
    if template is not None:
        # A YOLO training checkpoint's model and EMA: built once. The copy is of the model already loaded from
        # the other record; every tensor, flag and copied attribute of it is replaced from this record below.
        return copy.deepcopy(template)
    archive = interp.archive
    try:
        with rebuilding(archive.storage_budget(), archive.storage_count(), builder.loggers):
            model = builder.build(top, interp, depth)
            if key[3] and builder is not GENERIC:
                model = builder.fuse(model)
    except (Refused, Mismatch):
        raise
    except Exception as e:  # noqa: BLE001 - the host's constructor on a config it rejects: one line, named
        raise Mismatch(f"building {top.path} from its config raised {type(e).__name__}: {e}") from None
    if isinstance(builder, ConfigModelBuilder) and _configs(interp).count(key[2]) > 1:
        interp.templates[key] = model
    return model


def _configs(interp: Any) -> list[str]:
    """``repr`` of the ``yaml`` of every model record at the top of the checkpoint (a dict's values)."""
    if interp.configs is None:
        root = interp.root
        values = root.values() if type(root) in (dict, _OrderedDict) else [root]
        interp.configs = [repr(v.state[0].get("yaml") if type(v.state) is tuple else v.state.get("yaml"))
                          for v in values if type(v) is Obj and type(v.state) in (dict, tuple)
                          and (type(v.state) is dict or type(v.state[0]) is dict)]
    return interp.configs


def _check_structure(records: list[tuple[str, ModuleRecord]], model: nn.Module) -> None:
    built = {path: type(m).__name__ for path, m in model.named_modules(remove_duplicate=False)}
    stored = {path: rec.name for path, rec in records}
    for path in sorted(set(built) | set(stored), key=lambda p: (p.count("."), p)):
        if built.get(path) != stored.get(path):
            where = f"layer {path!r}" if path else "the model"
            raise Mismatch(f"{where}: the file has {stored.get(path) or 'nothing'}, its config builds "
                           f"{built.get(path) or 'nothing'}")


def _state_dict(records: list[tuple[str, ModuleRecord]], interp: Any, depth: int) -> tuple[dict, set]:
    state: dict[str, torch.Tensor] = {}
    dtypes: set[torch.dtype] = set()
    for path, rec in records:
        for table in ("_parameters", "_buffers"):
            for name, value in rec.tensors(table):
                if type(value) is not Call:
                    raise Refused(rec.path, f"its {table[1:-1]} {name!r} is not a tensor")
                t = interp.value(value, depth)
                if not isinstance(t, torch.Tensor):
                    raise Refused(rec.path, f"its {table[1:-1]} {name!r} is not a tensor")
                state[f"{path}.{name}" if path else name] = t
                if t.is_floating_point():
                    dtypes.add(t.dtype)
    return state, dtypes
