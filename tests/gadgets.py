"""Malicious checkpoints for tests: files in torch.save's format whose loading must run nothing.

Every gadget, if anything it asks for were executed, creates a *marker file*; a test loads the file
through the code under test, expects a refusal and checks that the marker does not exist. Under a
plain ``torch.load(weights_only=False)`` the immediate gadgets do create it (``tests/test_safe_load.py``
checks that, so the gadgets are known to be real).

Use::

    from gadgets import write_gadget, gadget_names
    path, marker = write_gadget("builtins_eval", tmp_path, protocol=2, nest="ema")

Gadgets whose ``needs`` is ``"fake_host"`` reference ``yb_fakehost.models`` (created in ``sys.modules``
by :func:`install_fake_host`; the loader must have ``register_model_namespace("yb_fakehost")``), so
they only work in the test process. ``yolov5_model_cfg`` / ``yolov5_pip_model_cfg`` reference the real
``models.yolo.Model`` / ``yolov5.models.yolo.Model`` of YOLOv5 (written without importing YOLOv5) with a
config whose strings YOLOv5's ``parse_model`` would ``eval``: the attack from issue 9, usable for
entry-point tests in a subprocess, like every gadget whose ``needs`` is empty.
"""
from __future__ import annotations

import builtins
import collections
import contextlib
import copyreg
import io
import os
import pickle
import sys
import types
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

FAKE_HOST = "yb_fakehost"
NESTS = ("top", "ema", "optimizer", "list", "dict", "tuple", "deep", "model_attr")


# ------------------------------------------------------------------------------- fake host
def _touch_expr(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').write('pwned')"


def _parse_model(cfg: Any) -> None:
    """Like YOLOv5's parse_model: evaluates strings from the config."""
    for expr in (cfg or {}).get("exprs", []):
        eval(expr)


class _Model(nn.Module):
    """Like YOLOv5's Model: the constructor parses (evaluates) the config it is given."""

    def __init__(self, cfg: Any = None) -> None:
        super().__init__()
        _parse_model(cfg if isinstance(cfg, dict) else None)

    def forward(self, x: Any) -> Any:
        return x


class _Layer(nn.Module):
    """A fusable layer whose methods evaluate string arguments (stand-in for any method with effects)."""

    def forward(self, x: Any) -> Any:
        if isinstance(x, str):
            eval(x)
        return x

    def forward_fuse(self, x: Any) -> Any:
        if isinstance(x, str):
            eval(x)
        return x

    def run(self, expr: str) -> None:
        eval(expr)


class _Runner(nn.Module):
    """A module whose constructor evaluates its argument."""

    def __init__(self, expr: str | None = None) -> None:
        super().__init__()
        if expr:
            eval(expr)


class _Stateful:
    """A data class whose __setstate__ acts on the state."""

    def __setstate__(self, state: dict) -> None:
        eval(state.get("expr", "None"))
        self.__dict__.update(state)


class _Finalized:
    """A class whose __del__ acts on its attributes."""

    def __del__(self) -> None:
        eval(self.__dict__.get("expr", "None"))


class _Plain:
    """A harmless plain class."""


class _Caller:
    """A callable data class (like ultralytics' MixUp): calling it evaluates ``expr`` of its state."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        eval(self.__dict__.get("expr", "None"))
        return args[-1] if args else None


class _FileDict(dict):
    """A dict saved to ``file_path`` on item assignment (like ultralytics' JSONDict)."""

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        Path(self.__dict__["file_path"]).write_text("overwritten")


def install_fake_host() -> types.ModuleType:
    """Create ``yb_fakehost`` / ``yb_fakehost.models`` in ``sys.modules`` (idempotent); returns the latter."""
    if f"{FAKE_HOST}.models" in sys.modules:
        return sys.modules[f"{FAKE_HOST}.models"]
    pkg = types.ModuleType(FAKE_HOST)
    pkg.__path__ = []  # a package, so "yb_fakehost.models" imports
    mod = types.ModuleType(f"{FAKE_HOST}.models")
    for obj, name in ((_parse_model, "parse_model"), (_Model, "Model"), (_Layer, "Layer"),
                      (_Runner, "Runner"), (_Stateful, "Stateful"), (_Finalized, "Finalized"),
                      (_Plain, "Plain"), (_Caller, "Caller"), (_FileDict, "FileDict")):
        obj.__module__, obj.__qualname__, obj.__name__ = mod.__name__, name, name
        setattr(mod, name, obj)
    pkg.models = mod
    sys.modules[FAKE_HOST], sys.modules[mod.__name__] = pkg, mod
    return mod


# ------------------------------------------------------------------------- pickle building
class Call:
    """Pickles as ``func(*args)`` (REDUCE), optionally followed by BUILD ``state`` / list or dict items."""

    def __init__(self, func: Any, *args: Any, state: Any = None, listitems: list | None = None,
                 dictitems: dict | None = None) -> None:
        self.func, self.args, self.state = func, args, state
        self.listitems, self.dictitems = listitems, dictitems
        # The pickler checks that the object written as copyreg.__newobj__(cls) is of class cls.
        self._cls = args[0] if func is copyreg.__newobj__ and args else None

    def __call__(self, *_: Any) -> Any:  # the pickler wants REDUCE's function to be callable
        raise AssertionError("a gadget is only pickled, never called")

    @property  # type: ignore[misc]
    def __class__(self) -> Any:
        return self._cls if self._cls is not None else Call

    def __reduce__(self) -> tuple:
        return (self.func, self.args, self.state,
                iter(self.listitems) if self.listitems is not None else None,
                iter(self.dictitems.items()) if self.dictitems is not None else None)


def call(func: Any, *args: Any) -> Call:
    return Call(func, *args)


def reconstruct(cls: Any, state: Any = None, **kw: Any) -> Call:
    """What torch.save writes for an object: ``copyreg.__newobj__(cls)`` (NEWOBJ) plus BUILD ``state``."""
    return Call(copyreg.__newobj__, cls, state=state, **kw)


_stand_ins: dict[str, Any] = {}


def ref(qualified: str) -> Any:
    """A stand-in that pickles as the global ``qualified`` (``'models.yolo.Model'``) without importing it."""
    if qualified not in _stand_ins:
        module, _, name = qualified.rpartition(".")

        # A class, so that it can also stand for the class of copyreg.__newobj__; never instantiated.
        _stand_ins[qualified] = type(name, (), {"__module__": module, "__qualname__": name})
    return _stand_ins[qualified]


@contextlib.contextmanager
def _stand_ins_installed() -> Iterator[None]:
    """Make every stand-in findable by the pickler (temporary modules; existing modules are left alone)."""
    added: list[str] = []
    patched: list[tuple[types.ModuleType, str, Any]] = []
    try:
        for qualified, obj in _stand_ins.items():
            module, _, name = qualified.rpartition(".")
            parts = module.split(".")
            for i in range(1, len(parts) + 1):
                sub = ".".join(parts[:i])
                if sub not in sys.modules:
                    m = types.ModuleType(sub)
                    m.__path__ = []
                    sys.modules[sub] = m
                    added.append(sub)
            mod = sys.modules[module]
            patched.append((mod, name, mod.__dict__.get(name, _MISSING)))
            setattr(mod, name, obj)
        yield
    finally:
        for mod, name, old in reversed(patched):
            if old is _MISSING:
                delattr(mod, name)
            else:
                setattr(mod, name, old)
        for sub in reversed(added):
            sys.modules.pop(sub, None)


_MISSING = object()


def write_checkpoint(path: Path, obj: Any, protocol: int = 2) -> Path:
    """``torch.save(obj, path)`` with stand-ins resolvable; returns ``path``."""
    with _stand_ins_installed():
        torch.save(obj, path, pickle_protocol=protocol)
    return path


def write_raw(path: Path, data_pkl: bytes) -> Path:
    """A torch zip checkpoint whose ``data.pkl`` is ``data_pkl`` (hand-written opcodes); returns ``path``."""
    template = io.BytesIO()
    torch.save({}, template)
    with zipfile.ZipFile(io.BytesIO(template.getvalue())) as src, zipfile.ZipFile(path, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, data_pkl if name.endswith("/data.pkl") else src.read(name))
    return path


def small_model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.SiLU())


def nest(payload: Any, where: str) -> Any:
    """Place ``payload`` where a checkpoint dict could hold it (see ``NESTS``)."""
    if where == "top":
        return payload
    if where == "ema":
        return {"epoch": 1, "model": small_model(), "ema": payload, "updates": 3}
    if where == "optimizer":
        return {"model": None, "optimizer": {"state": {0: {"momentum_buffer": payload}},
                                             "param_groups": [{"lr": 0.01, "params": [0]}]}}
    if where == "list":
        return {"model": [1, payload]}
    if where == "dict":
        return {"opt": {"weights": "x.pt", "hyp": payload}}
    if where == "tuple":
        return {"best_fitness": (0.5, payload)}
    if where == "deep":
        return {"a": [{"b": (collections.OrderedDict(c=[payload]),)}]}
    if where == "model_attr":
        m = small_model()
        m.__dict__["extra"] = payload  # a plain attribute of a module: pickled in its state
        return {"model": m}
    raise ValueError(f"unknown nest {where!r}; choose from {NESTS}")


# ----------------------------------------------------------------------------------- gadgets
@dataclass(frozen=True)
class Gadget:
    """``build(marker)`` returns the payload object (or, if ``raw``, the complete data.pkl bytes).

    ``runs_on_plain_load``: a plain ``torch.load(weights_only=False)`` in this process creates the
    marker (the positive control). False for gadgets whose harm comes later (a class stored as
    ``forward`` is called at inference), needs a registration, or would disturb the test process.
    """

    name: str
    build: Callable[[Path], Any]
    needs: str = ""  # "fake_host": only in the test process
    runs_on_plain_load: bool = False
    raw: bool = False
    min_protocol: int = 0


def _yolov5_cfg(marker: Path) -> dict:
    # parse_model evals every string module name and argument: the first row runs the payload.
    return {"nc": 1, "depth_multiple": 1.0, "width_multiple": 1.0, "anchors": [[10, 13, 16, 30, 33, 23]],
            "backbone": [[-1, 1, f"{_touch_expr(marker)} and Conv", [16, 3, 2]]], "head": [[-1, 1, "Conv", [16, 1]]]}


def _fake(name: str) -> Any:
    return getattr(install_fake_host(), name)


def _layer() -> nn.Module:
    return _fake("Layer")()


def _raw_inst(marker: Path) -> bytes:  # protocol 0 INST: calls the class with the marked arguments
    expr = _touch_expr(marker).replace("'", '"')
    return f"(S'{expr}'\ni{FAKE_HOST}.models\nRunner\n.".encode()


def _raw_obj(marker: Path) -> bytes:  # protocol 1 OBJ
    expr = _touch_expr(marker).encode()
    return (b"(c" + FAKE_HOST.encode() + b".models\nModel\n}X" + b"\x05\x00\x00\x00exprs"
            + b"]X" + len(expr).to_bytes(4, "little") + expr + b"as" + b"o.")


def _raw_ext(marker: Path) -> bytes:  # EXT1 code 0x7d (what copyreg.add_extension('posix', 'system', 125) gives)
    cmd = f"touch '{marker}'".encode()
    return b"\x80\x02\x82\x7dX" + len(cmd).to_bytes(4, "little") + cmd + b"\x85R."


def _raw_stack_global(marker: Path) -> bytes:  # protocol 4 STACK_GLOBAL of builtins.eval
    expr = _touch_expr(marker).encode()
    return (b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93X" + len(expr).to_bytes(4, "little") + expr + b"\x85R.")


def _raw_build_on_class(marker: Path) -> bytes:  # BUILD (None, {'cls': set}) onto the class object itself
    return (b"\x80\x02c" + FAKE_HOST.encode() + b".models\nPlain\nN}X\x03\x00\x00\x00clsc__builtin__\nset\ns"
            b"\x86b.")


def _hooked_tensor(hooks: Any) -> Call:
    t = torch.zeros(2)
    return call(torch._utils._rebuild_tensor_v2, t.untyped_storage(), 0, (2,), (1,), False, hooks)


_RUNS = {"runs_on_plain_load": True}
_HOST = {"needs": "fake_host"}
_HOST_RUNS = {**_HOST, **_RUNS}

GADGETS: dict[str, Gadget] = {g.name: g for g in [
    # Functions anywhere: refused before import or call.
    Gadget("os_system", lambda m: call(os.system, f"touch '{m}'"), **_RUNS),
    Gadget("builtins_eval", lambda m: call(builtins.eval, _touch_expr(m)), **_RUNS),
    Gadget("builtins_exec", lambda m: call(builtins.exec, _touch_expr(m)), **_RUNS),
    Gadget("getattr_import", lambda m: call(call(getattr, call(builtins.__import__, "os"), "system"),
                                            f"touch '{m}'"), **_RUNS),
    Gadget("stack_global_eval", _raw_stack_global, raw=True, **_RUNS),
    Gadget("ext_opcode", _raw_ext, raw=True),  # runs only where the extension code is registered
    # Classes and functions of allowed namespaces, called with file-chosen arguments.
    Gadget("host_class_call", lambda m: call(_fake("Model"), {"exprs": [_touch_expr(m)]}), **_HOST_RUNS),
    Gadget("host_function_call", lambda m: call(_fake("parse_model"), {"exprs": [_touch_expr(m)]}), **_HOST_RUNS),
    Gadget("host_reconstructor_base", lambda m: call(copyreg._reconstructor, _fake("Model"), _fake("Model"),
                                                     {"exprs": [_touch_expr(m)]}), **_HOST_RUNS),
    Gadget("host_inst_opcode", _raw_inst, raw=True, **_HOST_RUNS),
    Gadget("host_obj_opcode", _raw_obj, raw=True, **_HOST_RUNS),
    Gadget("host_newobj_args", lambda m: Call(copyreg.__newobj__, _fake("Model"), {"exprs": [_touch_expr(m)]}),
           min_protocol=2, **_HOST),
    Gadget("yolov5_model_cfg", lambda m: call(ref("models.yolo.Model"), _yolov5_cfg(m))),
    Gadget("yolov5_pip_model_cfg", lambda m: call(ref("yolov5.models.yolo.Model"), _yolov5_cfg(m))),
    # (would register a global forward hook in the loading process)
    Gadget("torch_nn_function_call", lambda m: call(nn.modules.module.register_module_forward_pre_hook,
                                                    _fake("parse_model")), **_HOST),
    # (would widen the loader's own policy)
    Gadget("loader_function_call", lambda m: call(
        ref("yolo_backbones.core.weights.safe_load.register_model_namespace"), "builtins")),
    # Methods of objects rebuilt from the file.
    Gadget("bound_forward_call", lambda m: call(call(getattr, _layer(), "forward"), _touch_expr(m)), **_HOST_RUNS),
    Gadget("bound_forward_fuse_call", lambda m: call(call(getattr, _layer(), "forward_fuse"), _touch_expr(m)),
           **_HOST_RUNS),
    Gadget("getattr_method", lambda m: call(call(getattr, _layer(), "run"), _touch_expr(m)), **_HOST_RUNS),
    # Objects rebuilt with state that runs code now (setstate, __del__) or later (forward, hooks).
    Gadget("host_setstate", lambda m: reconstruct(_fake("Stateful"), {"expr": _touch_expr(m)}), **_HOST_RUNS),
    Gadget("host_del", lambda m: reconstruct(_fake("Finalized"), {"expr": _touch_expr(m)}), **_HOST_RUNS),
    Gadget("build_forward_class", lambda m: reconstruct(_fake("Layer"), {"forward": _fake("Model")}), **_HOST),
    Gadget("build_forward_other_method", lambda m: reconstruct(
        _fake("Layer"), {"forward": call(getattr, _layer(), "forward_fuse")}), **_HOST),
    Gadget("build_forward_vetted_callable", lambda m: reconstruct(nn.Identity, {"forward": collections.OrderedDict})),
    Gadget("build_hook_class", lambda m: reconstruct(
        _fake("Layer"), {"_forward_pre_hooks": collections.OrderedDict({0: _fake("Model")})}), **_HOST),
    Gadget("build_dunder", lambda m: reconstruct(nn.Identity, {"__class__": nn.Identity})),
    Gadget("build_on_plain_object", lambda m: Call(collections.OrderedDict, state={"x": 1})),
    Gadget("setitems_on_module", lambda m: reconstruct(nn.ModuleDict, None, dictitems={"a": nn.Identity()})),
    Gadget("appends_on_module", lambda m: reconstruct(nn.ModuleList, None, listitems=[nn.Identity()])),
    Gadget("ddp_reconstruct", lambda m: reconstruct(nn.parallel.DistributedDataParallel, {"x": 1})),
    Gadget("tensor_hooks", lambda m: _hooked_tensor(collections.OrderedDict({0: _fake("Model")})),
           min_protocol=1, **_HOST),
    Gadget("parameter_state_callable", lambda m: call(
        torch._utils._rebuild_parameter_with_state, torch.zeros(1), False, collections.OrderedDict(),
        {"hook": _fake("Model")}), min_protocol=1, **_HOST),
    Gadget("build_on_class_object", _raw_build_on_class, raw=True, **_HOST),
    Gadget("from_type_v2_other_func", lambda m: call(torch._tensor._rebuild_from_type_v2, collections.OrderedDict,
                                                     torch.Tensor, (), {})),
]}


def gadget_names(needs: str | None = None) -> list[str]:
    """Names of all gadgets, or of those with the given ``needs`` (``""`` = usable in any process)."""
    return [n for n, g in GADGETS.items() if needs is None or g.needs == needs]


def write_gadget(name: str, directory: Path, *, protocol: int = 2, nest_in: str = "top") -> tuple[Path, Path]:
    """Write gadget ``name`` as ``directory/<name>-p<protocol>-<nest>.pt``; returns ``(path, marker)``.

    ``marker`` is the file the payload would create (it does not exist yet). ``protocol`` is the
    pickle protocol (raw gadgets have a fixed one and ignore it and ``nest_in``); tensors need >= 1.
    """
    g = GADGETS[name]
    directory = Path(directory)
    marker = directory / f"{name}-p{protocol}-{nest_in}.marker"
    path = directory / f"{name}-p{protocol}-{nest_in}.pt"
    if g.raw:
        return write_raw(path, g.build(marker)), marker
    if protocol < g.min_protocol or (nest_in in ("ema", "model_attr") and protocol < 1):
        raise ValueError(f"gadget {name} with nest {nest_in!r} needs pickle protocol >= {max(g.min_protocol, 1)}")
    return write_checkpoint(path, nest(g.build(marker), nest_in), protocol), marker


def pickle_protocols() -> range:
    return range(0, pickle.HIGHEST_PROTOCOL + 1)


# ----------------------------------------------------------------------------- round two: objects used later
# A payload that is not called while loading but later, by the program: as a module's forward, as a hook, in an
# attribute. Each CALLABLE is an object whose call creates the marker; each PLACE puts it somewhere in a model.
def _caller(marker: Path) -> Any:
    return reconstruct(_fake("Caller"), {"expr": _touch_expr(marker)})


def _mixup(marker: Path) -> Any:  # ultralytics' MixUp, named without importing it; its dataset's cache is the victim
    return reconstruct(ref("ultralytics.data.augment.MixUp"), {"dataset": None, "p": 1.0, "victim": str(marker)})


def _module_payload(marker: Path) -> Any:  # a module instance whose forward evaluates its argument
    return reconstruct(_fake("Runner"), {"expr": _touch_expr(marker)})


def _bound_method(marker: Path) -> Any:  # a bound method of an object of the file
    return call(getattr, _layer(), "run")


def _function(marker: Path) -> Any:  # a function of the standard library
    return os.system


CALLABLES: dict[str, Callable[[Path], Any]] = {
    "caller_instance": _caller, "mixup_instance": _mixup, "module_instance": _module_payload,
    "bound_method": _bound_method, "function": _function,
}


def _place(model: nn.Module, payload: Any, place: str) -> None:
    target = model[0]
    if place == "forward":
        target.__dict__["forward"] = payload
    elif place == "forward_hook":
        target._forward_hooks[0] = payload
    elif place == "forward_pre_hook":
        target._forward_pre_hooks[0] = payload
    elif place == "state_dict_hook":
        target._state_dict_hooks[0] = payload
    elif place == "list_attr":
        target.__dict__["callbacks"] = [payload]
    elif place == "dict_attr":
        target.__dict__["transforms"] = {"train": payload}
    elif place == "tuple_attr":
        target.__dict__["act"] = (payload,)
    elif place == "top_attr":
        model.__dict__["forward"] = payload
    else:
        raise ValueError(place)


PLACES = ("forward", "forward_hook", "forward_pre_hook", "state_dict_hook", "list_attr", "dict_attr", "tuple_attr",
          "top_attr")


def write_later_gadget(kind: str, place: str, directory: Path) -> tuple[Path, Path]:
    """A checkpoint whose model carries CALLABLES[kind] at PLACES[place]; returns ``(path, marker)``."""
    directory = Path(directory)
    marker = directory / f"later-{kind}-{place}.marker"
    model = small_model()
    _place(model, CALLABLES[kind](marker), place)
    path = directory / f"later-{kind}-{place}.pt"
    return write_checkpoint(path, {"model": model, "epoch": 1}), marker


def write_file_dict(directory: Path, victim: Path, where: str = "top") -> Path:
    """A checkpoint that is (or holds) a dict subclass writing ``victim`` on item assignment (ultralytics' JSONDict
    pattern); ``where``: ``top``, ``nested``, or ``jsondict`` (the real ultralytics class path)."""
    cls = ref("ultralytics.utils.JSONDict") if where == "jsondict" else _fake("FileDict")
    payload = Call(copyreg.__newobj__, cls, state={"file_path": str(victim)}, dictitems={"model": None, "epoch": 1})
    obj = payload if where in ("top", "jsondict") else {"epoch": 1, "model": None, "train_args": payload}
    return write_checkpoint(Path(directory) / f"filedict-{where}.pt", obj)


# ------------------------------------------------------------------------------ hand-written pickle programs
def pickle_program(*ops: bytes) -> bytes:
    """A protocol-2 pickle from raw opcode chunks (ends with STOP)."""
    return b"\x80\x02" + b"".join(ops) + b"."


def unicode(text: str) -> bytes:
    """BINUNICODE ``text``."""
    raw = text.encode()
    return b"X" + len(raw).to_bytes(4, "little") + raw


def memo_mutation_program(marker: Path) -> bytes:
    """A module whose hook dict passes any check at BUILD time and is filled through the memo afterwards:
    ``{'model': Identity}`` with ``_forward_hooks`` = memo 9 (empty at BUILD), then ``memo[9][0] = Caller``."""
    od = b"ccollections\nOrderedDict\n)R"
    state = b"}(" + b"".join(unicode(k) + v for k, v in [
        ("training", b"\x89"), ("_parameters", od), ("_buffers", od), ("_modules", od),
        ("_non_persistent_buffers_set", b"c__builtin__\nset\n)R"), ("_is_full_backward_hook", b"N"),
        *((k, od) for k in ("_backward_hooks", "_backward_pre_hooks", "_forward_pre_hooks",
                            "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
                            "_forward_pre_hooks_with_kwargs", "_state_dict_hooks", "_state_dict_pre_hooks",
                            "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks")),
        ("_forward_hooks", od + b"q\x09")]) + b"u"
    identity = b"ctorch.nn.modules.linear\nIdentity\n)\x81" + state + b"b"
    caller = (b"c" + FAKE_HOST.encode() + b".models\nCaller\n)\x81}" + unicode("expr")
              + unicode(_touch_expr(marker)) + b"sb")
    return pickle_program(b"}(" + unicode("model") + identity + b"u", b"h\x09K\x00" + caller + b"s0")
