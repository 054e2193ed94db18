"""train.py: ``--cfg`` without ``--weights`` trains from scratch; one Callbacks object per run."""
from __future__ import annotations

import sys
import types
from typing import Any, Callable

from ...common.patching import LOG, replace
from .resume import patch_resume, resuming



class _DefaultWeights(str):
    """A ``--weights`` value that came from train.py's default, not from the user."""


def _weights_on_command_line(argv: list[str]) -> bool:
    # argparse accepts unambiguous prefixes, so "--we", "--weight", "--weights=x" all count
    return any(a.startswith("--we") and "--weights".startswith(a.split("=", 1)[0]) for a in argv[1:])


def _patch_train(train: types.ModuleType) -> None:
    """``--cfg`` without ``--weights`` trains from scratch instead of loading the default yolov5s.pt.

    Why: train.py's ``--weights`` defaults to yolov5s.pt, so ``train --cfg model.yaml`` tried to
    download it and copied its matching layers into the new model. parse_opt marks the default
    value; main (reached by run, run_cli and the yolov5 CLI alike) replaces a marked value by ''
    when a cfg is given, after run(**kwargs) had the chance to set weights explicitly.
    """
    if not (callable(train.__dict__.get("parse_opt")) and callable(train.__dict__.get("main"))):
        return
    log = getattr(train, "LOGGER", LOG)

    def make_parse_opt(original: Callable) -> Callable:
        def parse_opt(known: bool = False) -> Any:
            opt = original(known)
            if isinstance(getattr(opt, "weights", None), str) and not _weights_on_command_line(sys.argv):
                opt.weights = _DefaultWeights(opt.weights)
            return opt

        return parse_opt

    def make_main(original: Callable) -> Callable:
        def main(opt: Any, callbacks: Any = None) -> Any:
            weights = getattr(opt, "weights", None)
            if isinstance(weights, _DefaultWeights):
                opt.weights = str(weights)
                if getattr(opt, "cfg", "") and not getattr(opt, "resume", False):
                    opt.weights = ""
                    log.info(f"train: --cfg {opt.cfg} without --weights: training from scratch (weights=''), not from "
                             f"the default {weights}; pass --weights <file.pt> to start from a checkpoint")
            # Why a new Callbacks: pip's main() shares one default instance, so a second run in the
            # same process would register every logger action twice.
            if callbacks is None and "Callbacks" in train.__dict__:
                callbacks = train.Callbacks()
            with resuming(train, opt):  # --resume: the stored run settings are confined (see .resume)
                return original(opt) if callbacks is None else original(opt, callbacks)

        return main

    patch_resume(train)
    replace(train, "parse_opt", make_parse_opt)
    replace(train, "main", make_main)
