"""Model metadata of exported files (``stride``, ``names``): written plainly, read as data.

Exported models are files from strangers: their metadata is parsed with ``yaml.safe_load`` / ``json`` /
``ast.literal_eval`` (never ``eval``), bounded in size, and checked: ``stride`` a positive int, ``names`` a
``{int: str}`` dict or a list of str. Anything else is a :class:`MetadataError` (one line from the CLIs).
"""
from __future__ import annotations

import ast
import json
import zipfile
from pathlib import Path
from typing import Any

import yaml

__all__ = ["MetadataError", "clean_metadata", "read_yaml_metadata", "write_yaml_metadata", "append_zip_metadata",
           "read_zip_metadata", "MAX_METADATA_BYTES"]

MAX_METADATA_BYTES = 1 << 20  # class names of any real dataset fit many times over
_MAX_CLASSES = 100_000
_MAX_STRIDE = 1024


class MetadataError(ValueError):
    """Exported-model metadata that is not the plain data the plugin writes."""


def clean_metadata(raw: Any, source: str | Path = "metadata") -> dict[str, Any]:
    """``{"stride": int, "names": {int: str}}`` (keys present in ``raw`` only) from parsed metadata.

    ``names`` may come as a dict with int or digit-string keys, or a list. Other keys are dropped.
    Raises :class:`MetadataError` for anything that is not plain data of those shapes.
    """
    if not isinstance(raw, dict):
        raise MetadataError(f"{source}: metadata is a {type(raw).__name__}, expected a mapping")
    out: dict[str, Any] = {}
    if raw.get("stride") is not None:
        stride = raw["stride"]
        if isinstance(stride, bool) or not isinstance(stride, (int, float, str)):
            raise MetadataError(f"{source}: stride must be a number, got {type(stride).__name__}")
        try:
            value = int(float(stride))
        except ValueError as exc:
            raise MetadataError(f"{source}: stride {stride!r} is not a number") from exc
        if not 0 < value <= _MAX_STRIDE:
            raise MetadataError(f"{source}: stride {value} out of range (1..{_MAX_STRIDE})")
        out["stride"] = value
    if raw.get("names") is not None:
        names = raw["names"]
        items = list(names.items()) if isinstance(names, dict) else list(enumerate(names)) \
            if isinstance(names, (list, tuple)) else None
        if items is None:
            raise MetadataError(f"{source}: names must be a mapping or a list, got {type(names).__name__}")
        if len(items) > _MAX_CLASSES:
            raise MetadataError(f"{source}: {len(items)} class names (limit {_MAX_CLASSES})")
        clean = {}
        for key, value in items:
            if isinstance(key, str) and key.strip().isdigit():
                key = int(key)
            if isinstance(key, bool) or not isinstance(key, int) or not isinstance(value, str):
                raise MetadataError(f"{source}: names must map class indices to strings, got {key!r}: {value!r}")
            clean[key] = value
        out["names"] = clean
    return out


def _read_bounded(path: Path) -> str:
    if path.stat().st_size > MAX_METADATA_BYTES:
        raise MetadataError(f"{path}: {path.stat().st_size} bytes of metadata (limit {MAX_METADATA_BYTES})")
    return path.read_text(encoding="utf-8", errors="replace")


def read_yaml_metadata(path: str | Path) -> dict[str, Any]:
    """Clean metadata from a YAML file (``metadata.yaml`` of a model folder); ``{}`` if there is none."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        raw = yaml.safe_load(_read_bounded(path))
    except yaml.YAMLError as exc:
        raise MetadataError(f"{path}: not valid YAML ({exc})") from exc
    return clean_metadata(raw or {}, path)


def write_yaml_metadata(path: str | Path, metadata: dict[str, Any]) -> Path:
    """Write ``stride`` and ``names`` (and plain scalars of ``metadata``) as YAML; returns the path."""
    data = {k: v for k, v in metadata.items() if isinstance(v, (str, int, float, bool)) and k not in ("stride",)}
    data.update(clean_metadata(metadata, "metadata to write"))
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return Path(path)


def append_zip_metadata(model_file: str | Path, metadata: dict[str, Any], entry: str = "metadata.json") -> None:
    """Append ``metadata`` to a flatbuffer file (``.tflite``) as a zip entry, as YOLOv5 and ultralytics do.

    ``entry`` ending in ``.json`` is written as JSON (ultralytics reads ``metadata.json``); any other name as a
    Python literal (YOLOv5's ``DetectMultiBackend`` reads the first entry with ``ast.literal_eval``).
    """
    data = clean_metadata(metadata, "metadata to write")
    text = json.dumps(data) if entry.endswith(".json") else repr(data)
    with zipfile.ZipFile(model_file, "a", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(entry, text)


def read_zip_metadata(model_file: str | Path) -> dict[str, Any]:
    """Clean metadata from the zip entries appended to a ``.tflite``; ``{}`` if it has none.

    JSON entries are parsed as JSON, others as Python literals; entries larger than
    :data:`MAX_METADATA_BYTES` are refused.
    """
    try:
        with zipfile.ZipFile(model_file) as zf:
            infos = zf.infolist()
            if not infos:
                return {}
            info = next((i for i in infos if i.filename == "metadata.json"), infos[0])
            if info.file_size > MAX_METADATA_BYTES:
                raise MetadataError(f"{model_file}: {info.file_size} bytes of metadata (limit {MAX_METADATA_BYTES})")
            text = zf.read(info).decode("utf-8", errors="replace")
    except zipfile.BadZipFile:
        return {}
    try:
        raw = json.loads(text) if info.filename.endswith(".json") else ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
        raise MetadataError(f"{model_file}: metadata entry {info.filename!r} is not plain data") from exc
    return clean_metadata(raw, model_file)
