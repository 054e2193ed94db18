"""Speed of a backbone's ImageNet classifier against the reference implementation with the same weights."""
from __future__ import annotations

import argparse
import copy
import sys
import time

import torch

from .results import SCRIPTS


def reference_speedups(backbone: torch.nn.Module, args: argparse.Namespace, rounds: int = 5, per_round: int = 4
                       ) -> dict[str, float] | None:
    """Reference ms / our ms of the backbone's ImageNet classifier, batch 1, for three ways to run it.

    ``eval``: ``create(...).eval()`` as users run it (eval fusion on, the default); ``fused``: after ``fuse()``;
    ``own``: the eval model on its own, unfused layers (``set_eval_fusion(False)``). The reference is timm's
    EfficientFormer(V2) at 224, or the authors' EdgeViT / Mobile-Former at 640 when a checkout was given
    (:mod:`reference_models`); None when there is none. Minimum of interleaved runs (the models alternate, so
    load on the machine hits them alike); the outputs agree (checked first).
    """
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    from reference_models import ReferenceUnavailable, reference_pair

    official = {"edgevit": args.official_edgevit, "mobileformer": args.official_mobileformer}
    try:
        pair = reference_pair(backbone.family, backbone.variant, official)
    except ReferenceUnavailable as e:
        print(f"[benchmark] no reference for {backbone.family}_{backbone.variant}: {e}")
        return None
    ours, reference = pair.ours.eval(), pair.reference
    own = copy.deepcopy(ours).set_eval_fusion(False)
    models = {"eval": ours, "fused": copy.deepcopy(ours).fuse(), "own": own, "reference": reference}
    x = torch.rand(1, 3, pair.img, pair.img)
    times: dict[str, list[float]] = {key: [] for key in models}
    with torch.no_grad():
        expected = reference(x)
        for key in ("eval", "fused", "own"):
            got = models[key](x)
            if not torch.allclose(got, expected, atol=1e-3, rtol=1e-3):
                raise RuntimeError(f"{key} {pair.name} disagrees with the reference "
                                   f"(max diff {(got - expected).abs().max():.3g})")
        for _ in range(rounds):
            for m in models.values():
                m(x)  # warm-up of this round
            for key, m in models.items():
                for _ in range(per_round):
                    t0 = time.perf_counter()
                    m(x)
                    times[key].append(time.perf_counter() - t0)
    ref = min(times["reference"])
    return {key: ref / min(times[key]) for key in ("eval", "fused", "own")}


def reference_cell(detector: torch.nn.Module, args: argparse.Namespace) -> str | None:
    """The 'vs reference' cell of a detector's backbone, ``'1.41x / 1.42x / 1.15x'`` (eval / fused / own layers),
    or None when not available."""
    from yolo_backbones.core.base import Backbone

    backbone = next((m for m in detector.modules() if isinstance(m, Backbone)), None)
    speedups = reference_speedups(backbone, args) if backbone is not None else None
    if speedups is None:
        return None
    return " / ".join(f"{speedups[key]:.2f}x" for key in ("eval", "fused", "own"))
