"""COCO box mAP with pycocotools for any dataset that has a COCO-format annotation file.

YOLOv5's ``--save-json`` writes one record per detection, ``{"image_id", "category_id", "bbox", "score"}``
with ``bbox`` = ``[x, y, w, h]`` in pixels. Only for COCO itself are the ids already COCO ids; for any
other dataset ``category_id`` is the YOLO class index and ``image_id`` is ``int(stem)`` for a numeric
file-name stem, else the stem. This module turns such records into COCO results for an annotation file
(classes matched to categories by name, images by file-name stem) and evaluates them:

    annotations = load_annotations("instances_val2017.json")
    results = to_coco_results(predictions, annotations, names=data["names"])   # names: YOLO class -> name
    stats = evaluate(results, annotations)                                      # {"AP": ..., "AP50": ..., ...}
    print(format_stats(stats))                                                  # pycocotools' 12 lines
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["STAT_NAMES", "load_annotations", "category_map", "image_id_map", "to_coco_results", "evaluate",
           "format_stats"]

#: The 12 numbers of ``COCOeval.stats``, in order.
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
# (title, IoU, area, maxDets) of each stat, as pycocotools' summarize() prints them
_STAT_ROWS = [("Average Precision  (AP)", iou, area, 100) for iou, area in
              (("0.50:0.95", "all"), ("0.50", "all"), ("0.75", "all"),
               ("0.50:0.95", "small"), ("0.50:0.95", "medium"), ("0.50:0.95", "large"))]
_STAT_ROWS += [("Average Recall     (AR)", "0.50:0.95", "all", n) for n in (1, 10, 100)]
_STAT_ROWS += [("Average Recall     (AR)", "0.50:0.95", area, 100) for area in ("small", "medium", "large")]

Annotations = Mapping[str, Any]  # a loaded COCO annotation file: {"images", "annotations", "categories", ...}


def load_annotations(path: str | Path) -> dict:
    """Read a COCO-format annotation file; ``FileNotFoundError``/``ValueError`` say what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"COCO annotation file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data, dict) or k not in data]
    if missing:
        raise ValueError(f"{path} is not a COCO annotation file (no {', '.join(missing)})")
    return data


def _normal(name: str) -> str:
    """Names compare case-insensitively, with ``_``/``-`` and runs of spaces read as one space."""
    return re.sub(r"[\s_-]+", " ", str(name)).strip().lower()


def category_map(names: Mapping[int, str] | Sequence[str], annotations: Annotations) -> dict[int, int]:
    """YOLO class index -> COCO category id, matched by name (the data YAML's ``names`` vs ``categories``).

    Raises ``ValueError`` listing every class name that has no category of that name in the file.
    """
    names = dict(names) if isinstance(names, Mapping) else dict(enumerate(names))
    ids = {}
    for c in annotations["categories"]:
        ids.setdefault(_normal(c["name"]), []).append(c["id"])
    missing = [f"{k}: {n!r}" for k, n in sorted(names.items()) if _normal(n) not in ids]
    if missing:
        known = ", ".join(repr(c["name"]) for c in annotations["categories"][:10])
        raise ValueError(f"{len(missing)} class name(s) of the dataset are not categories of the COCO annotation "
                         f"file: {', '.join(missing)} (the file's categories: {known}"
                         f"{', ...' if len(annotations['categories']) > 10 else ''}). Classes are matched to "
                         "categories by name; rename them in the data YAML's names: or in the JSON.")
    twice = [n for n in names.values() if len(ids[_normal(n)]) > 1]
    if twice:
        raise ValueError(f"the COCO annotation file has several categories named {', '.join(map(repr, twice))}")
    return {int(k): ids[_normal(n)][0] for k, n in names.items()}


def image_id_map(annotations: Annotations) -> dict[int | str, int]:
    """The ``image_id`` YOLOv5 writes for each image -> its id in the file (the file-name stem decides).

    YOLOv5 writes ``int(stem)`` for a numeric stem (``000000000009.jpg`` -> 9), else the stem itself.
    """
    ids: dict[int | str, int] = {}
    for image in annotations["images"]:
        stem = Path(str(image["file_name"])).stem
        key = int(stem) if stem.isnumeric() else stem
        if ids.setdefault(key, image["id"]) != image["id"]:
            raise ValueError(f"two images of the annotation file have the YOLOv5 image id {key!r} (file-name stem)")
    return ids


def to_coco_results(predictions: Iterable[Mapping[str, Any]], annotations: Annotations,
                    names: Mapping[int, str] | Sequence[str] | None = None) -> tuple[list[dict], int]:
    """Predictions as YOLOv5 writes them -> COCO results for ``annotations``; also the number dropped.

    ``category_id``: with ``names`` (class index -> name) a YOLO class index, mapped by name
    (:func:`category_map`); without, already a category id of the file. ``image_id``: matched to the
    file's images by file-name stem (:func:`image_id_map`), else taken as an image id of the file.
    Predictions for images that are not in the file are dropped (pycocotools refuses them); none at
    all matching is a ``ValueError``.
    """
    predictions = list(predictions)
    categories = category_map(names, annotations) if names is not None else None
    by_stem = image_id_map(annotations)
    known = {image["id"] for image in annotations["images"]}
    results, unknown_images = [], set()
    for p in predictions:
        image_id = by_stem.get(p["image_id"], p["image_id"] if p["image_id"] in known else None)
        if image_id is None:
            unknown_images.add(p["image_id"])
            continue
        category = p["category_id"]
        if categories is not None:
            if int(category) not in categories:
                raise ValueError(f"prediction class {category} is not one of the {len(categories)} names given")
            category = categories[int(category)]
        results.append({**p, "image_id": image_id, "category_id": category})
    if predictions and not results:
        examples = ", ".join(map(repr, sorted(unknown_images, key=str)[:5]))
        raise ValueError(f"none of the {len(unknown_images)} image ids of the predictions ({examples}, ...) is an "
                         "image of the annotation file (by file-name stem or by id)")
    return results, len(predictions) - len(results)


def evaluate(predictions: Sequence[Mapping[str, Any]] | str | Path, annotations: Annotations | str | Path,
             image_ids: Iterable[int] | None = None) -> dict[str, float]:
    """The 12 standard COCO box metrics (``STAT_NAMES``) of COCO-format ``predictions``.

    Args:
        predictions: COCO results (category and image ids of the annotation file, e.g. from
            :func:`to_coco_results`), or the path of a JSON file holding them.
        annotations: a loaded annotation file (:func:`load_annotations`) or its path.
        image_ids: evaluate on these images of the file only (e.g. the images a validation run
            saw, with or without detections); ``None``: every image of the file.

    pycocotools' own progress output is silenced; print the result with :func:`format_stats`.
    """
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as e:  # a dependency of yolo-backbones; only missing in hand-made environments
        raise ImportError("COCO evaluation needs pycocotools: pip install 'pycocotools>=2.0.6'") from e
    if isinstance(annotations, (str, Path)):
        annotations = load_annotations(annotations)
    if isinstance(predictions, (str, Path)):
        predictions = json.loads(Path(predictions).read_text())
    if not predictions:
        raise ValueError("no predictions to evaluate")
    with contextlib.redirect_stdout(io.StringIO()):  # "loading annotations...", "DONE (t=0.01s)", the table
        gt = COCO()
        gt.dataset = copy.deepcopy(dict(annotations))  # pycocotools adds keys to what it is given
        gt.createIndex()
        dt = gt.loadRes([dict(p) for p in predictions])
        coco_eval = COCOeval(gt, dt, "bbox")
        if image_ids is not None:
            coco_eval.params.imgIds = sorted(set(image_ids))
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return {name: float(value) for name, value in zip(STAT_NAMES, coco_eval.stats)}


def format_stats(stats: Mapping[str, float]) -> str:
    """The 12 metrics as the 12 lines pycocotools' ``COCOeval.summarize()`` prints."""
    return "\n".join(f" {title} @[ IoU={iou:<9} | area={area:>6s} | maxDets={dets:>3d} ] = {stats[name]:0.3f}"
                     for name, (title, iou, area, dets) in zip(STAT_NAMES, _STAT_ROWS))
