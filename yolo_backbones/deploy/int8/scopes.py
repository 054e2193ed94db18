"""Layers kept in floating point under INT8, per backbone family, with the measurement that chose each.

A :class:`KeepRule` matches PyTorch module paths (as :func:`~yolo_backbones.deploy.int8.openvino.module_path`
reads them from exported graphs) by a regular expression searched in the path, so one rule covers every
variant and both hosts (``model.0`` is the backbone row on both). docs/int8.md has the sensitivity tables.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["KEEP_FP32", "KeepRule"]


@dataclass(frozen=True)
class KeepRule:
    """Module paths matching ``pattern`` (``re.search``) stay in floating point; ``why`` cites the measurement."""

    pattern: str
    why: str
    _regex: re.Pattern = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_regex", re.compile(self.pattern))

    def matches(self, path: str) -> bool:
        """True if ``path`` (e.g. ``model.0.blocks1.0.SelfAttn.attn.qkv``) is kept in floating point."""
        return self._regex.search(path) is not None


KEEP_FP32: tuple[KeepRule, ...] = ()
