"""Which YOLO host a command is for: read off the model YAML or checkpoint, never by unpickling it.

A YOLOv5 model YAML has ``anchors:``; an ultralytics one (YOLOv8 / YOLO11 / YOLO26) has ``scales:`` or
no anchors. A checkpoint names the classes it pickled: ``ultralytics.nn.tasks`` vs YOLOv5's
``models.yolo``; an exported model directory (``*_openvino_model/``) or ONNX file carries ultralytics'
``task`` metadata. Everything else is YOLOv5, the default.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import yaml

from ..resources import find_resource

HOSTS = ("yolov5", "ultralytics")


def host_of_yaml(path: str | Path) -> str:
    """``"ultralytics"`` or ``"yolov5"`` for a model YAML file (a bare project name is looked up first)."""
    path = find_resource(path) or Path(path)
    try:
        cfg = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return "yolov5"
    if not isinstance(cfg, dict):
        return "yolov5"
    return "yolov5" if "anchors" in cfg and "scales" not in cfg else "ultralytics"


def host_of_weights(path: str | Path) -> str:
    """``"ultralytics"`` or ``"yolov5"`` for a checkpoint or exported model, from names stored in it."""
    path = Path(path)
    if path.is_dir():
        meta = next(iter(path.glob("metadata.yaml")), None)
        return "ultralytics" if meta is not None and "task:" in meta.read_text(errors="ignore") else "yolov5"
    if not path.is_file():
        return "yolov5"
    if path.suffix in (".yaml", ".yml"):
        return host_of_yaml(path)
    if path.suffix == ".onnx":
        import onnx

        try:
            keys = {p.key for p in onnx.load(str(path), load_external_data=False).metadata_props}
        except Exception:  # noqa: BLE001 - not a readable ONNX file: let the host report it
            return "yolov5"
        return "ultralytics" if "task" in keys else "yolov5"
    try:
        with zipfile.ZipFile(path) as archive:
            pickled = next((archive.read(n) for n in archive.namelist() if n.endswith("data.pkl")), b"")
    except (zipfile.BadZipFile, OSError):
        return "yolov5"
    return "ultralytics" if b"ultralytics.nn.tasks" in pickled else "yolov5"


def choose_host(argv: list[str], flag_value) -> str:
    """The host for a command line: ``--host`` if given (removed from ``argv``), else from --cfg / --weights /
    model=."""
    k, value = flag_value(argv, "--host")
    if k >= 0:
        del argv[k: k + (1 if "=" in argv[k] else 2)]
        if value not in HOSTS:
            raise SystemExit(f"--host {value!r}: choose one of {', '.join(HOSTS)}")
        return value
    for arg in argv:
        if arg.startswith("model="):
            value = arg.partition("=")[2]
            return host_of_yaml(value) if value.endswith((".yaml", ".yml")) else host_of_weights(value)
    for flag, decide in (("--weights", host_of_weights), ("--resume", host_of_weights), ("--cfg", host_of_yaml)):
        k, value = flag_value(argv, flag)
        if k >= 0 and value and not value.startswith("-"):
            host = decide(value)
            if host != "yolov5" or flag == "--cfg":
                return host
    return "yolov5"
