"""Host-independent checks of backbone and selector rows in a model YAML, with errors that say the fix."""
from __future__ import annotations

import ast
import difflib
import re
from collections.abc import Iterable
from typing import Any

from torch import nn

from ...core.base import Backbone
from ...core.registry import backbone_classes
from ...core.weights.safe_load import is_rebuilding
from ...core.weights.sources import WeightsFileError
from ...core.weights.state_dict import CheckpointMismatchError


class ModelConfigError(ValueError):
    """A model YAML row that cannot be built; the message names the row and the fix."""


def unknown_module_error(name: str, host_names: Iterable[str], row: int) -> ModelConfigError:
    """The error for a YAML module name that neither the host nor the plugin knows, with close matches."""
    plugin = sorted(backbone_classes()) + ["Select"]
    close = difflib.get_close_matches(name, plugin + sorted(host_names), n=3)
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    return ModelConfigError(f"layer {row}: unknown module {name!r}.{hint} Backbones of yolo-backbones: "
                            f"{', '.join(plugin)} (run `yolo-backbones list`).")


# Options a backbone row sets itself: a YOLO backbone is a feature extractor fed [0, 1] RGB by the host.
ROW_OPTIONS = {"features_only": True, "input_norm": True}


def build_backbone(m: type[Backbone], args: list[Any], c1: Any, row: int) -> Backbone:
    """Build the backbone of YAML row ``row`` as ``m(*args, in_chans=c1, features_only=True, input_norm=True)``
    and apply the detector's size rule.

    A mapping as the last argument gives keyword options, e.g. ``[xxs, [1, 2, 3], {grad_checkpointing: true}]``
    builds ``EdgeViT("xxs", [1, 2, 3], grad_checkpointing=True, in_chans=c1, ...)``.

    The PAN neck upsamples the deepest map by 2 and concatenates it with the next one, so the detector
    needs sides that are multiples of the largest output stride even when the backbone alone takes any
    size; the backbone then rejects other sizes up front with a clear message.
    """
    if isinstance(c1, list):
        raise ModelConfigError(f"layer {row}: {m.__name__} must take an image tensor, not a list output")
    args, kwargs = list(args), {}
    if args and isinstance(args[-1], dict):
        kwargs = dict(args.pop())
        fixed = {"in_chans", "num_classes", *ROW_OPTIONS}
        if fixed & set(kwargs) or not all(isinstance(k, str) for k in kwargs):
            raise ModelConfigError(f"layer {row} ({m.__name__}): keyword options must be names other than "
                                   f"{', '.join(sorted(fixed))} (the row sets them: in_chans from the previous "
                                   f"layer), got {sorted(map(str, kwargs))}")
    args = [None if a in ("None", "none", "") else a for a in args]
    if is_rebuilding():
        # The weights come from the checkpoint being loaded: a weights name or path its config stores is neither
        # read nor downloaded.
        args, kwargs = args[:2], {k: v for k, v in kwargs.items() if k != "pretrained"}
    try:
        module = m(*args, **kwargs, in_chans=c1, **ROW_OPTIONS)
    except (ValueError, TypeError, FileNotFoundError, CheckpointMismatchError, WeightsFileError) as e:
        raise ModelConfigError(f"layer {row} ({m.__name__} {args}{f' {kwargs}' if kwargs else ''}): {e}") from e
    module.require_input_multiple(max(module.out_strides))
    return module


def check_select(index: Any, source: Any, f: Any, row: int, backbone: nn.Module | None, name: str = "Select") -> int:
    """Validate a selector row picking ``index`` from layer ``f`` whose channel entry is ``source``; return the index.

    ``name`` is the selector's module name in the YAML (``Select``, or ultralytics' ``Index``), for the messages.
    """
    if not isinstance(f, int):
        raise ModelConfigError(f"layer {row}: {name} takes one 'from' layer, got {f}")
    if not isinstance(source, list):
        raise ModelConfigError(f"layer {row}: {name} is fed layer {f}, which returns a single tensor; "
                               f"{name} only picks from a backbone's list output")
    if not isinstance(index, int) or isinstance(index, bool) or not -len(source) <= index < len(source):
        if isinstance(backbone, Backbone):
            maps = ", ".join(f"{k}: stride {s}, {c} ch" for k, (s, c) in
                             enumerate(zip(backbone.out_strides, backbone.out_channels)))
            what = f"({type(backbone).__name__}) returns {len(source)} maps ({maps})"
        else:
            what = f"returns {len(source)} maps (channels {source})"
        raise ModelConfigError(f"layer {row}: {name} index {index!r} is out of range; layer {f} {what}; "
                               f"use an index 0..{len(source) - 1}")
    return index


def check_tensor_inputs(f: Any, ch: list[Any], name: str, row: int) -> None:
    """A plain layer fed a backbone's list would crash at run time; say how to fix it at build time."""
    for x in [f] if isinstance(f, int) else f:
        if isinstance(ch[x], list):
            j = x if x >= 0 else row + x
            raise ModelConfigError(
                f"layer {row} ({name}) is fed layer {j}, which returns a list of {len(ch[x])} feature maps "
                f"(channels {ch[x]}); add a selector row such as [{j}, 1, Select, [0]] and feed that instead")


_ACTIVATION = re.compile(r"^nn\.(\w+)\((.*)\)$")


def activation_spec(text: Any) -> tuple[type[nn.Module], tuple]:
    """``activation: nn.SiLU()`` / ``nn.LeakyReLU(0.1)`` -> ``(class, args)``; any other expression is refused.

    Only a ``torch.nn`` module class with plain literal arguments passes, so a model YAML (or the ``yaml``
    dict stored in a checkpoint) cannot run code through this key.
    """
    match = _ACTIVATION.match(str(text).replace(" ", ""))
    cls = getattr(nn, match.group(1), None) if match else None
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ModelConfigError(f"activation {text!r}: write a torch.nn activation such as nn.SiLU() or "
                               "nn.LeakyReLU(0.1)")
    try:
        args = ast.literal_eval(f"({match.group(2)},)") if match.group(2) else ()
    except (ValueError, SyntaxError):
        raise ModelConfigError(f"activation {text!r}: arguments must be plain numbers") from None
    return cls, args


def parse_activation(text: Any) -> nn.Module:
    """The module an ``activation:`` entry names (see :func:`activation_spec`)."""
    cls, args = activation_spec(text)
    return cls(*args)
