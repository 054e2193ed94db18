"""What INT8 costs a detector, measured against its FP32 original on the same images.

Two kinds of figures (docs/int8.md explains the choice):

* raw head outputs: :func:`cosine` and :func:`sqnr_db` of the quantized model's Detect output against the FP32
  one, for the box channels and the score channels separately (:func:`head_parts`): box coordinates are in
  pixels and dominated by the anchor grid, so one figure over the whole tensor would hide score errors;
* detection agreement (:func:`agreement_map50`): the FP32 model's detections with score >= 0.25 are the ground
  truth, the quantized model's detections (score >= 0.001, as in validation) are scored against them with
  pycocotools (:func:`yolo_backbones.hosts.common.coco_eval.evaluate`); 1.0 means the same boxes, classes and ranking.

Head outputs come in three layouts (:data:`LAYOUTS`): YOLOv5 ``(B, N, 5 + nc)`` with objectness,
ultralytics ``(B, 4 + nc, N)``, and end-to-end heads (YOLO26) ``(B, K, 6)`` = x1, y1, x2, y2, score, class
after the model's own selection.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ...hosts.common.coco_eval import evaluate

__all__ = [
    "LAYOUTS",
    "Detections",
    "agreement_map50",
    "compare_outputs",
    "cosine",
    "detections",
    "guess_layout",
    "head_parts",
    "sqnr_db",
]

LAYOUTS = ("yolov5", "ultralytics", "end2end")
REFERENCE_CONF = 0.25  # FP32 detections at or above this score are the ground truth
TEST_CONF = 0.001  # quantized detections kept for scoring (validation's threshold)
NMS_IOU = 0.7


@dataclass
class Detections:
    """One image's detections: ``boxes`` (n, 4) x1, y1, x2, y2 pixels, ``scores`` (n,), ``classes`` (n,) ints."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray


def cosine(reference: np.ndarray, test: np.ndarray) -> float:
    """Cosine similarity of two arrays taken as flat vectors (1.0: same direction; 0 for an all-zero input)."""
    a, b = np.asarray(reference, np.float64).ravel(), np.asarray(test, np.float64).ravel()
    norm = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / norm) if norm else 0.0


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB: ``10 log10(sum ref^2 / sum (ref - test)^2)`` (inf if equal)."""
    a, b = np.asarray(reference, np.float64).ravel(), np.asarray(test, np.float64).ravel()
    noise = float(np.sum((a - b) ** 2))
    return float("inf") if noise == 0 else float(10 * np.log10(float(np.sum(a ** 2)) / noise))


def guess_layout(shape: Sequence[int], nc: int) -> str:
    """The layout (:data:`LAYOUTS`) of a head output of ``shape`` for ``nc`` classes; ValueError if none fits."""
    if len(shape) == 3:
        if shape[2] == 5 + nc:
            return "yolov5"
        if shape[1] == 4 + nc:
            return "ultralytics"
        if shape[2] == 6:
            return "end2end"
    raise ValueError(f"a head output of shape {tuple(shape)} is none of {LAYOUTS} for {nc} classes")


def head_parts(output: np.ndarray, layout: str) -> tuple[np.ndarray, np.ndarray]:
    """``(boxes, scores)`` of a batch of head outputs: (B, N, 4) box channels and (B, N, S) score channels.

    Scores are the objectness and class columns (YOLOv5), the class columns (ultralytics) or the score
    column (end-to-end).
    """
    output = np.asarray(output, np.float32)
    if layout == "ultralytics":
        output = output.transpose(0, 2, 1)
    if layout == "end2end":
        return output[..., :4], output[..., 4:5]
    if layout in ("yolov5", "ultralytics"):
        return output[..., :4], output[..., 4:]
    raise ValueError(f"unknown head layout {layout!r}; expected one of {LAYOUTS}")


def detections(output: np.ndarray, layout: str, conf: float = TEST_CONF, iou: float = NMS_IOU,
               max_det: int = 300) -> list[Detections]:
    """Per-image detections of a batch of head outputs: best class per box, score >= ``conf``, class-wise NMS.

    YOLOv5 scores are objectness x class probability, as its own NMS computes them. End-to-end outputs are
    already selected by the model: only the ``conf`` filter applies.
    """
    import torchvision

    boxes_all, scores_all = head_parts(output, layout)
    result = []
    for boxes, scores in zip(boxes_all, scores_all):
        if layout == "end2end":
            keep = scores[:, 0] >= conf
            classes = np.asarray(output)[len(result), keep, 5].astype(np.int64)
            result.append(Detections(boxes[keep].astype(np.float32), scores[keep, 0], classes))
            continue
        if layout == "yolov5":
            scores = scores[:, 1:] * scores[:, :1]
        best = scores.argmax(1)
        score = scores[np.arange(len(scores)), best]
        keep = score >= conf
        xywh, score, best = boxes[keep], score[keep], best[keep]
        xyxy = np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)
        picked = torchvision.ops.batched_nms(torch.from_numpy(xyxy), torch.from_numpy(score),
                                             torch.from_numpy(best), iou)[:max_det].numpy()
        result.append(Detections(xyxy[picked].astype(np.float32), score[picked].astype(np.float32),
                                 best[picked].astype(np.int64)))
    return result


def _coco_box(box: np.ndarray) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, x2 - x1, y2 - y1]


def agreement_map50(reference: Sequence[Detections], test: Sequence[Detections],
                    reference_conf: float = REFERENCE_CONF) -> tuple[float, int]:
    """``(mAP50, ground-truth boxes)``: ``test`` scored against the ``reference`` detections >= ``reference_conf``.

    Both lists hold one entry per image, in the same order. Classes are the categories. Raises ValueError
    when the reference detects nothing at that threshold (the figure would be undefined): fit a model that
    detects something first (scripts/fit_probe_model.py).
    """
    if len(reference) != len(test):
        raise ValueError(f"{len(reference)} reference images but {len(test)} test images")
    images, annotations, results = [], [], []
    classes: set[int] = set()
    for image_id, (ref, out) in enumerate(zip(reference, test), start=1):
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "width": 1, "height": 1})
        for box, score, cls in zip(ref.boxes, ref.scores, ref.classes):
            if score >= reference_conf:
                xywh = _coco_box(box)
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(cls) + 1,
                                    "bbox": xywh, "area": max(xywh[2] * xywh[3], 1e-6), "iscrowd": 0})
                classes.add(int(cls))
        for box, score, cls in zip(out.boxes, out.scores, out.classes):
            results.append({"image_id": image_id, "category_id": int(cls) + 1, "bbox": _coco_box(box),
                            "score": float(score)})
            classes.add(int(cls))
    if not annotations:
        raise ValueError(f"the reference model has no detection with score >= {reference_conf} on these "
                         f"{len(images)} images, so agreement is undefined (use a model that detects something)")
    if not results:
        return 0.0, len(annotations)
    categories = [{"id": c + 1, "name": str(c)} for c in sorted(classes)]
    stats = evaluate(results, {"images": images, "annotations": annotations, "categories": categories})
    return max(stats["AP50"], 0.0), len(annotations)  # pycocotools reports -1 for "no ground truth"


def compare_outputs(reference: Sequence[np.ndarray], test: Sequence[np.ndarray], layout: str) -> dict[str, float]:
    """All figures of a quantized model against its FP32 original: one head output per image (or batch) each.

    Returns ``cosine_scores``, ``sqnr_scores_db``, ``cosine_boxes``, ``sqnr_boxes_db``, ``cosine_all`` and
    ``sqnr_all_db`` (the whole output tensor, as a tool that ignores its parts would report it), ``agreement_map50``
    and ``reference_boxes`` (the number of FP32 detections used as ground truth).
    """
    ref = np.concatenate([np.asarray(r, np.float32) for r in reference])
    out = np.concatenate([np.asarray(t, np.float32) for t in test])
    if ref.shape != out.shape:
        raise ValueError(f"reference outputs {ref.shape} and test outputs {out.shape} differ in shape")
    ref_boxes, ref_scores = head_parts(ref, layout)
    out_boxes, out_scores = head_parts(out, layout)
    map50, n = agreement_map50(detections(ref, layout), detections(out, layout))
    return {"cosine_scores": cosine(ref_scores, out_scores), "sqnr_scores_db": sqnr_db(ref_scores, out_scores),
            "cosine_boxes": cosine(ref_boxes, out_boxes), "sqnr_boxes_db": sqnr_db(ref_boxes, out_boxes),
            "cosine_all": cosine(ref, out), "sqnr_all_db": sqnr_db(ref, out),
            "agreement_map50": map50, "reference_boxes": float(n)}
