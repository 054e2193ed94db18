"""Where pretrained weights are looked for, and their download: a path or a weights name -> a local file.

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

The catalogue of names is :mod:`.catalogue`; reading the file is :mod:`.read`.
"""
from __future__ import annotations

import hashlib
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from .catalogue import ALIAS, CATALOGUE, WeightsEntry, canonical_backbone, weights_names

__all__ = ["ETAG_TIMEOUT", "HTTP_TIMEOUT", "OFFLINE_ENV", "WEIGHTS_DIR_ENV", "ResolvedWeights", "WeightsDownloadError",
           "WeightsNotFoundError", "first_line", "hf_cache_dir", "locate_weights", "resolve_weights",
           "user_cache_dir"]

WEIGHTS_DIR_ENV = "YOLO_BACKBONES_WEIGHTS"
OFFLINE_ENV = "YOLO_BACKBONES_OFFLINE"
# Seconds the hub may take to answer the metadata request of hf_hub_download (its read timeout is
# huggingface_hub's own HF_HUB_DOWNLOAD_TIMEOUT, 10 s by default).
ETAG_TIMEOUT = 10.0
# Seconds without progress (connect or any read) before the plain-HTTP download gives up.
HTTP_TIMEOUT = 20.0
HF_FILENAMES = ("model.safetensors", "pytorch_model.bin")  # what timm's hub repos hold, preferred first
PathLike = Union[str, "os.PathLike[str]"]


class WeightsNotFoundError(FileNotFoundError):
    """The weights a path or name asks for are not on this machine (or the name is unknown)."""


class WeightsDownloadError(WeightsNotFoundError):
    """The weights are not on this machine and could not be downloaded (offline, HTTP error, timeout)."""


@dataclass(frozen=True)
class ResolvedWeights:
    """Result of :func:`locate_weights`: the file, and the catalogue entry it is (``None`` for a path)."""

    path: Path
    entry: Optional[WeightsEntry]


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
            errors.append(f"{filename}: {first_line(e)}")
            break
    raise WeightsDownloadError(
        f"could not download {entry.backbone} weights {entry.name!r} from {entry.url} "
        f"({'; '.join(errors)}); download {entry.url}/resolve/main/{HF_FILENAMES[0]} by other means and "
        f"save it as {target}") from None


# ---------------------------------------------------------------- resolution
def _is_name(weights: Any) -> bool:
    return isinstance(weights, str) and re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", weights) is not None


def first_line(exc: BaseException) -> str:
    """``"<ExceptionType>: <first line of its message>"`` without terminal colours."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()  # torch colours some messages
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def locate_weights(backbone: str, weights: PathLike) -> ResolvedWeights:
    """Like :func:`resolve_weights`, and also return the catalogue entry the file is (``None`` for a path).

    Use ``entry.key_format`` (``"official"`` / ``"timm"``) to pick the key converter; for a path,
    :func:`~.read.guess_key_format` on the loaded keys.
    """
    if not _is_name(weights) or Path(weights).is_file():
        path = Path(weights).expanduser()
        if path.is_file():
            return ResolvedWeights(path, None)
        raise WeightsNotFoundError(f"weights file not found: {path} (give an existing .pth/.pth.tar/.pt/.bin/"
                                   f".safetensors file, or a weights name such as {ALIAS!r})")
    bb = canonical_backbone(backbone)
    entries = CATALOGUE[bb]
    name = str(weights).lower()
    if not entries:
        raise WeightsNotFoundError(
            f"{bb} has no released pretrained weights (the EdgeViT authors published none), so {weights!r} "
            f"cannot be resolved: train from scratch, or pass the path of your own checkpoint")
    candidates = list(entries) if name == ALIAS else [e for e in entries if e.name == name]
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
