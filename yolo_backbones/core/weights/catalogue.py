"""The catalogue of pretrained ImageNet weights: which files each backbone can load, and a README table of them.

Order inside a backbone is the preference order of the name ``imagenet``. Finding a file on disk or downloading it is
:mod:`.locate`; reading it is :mod:`.read`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

__all__ = ["ALIAS", "CATALOGUE", "WeightsEntry", "available_weights", "canonical_backbone", "weights_names",
           "weights_table_markdown"]


@dataclass(frozen=True)
class WeightsEntry:
    """One pretrained checkpoint a backbone can load.

    Attributes:
        backbone: registry name, e.g. ``"efficientformer_l1"``.
        name: weights name, e.g. ``"official"``, ``"official_300d"``, ``"timm"``.
        source: ``"official"`` (the authors' release) or ``"timm"`` (timm's copy on the HF hub).
        filename: file name looked for in the weights directory and the user cache.
        key_format: naming of the keys in the file: ``"official"`` or ``"timm"``.
        url: page a person opens to get the file (Google Drive file or hub repository).
        hf_repo: Hugging Face repository id when the file can be downloaded, else ``None``.
        top1: ImageNet-1k top-1 (%) published by the authors for this file, if any.
    """

    backbone: str
    name: str
    source: str
    filename: str
    key_format: str
    url: str
    hf_repo: Optional[str] = None
    top1: Optional[float] = None

    @property
    def downloadable(self) -> bool:
        """True when step 4 (download) can fetch this file."""
        return self.hf_repo is not None

    @property
    def file_format(self) -> str:
        """File type as served: ``".safetensors"``, ``".pth"`` or ``".pth.tar"``."""
        return ".pth.tar" if self.filename.endswith(".pth.tar") else Path(self.filename).suffix

    @property
    def local_names(self) -> tuple[str, ...]:
        """File names accepted in the weights directory and the user cache (documented name first)."""
        if self.hf_repo is None:
            return (self.filename,)
        stem = self.filename[: -len(".safetensors")]
        return (self.filename, stem + ".bin")


_GDRIVE = "https://drive.google.com/file/d/{}"
_HF_PAGE = "https://huggingface.co/{}"
# variant -> [(name, file name, Google-Drive id, published top-1)], best first (official README)
_EFFICIENTFORMER: dict[str, list[tuple[str, str, str, float]]] = {
    "l1": [("official", "efficientformer_l1_1000d.pth", "11SbX-3cfqTOc247xKYubrAjBiUmr818y", 80.2),
           ("official_300d", "efficientformer_l1_300d.pth", "1wtEmkshLFEYFsX5YhBttBOGYaRvDR7nu", 79.2)],
    "l3": [("official", "efficientformer_l3_300d.pth", "1OyyjKKxDyMj-BcfInp4GlDdwLu3hc30m", 82.4)],
    "l7": [("official", "efficientformer_l7_300d.pth", "1cVw-pctJwgvGafeouynqWWCwgkcoFMM5", 83.3)],
}
_EFFICIENTFORMERV2: dict[str, tuple[str, str, float]] = {  # 450-epoch checkpoints, the only ones released
    "s0": ("eformer_s0_450.pth", "1PXb7b9pv9ZB4cfkRkYEdwgWuVwvEiazq", 76.2),
    "s1": ("eformer_s1_450.pth", "1EKe1vt-3mG7iceVIMaET_DyISzVTJMn8", 79.7),
    "s2": ("eformer_s2_450.pth", "1gjbFyB5T_yAkmzHNuXEljqScYVQZafMQ", 82.0),
    "l": ("eformer_l_450.pth", "1sRXNBHl_ewHBMwwYZVsOJo1k6JpcNJn-", 83.5),
}
_MOBILEFORMER: dict[str, tuple[str, float]] = {
    "508m": ("1bqLIcpbCaxK-Eb4wcxk0iJpFJ1nXfGuF", 79.3),
    "294m": ("1JBSM7NJ60fN9TgT5sMnbhmbZwrzcBd0r", 77.9),
    "214m": ("13MOjdIMMBJgqyq_ld-grRhBBHOFU5Ggd", 76.7),
    "151m": ("1w4QO-zhJ8QI1zGu7iOZ7lXxYJ5G1VXdF", 75.2),
    "96m": ("1kMbRceswujtliCHKr-nxMFsrkvBrEfrW", 72.8),
    "52m": ("1ekq_FPl57gjIlYX16Ll0nBuEyB0pjgGt", 68.7),
    "26m": ("15uWYzx2VWWUjacZQHB56vOHzKxQDlp5O", 64.0),
}
_EDGEVIT = ("xxs", "xs", "s")  # no released weights (saic-fi/edgevit issues #1, #5, #6, #8)
ALIAS = "imagenet"


def _official(backbone: str, name: str, filename: str, drive_id: str, top1: float) -> WeightsEntry:
    return WeightsEntry(backbone, name, "official", filename, "official", _GDRIVE.format(drive_id), top1=top1)


def _timm(backbone: str) -> WeightsEntry:
    repo = f"timm/{backbone}.snap_dist_in1k"
    return WeightsEntry(backbone, "timm", "timm", f"{backbone}.snap_dist_in1k.safetensors", "timm",
                        _HF_PAGE.format(repo), hf_repo=repo)


def _build_catalogue() -> dict[str, tuple[WeightsEntry, ...]]:
    # Order inside a backbone = preference order of `imagenet`: the best official file, then timm's
    # copy (downloadable), then older official files.
    cat: dict[str, tuple[WeightsEntry, ...]] = {f"edgevit_{v}": () for v in _EDGEVIT}
    for variant, (drive_id, top1) in _MOBILEFORMER.items():
        bb = f"mobileformer_{variant}"
        cat[bb] = (_official(bb, "official", f"mobile-former-{variant}.pth.tar", drive_id, top1),)
    for variant, files in _EFFICIENTFORMER.items():
        bb = f"efficientformer_{variant}"
        best, *older = [_official(bb, *f) for f in files]
        cat[bb] = (best, _timm(bb), *older)
    for variant, (filename, drive_id, top1) in _EFFICIENTFORMERV2.items():
        bb = f"efficientformerv2_{variant}"
        cat[bb] = (_official(bb, "official", filename, drive_id, top1), _timm(bb))
    return cat


CATALOGUE = _build_catalogue()


def canonical_backbone(backbone: str) -> str:
    """Catalogue (registry) name name for ``backbone``, tolerant of case, ``-`` and ``_`` (``Mobile-Former_52M``)."""
    def squash(s: str) -> str:
        return re.sub(r"[-_\s]", "", s.lower())
    for name in CATALOGUE:
        if squash(name) == squash(str(backbone)):
            return name
    raise ValueError(f"unknown backbone {backbone!r}; known backbones: {', '.join(CATALOGUE)}")


def available_weights() -> dict[str, list[WeightsEntry]]:
    """Every registered backbone -> its pretrained entries, best first (``[]`` for EdgeViT)."""
    return {bb: list(entries) for bb, entries in CATALOGUE.items()}


def weights_names(backbone: str) -> list[str]:
    """Weights names ``backbone`` accepts, ``imagenet`` first; ``[]`` when it has none (EdgeViT)."""
    entries = CATALOGUE[canonical_backbone(backbone)]
    return [ALIAS, *(e.name for e in entries)] if entries else []



def weights_table_markdown() -> str:
    """A README table: one row per (backbone, weights), EdgeViT rows saying there are none."""
    rows = ["| Backbone | Name | Source | Format, keys | ImageNet top-1 | How to get it |",
            "|---|---|---|---|---|---|"]
    for bb, entries in CATALOGUE.items():
        if not entries:
            rows.append(f"| `{bb}` | – | none released | – | – | train from scratch or pass your own checkpoint |")
            continue
        for rank, e in enumerate(entries):
            name = f"`{e.name}` (imagenet #{rank + 1})" if len(entries) > 1 else f"`{e.name}` = `imagenet`"
            source = "authors, Google Drive" if e.source == "official" else "timm, Hugging Face hub"
            top1 = f"{e.top1:.1f}" if e.top1 is not None else "–"
            how = (f"automatic (`{e.hf_repo}`)" if e.downloadable
                   else f"[browser download]({e.url}), save as `{e.filename}`")
            rows.append(f"| `{bb}` | {name} | {source} | `{e.file_format}`, {e.key_format} | {top1} | {how} |")
    return "\n".join(rows) + "\n"
