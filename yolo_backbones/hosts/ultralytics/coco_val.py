"""``yolo val`` (and the final validation of ``yolo train``): COCO mAP with pycocotools for any dataset with a COCO
JSON.

ultralytics evaluates with its COCO tools only when the val set is COCO's ``val2017.txt`` (and then
needs the ``faster-coco-eval`` package). For a detection dataset whose YAML has ``coco_json:`` (relative
to the dataset ``path:``, or absolute; ``data/coco8.yaml`` has one), :func:`patch_detection_validator`
makes ``DetectionValidator``

* write predictions (``save_json`` is switched on, as ultralytics does for COCO) with class indices,
* after the run, rewrite ``predictions.json`` with the annotation file's category ids (classes matched
  by name) and image ids (by file-name stem), evaluate it with pycocotools on the images of the run and
  log the 12 COCO metrics (:mod:`yolo_backbones.hosts.common.coco`),
* report pycocotools' AP50 and AP as ``metrics/mAP50(B)`` / ``metrics/mAP50-95(B)`` of the returned
  stats (as ultralytics does for COCO); the 12 numbers are also kept as ``validator.metrics.coco_stats``.

Validation during training (every epoch) is left alone.
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable

from ..common.coco import annotation_file, evaluate_run

__all__ = ["patch_detection_validator"]

_LOG = logging.getLogger("ultralytics")
_PATCHED_FLAG = "_yolo_backbones_coco_val"


def _make_init_metrics(original: Callable) -> Callable:
    def init_metrics(self: Any, model: Any) -> None:
        original(self, model)
        self.coco_json = None
        if self.training or self.args.task != "detect" or self.args.single_cls or not isinstance(self.data, dict):
            return
        self.coco_json = annotation_file(self.data, None, _LOG)
        if self.coco_json is None:
            return
        self.args.save_json = True
        # predictions keep class indices; evaluate_run maps them to the file's categories by name
        self.class_map = list(range(len(model.names)))
        self.is_coco = self.is_lvis = False
        self.is_custom_json = self.build_gdict = False
        self.gdict, self.eval_ids = None, None

    init_metrics.__wrapped__ = original
    init_metrics.__doc__ = original.__doc__
    return init_metrics


def _make_eval_json(original: Callable) -> Callable:
    def eval_json(self: Any, stats: dict[str, Any]) -> dict[str, Any]:
        """pycocotools mAP against the dataset's ``coco_json:`` file (see the module doc); else ultralytics' own."""
        path = getattr(self, "coco_json", None)
        if path is None or self.training:
            return original(self, stats)
        pred_json = Path(self.save_dir) / "predictions.json"
        try:
            coco, results = evaluate_run(self.jdict, path, self.data["names"], self.dataloader.dataset.im_files, _LOG,
                                         note=f"; {pred_json.name} rewritten with its category and image ids")
        except Exception as e:  # noqa: BLE001  as ultralytics does: a failed COCO evaluation does not fail the validation
            _LOG.warning(f"pycocotools unable to run on {pred_json} with {path}: {e}")
            return stats
        if pred_json.is_file():
            pred_json.write_text(json.dumps(results))
        stats["metrics/mAP50(B)"], stats["metrics/mAP50-95(B)"] = coco["AP50"], coco["AP"]
        sizes = (("small", "APs"), ("medium", "APm"), ("large", "APl"))
        stats.update({f"metrics/mAP_{x}(B)": coco[k] for x, k in sizes})
        stats["fitness"] = 0.9 * coco["AP"] + 0.1 * coco["AP50"]
        self.metrics.coco_stats = coco
        return stats

    eval_json.__wrapped__ = original
    return eval_json


def patch_detection_validator() -> None:
    """Hook ``DetectionValidator.init_metrics`` / ``eval_json`` once, if ``ultralytics.models.yolo.detect.val`` is
    loaded."""
    module = sys.modules.get("ultralytics.models.yolo.detect.val")
    cls = getattr(module, "DetectionValidator", None)
    hookable = cls is not None and all(hasattr(cls, a) for a in ("init_metrics", "eval_json"))
    if not hookable or cls.__dict__.get(_PATCHED_FLAG):
        return
    cls.init_metrics = _make_init_metrics(cls.init_metrics)
    cls.eval_json = _make_eval_json(cls.eval_json)
    setattr(cls, _PATCHED_FLAG, True)
