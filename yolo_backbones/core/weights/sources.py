"""Pretrained ImageNet weights by name: the catalogue, where a name is looked for, and reading the file.

``resolve_weights(backbone, weights)`` turns what a user wrote into a local file. ``weights`` is
either a path (any existing file, or anything that is not a plain name such as ``imagenet``),
used as it is, or a weights **name** that the backbone offers (see :func:`weights_names`):
``official``, ``official_300d``, ``timm``, or ``imagenet`` = the best of them that is available.

A name is resolved in this order, stopping at the first file found:

1. ``$YOLO_BACKBONES_WEIGHTS/<file name>``, when the variable is set;
2. the user cache, ``$XDG_CACHE_HOME/yolo_backbones/<file name>`` (default
   ``~/.cache/yolo_backbones``);
3. the Hugging Face hub cache (``$HF_HUB_CACHE``, default ``~/.cache/huggingface/hub``), read
   offline: timm's EfficientFormer weights that timm or an earlier run already downloaded;
4. a download of timm's weights from the Hugging Face hub (into its cache), unless
   ``YOLO_BACKBONES_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``. The official checkpoints are Google-Drive
   links that only a browser can fetch: the error names the link and the path to save the file as.

``<file name>`` is the entry's :attr:`WeightsEntry.filename` (the authors' own file name, or
``<timm hub name>.safetensors`` / ``.bin`` for timm's). ``imagenet`` stands for all of a
backbone's entries in order of preference; each step tries them in that order before the next
step. EdgeViT has no released weights. Every failure is one exception with a one-line message
that says what is missing, where it was looked for and what to do; network waits are bounded
by :data:`ETAG_TIMEOUT` / :data:`HTTP_TIMEOUT`.

:func:`read_weights_file` reads the file (``.safetensors``, or a torch pickle holding a raw or
wrapped state dict) into a flat ``{key: tensor}`` dict. The entry returned by
:func:`locate_weights` tells which key names it holds (``official`` or ``timm``).

This module imports only the stdlib, torch, the restricted loader (``safe_load``, which every torch
pickle goes through) and lazily safetensors / huggingface_hub, so the backbones and the CLI can import
it without import cycles.
"""
from __future__ import annotations

import hashlib
import os
import re
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import torch

from .safe_load import CheckpointFileError, UntrustedCheckpointError, load_checkpoint

__all__ = [
    "WeightsEntry", "ResolvedWeights", "WeightsNotFoundError", "WeightsDownloadError", "WeightsFileError",
    "resolve_weights", "locate_weights", "read_weights_file", "available_weights", "weights_names",
    "weights_table_markdown", "guess_key_format", "user_cache_dir", "hf_cache_dir",
    "WEIGHTS_DIR_ENV", "OFFLINE_ENV", "ETAG_TIMEOUT", "HTTP_TIMEOUT",
]

WEIGHTS_DIR_ENV = "YOLO_BACKBONES_WEIGHTS"
OFFLINE_ENV = "YOLO_BACKBONES_OFFLINE"
# Seconds the hub may take to answer the metadata request of hf_hub_download (its read timeout is
# huggingface_hub's own HF_HUB_DOWNLOAD_TIMEOUT, 10 s by default).
ETAG_TIMEOUT = 10.0
# Seconds without progress (connect or any read) before the plain-HTTP download gives up.
HTTP_TIMEOUT = 20.0
HF_FILENAMES = ("model.safetensors", "pytorch_model.bin")  # what timm's hub repos hold, preferred first
# Training checkpoints wrap the weights; the authors' own loaders read `model` (EfficientFormer)
# and `state_dict` (Mobile-Former / timm train.py), so those win over the EMA copies.
WRAPPER_KEYS = ("model", "state_dict", "model_ema", "state_dict_ema")

PathLike = Union[str, "os.PathLike[str]"]


class WeightsNotFoundError(FileNotFoundError):
    """The weights a path or name asks for are not on this machine (or the name is unknown)."""


class WeightsDownloadError(WeightsNotFoundError):
    """The weights are not on this machine and could not be downloaded (offline, HTTP error, timeout)."""


class WeightsFileError(RuntimeError):
    """A weights file exists but holds no readable state dict (empty, truncated, not a checkpoint)."""


class DamagedWeightsFileError(WeightsFileError, CheckpointFileError):
    """A torch pickle the restricted loader cannot read (truncated, damaged): both error kinds."""

    def __init__(self, message: str, path: str | None = None) -> None:
        CheckpointFileError.__init__(self, message, path)


class RefusedWeightsFileError(WeightsFileError, UntrustedCheckpointError):
    """A torch pickle asking for something the restricted loader refuses; nothing from it ran."""

    def __init__(self, message: str, global_name: str | None = None) -> None:
        UntrustedCheckpointError.__init__(self, message, global_name)


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


@dataclass(frozen=True)
class ResolvedWeights:
    """Result of :func:`locate_weights`: the file, and the catalogue entry it is (``None`` for a path)."""

    path: Path
    entry: Optional[WeightsEntry]


# ---------------------------------------------------------------- catalogue
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
_ALIAS = "imagenet"


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


_CATALOGUE = _build_catalogue()


def _canonical_backbone(backbone: str) -> str:
    """Registry name for ``backbone``, tolerant of case, ``-`` and ``_`` (``Mobile-Former_52M``)."""
    def squash(s: str) -> str:
        return re.sub(r"[-_\s]", "", s.lower())
    for name in _CATALOGUE:
        if squash(name) == squash(str(backbone)):
            return name
    raise ValueError(f"unknown backbone {backbone!r}; known backbones: {', '.join(_CATALOGUE)}")


def available_weights() -> dict[str, list[WeightsEntry]]:
    """Every registered backbone -> its pretrained entries, best first (``[]`` for EdgeViT)."""
    return {bb: list(entries) for bb, entries in _CATALOGUE.items()}


def weights_names(backbone: str) -> list[str]:
    """Weights names ``backbone`` accepts, ``imagenet`` first; ``[]`` when it has none (EdgeViT)."""
    entries = _CATALOGUE[_canonical_backbone(backbone)]
    return [_ALIAS, *(e.name for e in entries)] if entries else []


# ---------------------------------------------------------------- locations
def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _offline() -> bool:
    return _env_flag(OFFLINE_ENV) or _env_flag("HF_HUB_OFFLINE")


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/yolo_backbones``, default ``~/.cache/yolo_backbones`` (may not exist yet)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "yolo_backbones"


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (huggingface_hub reads it at import)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "huggingface" / "hub"


def _local_dirs() -> list[Path]:
    """Steps 1 and 2, in order."""
    env = os.environ.get(WEIGHTS_DIR_ENV)
    return ([Path(env).expanduser()] if env else []) + [user_cache_dir()]


def _save_dir() -> Path:
    """Where the user is told to put a file: the weights directory if set, else the user cache."""
    return _local_dirs()[0]


def _from_hf_cache(repo: str, filename: str, cache: Path) -> Optional[Path]:
    """Step 3: the snapshot file of ``repo``'s ``main`` revision in the hub cache, without network."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # same lookup by hand: refs/main names the snapshot folder
        repo_dir = cache / ("models--" + repo.replace("/", "--"))
        ref = repo_dir / "refs" / "main"
        if not ref.is_file():
            return None
        found = repo_dir / "snapshots" / ref.read_text().strip() / filename
        return found if found.is_file() else None
    found = try_to_load_from_cache(repo, filename, cache_dir=str(cache))
    return Path(found) if isinstance(found, str) and Path(found).is_file() else None


# ---------------------------------------------------------------- downloads
def _hf_hub_download(repo: str, filename: str, cache: Path) -> Path:
    """Download via huggingface_hub into its cache (honours HF_TOKEN, HF_ENDPOINT, proxies)."""
    from huggingface_hub import hf_hub_download
    return Path(hf_hub_download(repo, filename, cache_dir=str(cache), etag_timeout=ETAG_TIMEOUT))


def _is_missing_remote_file(exc: BaseException) -> bool:
    """404 for one file of a repository that exists: try the next of HF_FILENAMES."""
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code == 404
    try:
        from huggingface_hub.utils import EntryNotFoundError
    except ImportError:
        return False
    return isinstance(exc, EntryNotFoundError)


def _http_download(url: str, dest: Path, sha256: Optional[str] = None) -> Path:
    """Plain-HTTP download of ``url`` to ``dest`` (used when huggingface_hub is not installed).

    Writes ``dest.<pid>.part`` and renames it when complete, so an interrupted download never leaves a
    truncated file under the final name. The content is checked against ``sha256`` if given, else
    against the SHA-256 the Hugging Face hub sends for LFS files (``X-Linked-ETag``).

    Raises:
        urllib.error.URLError / OSError / TimeoutError: on HTTP errors, dead connections and after
            :data:`HTTP_TIMEOUT` seconds without progress.
        ValueError: when the content does not match the expected SHA-256.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f"{dest.name}.{os.getpid()}.part")  # per process: DDP ranks may race
    request = urllib.request.Request(url, headers={"User-Agent": "yolo-backbones"})
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response, open(part, "wb") as out:
            linked = (response.headers.get("X-Linked-ETag") or "").strip('"').lower()
            expected = (sha256 or (linked if re.fullmatch(r"[0-9a-f]{64}", linked) else "")).lower()
            while chunk := response.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
        if expected and digest.hexdigest() != expected:
            raise ValueError(f"SHA-256 mismatch: got {digest.hexdigest()}, expected {expected}")
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)
    return dest


def _download(entry: WeightsEntry) -> Path:
    """Step 4 for one downloadable entry; raises WeightsDownloadError with a one-line message."""
    assert entry.hf_repo is not None
    target = _save_dir() / entry.filename
    try:
        import huggingface_hub  # noqa: F401
        use_hub = True
    except ImportError:
        use_hub = False
    errors = []
    for filename in HF_FILENAMES:
        try:
            if use_hub:
                return _hf_hub_download(entry.hf_repo, filename, hf_cache_dir())
            endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
            dest = target if filename.endswith(".safetensors") else target.with_name(entry.local_names[1])
            return _http_download(f"{endpoint}/{entry.hf_repo}/resolve/main/{filename}", dest)
        except Exception as e:  # noqa: BLE001 - every failure becomes one clear line below
            if _is_missing_remote_file(e):
                errors.append(f"{filename}: not in the repository")
                continue
            errors.append(f"{filename}: {_first_line(e)}")
            break
    raise WeightsDownloadError(
        f"could not download {entry.backbone} weights {entry.name!r} from {entry.url} "
        f"({'; '.join(errors)}); download {entry.url}/resolve/main/{HF_FILENAMES[0]} by other means and "
        f"save it as {target}") from None


# ---------------------------------------------------------------- resolution
def _is_name(weights: Any) -> bool:
    return isinstance(weights, str) and re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", weights) is not None


def _first_line(exc: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()  # torch colours some messages
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def locate_weights(backbone: str, weights: PathLike) -> ResolvedWeights:
    """Like :func:`resolve_weights`, and also return the catalogue entry the file is (``None`` for a path).

    Use ``entry.key_format`` (``"official"`` / ``"timm"``) to pick the key converter; for a path,
    :func:`guess_key_format` on the loaded keys.
    """
    if not _is_name(weights) or Path(weights).is_file():
        path = Path(weights).expanduser()
        if path.is_file():
            return ResolvedWeights(path, None)
        raise WeightsNotFoundError(f"weights file not found: {path} (give an existing .pth/.pth.tar/.pt/.bin/"
                                   f".safetensors file, or a weights name such as {_ALIAS!r})")
    bb = _canonical_backbone(backbone)
    entries = _CATALOGUE[bb]
    name = str(weights).lower()
    if not entries:
        raise WeightsNotFoundError(
            f"{bb} has no released pretrained weights (the EdgeViT authors published none), so {weights!r} "
            f"cannot be resolved: train from scratch, or pass the path of your own checkpoint")
    candidates = list(entries) if name == _ALIAS else [e for e in entries if e.name == name]
    if not candidates:
        raise WeightsNotFoundError(f"{bb} offers no weights named {weights!r} and no such file exists; "
                                   f"names: {', '.join(weights_names(bb))}")

    looked: list[str] = []
    for folder in _local_dirs():  # steps 1 and 2
        for entry in candidates:
            for filename in entry.local_names:
                if (folder / filename).is_file():
                    return ResolvedWeights(folder / filename, entry)
        looked.append(str(folder))
    hub = [e for e in candidates if e.downloadable]
    cache = hf_cache_dir()
    for entry in hub:  # step 3
        for filename in HF_FILENAMES:
            found = _from_hf_cache(entry.hf_repo, filename, cache)
            if found is not None:
                return ResolvedWeights(found, entry)
    if hub:
        looked.append(f"Hugging Face cache {cache}")
    where = f"looked in {', '.join(looked)}"
    # at most two suggestions: the download, and the best file a browser can get
    suggested = hub[:1] + [e for e in candidates if not e.downloadable][:1]
    manual = ", or ".join(_manual_step(e) for e in sorted(suggested, key=candidates.index))

    if hub and _offline():  # step 4, skipped
        flag = OFFLINE_ENV if _env_flag(OFFLINE_ENV) else "HF_HUB_OFFLINE"
        raise WeightsDownloadError(
            f"{bb} weights {weights!r} are not on this machine and downloads are off ({flag}=1; {where}): "
            f"unset {flag} to download {hub[0].hf_repo}, or {manual}")
    if hub:
        try:
            return ResolvedWeights(_download(hub[0]), hub[0])
        except WeightsDownloadError as e:
            raise WeightsDownloadError(f"{e} ({where})") from None
    raise WeightsNotFoundError(f"{bb} weights {weights!r} are not on this machine and cannot be downloaded "
                               f"by a script ({where}): {manual}")


def _manual_step(entry: WeightsEntry) -> str:
    target = _save_dir() / entry.filename
    if entry.downloadable:
        return f"save {entry.url}/resolve/main/{HF_FILENAMES[0]} as {target}"
    return f"open {entry.url} in a browser and save the file as {target}"


def resolve_weights(backbone: str, weights: PathLike) -> Path:
    """Return the local file for ``weights`` (a path, or a name ``backbone`` offers).

    Args:
        backbone: registry name, e.g. ``"efficientformerv2_s0"`` (case, ``-`` and ``_`` are ignored).
        weights: a path to a local ``.pth``/``.pth.tar``/``.pt``/``.bin``/``.safetensors`` file, or a
            name from :func:`weights_names` (``imagenet``, ``official``, ``official_300d``, ``timm``).

    Returns:
        Path of an existing file (resolution order in the module docstring).

    Raises:
        WeightsNotFoundError: missing path, unknown name (the message lists the names), EdgeViT,
            or an official file that must be fetched by hand (the message gives link and target path).
        WeightsDownloadError: not found locally and the download is off or failed.
        ValueError: unknown backbone.
    """
    return locate_weights(backbone, weights).path


# ---------------------------------------------------------------- reading
def _looks_like_safetensors(path: Path) -> bool:
    """safetensors files start with an 8-byte little-endian header length and a JSON ``{``."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return False
    return 2 <= int.from_bytes(head[:8], "little") <= path.stat().st_size - 8


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(torch.is_tensor(v) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj or not all(torch.is_tensor(v) for v in obj.values()):
        raise WeightsFileError(f"{path} holds no state dict of tensors (looked at the top level and under "
                               f"{', '.join(WRAPPER_KEYS)}): pass a checkpoint of the backbone's weights")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def read_weights_file(path: PathLike) -> dict[str, torch.Tensor]:
    """Read a weights file into a flat ``{key: tensor}`` dict on the CPU.

    Args:
        path: a ``.safetensors`` file (recognised by its header, whatever its suffix), or a torch
            pickle (``.pth``, ``.pth.tar``, ``.pt``, ``.bin``), read by the project's restricted loader
            (:func:`yolo_backbones.load_checkpoint`, which never runs code from the file).

    Returns:
        The state dict: a raw one, or the one under ``model`` / ``state_dict`` / ``model_ema`` /
        ``state_dict_ema`` (first match), with a DistributedDataParallel ``module.`` prefix removed.

    Raises:
        WeightsNotFoundError: no such file.
        WeightsFileError: empty, truncated, not a checkpoint, or holding no tensors (one line:
            the file, the cause, the fix).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsNotFoundError(f"weights file not found: {path}")
    if path.stat().st_size == 0:
        raise WeightsFileError(f"{path} is empty (0 bytes; an interrupted download?): delete it and get the file again")
    redo = "delete it and get the file again (truncated download?) or pass a .pth/.safetensors checkpoint"
    if _looks_like_safetensors(path):
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise WeightsFileError(f"{path} is a safetensors file and the safetensors package is missing: "
                                   f"pip install safetensors") from None
        try:
            return _unwrap(load_file(str(path), device="cpu"), path)
        except WeightsFileError:
            raise
        except Exception as e:
            raise WeightsFileError(f"{path} cannot be read as safetensors ({_first_line(e)}): {redo}") from e
    return _unwrap(_load_pickle_safely(path), path)


def _load_pickle_safely(path: Path) -> Any:
    """Unpickle ``path`` with the project's restricted loader, its refusals turned into one-line
    :class:`WeightsFileError` s (the file, the cause, the fix)."""
    try:
        return load_checkpoint(path, map_location="cpu")
    except UntrustedCheckpointError as e:
        raise RefusedWeightsFileError(str(e), e.global_name) from None  # the loader's own one-line message
    except CheckpointFileError as e:
        raise DamagedWeightsFileError(f"{e}; or pass a different .pth/.safetensors checkpoint", str(path)) from None


def guess_key_format(keys: Any) -> str:
    """``"timm"`` if the keys use timm's EfficientFormer layout (``stages.*``), else ``"official"``."""
    return "timm" if any(str(k).startswith("stages.") for k in keys) else "official"


# ---------------------------------------------------------------- documentation
def weights_table_markdown() -> str:
    """A README table: one row per (backbone, weights), EdgeViT rows saying there are none."""
    rows = ["| Backbone | Name | Source | Format, keys | ImageNet top-1 | How to get it |",
            "|---|---|---|---|---|---|"]
    for bb, entries in _CATALOGUE.items():
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
