"""Recognise what a file is from its first bytes, so a file that is no checkpoint gets a one-line answer.

Runs before anything is unpickled: empty, truncated or damaged files and other formats (TorchScript,
ONNX, safetensors, images, YAML, Git LFS pointers, ...) raise :class:`CheckpointFileError`.
"""
from __future__ import annotations

import io
import os
import re
import zipfile
from typing import IO, Any, Callable

from .errors import CheckpointFileError, one_line

_LEGACY_MAGIC = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
_ZIP_MAGIC = b"PK\x03\x04"
_IMAGES = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF8", "GIF"), (b"BM", "BMP"),
           (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))
_NOT_CHECKPOINT = "is not a PyTorch checkpoint"


def name_of(f: Any) -> str:
    """The path of ``f`` (a path or file object) for messages."""
    if isinstance(f, (str, os.PathLike)):
        return os.fspath(f)  # type: ignore[return-value]
    name = getattr(f, "name", None)
    return str(name) if isinstance(name, (str, os.PathLike)) else f"<{type(f).__name__}>"


def check_file(f: Any) -> str | None:
    """Raise CheckpointFileError unless ``f`` looks like a torch checkpoint; returns 'zip' / 'legacy' / None."""
    if isinstance(f, (str, os.PathLike)):
        path = os.fspath(f)
        if not os.path.exists(path):
            raise CheckpointFileError(f"{path}: no such file", path)
        if os.path.isdir(path):
            found = [os.path.join(path, "weights", n) for n in ("best.pt", "last.pt")]
            found = [p for p in found if os.path.isfile(p)]
            tip = f"; did you mean {found[0]}?" if found else \
                "; pass the .pt file inside it (exported model folders are run by detect.py / val.py)"
            raise CheckpointFileError(f"{path}: is a directory, not a checkpoint file{tip}", path)
        try:
            size = os.path.getsize(path)
            with open(path, "rb") as fh:
                return _sniff(fh, size, path)
        except OSError as e:
            raise CheckpointFileError(f"{path}: cannot be read ({e.strerror or e})", path) from None
    if hasattr(f, "read") and hasattr(f, "seek") and hasattr(f, "tell"):
        name = name_of(f)
        try:
            start = f.tell()
            size = f.seek(0, io.SEEK_END) - start
            f.seek(start)
        except (OSError, ValueError):
            return None  # unseekable: torch will say what it can
        try:
            return _sniff(f, size, name)
        finally:
            f.seek(start)
    return None


def _sniff(fh: IO[bytes], size: int, name: str) -> str:
    def fail(what: str) -> CheckpointFileError:
        return CheckpointFileError(f"{name}: {what}", name)

    if size <= 0:
        raise fail("is empty (0 bytes); the save or download did not complete, so re-download or re-save it")
    start = fh.tell()
    head = fh.read(512)
    if head.startswith(_ZIP_MAGIC):
        fh.seek(start)
        _check_zip(fh, size, fail)
        return "zip"
    if head.startswith(_LEGACY_MAGIC):
        return "legacy"  # torch < 1.6 format: loaded through the same restricted unpickler
    if len(head) < len(_LEGACY_MAGIC) and (_ZIP_MAGIC.startswith(head) or _LEGACY_MAGIC.startswith(head)):
        raise fail(f"is truncated ({size} bytes); re-download or re-save it")
    if head[257:262] == b"ustar":
        raise fail(f"{_NOT_CHECKPOINT} but a tar archive (the format of PyTorch < 0.4, which is not supported); "
                   "re-save the checkpoint with a current torch")
    raise fail(_identify(head, size, name))


def _check_zip(fh: IO[bytes], size: int, fail: Callable[[str], CheckpointFileError]) -> None:
    try:
        with zipfile.ZipFile(fh) as zf:  # reads only the central directory at the end
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError, IndexError) as e:
        raise fail(f"is a damaged or truncated checkpoint ({size} bytes; its zip directory cannot be read: "
                   f"{one_line(e, 120)}); re-download or re-save it") from None
    names = [i.filename for i in infos]
    if any(n.endswith("/constants.pkl") or n == "constants.pkl" for n in names):
        raise fail(f"{_NOT_CHECKPOINT} but a TorchScript model (export.py --include torchscript); run it with "
                   "detect.py / val.py --weights, or torch.jit.load it")
    if not any(n.endswith("/data.pkl") or n == "data.pkl" for n in names):
        kind = "a NumPy .npz archive" if names and all(n.endswith(".npy") for n in names) else "a zip archive"
        raise fail(f"{_NOT_CHECKPOINT} but {kind} without the data.pkl a torch.save file has")
    for info in infos:
        if info.header_offset + info.compress_size > size:
            raise fail("is a damaged or truncated checkpoint (a record ends past the end of the file); "
                       "re-download or re-save it")


def _identify(head: bytes, size: int, name: str) -> str:
    """One phrase saying what a non-checkpoint file is and what to do with it."""
    for magic, kind in _IMAGES:
        if head.startswith(magic):
            return f"{_NOT_CHECKPOINT} but a {kind} image; pass images with --source"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return f"{_NOT_CHECKPOINT} but a WEBP image; pass images with --source"
    if len(head) >= 9:
        n = int.from_bytes(head[:8], "little")
        if 2 <= n <= size - 8 and head[8:9] == b"{":
            return (f"{_NOT_CHECKPOINT} but a safetensors file (tensor weights, no model); use it as pretrained "
                    "backbone weights (the weights argument of a backbone row, or create(..., pretrained=path)) "
                    "instead")
    if name.lower().endswith(".onnx") or (len(head) >= 3 and head[0] == 0x08 and 1 <= head[1] <= 30
                                          and head[2] in (0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42)):
        return (f"{_NOT_CHECKPOINT} but an ONNX model; run it with detect.py / val.py --weights (they pick the "
                "ONNX runtime by the .onnx suffix)")
    if head.startswith(b"\x89HDF"):
        return f"{_NOT_CHECKPOINT} but an HDF5 file (Keras / TensorFlow weights)"
    if head.startswith(b"\x1f\x8b"):
        return f"{_NOT_CHECKPOINT} but gzip-compressed data; decompress it first"
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return (f"{_NOT_CHECKPOINT} but a plain pickle file (not written by torch.save); re-save the object "
                "with torch.save")
    text = _as_text(head)
    if text is not None:
        if text.lstrip().startswith("version https://git-lfs"):
            return f"{_NOT_CHECKPOINT} but a Git LFS pointer; run `git lfs pull` to fetch the real file"
        if text.lstrip()[:1] == "<":
            return f"{_NOT_CHECKPOINT} but an HTML/XML page (a failed download?); download the file again"
        if re.search(r"^\s*[\w.-]+\s*:", text, re.M):
            return (f"{_NOT_CHECKPOINT} but a YAML/text file; pass model YAMLs with --cfg and dataset YAMLs "
                    "with --data")
        return f"{_NOT_CHECKPOINT} but a text file"
    return (f"{_NOT_CHECKPOINT}: its content is not recognised (starts with {head[:8].hex(' ')}); the file is "
            "corrupt or of another format, so re-download or re-save it")


def _as_text(head: bytes) -> str | None:
    if b"\x00" in head:
        return None
    for cut in range(4):  # the 512-byte head may end inside a multi-byte character
        try:
            text = head[:len(head) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
        printable = sum(c.isprintable() or c in "\r\n\t" for c in text)
        return text if text and printable >= 0.95 * len(text) else None
    return None
