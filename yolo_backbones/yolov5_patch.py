"""The patch layer over YOLOv5: a ``parse_model`` that understands multi-output backbones, and ``Select``.

A YAML row names a backbone class (``EdgeViT``, ...) whose layer returns a *list* of feature maps;
``Select`` rows pick one map each. Everything downstream (SPPF, Conv, C3, Concat, Detect) is
YOLOv5's own. YOLOv5's stock ``_forward_once`` already stores list outputs and hands them to the
layers that refer to them, so a checkpoint built here also runs under an unpatched YOLOv5; the
patched ``_forward_once`` only adds what YOLOv5 gets wrong for list outputs (``--visualize``).

:func:`patch_yolo_module` applies this to one YOLOv5 ``models/yolo.py`` module object: the PyPI
package's ``yolov5.models.yolo`` or a clone's ``models.yolo``. It is idempotent.
"""
from __future__ import annotations

import contextlib
import difflib
import math
import types
from typing import Any, Callable

import torch
from torch import nn

from .backbones.base import Backbone
from .registry import backbone_classes

_PATCHED_FLAG = "_yolo_backbones_patched"


class Select(nn.Module):
    """Pick one feature map from a backbone's list output.

    Args:
        index: position in the backbone's returned list (``0`` is its first ``out_indices`` entry).

    ``forward(x: list[Tensor]) -> Tensor`` returns ``x[index]`` unchanged, shape ``(B, C, H, W)``.
    """

    def __init__(self, index: int = 0) -> None:
        super().__init__()
        self.index = int(index)

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        return x[self.index]

    def extra_repr(self) -> str:
        return f"index={self.index}"


class ModelConfigError(ValueError):
    """A model YAML row that cannot be built; the message names the row and the fix."""


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


def _resolve_module(name: Any, ns: dict[str, Any], row: int) -> Any:
    """Turn a YAML module string into the class, with a helpful error for unknown names."""
    if not isinstance(name, str):
        return name
    try:
        return eval(name, ns)  # YOLOv5 semantics: names like "nn.Upsample" are expressions in yolo.py's namespace
    except NameError:
        plugin = sorted(backbone_classes()) + ["Select"]
        host = sorted(k for k, v in ns.items() if isinstance(v, type) and issubclass(v, nn.Module))
        close = difflib.get_close_matches(name, plugin + host, n=3)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise ModelConfigError(f"layer {row}: unknown module {name!r}.{hint} Backbones of yolo-backbones: "
                               f"{', '.join(plugin)} (run `yolo-backbones list`).") from None


def _build_backbone(m: type[Backbone], args: list[Any], c1: Any, row: int) -> Backbone:
    if isinstance(c1, list):
        raise ModelConfigError(f"layer {row}: {m.__name__} must take an image tensor, not a list output")
    args = [None if a in ("None", "none", "") else a for a in args]
    try:
        return m(*args, in_chans=c1)
    except (ValueError, TypeError, FileNotFoundError) as e:
        raise ModelConfigError(f"layer {row} ({m.__name__} {args}): {e}") from e


def _check_select(index: Any, source: Any, f: Any, row: int, layers: list[nn.Module]) -> int:
    if not isinstance(f, int):
        raise ModelConfigError(f"layer {row}: Select takes one 'from' layer, got {f}")
    if not isinstance(source, list):
        raise ModelConfigError(f"layer {row}: Select is fed layer {f}, which returns a single tensor; "
                               "Select only picks from a backbone's list output")
    backbone = layers[f]
    if not isinstance(index, int) or not -len(source) <= index < len(source):
        maps = ", ".join(f"{k}: stride {s}, {c} ch" for k, (s, c) in
                         enumerate(zip(backbone.out_strides, backbone.out_channels)))
        raise ModelConfigError(f"layer {row}: Select index {index!r} is out of range; layer {f} "
                               f"({type(backbone).__name__}) returns {len(source)} maps ({maps}); "
                               f"use an index 0..{len(source) - 1}")
    return index


def _check_tensor_inputs(f: Any, ch: list[Any], name: str, row: int) -> None:
    """A plain layer fed a backbone's list would crash at run time; say how to fix it at build time."""
    for x in [f] if isinstance(f, int) else f:
        if isinstance(ch[x], list):
            j = x if x >= 0 else row + x
            raise ModelConfigError(
                f"layer {row} ({name}) is fed layer {j}, which returns a list of {len(ch[x])} feature maps "
                f"(channels {ch[x]}); add a selector row such as [{j}, 1, Select, [0]] and feed that instead")


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
            Conv.default_act = eval(act, ns)
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
                for j, a in enumerate(args):
                    with contextlib.suppress(NameError, SyntaxError):
                        args[j] = eval(a, ns, yaml_locals) if isinstance(a, str) else a
            n = n_ = max(round(n * gd), 1) if n > 1 else n

            if is_backbone:
                if n_ != 1 or rows[i][1] != 1:
                    raise ModelConfigError(f"layer {i}: a backbone row must have n=1, got {rows[i][1]}")
                module = _build_backbone(m, args, ch[f], i)
                # YOLOv5's neck upsamples the deepest map by 2 and concatenates it with the next one, so
                # the detector needs sides that are multiples of the largest output stride even when the
                # backbone alone takes any size: reject other sizes up front with a clear message.
                module.input_multiple = math.lcm(module.input_multiple, max(module.out_strides))
                c2 = list(module.out_channels)
                args = [module.variant, list(module.out_indices), *args[2:]]
            elif m is Select:
                index = _check_select(args[0] if args else 0, ch[f] if isinstance(f, int) else None, f, i, layers)
                c2 = ch[f][index]
                module = Select(index)
            else:
                _check_tensor_inputs(f, ch, _module_name(m), i)
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


def make_forward_once(visualize_fn: Callable | None) -> Callable:
    """Build a ``BaseModel._forward_once`` equal to YOLOv5's, except that ``visualize`` handles list outputs.

    ``visualize_fn`` is the host's ``feature_visualization(x, module_type, stage, save_dir=...)``
    (``None`` for hosts without it). Each map of a list output is saved as ``<type>_<k>``.
    """

    def _forward_once(self: nn.Module, x: torch.Tensor, profile: bool = False, visualize: Any = False) -> Any:
        y, dt = [], []
        for m in self.model:
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            if profile:
                self._profile_one_layer(m, x, dt)
            x = m(x)
            y.append(x if m.i in self.save else None)
            if visualize and visualize_fn is not None:
                if isinstance(x, (list, tuple)):
                    for k, xk in enumerate(x):
                        visualize_fn(xk, f"{m.type}_{k}", m.i, save_dir=visualize)
                else:
                    visualize_fn(x, m.type, m.i, save_dir=visualize)
        return x

    return _forward_once


def make_initialize_weights(original: Callable[[nn.Module], None]) -> Callable[[nn.Module], None]:
    """Wrap YOLOv5's ``initialize_weights(model)`` (called right after the stride probe in ``DetectionModel``).

    After the original runs, every backbone that loaded a pretrained checkpoint gets its BatchNorm
    running statistics back from the snapshot taken at load time: the probe's training-mode forward
    of a blank image would otherwise have shifted them. The snapshot is then dropped.
    """

    def initialize_weights(model: nn.Module) -> None:
        original(model)
        for m in model.modules():
            stats = m.__dict__.pop("pretrained_norm_stats", None) if isinstance(m, Backbone) else None
            if stats:
                m.load_state_dict(stats, strict=False)

    initialize_weights.__wrapped__ = original
    return initialize_weights


def make_fuse(original: Callable[[nn.Module], nn.Module]) -> Callable[[nn.Module], nn.Module]:
    """Wrap YOLOv5's ``BaseModel.fuse()`` (Conv/DWConv + BN folds, then the model info print).

    Every :class:`Backbone` in the model is fused first (:meth:`Backbone.fuse`: its Conv+BN pairs and other
    exact re-parameterisations), then the original runs, so the printed summary is that of the fully fused
    model. Idempotent like the original: a second call changes nothing. As in YOLOv5, a fused model is for
    inference (val / detect / export), not for training.
    """

    def fuse(self: nn.Module) -> nn.Module:
        for m in self.model.modules():
            if isinstance(m, Backbone):
                m.fuse()
        return original(self)

    fuse.__wrapped__ = original
    return fuse


def is_yolo_module(module: types.ModuleType) -> bool:
    """True if ``module`` looks like a YOLOv5 ``models/yolo.py`` (PyPI package or clone)."""
    return all(hasattr(module, a) for a in ("parse_model", "BaseModel", "DetectionModel", "Detect", "Conv"))


def patch_yolo_module(module: types.ModuleType) -> bool:
    """Install the plugin into one YOLOv5 ``models/yolo.py`` module; return True if it was patched now.

    Injects ``Select`` and the backbone classes into its namespace (YAML names are looked up there),
    replaces its ``parse_model`` and extends ``BaseModel._forward_once`` and ``BaseModel.fuse`` (which then
    also fuses the backbones). Calling it again is a no-op.
    """
    if getattr(module, _PATCHED_FLAG, False) or not is_yolo_module(module):
        return False
    ns = module.__dict__
    ns["Select"] = Select
    ns.update(backbone_classes())
    ns["parse_model"] = make_parse_model(ns)
    if "initialize_weights" in ns:
        ns["initialize_weights"] = make_initialize_weights(ns["initialize_weights"])
    # Kept for reference and tests: plugin checkpoints must also run under the stock forward.
    module.BaseModel._yolo_backbones_stock_forward_once = module.BaseModel._forward_once
    module.BaseModel._forward_once = make_forward_once(ns.get("feature_visualization"))
    module.BaseModel.fuse = make_fuse(module.BaseModel.fuse)
    setattr(module, _PATCHED_FLAG, True)
    return True
