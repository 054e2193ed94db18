"""Values from files of strangers that a host uses: class names, strides, run folders, exported-model metadata.

Checkpoints and exported models (ONNX metadata, OpenVINO / NCNN ``metadata.yaml``, TorchScript extra files)
carry ``names`` and ``stride`` the hosts use for labels, output folders and decoding. Here they are parsed as
data only (:func:`parse_literal`: ``ast.literal_eval`` / ``yaml.safe_load`` / JSON, size-bounded) and checked:
``names`` a list or ``{int: str}`` dict of strings, each made safe to be one file-name component
(:func:`safe_class_name`), ``stride`` a small positive int. Errors are :class:`MetadataError` with one line
naming the file and the fix.
"""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

__all__ = ["MetadataError", "MAX_METADATA_BYTES", "MAX_CLASSES", "parse_literal", "check_names", "check_stride",
           "safe_class_name", "checkpoint_run_dir"]

MAX_METADATA_BYTES = 4 << 20  # a metadata value or file; names of 100k classes fit easily
MAX_CLASSES = 100_000
MAX_NAME_CHARS = 256
MAX_STRIDE = 1024
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]")


class MetadataError(ValueError):
    """Metadata of a checkpoint or exported model that is not plain, well-typed data; the message names the file."""


def parse_literal(text: Any, source: str, what: str) -> Any:
    """A Python literal (``"{0: 'person'}"``) or JSON value from a file, never evaluated as code.

    Raises :class:`MetadataError` for text over :data:`MAX_METADATA_BYTES`, code, or nesting Python's parser
    refuses.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if not isinstance(text, str):
        return text
    if len(text) > MAX_METADATA_BYTES:
        raise MetadataError(f"{source}: its {what} metadata is {len(text)} characters (limit {MAX_METADATA_BYTES}); "
                            "re-export the model")
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        try:
            return json.loads(text)
        except (ValueError, RecursionError):
            raise MetadataError(f"{source}: its {what} metadata is not a plain literal ({text[:60]!r}...); nothing "
                                "from it was evaluated; re-export the model") from None


def safe_class_name(name: str) -> str:
    """``name`` usable as one file-name component: path separators, control and reserved characters -> ``_``.

    ``.``, ``..`` and empty names become ``_`` too, and names are cut to 256 characters. Ordinary names
    (``person``, ``traffic light``) are unchanged.
    """
    text = _UNSAFE.sub("_", name[:MAX_NAME_CHARS])
    return "_" if text.strip(" .") == "" else text


def check_names(names: Any, source: str) -> Any:
    """Class names from a file: a list/tuple of strings -> list, or a dict ``{int: str}`` (keys may be digit
    strings) -> dict with int keys; each name made safe by :func:`safe_class_name`.

    Raises :class:`MetadataError` naming ``source`` for anything else.
    """
    if isinstance(names, str):
        names = parse_literal(names, source, "names")
    if isinstance(names, (list, tuple)):
        items = list(enumerate(names))
        as_list = True
    elif isinstance(names, dict):
        items, as_list = list(names.items()), False
    else:
        raise MetadataError(f"{source}: its class names are a {type(names).__name__}, not a list or dict of strings; "
                            "re-export the model or pass --data with the dataset YAML")
    if len(items) > MAX_CLASSES:
        raise MetadataError(f"{source}: it names {len(items)} classes (limit {MAX_CLASSES})")
    out = {}
    for k, v in items:
        if isinstance(k, str) and k.isdigit():
            k = int(k)
        if type(k) is not int or k < 0 or type(v) is not str:
            raise MetadataError(f"{source}: its class names must map class indices to strings, got {str(k)[:20]!r}: "
                                f"{type(v).__name__}; re-export the model")
        out[k] = safe_class_name(v)
    return [out[i] for i in range(len(out))] if as_list else out


def check_stride(stride: Any, source: str) -> int:
    """A model stride from a file: an int (or int-valued number / numeric string) in 1..1024."""
    try:
        value = float(stride)
    except (TypeError, ValueError):
        value = float("nan")
    if not (value == int(value) if value == value and abs(value) < 1e9 else False) or not 1 <= value <= MAX_STRIDE:
        raise MetadataError(f"{source}: its stride {str(stride)[:20]!r} is not an integer in 1..{MAX_STRIDE}; "
                            "re-export the model")
    return int(value)


def checkpoint_run_dir(path: str | Path) -> Path:
    """The run folder a checkpoint belongs to: ``runs/x/exp`` for ``runs/x/exp/weights/last.pt``, else its folder."""
    p = Path(path).resolve()
    return p.parent.parent if p.parent.name == "weights" else p.parent
