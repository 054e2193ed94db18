"""Layers kept in floating point under INT8, per backbone family, with the measurement that chose each.

A :class:`KeepRule` matches PyTorch module paths (as :func:`~yolo_backbones.deploy.int8.openvino.module_path`
reads them from exported graphs) by a regular expression searched in the path, either the whole path
(``model.0.blocks1.0.attn.qkv``; ``model.0`` is the backbone row on both hosts) or the path below the Detect head
(``cv3.0.2``), which the graph itself locates, so one rule covers every model YAML of a host. docs/int8.md has the
measurements behind each rule.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["HEAD_SCORE_BRANCH", "KEEP_FP32", "KeepRule"]


@dataclass(frozen=True)
class KeepRule:
    """Module paths matching ``pattern`` (``re.search``) stay in floating point; ``why`` cites the measurement.

    ``within``: ``"model"`` matches the whole module path, ``"head"`` the path below the Detect head's row.
    """

    pattern: str
    why: str
    within: str = "model"
    _regex: re.Pattern = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.within not in ("model", "head"):
            raise ValueError(f"KeepRule.within must be 'model' or 'head', not {self.within!r}")
        object.__setattr__(self, "_regex", re.compile(self.pattern))

    def matches(self, path: str, head: str | None = None) -> bool:
        """True if module ``path`` (e.g. ``model.0.blocks1.0.SelfAttn.attn.qkv``) is kept in floating point.

        ``head``: the Detect head's module path (``model.23``), needed by ``within="head"`` rules.
        """
        if self.within == "head":
            if head is None or not path.startswith(f"{head}."):
                return False
            path = path[len(head) + 1:]
        return self._regex.search(path) is not None


#: Kept in floating point by default. Empty: every model measured reaches the targets of docs/int8.md (score cosine
#: >= 0.99, agreement mAP50 >= 0.9) with all its convolutions and matrix products in INT8, and the region experiments
#: found the remaining error in the YOLO neck and head rather than in the attention backbones (yolo11_edgevit: whole
#: backbone in FP32 moves the score cosine from 0.9737 to 0.9740; neck and head in FP32 to 0.9997).
KEEP_FP32: tuple[KeepRule, ...] = ()

#: Opt-in: the class-score branch of ultralytics Detect heads (``cv3``, ``one2one_cv3``) in floating point. Measured on
#: yolo11_edgevit: score SQNR 28.8 -> 32.4 dB (full fit), 10.9 -> 13.3 dB (weaker 128 px fit); its speed cost is
#: not measured. ``quantize_openvino(model, images, keep_fp32=(*KEEP_FP32, HEAD_SCORE_BRANCH))``.
HEAD_SCORE_BRANCH = KeepRule(r"^(one2one_)?cv3\.", "docs/int8.md: score SQNR +3.6 dB on yolo11_edgevit", "head")
