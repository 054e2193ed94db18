"""Exact inference-time re-parameterisations ("fusing") of the backbones.

YOLOv5's ``BaseModel.fuse()`` (called by ``val.py``, ``detect.py`` and ``export.py`` through
``attempt_load(..., fuse=True)``) folds the BatchNorm of its own ``Conv`` / ``DWConv`` layers only. The
YOLOv5 patch (:mod:`yolo_backbones.hosts.yolov5.model_patch`) makes it also call :meth:`Backbone.fuse
<yolo_backbones.core.base.Backbone.fuse>`, which runs :func:`fuse_backbone`: every rewrite below
is **exact** (the same function up to float rounding, no approximation):

* ``Conv2d -> BatchNorm2d`` → one ``Conv2d`` (:func:`fuse_conv_bn`), the BN becomes ``nn.Identity``;
* a per-channel affine map (a pre-norm ``BatchNorm2d``, an input normalisation) followed by a conv
  that does **not pad** → one conv (:func:`fold_affine_into_conv`, :func:`fuse_bn_conv`). With zero
  padding the border taps would see ``shift`` instead of ``0``, so padded convs are refused;
* a per-channel layer scale ``gamma * branch(x)`` whose branch ends in a conv / linear layer (nothing
  but eval-mode dropout or a folded BN after it) → scaled output channels (:func:`scale_output_channels`);
* ``x + conv(x)`` with a stride-1 "same" conv of equal in/out channels → one conv with ``+1`` on the centre
  tap of each channel's own filter (:func:`absorb_identity`).

Where a rewrite applies is declared by the modules themselves: ``nn.Sequential`` containers are scanned
for ``Conv2d, BatchNorm2d`` neighbours, and any module may define ``fuse_(self) -> None`` for its own
patterns (called children-first, so e.g. a branch's last BN is folded before its layer scale).

BatchNorm folds use the **running statistics**, i.e. eval-mode semantics, whatever the module's mode;
a fused model is for inference (``val`` / ``detect`` / ``export``) and not for training (the folded
BNs no longer normalise with batch statistics and no longer update their running stats). Fusing a
model in training mode warns. All rewrites are done in float64 and cast back to each layer's dtype;
fused layers are plain ``torch.nn`` modules, so deepcopy, pickling, ``.half()`` and ONNX export work.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["fuse_conv_bn", "bn_affine", "fold_affine_into_conv", "scale_input_channels", "fuse_bn_conv",
           "scale_output_channels", "absorb_identity", "fuse_pair", "fuse_sequential", "fuse_backbone",
           "count_batchnorms", "is_foldable_bn", "conv_like", "channels_last_weights"]

_Conv = nn.Conv2d
_Linear = nn.Linear


def is_foldable_bn(m: nn.Module | None) -> bool:
    """True for a ``BatchNorm2d`` that has running statistics (the only kind a fold can use)."""
    return isinstance(m, nn.BatchNorm2d) and m.running_mean is not None and m.running_var is not None


def bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """The eval-mode BN as ``y = scale * x + shift`` per channel: ``(scale, shift)`` in float64."""
    if not is_foldable_bn(bn):
        raise ValueError(f"{bn} has no running statistics to fold")
    var, mean = bn.running_var.double(), bn.running_mean.double()
    scale = torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    shift = -mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    return scale, shift


def conv_like(conv: _Conv, weight: torch.Tensor, bias: torch.Tensor | None, **changes: int) -> _Conv:
    """A new ``Conv2d`` shaped like ``conv``, holding copies of ``weight`` and ``bias`` (``None``: no bias).

    Kernel, stride, padding (and its mode), dilation, channels and groups are ``conv``'s except the keyword
    ``changes`` (``in_channels``, ``out_channels``, ``groups``). Device, dtype (``weight`` / ``bias`` are cast
    to it, e.g. from a fold's float64), ``requires_grad`` and train / eval mode are ``conv``'s too.
    """
    w = conv.weight
    channels = dict(in_channels=conv.in_channels, out_channels=conv.out_channels, groups=conv.groups) | changes
    # Built on the meta device: no random initialisation, so fusing leaves the global RNG alone.
    new = nn.Conv2d(kernel_size=conv.kernel_size, stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
                    bias=bias is not None, padding_mode=conv.padding_mode, device="meta", dtype=w.dtype,
                    **channels).to_empty(device=w.device)
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias)
    return new.requires_grad_(w.requires_grad).train(conv.training)


def _bias64(layer: _Conv | _Linear) -> torch.Tensor:
    w = layer.weight
    return torch.zeros(w.shape[0], dtype=torch.float64, device=w.device) if layer.bias is None else layer.bias.double()


@torch.no_grad()
def fuse_conv_bn(conv: _Conv, bn: nn.BatchNorm2d) -> _Conv:
    """``bn(conv(x))`` as a single ``Conv2d`` (eval-mode BN, running statistics); exact for any conv geometry."""
    if bn.num_features != conv.out_channels:
        raise ValueError(f"BatchNorm of {bn.num_features} channels cannot follow a conv with {conv.out_channels}")
    scale, shift = bn_affine(bn)
    weight = conv.weight.double() * scale.view(-1, 1, 1, 1)
    return conv_like(conv, weight, _bias64(conv) * scale + shift)


@torch.no_grad()
def fold_affine_into_conv(conv: _Conv, scale: torch.Tensor, shift: torch.Tensor, allow_padding: bool = False) -> _Conv:
    """``conv(scale * x + shift)`` (per input channel) as a single ``Conv2d``.

    Exact only if the conv does not pad (zero padding of ``scale * x + shift`` is not the affine map of
    zero-padded ``x``): a conv with non-zero padding raises ``ValueError``. Any kernel, stride and groups.
    """
    pad = conv.padding
    padded = (pad != "valid") if isinstance(pad, str) else any(pad)
    if padded and not (allow_padding and not bool(torch.as_tensor(shift).any())):
        raise ValueError(f"cannot fold a per-channel affine map into a padding conv {conv} exactly")
    scale, shift = scale.double().flatten(), shift.double().flatten()
    cin, groups = conv.in_channels, conv.groups
    if scale.numel() != cin or shift.numel() != cin:
        raise ValueError(f"affine map of {scale.numel()} channels for a conv with {cin} input channels")
    w = conv.weight.double()  # (out, cin / groups, kh, kw); output o reads inputs of its group
    ipg, opg = cin // groups, conv.out_channels // groups
    group_of_out = torch.arange(conv.out_channels, device=w.device) // opg
    idx = group_of_out[:, None] * ipg + torch.arange(ipg, device=w.device)[None, :]  # (out, ipg) input channel
    s, t = scale.to(w.device)[idx], shift.to(w.device)[idx]
    bias = _bias64(conv) + (w.sum(dim=(2, 3)) * t).sum(1)
    return conv_like(conv, w * s[:, :, None, None], bias)


@torch.no_grad()
def scale_input_channels(conv: _Conv, scale: torch.Tensor) -> _Conv:
    """``conv(scale * x)`` (per input channel) as a single ``Conv2d``; exact for any padding (zeros scale to zeros)."""
    return fold_affine_into_conv(conv, scale, torch.zeros_like(scale.flatten()), allow_padding=True)


def fuse_bn_conv(bn: nn.BatchNorm2d, conv: _Conv) -> _Conv:
    """``conv(bn(x))`` as a single ``Conv2d`` (pre-norm fold, eval-mode BN); the conv must not pad."""
    return fold_affine_into_conv(conv, *bn_affine(bn))


@torch.no_grad()
def scale_output_channels(layer: _Conv | _Linear, gamma: torch.Tensor) -> None:
    """In place: ``layer(x) * gamma`` (per output channel) becomes ``layer(x)``; ``gamma`` may be ``(C, 1, 1)``."""
    g = gamma.detach().double().flatten().to(layer.weight.device)
    if g.numel() != layer.weight.shape[0]:
        raise ValueError(f"scale of {g.numel()} channels for a layer with {layer.weight.shape[0]} outputs")
    shape = (-1,) + (1,) * (layer.weight.ndim - 1)
    layer.weight.copy_((layer.weight.double() * g.view(shape)).to(layer.weight.dtype))
    if layer.bias is not None:
        layer.bias.copy_((layer.bias.double() * g).to(layer.bias.dtype))


@torch.no_grad()
def absorb_identity(conv: _Conv) -> None:
    """In place: ``x + conv(x)`` becomes ``conv(x)`` by adding 1 to the centre tap of channel ``c``'s own filter.

    Needs equal in/out channels, stride 1, dilation 1 and an odd kernel padded by ``k // 2`` (output grid =
    input grid, centre tap = the pixel itself); zero padding does not matter for the centre tap.
    """
    kh, kw = conv.kernel_size
    ok = (conv.in_channels == conv.out_channels and tuple(conv.stride) == (1, 1) and tuple(conv.dilation) == (1, 1)
          and kh % 2 == 1 and kw % 2 == 1 and tuple(conv.padding) == (kh // 2, kw // 2))
    if not ok:
        raise ValueError(f"{conv} does not map each channel onto itself at the same pixel; cannot absorb x + conv(x)")
    c, ipg = conv.out_channels, conv.in_channels // conv.groups
    out = torch.arange(c, device=conv.weight.device)
    conv.weight[out, out % ipg, kh // 2, kw // 2] += 1.0


def fuse_pair(module: nn.Module, conv: str, bn: str) -> bool:
    """In place: if ``module.<bn>`` is a foldable BN applied to ``module.<conv>``'s output only, replace the conv by
    the fused one and the BN by ``nn.Identity``. Returns whether it folded (False when already fused)."""
    c, b = getattr(module, conv), getattr(module, bn)
    if not (isinstance(c, _Conv) and is_foldable_bn(b)):
        return False
    setattr(module, conv, fuse_conv_bn(c, b))
    setattr(module, bn, nn.Identity())
    return True


def fuse_sequential(seq: nn.Sequential) -> int:
    """In place: every ``Conv2d`` directly followed by a foldable ``BatchNorm2d`` in ``seq`` becomes the fused
    conv and the BN an ``nn.Identity`` (indices, hence module names, are kept). Returns the number of folds."""
    n = 0
    for i in range(len(seq) - 1):
        if isinstance(seq[i], _Conv) and is_foldable_bn(seq[i + 1]):
            seq[i] = fuse_conv_bn(seq[i], seq[i + 1])
            seq[i + 1] = nn.Identity()
            n += 1
    return n


def _post_order(m: nn.Module) -> Iterator[nn.Module]:
    for child in m.children():
        yield from _post_order(child)
    yield m


def count_batchnorms(model: nn.Module) -> int:
    """Number of ``BatchNorm`` (1d/2d/3d, incl. subclasses) modules in ``model``."""
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def fuse_backbone(model: nn.Module) -> nn.Module:
    """Apply every exact fold to ``model`` in place (children first) and return it; a second call is a no-op.

    ``nn.Sequential`` containers get :func:`fuse_sequential`; modules with a ``fuse_()`` method run it
    (after their children). BN folds use the running statistics: the fused model computes the eval-mode
    function, so fusing a model in training mode warns (a fused model is for inference only).
    """
    if getattr(model, "fused", False):
        return model
    if any(m.training for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)):
        warnings.warn(f"fusing {type(model).__name__} in training mode: BatchNorms are folded with their running "
                      "statistics (eval semantics); a fused model is for inference only, call .eval()", stacklevel=2)
    with torch.no_grad():
        for m in list(_post_order(model)):
            if isinstance(m, nn.Sequential):
                fuse_sequential(m)
            hook = getattr(m, "fuse_", None)
            if callable(hook):
                hook()
    model.fused = True
    return model


def channels_last_weights(module: torch.nn.Module) -> torch.nn.Module:
    """In place: lay out every 4-D parameter and buffer of ``module`` channels-last; returns ``module``.

    Unlike ``module.to(memory_format=torch.channels_last)`` it leaves other tensors alone (YOLOv5's
    ``Detect._apply`` would also push its 5-D grids through the conversion, which fails) and keeps the
    parameter objects (``.data`` is replaced), so references held elsewhere stay valid.
    """
    with torch.no_grad():
        for m in module.modules():
            for tensors in (m._parameters, m._buffers):
                for t in tensors.values():
                    if t is not None and t.ndim == 4 and not t.is_contiguous(memory_format=torch.channels_last):
                        t.data = t.data.contiguous(memory_format=torch.channels_last)
    return module
