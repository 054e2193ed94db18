"""Exported models' metadata read by YOLOv5's ``DetectMultiBackend`` as data, never as code.

``DetectMultiBackend`` (behind ``detect.py`` / ``val.py --weights``, ``yolov5.load``, ``yolo-backbones val``)
``eval()``s the ``names`` of an ONNX model's metadata, and takes ``stride`` / ``names`` of TorchScript extra
files, OpenVINO ``.yaml`` files and TFLite zips as they come. :func:`patch_metadata`:

* gives ``models.common`` a module-level ``eval`` that only parses literals (:func:`literal_only`), so the
  ONNX branch reads ``"{0: 'person'}"`` and refuses code;
* checks ``names`` (a list or ``{int: str}`` of strings, each made a safe file-name component: ``detect.py
  --save-crop`` makes folders of them) and ``stride`` (an int in 1..1024) after the constructor ran, and turns
  a constructor error on malformed metadata into one :class:`MetadataError` line naming the file.
"""
from __future__ import annotations

import contextvars
import types
from pathlib import Path
from typing import Any, Callable

from ....core.weights.metadata import MetadataError, check_names, check_stride, parse_literal
from ...common.errors import user_error
from ...common.patching import replace

__all__ = ["literal_only", "patch_metadata"]

_FLAG = "_yolo_backbones_metadata_checked"


_SOURCE: contextvars.ContextVar[str] = contextvars.ContextVar("yolo_backbones_metadata_file",
                                                              default="the exported model")


def literal_only(text: Any, *args: Any, **kwargs: Any) -> Any:
    """What ``eval`` means inside YOLOv5's ``models.common``: a literal (``names`` metadata), never code."""
    if args or kwargs:
        raise MetadataError(f"{_SOURCE.get()}: eval() with a namespace is not supported for metadata")
    return parse_literal(text, _SOURCE.get(), "names")


def _source(weights: Any) -> str:
    return str(weights[0] if isinstance(weights, (list, tuple)) and weights else weights)


def _make_init(original: Callable) -> Callable:
    def __init__(self: Any, weights: Any = "yolov5s.pt", *args: Any, **kwargs: Any) -> None:
        """``DetectMultiBackend.__init__`` with the metadata of the model file checked (see the module doc)."""
        source = _source(weights)
        token = _SOURCE.set(source)
        try:
            original(self, weights, *args, **kwargs)
        except (ValueError, KeyError, TypeError, IndexError, SyntaxError, RecursionError) as e:
            if user_error(e) is not None or Path(source).suffix.lower() == ".pt":
                raise
            raise MetadataError(f"{source}: its metadata (stride, names) cannot be read ({type(e).__name__}: "
                                f"{str(e)[:120]}); nothing from it was evaluated; re-export the model") from None
        finally:
            _SOURCE.reset(token)
        if getattr(self, "names", None) is not None:
            self.names = check_names(self.names, source)
        if getattr(self, "stride", None) is not None:
            self.stride = check_stride(self.stride, source)

    return __init__


def patch_metadata(common: types.ModuleType | None) -> None:
    """Apply the patches to a host ``models.common`` (idempotent; outermost around any other ``__init__`` patch)."""
    if common is None:
        return
    backend = common.__dict__.get("DetectMultiBackend")
    if not isinstance(backend, type):
        return
    common.eval = literal_only  # shadows the builtin for this module only
    replace(backend, "__init__", _make_init, layer=_FLAG)  # type: ignore[arg-type]
