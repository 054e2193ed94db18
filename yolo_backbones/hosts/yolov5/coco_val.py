"""``val.py --save-json``: COCO mAP with pycocotools for any dataset that has a COCO annotation file.

YOLOv5 runs pycocotools only when the val set's path ends with ``coco/val2017.txt``, and then only
with ``../datasets/coco/annotations/instances_val2017.json`` relative to the working directory.
:func:`patch_val` (applied by :func:`yolo_backbones.hosts.yolov5.compat.apply_compat` to ``yolov5.val`` and to a
clone's ``val``) wraps the host's ``val.run``: with ``save_json`` and an annotation file, named by

* ``run(..., coco_json=PATH)``, or ``--coco-json PATH`` of ``val.py``/``yolo-backbones val``
  (:func:`set_coco_json`), or else
* the data YAML key ``coco_json:`` (relative to the dataset ``path:``, or absolute),

YOLOv5's own pycocotools step is skipped; after YOLOv5's ``run`` returns, the predictions file it
wrote (``<save_dir>/<weights stem>_predictions.json``) is rewritten in place with the file's category
ids (YOLO classes matched to categories by name) and image ids (by file-name stem), evaluated on the
images of the run, and the 12 COCO metrics are printed. The returned results carry pycocotools' AP50
and AP as mAP50 and mAP50-95, as YOLOv5 does for COCO (the per-class maps stay YOLOv5's).
"""
from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import types
from pathlib import Path
from typing import Any, Callable, Iterator

from ..common.coco import annotation_file, evaluate_run
from ..common.patching import replace as _replace

__all__ = ["patch_val", "set_coco_json"]

_LOG = logging.getLogger("yolov5")
_override: Path | None = None  # --coco-json of the command line


def set_coco_json(path: str | Path | None) -> None:
    """Use this annotation file for every following ``val.run`` of the process (``None``: the data YAML's)."""
    global _override
    _override = None if path is None else Path(path).resolve()


class _Deferred(Exception):
    """Raised into YOLOv5's own pycocotools block, which logs it and goes on: we evaluate afterwards."""


@contextlib.contextmanager
def _temporarily(module: types.ModuleType, **values: Any) -> Iterator[None]:
    """Set module globals for the duration of a ``with`` block (only names the module has)."""
    saved = {k: module.__dict__[k] for k in values if k in module.__dict__}
    module.__dict__.update({k: v for k, v in values.items() if k in saved})
    try:
        yield
    finally:
        module.__dict__.update(saved)


def _make_run(original: Callable, val: types.ModuleType) -> Callable:
    signature = inspect.signature(original)
    log = getattr(val, "LOGGER", _LOG)

    def run(*args: Any, coco_json: str | Path | None = None, **kwargs: Any) -> Any:
        """YOLOv5's ``val.run``; with ``save_json``, also pycocotools mAP for a dataset with a COCO annotation file.

        ``coco_json`` (or ``--coco-json``) names the annotation file; otherwise the data YAML's
        ``coco_json:`` key does. See :mod:`yolo_backbones.hosts.common.coco`.
        """
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError:
            return original(*args, **kwargs)  # YOLOv5's own error
        bound.apply_defaults()
        opt = bound.arguments
        if coco_json is not None:  # an explicit annotation file asks for the evaluation
            opt["save_json"] = True
        explicit = Path(coco_json).resolve() if coco_json is not None else _override
        if not opt.get("save_json") or opt.get("single_cls") or not hasattr(val, "check_dataset"):
            return original(*args, **kwargs)
        data = val.check_dataset(opt["data"]) if not isinstance(opt["data"], dict) else opt["data"]
        annotations_file = annotation_file(data, explicit, log)
        if annotations_file is None:
            return original(*args, **kwargs)

        training = opt.get("model") is not None
        if not training:  # fix the run folder now, so that we know where the predictions will be
            save_dir = Path(val.increment_path(Path(opt["project"]) / opt["name"], exist_ok=opt["exist_ok"]))
            opt.update(project=str(save_dir.parent), name=save_dir.name, exist_ok=True)
        else:
            save_dir = Path(opt["save_dir"])
        weights = opt["weights"]
        stem = Path(weights[0] if isinstance(weights, list) else weights).stem if weights is not None else ""
        pred_json = save_dir / f"{stem}_predictions.json"
        before = pred_json.stat().st_mtime_ns if pred_json.exists() else None

        datasets = [opt["dataloader"].dataset] if training and opt.get("dataloader") is not None else []
        create_dataloader = val.__dict__.get("create_dataloader")

        def capture_dataloader(*a: Any, **k: Any) -> Any:
            made = create_dataloader(*a, **k)
            datasets.append(made[1])
            return made

        host_check_requirements = val.__dict__.get("check_requirements")

        def check_requirements(requirements: Any = None, *a: Any, **k: Any) -> Any:
            if str(requirements).startswith("pycocotools"):  # YOLOv5's own pycocotools step: skip it
                raise _Deferred(f"skipped here; yolo_backbones evaluates against {annotations_file} below")
            return host_check_requirements(requirements, *a, **k)

        with _temporarily(val, create_dataloader=capture_dataloader, check_requirements=check_requirements):
            results = original(*bound.args, **bound.kwargs)

        if not pred_json.is_file() or pred_json.stat().st_mtime_ns == before:
            log.warning("WARNING ⚠️ pycocotools mAP: no predictions (no detection above --conf-thres), so no "
                        f"{pred_json.name} was written; mAP50 and mAP50-95 are YOLOv5's own")
            return results
        try:
            stats = _evaluate_run(pred_json, annotations_file, data, datasets[-1] if datasets else None, val, log)
        except Exception as e:  # as YOLOv5 does: a failed pycocotools step does not fail the validation
            log.warning(f"WARNING ⚠️ pycocotools unable to run on {pred_json} with {annotations_file}: {e}")
            return results
        metrics, *rest = results
        return ((*metrics[:2], stats["AP50"], stats["AP"], *metrics[4:]), *rest)

    # what inspect (and so `yolov5 val --help`, a fire CLI) shows: YOLOv5's parameters plus coco_json
    params = list(signature.parameters.values())
    more = [p for p in params if p.kind is p.VAR_KEYWORD]
    coco_json = inspect.Parameter("coco_json", inspect.Parameter.KEYWORD_ONLY, default=None)
    run.__signature__ = signature.replace(parameters=[*(p for p in params if p not in more), coco_json, *more])
    return run


def _evaluate_run(pred_json: Path, annotations_file: Path, data: dict, dataset: Any, val: types.ModuleType,
                  log: logging.Logger) -> dict[str, float]:
    """Rewrite YOLOv5's predictions file with the annotation file's ids, evaluate it, print the 12 metrics."""
    predictions = json.loads(pred_json.read_text())
    is_coco = isinstance(data.get("val"), str) and data["val"].endswith(f"coco{os.sep}val2017.txt")
    if is_coco:  # YOLOv5 already wrote COCO's 91-id numbering: back to class indices, then by name like any other
        index = {coco_id: k for k, coco_id in enumerate(val.coco80_to_coco91_class())}
        predictions = [{**p, "category_id": index[p["category_id"]]} for p in predictions]
    stats, results = evaluate_run(predictions, annotations_file, data["names"],
                                  dataset.im_files if dataset is not None else None, log,
                                  note=f"; {pred_json.name} rewritten with its category and image ids")
    pred_json.write_text(json.dumps(results))
    return stats


def patch_val(val: types.ModuleType) -> None:
    """Wrap ``val.run`` of a YOLOv5 host (pip ``yolov5.val`` or a clone's ``val``) once; see the module doc."""
    if callable(val.__dict__.get("run")) and callable(val.__dict__.get("save_one_json")):
        _replace(val, "run", lambda original: _make_run(original, val))
