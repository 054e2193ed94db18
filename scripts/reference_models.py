"""The reference implementations the benchmark compares each backbone's ImageNet classifier with.

* EfficientFormer / EfficientFormerV2: timm's models (a test dependency), at 224x224 (they run only there).
* EdgeViT and Mobile-Former: the authors' code (github.com/saic-fi/edgevit, github.com/AAboys/MobileFormer),
  at 640x640. It is not part of this project: pass a checkout of each with ``--official-edgevit DIR`` /
  ``--official-mobileformer DIR`` and it is imported from there at run time.

Both sides get the same weights: the reference is built with seeded random weights (BatchNorm statistics
included), and our classifier loads its state dict through the same key conversion as a pretrained checkpoint.
:func:`reference_pair` checks that the two then agree before anything is timed.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["ReferencePair", "reference_pair", "official_edgevit", "official_mobileformer", "ReferenceUnavailable"]

TIMM_PREFIX = {"efficientformer": "efficientformer_", "efficientformerv2": "efficientformerv2_"}


class ReferenceUnavailable(RuntimeError):
    """No reference implementation for this backbone in this run (say which option would provide one)."""


@dataclass
class ReferencePair:
    """Our ImageNet classifier and the reference one with the same weights, and the input size to time at."""

    name: str
    ours: torch.nn.Module
    reference: torch.nn.Module
    img: int
    source: str


def _find_file(root: Path, name: str) -> Path:
    """``root/name`` or ``root/src/name``: the reference file inside a checkout."""
    for candidate in (root / name, root / "src" / name):
        if candidate.is_file():
            return candidate
    raise ReferenceUnavailable(f"{root} holds no {name} (expected a checkout of the reference repository)")


def official_edgevit(repo: Path, variant: str, img: int = 640) -> torch.nn.Module:
    """The authors' EdgeViT-<variant> classifier (``src/edgevit.py`` of a saic-fi/edgevit checkout) for
    ``img x img`` inputs (its patch embedding asserts the size), eval mode."""
    path = _find_file(Path(repo), "edgevit.py")
    name = "_reference_edgevit"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return getattr(module, f"edgevit_{variant}")(pretrained=False, img_size=img).eval()


def official_mobileformer(repo: Path, variant: str) -> torch.nn.Module:
    """The authors' Mobile-Former-<variant> classifier (``mobile_former.py`` of an AAboys/MobileFormer checkout).

    The file expects to sit inside an old timm's ``models`` package; its imports are served from today's timm
    (``layers``) and a stand-in ``helpers`` (only the classifier class is used, never its loading helpers).
    """
    import timm.layers

    folder = _find_file(Path(repo), "mobile_former.py").parent
    package = "_reference_mobileformer"
    if package not in sys.modules:
        pkg = types.ModuleType(package)
        pkg.__path__ = [str(folder)]
        helpers = types.ModuleType(f"{package}.helpers")
        helpers.build_model_with_cfg = None
        helpers.default_cfg_for_features = lambda cfg: cfg
        sys.modules.update({package: pkg, f"{package}.layers": timm.layers, f"{package}.helpers": helpers})
        module = importlib.import_module(f"{package}.mobile_former")
        # Build the class directly (the original goes through timm's builder, which also prints the model).
        module._create_mobile_former = lambda _variant, _pretrained=False, **kwargs: module.MobileFormer(**kwargs)
    module = sys.modules[f"{package}.mobile_former"]
    return getattr(module, f"mobile_former_{variant}")().eval()


def _randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Seeded random parameters and BatchNorm statistics, so the parity check below means something."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            noise = torch.randn(tensor.shape, generator=generator) * 0.05
            if name.endswith("running_var"):
                tensor.copy_(1.0 + noise.abs())
            elif name.endswith(("weight", "running_mean", "bias")) or tensor.dim() > 1:
                tensor.add_(noise)
    return model


def reference_pair(family: str, variant: str, official: dict[str, Path | None]) -> ReferencePair:
    """Our ``create(f"{family}_{variant}", num_classes=1000)`` and the reference, same weights, both in eval.

    ``official`` maps ``"edgevit"`` / ``"mobileformer"`` to a checkout of the authors' repository (or None).
    Raises :class:`ReferenceUnavailable` when there is nothing to compare with, ``RuntimeError`` when the two
    classifiers disagree.
    """
    from yolo_backbones import create
    from yolo_backbones.core.weights.state_dict import load_backbone_weights

    torch.manual_seed(0)
    if family in TIMM_PREFIX:
        import timm

        reference, img, source = timm.create_model(TIMM_PREFIX[family] + variant, num_classes=1000), 224, "timm"
    elif family in ("edgevit", "mobileformer"):
        repo = official.get(family)
        if repo is None:
            raise ReferenceUnavailable(f"pass --official-{family} DIR (a checkout of the authors' repository)")
        build = official_edgevit if family == "edgevit" else official_mobileformer
        reference, img, source = build(Path(repo), variant), 640, "official"
    else:
        raise ReferenceUnavailable(f"no reference implementation for {family}")
    reference = _randomize_(reference).eval()
    ours = create(f"{family}_{variant}", num_classes=1000)
    load_backbone_weights(ours, reference.state_dict(), source=f"{source} {family}_{variant}")
    ours.eval()
    x = torch.rand(1, 3, img, img, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = reference(x), ours(x)
    if not torch.allclose(got, expected, atol=1e-3, rtol=1e-3):
        raise RuntimeError(f"{family}_{variant}: our classifier disagrees with the {source} one "
                           f"(max diff {(got - expected).abs().max():.3g})")
    return ReferencePair(f"{family}_{variant}", ours, reference, img, source)
