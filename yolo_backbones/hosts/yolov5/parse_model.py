"""YOLOv5's ``parse_model`` with multi-output backbone rows and ``Select`` rows, and without ``eval``.

A YAML row names a backbone class (``EdgeViT``, ...) whose layer returns a *list* of feature maps;
``Select`` rows pick one map each. Everything downstream (SPPF, Conv, C3, Concat, Detect) is
YOLOv5's own. Unlike YOLOv5, names in the YAML are looked up, never evaluated: a model YAML (or the
``yaml`` dict stored in a checkpoint) cannot run code.
"""
from __future__ import annotations

import ast
import weakref
from typing import Any, Callable

from torch import nn

from ...core.base import Backbone
from ...core.select import Select
from ...core.weights.safe_load import user_module_classes
from ..common.rows import (ModelConfigError, build_backbone, check_select, check_tensor_inputs, parse_activation,
                           unknown_module_error)

# Conv-like YOLOv5 modules whose first YAML argument is the (width-scaled) output channel count,
# and the subset that takes the repeat count as third argument. Names, because the two hosts
# (PyPI package, ultralytics clone) each have their own class objects.
_CONV_LIKE = ("Conv", "GhostConv", "Bottleneck", "GhostBottleneck", "SPP", "SPPF", "DWConv", "MixConv2d", "Focus",
              "CrossConv", "BottleneckCSP", "C3", "C3TR", "C3SPP", "C3Ghost", "DWConvTranspose2d", "C3x")


_REPEATED = ("BottleneckCSP", "C3", "C3TR", "C3Ghost", "C3x")


def _classes(ns: dict[str, Any], names: tuple[str, ...]) -> set[type]:
    return {ns[name] for name in names if name in ns}


def _module_name(m: Any) -> str:
    return getattr(m, "__name__", str(m))



def _resolve_module(name: Any, ns: dict[str, Any], row: int) -> type[nn.Module]:
    """A YAML module name -> an ``nn.Module`` class: a class of yolo.py's namespace (the host's layers and this
    plugin's), ``nn.<Name>``, or a class given to :func:`yolo_backbones.allow_classes`. Functions and other
    objects of yolo.py's globals (``increment_path``, ...) are never called for a row."""
    if not isinstance(name, str):
        raise ModelConfigError(f"layer {row}: the module must be a class name, got {type(name).__name__}")
    if name.startswith("nn."):
        cls = getattr(nn, name[3:], None) if name[3:].isidentifier() else None
    else:
        cls = ns.get(name) if name.isidentifier() else None
        if cls is None:
            cls = user_module_classes().get(name)
    if cls is None:
        host = [k for k, v in ns.items() if isinstance(v, type) and issubclass(v, nn.Module)]
        raise unknown_module_error(name, host, row)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ModelConfigError(f"layer {row}: {name!r} is not a model layer (an nn.Module class) but a "
                               f"{type(cls).__name__}; a YAML row may only name layer classes")
    return cls


def _resolve_argument(arg: Any, ns: dict[str, Any], yaml_locals: dict[str, Any]) -> Any:
    """A YAML argument: YOLOv5 evaluated strings; here a name (``nc``, ``anchors``, ``None``), a layer class, or a
    literal. Any other name stays a string (YOLOv5's eval left strings like ``'nearest'`` unchanged too)."""
    if not isinstance(arg, str):
        return arg
    if arg in yaml_locals:
        return yaml_locals[arg]
    found = ns.get(arg) if arg.isidentifier() else None
    if isinstance(found, type) and issubclass(found, nn.Module):
        return found
    try:
        return ast.literal_eval(arg)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return arg


# BatchNorm statistics of each backbone as built, restored after YOLOv5's training-mode stride probe
# (see model_patch.make_initialize_weights); weak keys, so a model that never reaches it leaks nothing.
_NORM_SNAPSHOTS: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()
_NORM_STATS = ("running_mean", "running_var", "num_batches_tracked")


def make_parse_model(ns: dict[str, Any]) -> Callable[[dict, list], tuple[nn.Sequential, list[int]]]:
    """Build a ``parse_model(d, ch)`` for the YOLOv5 module whose globals are ``ns``.

    The returned function has YOLOv5's signature and semantics (rows ``[from, n, module, args]``,
    depth/width multiples, ``ch`` bookkeeping, the save list), plus:

    * a backbone row (a :class:`Backbone` subclass): built as ``Cls(*args, in_chans=c_in)``; its
      channel entry is the *list* ``Cls.out_channels`` from the variant table (no dummy forward);
      width/depth multiples do not apply to it;
    * a ``Select`` row: output channels ``ch[from][index]``, index checked;
    * any other row fed a list-valued layer raises :class:`ModelConfigError`.
    """
    LOGGER = ns["LOGGER"]
    make_divisible = ns["make_divisible"]
    Conv, Concat, Detect = ns["Conv"], ns["Concat"], ns["Detect"]
    heads = {Detect} | _classes(ns, ("Segment",))
    conv_like = _classes(ns, _CONV_LIKE) | {nn.ConvTranspose2d}
    repeated = _classes(ns, _REPEATED)
    contract, expand = ns.get("Contract"), ns.get("Expand")

    def parse_model(d: dict, ch: list) -> tuple[nn.Sequential, list[int]]:
        LOGGER.info(f"\n{'':>3}{'from':>18}{'n':>3}{'params':>10}  {'module':<40}{'arguments':<30}")
        anchors, nc, gd, gw = d["anchors"], d["nc"], d["depth_multiple"], d["width_multiple"]
        act, ch_mul = d.get("activation"), d.get("channel_multiple") or 8
        if act:
            Conv.default_act = parse_activation(act)
            LOGGER.info(f"activation: {act}")
        na = (len(anchors[0]) // 2) if isinstance(anchors, list) else anchors
        no = na * (nc + 5)
        # Names a YAML argument may refer to, as in YOLOv5's parse_model (whose eval sees its locals).
        yaml_locals = {"nc": nc, "anchors": anchors, "na": na, "no": no, "gd": gd, "gw": gw}

        layers, save, c2 = [], [], ch[-1]
        rows = d["backbone"] + d["head"]
        for i, (f, n, m, args) in enumerate(rows):
            m = _resolve_module(m, ns, i)
            args = list(args)
            is_backbone = isinstance(m, type) and issubclass(m, Backbone)
            if not is_backbone:
                args = [_resolve_argument(a, ns, yaml_locals) for a in args]
            n = n_ = max(round(n * gd), 1) if n > 1 else n

            if is_backbone:
                if n_ != 1 or rows[i][1] != 1:
                    raise ModelConfigError(f"layer {i}: a backbone row must have n=1, got {rows[i][1]}")
                module = build_backbone(m, args, ch[f], i)
                _NORM_SNAPSHOTS[module] = {k: v.clone() for k, v in module.state_dict().items()
                                           if k.rpartition(".")[2] in _NORM_STATS}
                c2 = list(module.out_channels)
                args = [module.variant, list(module.out_indices), *args[2:]]
            elif m is Select:
                source = ch[f] if isinstance(f, int) else None
                index = check_select(args[0] if args else 0, source, f, i, layers[f] if source else None)
                c2 = ch[f][index]
                module = Select(index)
            else:
                check_tensor_inputs(f, ch, _module_name(m), i)
                if m in conv_like:
                    c1, c2 = ch[f], args[0]
                    if c2 != no:
                        c2 = make_divisible(c2 * gw, ch_mul)
                    args = [c1, c2, *args[1:]]
                    if m in repeated:
                        args.insert(2, n)
                        n = 1
                elif m is nn.BatchNorm2d:
                    args = [ch[f]]
                elif m is Concat:
                    c2 = sum(ch[x] for x in f)
                elif m in heads:
                    args.append([ch[x] for x in f])
                    if isinstance(args[1], int):
                        args[1] = [list(range(args[1] * 2))] * len(f)
                    if m is not Detect:
                        args[3] = make_divisible(args[3] * gw, ch_mul)
                elif contract is not None and m is contract:
                    c2 = ch[f] * args[0] ** 2
                elif expand is not None and m is expand:
                    c2 = ch[f] // args[0] ** 2
                else:
                    c2 = ch[f]
                module = nn.Sequential(*(m(*args) for _ in range(n))) if n > 1 else m(*args)

            t = f"{m.__module__}.{m.__qualname__}".replace("__main__.", "")
            np_ = sum(x.numel() for x in module.parameters())
            module.i, module.f, module.type, module.np = i, f, t, np_
            LOGGER.info(f"{i:>3}{str(f):>18}{n_:>3}{np_:10.0f}  {t:<40}{str(args):<30}")
            save.extend(x % i for x in ([f] if isinstance(f, int) else f) if x != -1)
            layers.append(module)
            if i == 0:
                ch = []
            ch.append(c2)
        return nn.Sequential(*layers), sorted(save)

    return parse_model
