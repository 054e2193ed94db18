"""The packages of the ``edge`` extra: import them, or fail in one line that names the extra.

Nothing is pip-installed at run time (the hosts' own ``check_requirements`` are blocked from installing, see
``hosts/*/offline``); a format whose converter or runtime is missing raises :class:`EdgeExtraMissingError`.
"""
from __future__ import annotations

import importlib
import types

__all__ = ["EDGE_EXTRA", "FORMAT_PACKAGES", "EdgeExtraMissingError", "import_edge", "DELIBERATE_VERSIONS"]

EDGE_EXTRA = "pip install 'yolo-backbones[edge]'"

# format -> (import name, PyPI name) of each package it needs to convert or run
FORMAT_PACKAGES: dict[str, tuple[tuple[str, str], ...]] = {
    "litert": (("litert_torch", "litert-torch"), ("ai_edge_litert", "ai-edge-litert")),
    "coreml": (("coremltools", "coremltools"),),
    "ncnn": (("pnnx", "pnnx"), ("ncnn", "ncnn")),
    "executorch": (("executorch", "executorch"),),
    "mnn": (("MNN", "MNN"),),
}

# Versions the extra pins on purpose although a host's own check asks for another one (the host's check would
# otherwise warn on every export): ultralytics asks for pnnx==20260526, which cannot convert EfficientFormerV2
# (no `view_as`); the extra's pnnx 20261020 can, and runs ultralytics' own models too.
DELIBERATE_VERSIONS = {
    "pnnx": "the edge extra's pnnx converts EfficientFormerV2 (ultralytics' pinned 20260526 does not)"}


class EdgeExtraMissingError(ImportError):
    """A converter or runtime of the ``edge`` extra is not installed (printed as one line by the CLIs)."""


def import_edge(module: str, purpose: str) -> types.ModuleType:
    """Import ``module`` (e.g. ``"litert_torch"``) or raise :class:`EdgeExtraMissingError` naming the extra.

    Args:
        module: import name of a package of the ``edge`` extra.
        purpose: what needs it, for the message (e.g. ``"LiteRT export"``).
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        pypi = {name: dist for pkgs in FORMAT_PACKAGES.values() for name, dist in pkgs}.get(module.split(".")[0],
                                                                                          module)
        raise EdgeExtraMissingError(f"{purpose} needs the `{pypi}` package, which is not installed ({exc}): "
                                    f"{EDGE_EXTRA}") from exc
