"""``yolo-backbones train|val|detect|export|list``: YOLOv5's own scripts with the plugin installed.

``train``/``val``/``detect``/``export`` take exactly YOLOv5's command-line flags and hand over to
the PyPI package's script (``yolov5.train`` ...), or to a YOLOv5 clone's ``train.py`` ... when
``--yolov5-dir DIR`` (or the environment variable ``YOLOV5_DIR``) names one. Before handing over:

* the plugin is installed (``import yolo_backbones``);
* bare ``--cfg``/``--data`` names (``yolov5_edgevit.yaml``, ``coco8.yaml``) found in this project's
  ``models/``/``data/`` are turned into paths, so every host finds them;
* defaults that would download are replaced by the embedded ones: ``--data coco8.yaml`` (train/val),
  ``--source data/coco8/images`` (detect), and ``--weights ''`` when training a ``--cfg`` from scratch;
* ``val --coco-json FILE`` (this plugin's flag, removed before YOLOv5 parses the rest) computes COCO mAP
  with pycocotools against FILE (see :mod:`yolo_backbones.hosts.yolov5.coco_val`).
"""
from __future__ import annotations

import importlib.util
import os
import runpy
import sys
import types
from collections.abc import Sequence
from pathlib import Path

from ..resources import DATA_DIR, find_resource

SCRIPTS = ("train", "val", "detect", "export")
DEFAULT_DATA = "coco8.yaml"


def _flag_value(argv: Sequence[str], flag: str) -> tuple[int, str | None]:
    """Index of ``flag`` in ``argv`` (``--x v`` or ``--x=v``, also ``--x-y``/``--x_y`` spellings) and its value."""
    spellings = {flag, flag.replace("-", "_").replace("__", "--", 1)}
    for k, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        if name in spellings:
            if eq:
                return k, value
            return k, argv[k + 1] if k + 1 < len(argv) else None
    return -1, None


def _replace_value(argv: list[str], k: int, value: str) -> None:
    name, eq, _ = argv[k].partition("=")
    if eq:
        argv[k] = f"{name}={value}"
    else:
        argv[k + 1] = value


def prepare_argv(script: str, argv: Sequence[str]) -> list[str]:
    """Return ``argv`` for YOLOv5's ``script`` with plugin names resolved and offline defaults filled in."""
    argv = list(argv)
    for flag in ("--cfg", "--data"):
        k, value = _flag_value(argv, flag)
        resolved = find_resource(value) if k >= 0 and value else None
        if resolved is not None:
            _replace_value(argv, k, str(resolved))
    calibrating = script == "export" and _flag_value(argv, "--int8")[0] >= 0  # INT8 calibrates on --data
    if (script in ("train", "val") or calibrating) and _flag_value(argv, "--data")[0] < 0:
        argv += ["--data", str(DATA_DIR / DEFAULT_DATA)]
    if script == "detect" and _flag_value(argv, "--source")[0] < 0:
        argv += ["--source", str(DATA_DIR / "coco8" / "images")]
    if script == "train" and _flag_value(argv, "--cfg")[1] and _flag_value(argv, "--weights")[0] < 0:
        # YOLOv5's default --weights yolov5s.pt would be downloaded and partly transferred into a
        # model it was not trained for; a --cfg without --weights means "from scratch".
        argv += ["--weights", ""]
    return argv


def _pop_flag(argv: list[str], flag: str) -> str | None:
    """Remove ``flag`` and its value (a plugin flag YOLOv5's parser must not see) from ``argv``; return the value."""
    k, value = _flag_value(argv, flag)
    if k >= 0:
        del argv[k: k + (1 if "=" in argv[k] else 2)]
    return value


def _pop_coco_json(argv: list[str]) -> None:
    """``val --coco-json FILE``: COCO mAP against FILE; implies ``--save-json``, overrides the YAML's ``coco_json:``."""
    value = _pop_flag(argv, "--coco-json")
    if value is None:
        return
    if not Path(value).is_file():
        raise SystemExit(f"--coco-json: no such file: {value}")
    from ..hosts.yolov5.coco_val import set_coco_json

    set_coco_json(value)
    if _flag_value(argv, "--save-json")[0] < 0:
        argv.append("--save-json")


def _pop_yolov5_dir(argv: list[str]) -> Path | None:
    value = _pop_flag(argv, "--yolov5-dir") or os.environ.get("YOLOV5_DIR")
    if not value:
        return None
    clone = Path(value).expanduser().resolve()
    if not (clone / "models" / "yolo.py").is_file():
        raise SystemExit(f"--yolov5-dir/YOLOV5_DIR {clone} is not a YOLOv5 clone (no models/yolo.py there)")
    return clone


def run_script(script: str, argv: Sequence[str]) -> int:
    """Run ``script`` (train/val/detect/export) on the host the model names (or ``--host``); return an exit code.

    The entry point of the root scripts (``python train.py ...``): the plugin's own errors end the process with
    one ``error:`` line (:func:`~yolo_backbones.hosts.common.errors.install_excepthook`).
    """
    from ..hosts.common.errors import install_excepthook
    from .host_choice import choose_host

    install_excepthook()

    argv = list(argv)
    if choose_host(argv, _flag_value) == "ultralytics":
        from .ultralytics import run_ultralytics

        return run_ultralytics(script, argv)
    return run_yolov5_script(script, argv)


def run_yolov5_script(script: str, argv: Sequence[str]) -> int:
    """Run YOLOv5's ``script`` (train/val/detect/export) with ``argv``, the plugin installed; return an exit code."""
    import yolo_backbones  # noqa: F401  (installs the plugin and its import hook)

    argv = list(argv)
    clone = _pop_yolov5_dir(argv)
    if script == "val":
        _pop_coco_json(argv)
    argv = prepare_argv(script, argv)
    if clone is not None:
        sys.path.insert(0, str(clone))
        sys.argv = [str(clone / f"{script}.py"), *argv]
        if script == "val":  # imported as the module `val`, which the plugin patches (--save-json COCO mAP)
            module = _import_file("val", clone / "val.py")
            module.main(module.parse_opt())
        else:
            runpy.run_path(str(clone / f"{script}.py"), run_name="__main__")
        return 0
    module = importlib.import_module(f"yolov5.{script}")
    sys.argv = [f"{script}.py", *argv]
    if script == "train":
        module.main(module.parse_opt())
    else:
        module.main()
    return 0


def _import_file(name: str, file: Path) -> types.ModuleType:
    """Import ``file`` as the module ``name``, then install the plugin into it."""
    import yolo_backbones

    spec = importlib.util.spec_from_file_location(name, file)
    module = sys.modules[name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yolo_backbones.install()
    return module


def print_backbones() -> None:
    """Print the registered backbones: name, YAML module, variant, output strides, channels and weights names."""
    from ..core.registry import list_backbones
    from ..core.weights.sources import weights_names

    rows = [("name", "YAML module", "variant", "strides", "channels", "weights")]
    rows += [(r["name"], r["yaml_module"], r["variant"], "/".join(map(str, r["strides"])),
              "/".join(map(str, r["channels"])), ", ".join(weights_names(r["name"])) or "-") for r in list_backbones()]
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
    print("\nYAML row: [-1, 1, <YAML module>, [<variant>, [<stage indices 0-3>], <optional weights name or file>]]"
          "\nthen one [0, 1, Select, [k]] row per feature map used by the neck."
          "\n`yolo-backbones weights` shows where each weights name comes from.")


def print_weights(argv: Sequence[str] = ()) -> int:
    """``weights``: print the table of pretrained weights; ``weights BACKBONE NAME``: fetch one, print its path."""
    from ..core.weights.sources import resolve_weights, weights_table_markdown

    if not argv:
        print(weights_table_markdown())
        return 0
    if len(argv) != 2:
        print("usage: yolo-backbones weights [BACKBONE NAME]   e.g. yolo-backbones weights efficientformer_l1 imagenet",
              file=sys.stderr)
        return 2
    print(resolve_weights(argv[0], argv[1]))
    return 0


USAGE = f"""usage: yolo-backbones {{{','.join(SCRIPTS)},list,weights}} [YOLOv5 flags ...] [--yolov5-dir CLONE]

  train|val|detect|export   YOLOv5's own script and flags, with the plugin installed; for a YOLOv8/YOLO11/
                            YOLO26 model (YAML with scales:, or an ultralytics checkpoint) the common flags
                            are translated for ultralytics and key=value settings pass through
                            (--host yolov5|ultralytics overrides the choice)
                            (val: also --coco-json FILE, pycocotools mAP against that COCO annotation file)
  list                      the backbones, their variants, output strides, channels and weights names
  weights [BACKBONE NAME]   where each pretrained weights name comes from; with BACKBONE NAME, find or
                            download that file (e.g. efficientformer_l1 imagenet) and print its path
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``yolo-backbones`` command; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "list":
        print_backbones()
        return 0
    if command == "weights":
        return print_weights(rest)
    if command in SCRIPTS:
        from ..hosts.common.errors import one_line, tracebacks_wanted, user_error

        try:
            return run_script(command, rest)
        except Exception as e:
            found = user_error(e)
            if found is None or tracebacks_wanted():
                raise
            print(one_line(found), file=sys.stderr)
            return 1
    print(f"yolo-backbones: unknown command {command!r}\n{USAGE}", file=sys.stderr)
    return 2
