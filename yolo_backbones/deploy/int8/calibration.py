"""Calibration and measurement images from a dataset YAML, without a YOLO host.

A dataset YAML names its images as YOLOv5 and ultralytics do: ``path:`` (a folder; relative to the YAML file,
then to the working directory) and a split (``val:``/``train:``) that is a folder, a ``.txt`` list or a list of
either. Images are letterboxed like the hosts' validation (aspect kept, gray 114 padding, centred) to a square
``imgsz`` and returned as float32 RGB in [0, 1], NCHW: what an exported detector takes.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from ...resources import find_resource

__all__ = [
    "IMAGE_SUFFIXES",
    "Letterboxed",
    "calibration_batches",
    "dataset_images",
    "image_labels",
    "letterbox",
    "load_images",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
PAD_VALUE = 114  # the hosts' letterbox gray


@dataclass
class Letterboxed:
    """One letterboxed image: ``image`` (3, S, S) float32 RGB in [0, 1]; ``scale`` and ``pad`` (x, y) map
    original pixel coordinates to letterboxed ones: ``xy * scale + pad``."""

    image: np.ndarray
    scale: float
    pad: tuple[float, float]
    original_shape: tuple[int, int]  # (height, width)


def _read_yaml(data: str | Path) -> tuple[dict, Path]:
    path = Path(data)
    if not path.is_file():
        path = find_resource(str(data)) or path
    if not path.is_file():
        raise FileNotFoundError(f"dataset YAML {data} not found (a path, or a bare name of this project's data/, "
                                "e.g. coco8.yaml)")
    content = yaml.safe_load(path.read_text(errors="ignore"))
    if not isinstance(content, dict):
        raise TypeError(f"{path} is not a dataset YAML (a mapping with path: and val:)")
    return content, path


def _root(content: dict, yaml_path: Path) -> Path:
    root = Path(str(content.get("path") or "")).expanduser()
    if root.is_absolute():
        return root
    beside = yaml_path.parent / root
    return beside if beside.exists() else Path.cwd() / root


def _split_files(entry: object, root: Path) -> list[Path]:
    if isinstance(entry, (list, tuple)):
        return [f for item in entry for f in _split_files(item, root)]
    path = Path(str(entry)).expanduser()
    path = path if path.is_absolute() else root / path
    if path.is_dir():
        return sorted(f for f in path.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
    if path.suffix == ".txt" and path.is_file():
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        return [Path(line) if Path(line).is_absolute() else (path.parent / line) for line in lines]
    if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        return [path]
    raise FileNotFoundError(f"dataset split {entry!r}: {path} is neither an image folder nor a .txt list of images")


def dataset_images(data: str | Path, split: str = "val", limit: int | None = None) -> list[Path]:
    """The image files of ``split`` of the dataset YAML ``data`` (sorted; the first ``limit`` if given).

    Raises FileNotFoundError naming the missing YAML/folder, ValueError when the split is absent or empty.
    """
    content, yaml_path = _read_yaml(data)
    if split not in content or content[split] in (None, ""):
        raise ValueError(f"{yaml_path} has no {split}: split (pass split=train/val/test that it has)")
    files = _split_files(content[split], _root(content, yaml_path))
    if not files:
        raise ValueError(f"the {split}: split of {yaml_path} holds no images")
    return files[:limit] if limit else files


def image_labels(image: Path) -> np.ndarray:
    """YOLO labels of ``image`` (``.../images/x.jpg`` -> ``.../labels/x.txt``): (n, 5) class, x, y, w, h normalised.

    An image without a label file has no objects: (0, 5).
    """
    parts = list(image.parts)
    if "images" in parts:
        k = len(parts) - 1 - parts[::-1].index("images")
        parts[k] = "labels"
    label = Path(*parts).with_suffix(".txt")
    if not label.is_file():
        return np.zeros((0, 5), np.float32)
    rows = [line.split()[:5] for line in label.read_text().splitlines() if line.strip()]
    return np.array(rows, np.float32).reshape(-1, 5)


def letterbox(image: np.ndarray, size: int) -> Letterboxed:
    """Resize a (H, W, 3) uint8 BGR image (as cv2 reads it) to fit ``size`` x ``size``, pad, convert to RGB [0, 1]."""
    import cv2

    h, w = image.shape[:2]
    scale = min(size / h, size / w)
    nh, nw = round(h * scale), round(w * scale)
    if (nh, nw) != (h, w):
        image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    top, left = (size - nh) // 2, (size - nw) // 2
    canvas = np.full((size, size, 3), PAD_VALUE, np.uint8)
    canvas[top:top + nh, left:left + nw] = image
    rgb = np.ascontiguousarray(canvas[:, :, ::-1].transpose(2, 0, 1), dtype=np.float32) / 255.0
    return Letterboxed(rgb, scale, (float(left), float(top)), (h, w))


def load_images(files: Sequence[Path], size: int) -> list[Letterboxed]:
    """Read and letterbox ``files`` (FileNotFoundError/ValueError for a missing or unreadable image)."""
    import cv2

    out = []
    for f in files:
        image = cv2.imread(str(f))
        if image is None:
            raise ValueError(f"cannot read image {f}")
        out.append(letterbox(image, size))
    return out


def calibration_batches(data: str | Path, size: int, limit: int | None = None, split: str = "val",
                        batch: int = 1) -> Iterator[np.ndarray]:
    """(batch, 3, size, size) float32 arrays of the dataset's ``split`` images, for NNCF or another calibrator."""
    images = [lb.image for lb in load_images(dataset_images(data, split, limit), size)]
    for k in range(0, len(images) - batch + 1, batch):
        yield np.stack(images[k:k + batch])
