"""COCO mAP of one validation run with pycocotools, shared by the hosts' val hooks.

A host's val writes YOLO-style predictions (``category_id`` = class index, ``image_id`` = file-name stem,
``int`` when numeric). :func:`annotation_file` finds the dataset's COCO annotation file (the data YAML key
``coco_json:``) and :func:`evaluate_run` turns the predictions into COCO results for it, evaluates them on
the images of the run and logs pycocotools' 12 lines.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .coco_eval import evaluate, format_stats, image_id_map, load_annotations, to_coco_results

__all__ = ["annotation_file", "evaluate_run"]


def annotation_file(data: Mapping[str, Any], explicit: Path | None, log: logging.Logger) -> Path | None:
    """The annotation file for ``data`` (a checked dataset dict): ``explicit``, else its ``coco_json:`` key.

    A relative ``coco_json`` is relative to the dataset ``path:``. Returns ``None`` (with a warning when
    the key names a missing file) if there is none; a missing ``explicit`` file raises ``FileNotFoundError``.
    """
    if explicit is not None:
        if not explicit.is_file():
            raise FileNotFoundError(f"--coco-json/coco_json: no such file: {explicit}")
        return explicit
    key = data.get("coco_json")
    if not key:
        return None
    path = Path(str(key)).expanduser()
    path = path if path.is_absolute() else Path(str(data.get("path") or "")) / path
    if not path.is_file():
        log.warning(f"WARNING ⚠️ coco_json: {path} not found; no pycocotools mAP for this dataset")
        return None
    return path.resolve()


def evaluate_run(predictions: Sequence[Mapping[str, Any]], annotations_file: Path,
                 names: Mapping[int, str] | Sequence[str], image_files: Iterable[str] | None,
                 log: logging.Logger, note: str = "") -> tuple[dict[str, float], list[dict]]:
    """Evaluate one run's YOLO-style ``predictions`` against ``annotations_file``; return ``(stats, results)``.

    ``names``: the dataset's class index -> name (matched to the file's categories by name).
    ``image_files``: the images of the run, also those without any detection (``None``: the images that
    have predictions). ``stats`` holds the 12 metrics of :data:`yolo_backbones.hosts.common.coco_eval.STAT_NAMES`;
    ``results`` are the predictions with the file's category and image ids. ``note`` ends the header line.
    """
    annotations = load_annotations(annotations_file)
    results, dropped = to_coco_results(predictions, annotations, names=names)
    by_stem = image_id_map(annotations)
    if image_files is not None:
        stems = [Path(f).stem for f in image_files]
        image_ids = {by_stem[k] for k in (int(s) if s.isnumeric() else s for s in stems) if k in by_stem}
        outside = len(stems) - len(image_ids)
    else:
        image_ids, outside = {p["image_id"] for p in results}, 0
    log.info(f"\npycocotools mAP (yolo_backbones) of {len(results)} predictions on {len(image_ids)} images, "
             f"annotations {annotations_file}{note}")
    if dropped or outside:
        log.warning(f"WARNING ⚠️ {outside} images of the run are not in {annotations_file.name} (matched by "
                    f"file-name stem): not evaluated, {dropped} predictions dropped")
    stats = evaluate(results, annotations, image_ids)
    log.info(format_stats(stats))
    return stats, results
