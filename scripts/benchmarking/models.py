"""Building the measured models: the stock YOLO baselines and the plugin YAMLs, fused for inference."""
from __future__ import annotations

import contextlib
import copy
import io
from pathlib import Path

import torch
import yaml

from yolo_backbones.resources import MODELS_DIR

from .results import BASELINES, SMALL_CNN, YOLO11_BASELINES


@contextlib.contextmanager
def quiet():
    """Silence YOLOv5's logger and stdout (model summaries) inside the block."""
    from yolov5.utils.general import LOGGER

    level = LOGGER.level
    LOGGER.setLevel("ERROR")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        LOGGER.setLevel(level)


def is_ultralytics_yaml(cfg_path: Path) -> bool:
    """True for an ultralytics (YOLOv8/YOLO11/YOLO26) model YAML, by name or content."""
    from yolo_backbones.cli.host_choice import host_of_yaml

    return cfg_path.name.startswith(("yolo11", "yolo26", "yolov8")) or host_of_yaml(cfg_path) == "ultralytics"


def build_model(cfg_path: Path) -> torch.nn.Module:
    """Build an (unfused, train-mode) detector from a YAML path, seeded and quietly (YOLOv5 or ultralytics)."""
    torch.manual_seed(0)
    if is_ultralytics_yaml(cfg_path):
        from ultralytics.nn.tasks import DetectionModel

        with quiet():
            return DetectionModel(str(cfg_path), verbose=False)
    from yolov5.models.yolo import Model

    cfg = yaml.safe_load(cfg_path.read_text())
    with quiet():
        return Model(copy.deepcopy(cfg))


def build_detector(cfg_path: Path) -> torch.nn.Module:
    """Build a fused, eval-mode YOLOv5 DetectionModel from a YAML path (quietly)."""
    model = build_model(cfg_path).eval()
    with quiet():
        model.fuse()
    return model


def baseline_yaml(name: str) -> Path:
    """Path of a stock YOLOv5 YAML (``yolov5n.yaml``...) inside the PyPI package."""
    import yolov5

    return Path(yolov5.__file__).parent / "models" / name


def small_cnn_yaml(out: Path) -> Path:
    """Write the :data:`SMALL_CNN` model YAML (a stock YOLOv5 YAML at another width) into ``out``; returns its path."""
    name, source, width = SMALL_CNN
    cfg = yaml.safe_load(baseline_yaml(source).read_text())
    cfg["width_multiple"] = width
    path = out / f"{name}.yaml"
    path.write_text(f"# {source} with width_multiple {width} (written by scripts/benchmark.py)\n"
                    + yaml.safe_dump(cfg, sort_keys=False))
    return path


def resolve_models(names: list[str] | None, yolo11: bool = False, out: Path | None = None,
                   yolo11_baselines: bool = False) -> list[tuple[Path, bool]]:
    """(YAML path, is-plugin) for the baselines then the requested plugin YAMLs (default: the yolov5_* YAMLs;
    with ``yolo11`` also YOLO11n/s and the yolo11_* YAMLs; with ``yolo11_baselines`` YOLO11n/s only, the edge
    engines' curve). With ``out``, the :data:`SMALL_CNN` baseline is written there and measured too."""
    names = names or sorted(p.name for p in MODELS_DIR.glob("yolov5_*.yaml"))
    paths = [(baseline_yaml(n), False) for n in BASELINES]
    if out is not None:
        paths.insert(0, (small_cnn_yaml(out), False))
    if yolo11 or yolo11_baselines:
        paths += [(Path(n), False) for n in YOLO11_BASELINES]  # resolved by ultralytics from its own cfg folder
    if yolo11:
        names = list(names) + sorted(p.name for p in MODELS_DIR.glob("yolo11_*.yaml"))
    for n in names:
        path = Path(n) if Path(n).exists() else MODELS_DIR / n
        if not path.exists() and path.suffix != ".yaml":
            path = path.with_name(path.name + ".yaml")  # a bare model name
        if not path.is_file():
            raise SystemExit(f"benchmark: no model YAML {n!r} (looked in {MODELS_DIR}); "
                             f"choose from: {', '.join(sorted(p.stem for p in MODELS_DIR.glob('*.yaml')))}")
        if path.stem not in {p.stem for p, _ in paths}:
            paths.append((path, True))
    return paths
