"""ultralytics' ``parse_model`` taught multi-output backbone rows and ``Select`` rows.

ultralytics builds every row itself; the wrapper made by :func:`make_parse_model` only rewrites a copy of
the YAML dict before handing it over, so everything else (scales, ``C3k2``/``C2PSA``/``Detect`` arguments,
the layer table, the save list) stays ultralytics' own:

* a backbone row (``[-1, 1, EdgeViT, [xxs, [1, 2, 3]]]``, the first row) is built here with the checks shared
  with the YOLOv5 host (:func:`~yolo_backbones.hosts.common.rows.build_backbone`: ``n=1``, variant, stages,
  checkpoint, ``in_chans`` = the model's input channels, the input-size rule) and handed to ultralytics
  ready-made, so model ``scales`` never touch it;
* a ``Select [k]`` row fed by a backbone becomes ultralytics' own ``Index [c, k]`` with ``c`` read from the
  backbone's ``out_channels``; an explicit ``Index [c, k]`` fed by a backbone must state the right ``c``;
* any other row fed a backbone's list is refused with a message saying which ``Select`` row to add;
* module names must name ``torch.nn.Module`` classes and ``activation:`` a plain ``torch.nn`` activation
  (ultralytics would call any name of ``tasks.py`` and ``eval`` the activation): a YAML, or the ``yaml``
  dict stored in a checkpoint, cannot run code;
* ``default_scale:`` names the scale used when the file name carries no scale letter
  (``yolo11_efficientformer.yaml`` -> ``s``; ``yolo11n_efficientformer.yaml`` -> ``n``).
"""
from __future__ import annotations

import importlib
from typing import Any, Callable

from torch import nn

from ...core.base import Backbone
from ...core.select import Select
from ...core.weights.safe_load import user_module_classes
from ..common.rows import (ModelConfigError, activation_spec, build_backbone, check_select, check_tensor_inputs,
                           unknown_module_error)

__all__ = ["make_parse_model", "plan_rows"]

ParseModel = Callable[..., tuple[nn.Sequential, list[int]]]


class _Ready:
    """A backbone built by the plugin, passed to ultralytics as the only argument of its row.

    Not a ``str``, so ultralytics leaves it alone; its repr is the row's arguments, so the layer table
    ultralytics prints shows ``['xxs', [1, 2, 3]]``.
    """

    __slots__ = ("module", "shown")

    def __init__(self, module: Backbone, shown: list[Any]) -> None:
        self.module, self.shown = module, shown

    def __repr__(self) -> str:
        return ", ".join(map(repr, self.shown))


class _Handover(nn.Module):
    """Base of the classes ultralytics calls for backbone rows: ``Cls(ready)`` returns ``ready.module`` itself.

    ``__new__`` returns an object that is not an instance of the class, so Python skips ``__init__``: these
    classes are never instantiated and never end up in a model or a checkpoint.
    """

    def __new__(cls, ready: Any = None, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(ready, _Ready):
            raise ModelConfigError(f"{cls.__qualname__} rows are built by yolo_backbones (write the class name, "
                                   f"e.g. {cls.__qualname__}, in the YAML)")
        return ready.module


def _handover_name(cls: type[Backbone], ns: dict[str, Any]) -> str:
    """The tasks.py name under which ultralytics finds the hand-over class of backbone class ``cls``."""
    name = f"_yolo_backbones_{cls.__name__}"
    if name not in ns:
        # Same module and qualified name as the backbone: ultralytics prints str(class) in its layer table and
        # stores it as the layer's `type`.
        ns[name] = type(cls.__name__, (_Handover,), {"__module__": cls.__module__, "__qualname__": cls.__qualname__})
    return name


def _resolve(name: Any, ns: dict[str, Any], row: int) -> type[nn.Module]:
    """A YAML module name -> the class, looked up as ultralytics does; only ``nn.Module`` classes pass."""
    if not isinstance(name, str):
        raise ModelConfigError(f"layer {row}: the module must be a name, got {name!r}")
    if name.startswith("nn."):
        cls = getattr(nn, name[3:], None)
    elif name.startswith("torchvision.ops."):
        cls = getattr(importlib.import_module("torchvision.ops"), name[len("torchvision.ops."):], None)
    else:
        cls = ns.get(name) if name.isidentifier() else None
        if cls is None and name in user_module_classes():
            cls = ns[name] = user_module_classes()[name]  # ultralytics' parse_model looks names up in tasks.py
    if cls is None:
        raise unknown_module_error(name, [k for k, v in ns.items() if isinstance(v, type) and issubclass(v, nn.Module)
                                          and not k.startswith("_")], row)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ModelConfigError(f"layer {row}: {name!r} is not a model layer (a torch.nn.Module class)")
    return cls


def _entry(chans: list[Any], f: Any) -> Any:
    """``chans[f]`` for a valid single ``from`` index, else ``None`` (ultralytics reports bad indices itself)."""
    return chans[f] if isinstance(f, int) and not isinstance(f, bool) and -len(chans) <= f < len(chans) else None


def _backbone_row(i: int, f: Any, n: Any, cls: type[Backbone], args: list[Any], ch: int) -> Backbone:
    """Build the backbone of row ``i`` (``[f, n, cls, args]``) for a model with ``ch`` input channels."""
    if n != 1:
        raise ModelConfigError(f"layer {i}: a backbone row must have n=1, got {n}")
    if i != 0 or f != -1:
        raise ModelConfigError(f"layer {i}: {cls.__name__} must be the first row and read the image: "
                               f"[-1, 1, {cls.__name__}, [...]]")
    # No BatchNorm snapshot as in the YOLOv5 host: ultralytics' stride probe runs in eval mode.
    return build_backbone(cls, args, ch, i)


def _index_row(i: int, f: int, args: list[Any], source: list[int], backbone: Any) -> list[Any]:
    """Check an explicit ``Index [c, k]`` row fed by a backbone; return it unchanged."""
    if len(args) != 2:
        raise ModelConfigError(f"layer {i}: an Index row fed by a backbone takes [channels, index], got {args}; "
                               f"or write [{f}, 1, Select, [index]] to have the channels inferred")
    c, k = args
    k = check_select(k, source, f, i, backbone, name="Index")
    if c != source[k]:
        j = f if f >= 0 else i + f
        raise ModelConfigError(f"layer {i}: Index [{c}, {k}] picks map {k} of layer {j} "
                               f"({type(backbone).__name__}), which has {source[k]} channels, not {c}; write "
                               f"[{f}, 1, Index, [{source[k]}, {k}]], or [{f}, 1, Select, [{k}]] to have them inferred")
    return [c, k]


def plan_rows(d: dict[str, Any], ch: int, ns: dict[str, Any]) -> dict[str, Any]:
    """The model dict ``d`` as ultralytics' ``parse_model`` can build it: see the module docstring.

    ``ch`` is the model's input channel count, ``ns`` the globals of ``ultralytics.nn.tasks``. Backbones are
    built here (once); ``d`` itself is not modified. Raises :class:`ModelConfigError` naming the row and the fix.
    """
    cfg = dict(d)
    if d.get("activation"):
        cls, args = activation_spec(d["activation"])
        cfg["activation"] = f"nn.{cls.__name__}{args!r}" if args else f"nn.{cls.__name__}()"  # eval-safe by construction
    default = d.get("default_scale")
    if d.get("scales") and not d.get("scale") and default:
        if default not in d["scales"]:
            raise ModelConfigError(f"default_scale {default!r} is not one of the scales {list(d['scales'])}")
        cfg["scale"] = default
    index_cls = ns.get("Index")
    chans: list[Any] = []  # per row: the backbone's channel list, or None
    built: list[Backbone | None] = []
    rows = []
    for i, row in enumerate(list(d["backbone"]) + list(d["head"])):
        f, n, m, args = row
        cls, args = _resolve(m, ns, i), list(args)
        source = _entry(chans, f)
        if issubclass(cls, Backbone):
            module = _backbone_row(i, f, n, cls, args, ch)
            shown = [module.variant, list(module.out_indices), *args[2:]]
            rows.append([f, 1, _handover_name(cls, ns), [_Ready(module, shown)]])
            chans.append(list(module.out_channels))
            built.append(module)
            continue
        if cls is Select:
            k = check_select(args[0] if args else 0, source, f, i, _entry(built, f), name="Select")
            if index_cls is None:
                raise ModelConfigError(f"layer {i}: Select needs ultralytics' Index module, which this ultralytics "
                                       "lacks; update ultralytics")
            rows.append([f, 1, "Index", [source[k], k]])
        elif cls is index_cls and isinstance(source, list):
            rows.append([f, n, m, _index_row(i, f, args, source, _entry(built, f))])
        else:
            try:
                check_tensor_inputs(f, chans, m, i)
            except IndexError:  # `from` -1 of row 0 (the image) or a bad index, which ultralytics reports
                pass
            rows.append([f, n, m, args])  # ultralytics edits the argument list in place: give it a copy
        chans.append(None)
        built.append(None)
    split = len(d["backbone"])
    cfg["backbone"], cfg["head"] = rows[:split], rows[split:]
    return cfg


def make_parse_model(original: ParseModel, ns: dict[str, Any]) -> ParseModel:
    """Wrap ultralytics' ``parse_model(d, ch, verbose=True)`` (whose module globals are ``ns``).

    Same signature and result (``(nn.Sequential, save list)``); the dict goes through :func:`plan_rows` first.
    """

    def parse_model(d: dict, ch: int, verbose: bool = True) -> tuple[nn.Sequential, list[int]]:
        return original(plan_rows(d, ch, ns), ch, verbose)

    parse_model.__doc__ = original.__doc__
    return parse_model
