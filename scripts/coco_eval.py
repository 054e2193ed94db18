#!/usr/bin/env python
"""Print the 12 standard COCO box metrics (pycocotools) of a predictions file against a COCO annotation file.

Usage:
    python scripts/coco_eval.py PREDICTIONS.json ANNOTATIONS.json [--names data.yaml] [--all-images]

PREDICTIONS.json is a COCO results list, ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}, ...]``,
such as YOLOv5's ``val.py --save-json`` writes. Image ids are matched to ANNOTATIONS' images by
file-name stem as YOLOv5 writes them (``int(stem)`` or the stem), else taken as image ids.
Category ids are taken as the annotation file's ids, unless ``--names data.yaml`` is given: then
they are YOLO class indices, matched to categories by the YAML's ``names:`` (a file from a val.py
run with a ``coco_json:``/``--coco-json`` already holds COCO ids: don't pass ``--names`` for it).
By default only the images with at least one prediction are evaluated; ``--all-images`` evaluates
every image of the annotation file (images without predictions then count as missed).
Exits with status 2 and a message on bad input.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from yolo_backbones.hosts.common.coco_eval import evaluate, format_stats, load_annotations, to_coco_results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("predictions", type=Path, help="COCO results JSON (e.g. runs/val/exp/best_predictions.json)")
    parser.add_argument("annotations", type=Path, help="COCO annotation JSON (e.g. instances_val2017.json)")
    parser.add_argument("--names", type=Path, help="data YAML whose names: map YOLO class indices to categories")
    parser.add_argument("--all-images", action="store_true", help="evaluate every image of the annotation file")
    args = parser.parse_args(argv)
    try:
        annotations = load_annotations(args.annotations)
        if not args.predictions.is_file():
            raise FileNotFoundError(f"predictions file not found: {args.predictions}")
        predictions = json.loads(args.predictions.read_text())
        if not isinstance(predictions, list) or not predictions:
            raise ValueError(f"{args.predictions}: expected a non-empty JSON list of predictions")
        names = None
        if args.names is not None:
            names = (yaml.safe_load(args.names.read_text()) or {}).get("names") if args.names.is_file() else None
            if not names:
                raise ValueError(f"--names {args.names}: not a data YAML with names:")
        results, dropped = to_coco_results(predictions, annotations, names)
        image_ids = None if args.all_images else {p["image_id"] for p in results}
        stats = evaluate(results, annotations, image_ids)
    except (OSError, ValueError, KeyError, TypeError) as e:
        detail = f"missing key {e}" if isinstance(e, KeyError) else str(e)
        print(f"coco_eval: error: {detail}", file=sys.stderr)
        return 2
    n = len(annotations["images"]) if image_ids is None else len(image_ids)
    print(f"{len(results)} predictions on {n} of the {len(annotations['images'])} images of {args.annotations}"
          + (f" ({dropped} predictions for other images dropped)" if dropped else ""))
    print(format_stats(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
