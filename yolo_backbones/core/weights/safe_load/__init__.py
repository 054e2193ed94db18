"""Checkpoint loading that rebuilds what ``torch.save`` wrote and never calls what the file chooses.

Threat model
------------
A YOLO checkpoint pickles whole models, so it cannot be read with ``torch.load(weights_only=True)``
alone, and ``weights_only=False`` lets the file call any importable function. Widening torch's
``weights_only`` allow-list with model classes is not enough either: its unpickler lets every allowed
global be *called* (pickle ``REDUCE``) with arguments stored in the file, and a model class whose
constructor parses a config (YOLOv5's ``Model(cfg)`` ``eval``s strings of it) runs the file's code.

:func:`load_checkpoint` therefore unpickles with its own restricted pure-Python unpickler (torch keeps
doing the zip and storage handling) under one policy, *reconstruct, never call*:

* Classes of the allowed namespaces (``nn.Module`` classes of ``torch.nn`` except
  ``torch.nn.parallel``; everything in ``yolo_backbones``; namespaces a host registered with
  :func:`register_model_namespace`; classes given to :func:`allow_classes` /
  :func:`register_data_class`) are only ever *created without running* ``__init__`` (pickle's
  ``NEWOBJ`` / ``copyreg`` reconstruction, as ``torch.save`` writes them) and get their attributes
  from the file (``BUILD``). Calling such a class, or any method or function of these modules, is
  refused. A class object fetched from the file is an inert token, so it cannot end up in a model
  attribute or hook and be called later either.
* ``BUILD`` updates the instance ``__dict__``; only vetted ``__setstate__`` implementations run:
  ``nn.Module.__setstate__`` and the ``torch.nn`` overrides (all of them only fill in defaults of
  old checkpoints), numpy's C ``ndarray``/``dtype`` ones, and those of classes a user or host
  explicitly allowed (they vouch for them). Any other class defining ``__setstate__`` is refused, as
  is one defining ``__del__`` or its own ``__new__``. The state may not set dunder names nor store
  callables other than modules/allowed instances and the one bound method torch.save writes for
  fused layers (``m.forward = m.forward_fuse``).
* A short list of vetted callables may be called, each with its arguments checked: torch's tensor,
  storage and parameter rebuild functions, ``OrderedDict``/``set``/``frozenset``/``slice``/
  ``complex``/``bytearray``/``Counter``, ``torch.device``/``torch.Size``/layouts, numpy's array,
  scalar and dtype reconstruction, ``_codecs.encode`` (bytes in protocol <= 2), ``pathlib`` paths,
  ``types.SimpleNamespace`` and ``builtins.getattr(<allowed module>, 'forward' | 'forward_fuse')``.

Anything else raises :class:`UntrustedCheckpointError` naming the global and why, before any of it
runs. Files that are no checkpoint at all (empty, truncated, another format, a directory) raise
:class:`CheckpointFileError` with one line saying what the file is and what to do.
``YOLO_BACKBONES_TRUST_CHECKPOINTS=1`` switches to plain ``torch.load(weights_only=False)`` with an
:class:`UnsafeCheckpointLoadWarning`; a caller's explicit ``weights_only=True`` keeps torch's own
semantics.

Objects of allowed classes whose own ``__reduce__`` pickles them as a call with arguments (enums,
namedtuples) are refused too; no YOLOv5 / ultralytics / yolo_backbones checkpoint contains them.
What the policy cannot cover: code that later *uses* trusted-but-file-chosen data as code, e.g. a
host rebuilding a model from ``ckpt['model'].yaml`` with a parser that ``eval``s strings. Hosts must
validate such data themselves.

Modules: :mod:`.loader` (:func:`load_checkpoint`), :mod:`.file_kinds` (what a file is, from its first
bytes), :mod:`.class_policy` (which classes may be rebuilt; the registration hooks and every registry),
:mod:`.vetted_globals` (what a pickled global may resolve to and call), :mod:`.build_policy` (BUILD),
:mod:`.unpickler` (the opcode handlers) and :mod:`.errors`.
"""
from __future__ import annotations

from .class_policy import allow_classes, register_data_class, register_model_namespace, register_module_alias
from .errors import CheckpointFileError, UnsafeCheckpointLoadWarning, UntrustedCheckpointError
from .loader import TRUST_ENV, load_checkpoint

__all__ = [
    "load_checkpoint", "allow_classes", "register_model_namespace", "register_data_class",
    "register_module_alias", "UntrustedCheckpointError", "CheckpointFileError",
    "UnsafeCheckpointLoadWarning", "TRUST_ENV",
]
