"""Running a YOLOv5-style command line (``train.py --cfg ... --img 320``) on the ultralytics host.

The root scripts and ``yolo-backbones`` take YOLOv5's flags; for an ultralytics model (YOLOv8 / YOLO11 /
YOLO26 YAML or checkpoint) the common ones are translated to ``yolo <mode> key=value`` arguments and
handed to ultralytics' own CLI. ``key=value`` arguments pass through unchanged, so every ultralytics
setting is reachable.
"""
from __future__ import annotations

import sys
from collections.abc import Sequence

from ..resources import DATA_DIR, find_resource

MODES = {"train": "train", "val": "val", "detect": "predict", "export": "export"}

# YOLOv5 flag -> ultralytics key; None marks a switch (no value: key=True)
_VALUE_FLAGS = {
    "--data": "data", "--epochs": "epochs", "--img": "imgsz", "--imgsz": "imgsz", "--img-size": "imgsz",
    "--batch-size": "batch", "--batch": "batch", "--device": "device", "--workers": "workers",
    "--project": "project", "--name": "name", "--freeze": "freeze", "--source": "source", "--include": "format",
    "--conf-thres": "conf", "--iou-thres": "iou", "--patience": "patience", "--seed": "seed",
    "--optimizer": "optimizer", "--max-det": "max_det", "--opset": "opset",
}
_SWITCHES = {"--exist-ok": "exist_ok", "--half": "half", "--dynamic": "dynamic", "--save-json": "save_json",
             "--save-txt": "save_txt", "--save-conf": "save_conf", "--nosave": None, "--simplify": "simplify",
             "--cos-lr": "cos_lr", "--rect": "rect", "--single-cls": "single_cls", "--augment": "augment"}


def to_ultralytics_args(script: str, argv: Sequence[str]) -> list[str]:
    """Translate YOLOv5 flags of ``script`` into ``[mode, key=value, ...]`` for ultralytics' CLI.

    Raises ``SystemExit`` naming a flag that has no ultralytics counterpart.
    """
    argv, out, model = list(argv), [MODES[script]], None
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, inline = arg.partition("=")
        if not name.startswith("--"):
            out.append(arg)  # ultralytics key=value
            i += 1
            continue
        name = "--" + name[2:].replace("_", "-")
        takes_value = name in _VALUE_FLAGS or name in ("--cfg", "--weights", "--resume")
        value = inline if eq else (argv[i + 1] if takes_value and i + 1 < len(argv) else None)
        i += 1 if eq or not takes_value else 2
        if name in ("--cfg", "--weights"):
            if value:
                model = model if (name == "--cfg" and model) else value
        elif name == "--resume":
            out.append("resume=True")
            model = value or model
        elif name in _VALUE_FLAGS:
            key = _VALUE_FLAGS[name]
            if key == "imgsz" and value and "," in value:
                value = f"[{value}]"
            out.append(f"{key}={value}")
        elif name in _SWITCHES:
            if _SWITCHES[name]:
                out.append(f"{_SWITCHES[name]}=True")
            elif name == "--nosave":
                out.append("save=False")
        else:
            raise SystemExit(f"{script}: {name} has no counterpart on the ultralytics host; pass ultralytics "
                             "settings as key=value (see `yolo cfg`)")
    if model:
        resolved = find_resource(model)
        out.insert(1, f"model={resolved or model}")
    if script in ("train", "val") and not any(a.startswith("data=") for a in out):
        out.append(f"data={DATA_DIR / 'coco8.yaml'}")
    if script == "detect" and not any(a.startswith("source=") for a in out):
        out.append(f"source={DATA_DIR / 'coco8' / 'images'}")
    return [a if not a.startswith("data=") else "data=" + str(find_resource(a[5:]) or a[5:]) for a in out]


def run_ultralytics(script: str, argv: Sequence[str]) -> int:
    """Run ``script`` (train/val/detect/export) on the ultralytics host with YOLOv5-style ``argv``; return 0."""
    import ultralytics.cfg

    import yolo_backbones  # noqa: F401  (installs the plugin and its import hook)

    args = ["yolo", *to_ultralytics_args(script, argv)]
    ultralytics.cfg.ARGV = args  # entrypoint() reads the module-global copy of sys.argv
    sys.argv = args
    ultralytics.cfg.entrypoint()
    return 0
