"""Exported models' metadata read by ultralytics' ``AutoBackend`` as checked data.

ultralytics reads an export's metadata (ONNX / CoreML metadata maps, TorchScript and TFLite zip entries,
``metadata.yaml`` beside OpenVINO / NCNN / Paddle / ... exports) with ``ast.literal_eval`` / JSON / YAML, then
sets *every* key as an attribute of its backend. :func:`patch_exported_metadata`:

* ``BaseBackend.read_metadata``: a metadata member or file over :data:`MAX_METADATA_BYTES` (e.g. a compressed
  zip entry that would expand to gigabytes) is refused with one :class:`MetadataError` line;
* ``BaseBackend.apply_metadata``: only the keys ultralytics' exporter writes are kept (others are logged and
  dropped: a file may not set arbitrary attributes of the backend); ``names`` must be a list or ``{int: str}``
  of strings (each made a safe file-name component: ``save_crop`` makes folders of them), ``stride`` / ``batch``
  / ``channels`` ints, ``imgsz`` / ``kpt_shape`` lists of ints, ``args`` a dict of plain values.
"""
from __future__ import annotations

import contextvars
import logging
import sys
import zipfile
from pathlib import Path
from typing import Any, Callable

from ...core.weights.metadata import MAX_METADATA_BYTES, MetadataError, check_names, check_stride, parse_literal
from ..common.patching import say_once

__all__ = ["patch_exported_metadata", "check_metadata"]

_LOG = logging.getLogger("ultralytics")
_SOURCE: contextvars.ContextVar[str] = contextvars.ContextVar("yolo_backbones_metadata_source",
                                                              default="the exported model")
_FLAG = "_yolo_backbones_checked"
_TEXT_KEYS = ("description", "author", "date", "version", "license", "docs", "task", "head", "dla")


def _ints(value: Any, source: str, key: str) -> list[int]:
    value = parse_literal(value, source, key)
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not (isinstance(value, (list, tuple)) and all(type(v) is int and 0 <= v <= 1 << 16 for v in value)):
        raise MetadataError(f"{source}: its {key} metadata is not a list of integers; re-export the model")
    return list(value)


def _int(value: Any, source: str, key: str) -> int:
    try:
        out = int(value)
    except (TypeError, ValueError):
        out = -1
    if isinstance(value, bool) or not 0 <= out <= 1 << 16:
        raise MetadataError(f"{source}: its {key} metadata {str(value)[:20]!r} is not a small integer; re-export")
    return out


def _plain_dict(value: Any, source: str, key: str) -> dict:
    from ...core.weights.safe_load.attributes import is_plain

    value = parse_literal(value, source, key)
    if not (isinstance(value, dict) and all(isinstance(k, str) for k in value) and is_plain(value)):
        raise MetadataError(f"{source}: its {key} metadata is not a dict of plain values; re-export the model")
    return value


def check_metadata(metadata: dict, source: str) -> dict:
    """ultralytics export metadata, filtered to the exporter's keys and type-checked (see the module doc)."""
    if not isinstance(metadata, dict):
        raise MetadataError(f"{source}: its metadata is a {type(metadata).__name__}, not a mapping; re-export")
    out: dict[str, Any] = {}
    dropped = []
    for key, value in metadata.items():
        if key in _TEXT_KEYS:
            out[key] = str(value)[:4096]
        elif key == "stride":
            out[key] = check_stride(value, source)
        elif key in ("batch", "channels"):
            out[key] = _int(value, source, key)
        elif key in ("imgsz", "kpt_shape"):
            out[key] = _ints(value, source, key)
        elif key == "names":
            out[key] = check_names(parse_literal(value, source, key), source)
        elif key == "kpt_names":
            out[key] = parse_literal(value, source, key)
            _plain_dict({"k": out[key]}, source, key)
        elif key == "args":
            out[key] = _plain_dict(value, source, key)
        elif key == "end2end":
            out[key] = bool(parse_literal(value, source, key))
        else:
            dropped.append(str(key)[:40])
    if dropped:
        say_once(f"metadata:{source}:{dropped}", f"{source}: ignoring metadata keys ultralytics' exporter does not "
                 f"write: {', '.join(dropped)}", _LOG, logging.WARNING)
    return out


def _zip_member_sizes_ok(path: Path) -> None:
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            name = info.filename
            if (name == "metadata.json" or name.endswith("extra/config.txt") or info is z.infolist()[0]) \
                    and info.file_size > MAX_METADATA_BYTES:
                raise MetadataError(f"{path}: its metadata member {name[:60]!r} is {info.file_size} bytes (limit "
                                    f"{MAX_METADATA_BYTES}); re-export the model")


def _make_read_metadata(original: Callable) -> Callable:
    def read_metadata(file: Any) -> dict:
        """ultralytics' ``read_metadata`` with its inputs bounded in size (see the module doc)."""
        path = Path(file)
        _SOURCE.set(str(path))
        suffix = path.suffix.lower()
        if suffix in (".tflite", ".torchscript") and path.is_file():
            try:
                _zip_member_sizes_ok(path)
            except zipfile.BadZipFile:
                pass
        sidecar = (path if path.is_dir() else path.parent) / "metadata.yaml"
        if sidecar.is_file() and sidecar.stat().st_size > MAX_METADATA_BYTES:
            raise MetadataError(f"{sidecar}: {sidecar.stat().st_size} bytes of metadata (limit {MAX_METADATA_BYTES})")
        return original(file)

    read_metadata.__wrapped__ = original
    return read_metadata


def _make_apply_metadata(original: Callable) -> Callable:
    def apply_metadata(self: Any, metadata: dict | None) -> None:
        """ultralytics' ``apply_metadata`` on :func:`check_metadata`'s result."""
        if not metadata:
            return original(self, metadata)
        return original(self, check_metadata(metadata, _SOURCE.get()))

    apply_metadata.__wrapped__ = original
    return apply_metadata


def patch_exported_metadata() -> None:
    """Wrap ``BaseBackend.read_metadata`` / ``apply_metadata`` if ``ultralytics.nn.backends.base`` is loaded (once)."""
    module = sys.modules.get("ultralytics.nn.backends.base")
    base = getattr(module, "BaseBackend", None)
    if not isinstance(base, type) or base.__dict__.get(_FLAG):
        return
    if isinstance(base.__dict__.get("read_metadata"), staticmethod):
        base.read_metadata = staticmethod(_make_read_metadata(base.__dict__["read_metadata"].__func__))
    if callable(base.__dict__.get("apply_metadata")):
        base.apply_metadata = _make_apply_metadata(base.apply_metadata)
    setattr(base, _FLAG, True)
