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

from ..core.weights.metadata import MAX_METADATA_BYTES, MetadataError, check_names, check_stride

__all__ = ["MetadataError", "clean_metadata", "read_yaml_metadata", "write_yaml_metadata", "append_zip_metadata",
           "read_zip_metadata", "MAX_METADATA_BYTES"]



def clean_metadata(raw: Any, source: str | Path = "metadata") -> dict[str, Any]:
    """``{"stride": int, "names": {int: str}}`` (keys present in ``raw`` only) from parsed metadata.

    ``names`` may come as a dict with int or digit-string keys, or a list; they are checked and made file-name safe
    by :func:`~yolo_backbones.core.weights.metadata.check_names`. Other keys are dropped. Raises
    :class:`MetadataError` for anything that is not plain data of those shapes.
    """
    if not isinstance(raw, dict):
        raise MetadataError(f"{source}: metadata is a {type(raw).__name__}, expected a mapping")
    out: dict[str, Any] = {}
    if raw.get("stride") is not None:
        out["stride"] = check_stride(raw["stride"], str(source))
    if raw.get("names") is not None:
        names = check_names(raw["names"], str(source))
        out["names"] = dict(enumerate(names)) if isinstance(names, list) else names
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
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MetadataError(f"{path}: not plain YAML data ({reason}); nothing from it was run, re-export the model") \
            from None
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
