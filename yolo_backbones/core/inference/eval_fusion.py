"""Eval fusion: an eval-mode backbone runs a fused copy of itself when nothing can tell the difference.

:meth:`Backbone.fuse <yolo_backbones.core.base.Backbone.fuse>` is exact but changes the module in place, so
hosts call it only where they know the model is done training (YOLOv5's ``val.py --weights``,
``detect.py``, ``export.py``). Everywhere else an eval-mode backbone — validation during training, a
user's ``create(name).eval()`` classifier, a notebook — would run the unfused layers (separate BatchNorm
and layer-scale passes, NCHW weights, no fused CPU kernels). With eval fusion it instead keeps a private
fused copy (the "twin", built on first use) and forwards to it, so every eval-mode forward gets the fused
speed while the module itself, its ``state_dict`` and its pickles stay exactly as they are.

The twin is used only when the result cannot differ from the module's own forward beyond float rounding
(< 1e-4, the fusion tolerance) and nothing observes the layers:

* eval mode, not yet fused, and no autograd graph wanted (``torch.no_grad()`` / ``inference_mode()`` or no
  parameter requires grad);
* not tracing, scripting or compiling (graphs record the module's own layers, e.g. for ONNX export);
* no forward (pre-)hooks on any sub-module (feature extraction, ``thop`` FLOP counting see the real layers);
* every parameter and buffer unchanged since the twin was built: the twin records each tensor's storage
  address and version counter, so an optimizer step or ``load_state_dict`` rebuilds it on the next call;
  ``.to()`` / ``.half()`` and registering a parameter, buffer or sub-module drop it at once. Inference tensors
  (no version counter) disable the twin.

Memory: the twin holds a second copy of the backbone's weights while in use; ``train()`` and ``fuse()``
drop it. It is never pickled, deep-copied or listed in ``modules()``/``state_dict()``.
Switch it off per model with :meth:`Backbone.set_eval_fusion(False)
<yolo_backbones.core.base.Backbone.set_eval_fusion>` or for the process with
``YOLO_BACKBONES_EVAL_FUSION=0``.
"""
from __future__ import annotations

import copy
import os
import weakref
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules import module as module_hooks

from .context import hooked, is_tracing

__all__ = ["ENABLED", "TWIN_ATTRIBUTE", "eval_twin", "drop_twin"]

# Process-wide switch (read once; tests and benchmarks may set it).
ENABLED: bool = os.environ.get("YOLO_BACKBONES_EVAL_FUSION", "1").strip() != "0"
# Instance attribute holding the :class:`_Twin`; a plain attribute, so not a registered sub-module.
TWIN_ATTRIBUTE = "_eval_twin"


@dataclass(eq=False)
class _Twin:
    """A fused copy and what it was built from: the source's sub-modules and tensors, with their stamp."""

    model: nn.Module
    modules: list[nn.Module]
    params: list[torch.Tensor]
    tensors: list[torch.Tensor]
    stamp: list[tuple[int, int]]


def _stamp(tensors: list[torch.Tensor]) -> list[tuple[int, int]]:
    """(storage address, version counter) of each tensor: changes with any in-place update or ``.data`` swap."""
    return [(t.data_ptr(), t._version) for t in tensors]


# Sub-modules of every model that currently has a twin -> that model. A parameter, buffer or sub-module
# registered on one of them (a layer swapped in, ``load_state_dict(assign=True)``) drops the twin.
_OWNERS: weakref.WeakKeyDictionary[nn.Module, weakref.ref] = weakref.WeakKeyDictionary()
_hooks_installed = False


def _on_registration(module: nn.Module, name: str, value: object) -> None:
    owner = _OWNERS.get(module)
    model = owner() if owner is not None else None
    if model is not None:
        drop_twin(model)


def _install_hooks() -> None:
    """Watch registrations (installed once, on the first twin; costs one dict lookup per registration)."""
    global _hooks_installed
    if not _hooks_installed:
        module_hooks.register_module_module_registration_hook(_on_registration)
        module_hooks.register_module_parameter_registration_hook(_on_registration)
        module_hooks.register_module_buffer_registration_hook(_on_registration)
        _hooks_installed = True


def _own_layers_required(model: nn.Module) -> bool:
    """The mode and context conditions under which ``model`` must run its own layers (see the module docstring)."""
    if not ENABLED or not getattr(model, "eval_fusion", True) or model.training or getattr(model, "fused", False):
        return True
    return is_tracing() or torch.compiler.is_compiling()


def _observed(params: list[torch.Tensor], modules: list[nn.Module]) -> bool:
    """True if autograd would record the parameters, or a layer has forward hooks (they would not fire on the
    twin's copies of the layers: feature extraction, thop FLOP counting)."""
    if torch.is_grad_enabled() and any(p.requires_grad for p in params):
        return True
    return any(hooked(m) for m in modules)


def eval_twin(model: nn.Module) -> nn.Module | None:
    """The fused twin ``model``'s eval forward should delegate to, or None to run ``model`` itself.

    Builds (``copy.deepcopy(model).fuse()``) or rebuilds the twin when the weights changed since the last call.
    """
    if _own_layers_required(model):
        return None
    held = model.__dict__.get(TWIN_ATTRIBUTE)
    if held is not None:
        if _observed(held.params, held.modules):
            return None
        if _stamp(held.tensors) == held.stamp:
            return held.model
        drop_twin(model)  # free the old copy before building the new one
    params = list(model.parameters())
    modules = [m for m in model.modules() if m is not model]
    if _observed(params, modules):
        return None
    tensors = params + list(model.buffers())
    if any(t.is_inference() for t in tensors):
        return None  # no version counters: in-place changes would go unnoticed
    with torch.inference_mode(False), torch.no_grad():  # normal tensors, even when called in inference mode
        twin = copy.deepcopy(model).fuse()
    model.__dict__[TWIN_ATTRIBUTE] = _Twin(twin, modules, params, tensors, _stamp(tensors))
    _install_hooks()
    ref = weakref.ref(model)
    for m in [model, *modules]:
        _OWNERS[m] = ref
    return twin


def drop_twin(model: nn.Module) -> None:
    """Forget ``model``'s twin (if any)."""
    held = model.__dict__.pop(TWIN_ATTRIBUTE, None)
    if held is not None:
        for m in held.modules:
            _OWNERS.pop(m, None)
        _OWNERS.pop(model, None)
