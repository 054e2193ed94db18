"""Loading checkpoints as data: inert records, then models rebuilt from their config and tensors.

Threat model
------------
A YOLO checkpoint pickles whole models. Unpickling runs whatever the file names, and even restoring only
instances of allowed classes with file-chosen state hands the file every method, property and ``__call__``
of those classes. So :func:`load_checkpoint` never creates an object of a real class from file state:

1. :mod:`.archive` checks the container (stored, non-overlapping zip members, sizes) and :mod:`.reader` runs
   the pickle program with its own opcode loop into plain containers and inert :mod:`.records` (class path,
   state, tensors); no global is imported, and a call is accepted only for the functions torch.save uses to
   describe data. Depth, object counts, integer sizes and the pickle size are bounded (:mod:`.limits`).
2. :mod:`.interpret` converts what the root reaches: plain values, numeric numpy values, dense tensors as
   checked views of their storages (no view beyond its storage, no stride-0 expansion beyond 1024 elements,
   total view bytes bounded by the file size), namespaces of plain attributes.
3. :mod:`.modules` rebuilds each model from its config: a host builder runs the host's own constructor on the
   ``yaml`` dict the model stores (through the plugin's ``parse_model``, which resolves ``nn.Module`` classes
   only) inside :mod:`.build_guard` (allocations bounded by the file's tensor bytes, no random init, no
   pretrained download); torch.nn layers, containers and the plugin's backbones are built from their
   constructor arguments. The record tree must match the built model layer by layer; the tensors are loaded
   with ``load_state_dict(strict=True)``; only plain, type-checked attributes are copied.

Refusals raise :class:`UntrustedCheckpointError` (one line: the file, the global or limit, why; nothing ran);
files that are no checkpoint, damaged ones and models that do not match their config raise
:class:`CheckpointFileError`. ``YOLO_BACKBONES_TRUST_CHECKPOINTS=1`` switches to plain
``torch.load(weights_only=False)`` with an :class:`UnsafeCheckpointLoadWarning`. What is promised and how it
is tested: ``docs/security.md``.
"""
from __future__ import annotations

from .build_guard import is_rebuilding, run_probe
from .class_policy import (
                           allow_classes,
                           register_data_class,
                           register_layer_builder,
                           register_model_namespace,
                           register_module_alias,
                           register_plain_class,
                           user_module_classes,
)
from .errors import CheckpointFileError, UnsafeCheckpointLoadWarning, UntrustedCheckpointError
from .loader import TRUST_ENV, load_checkpoint, register_checkpoint_hook
from .modules import ModelBuilder, ModuleRecord, register_model_builder

__all__ = [
    "load_checkpoint", "allow_classes", "user_module_classes", "register_model_namespace", "register_data_class",
    "register_module_alias", "register_plain_class", "register_layer_builder", "register_model_builder",
    "register_checkpoint_hook",
    "ModelBuilder", "ModuleRecord", "is_rebuilding", "run_probe", "UntrustedCheckpointError", "CheckpointFileError",
    "UnsafeCheckpointLoadWarning", "TRUST_ENV",
]
