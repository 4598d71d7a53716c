"""NumPy reference of per-class greedy NMS, written directly from the spec.

Deliberately naive (plain Python loops over one image at a time):

1. Candidates are (box, class) pairs with candidate index `box_index · C + class`; those
   with `score >= score_threshold` are kept, and at most `max_candidates` of them enter
   NMS (the best by score, ties broken by the lower candidate index).
2. Per class (or over all candidates when `class_agnostic`): sort by score descending,
   ties broken by the lower candidate index; walk the list and keep a candidate unless a
   kept one of the same group overlaps it with IoU > `iou_threshold` (strictly greater).
3. Merge the kept candidates of all classes, sort by score descending with the same tie
   rule, and truncate to `max_detections`; padding rows are zeros.

Used only by the tests.
"""

from __future__ import annotations

import numpy as np


def iou(a, b) -> float:
    """IoU of two yxyx boxes in float64; 0 when either box has no area."""
    ay1, ax1, ay2, ax2 = (float(v) for v in a)
    by1, bx1, by2, bx2 = (float(v) for v in b)
    area_a = max(ay2 - ay1, 0.0) * max(ax2 - ax1, 0.0)
    area_b = max(by2 - by1, 0.0) * max(bx2 - bx1, 0.0)
    if area_a <= 0.0 or area_b <= 0.0:
        return 0.0
    inter = max(min(ay2, by2) - max(ay1, by1), 0.0) * max(min(ax2, bx2) - max(ax1, bx1), 0.0)
    return inter / (area_a + area_b - inter)


def _order(candidates, scores):
    """Candidate indices sorted by score descending, then by candidate index ascending."""
    return sorted(candidates, key=lambda c: (-float(scores[c]), c))


def nms_image(boxes, scores, iou_threshold=0.5, score_threshold=0.05, max_detections=100,
              max_candidates=None, class_agnostic=False):
    """One image. boxes `[N, 4]` (class-shared) or `[N, C, 4]`, scores `[N, C]`.

    Returns (boxes [K, 4], scores [K], classes [K]) of the kept detections, K ≤ D.
    """
    scores = np.asarray(scores, np.float32)
    boxes = np.asarray(boxes, np.float32)
    num_boxes, num_classes = scores.shape
    if boxes.ndim == 2:
        boxes = np.repeat(boxes[:, None, :], num_classes, axis=1)
    flat_boxes = boxes.reshape(-1, 4)
    flat_scores = scores.reshape(-1)
    flat_classes = np.tile(np.arange(num_classes), num_boxes)

    candidates = [c for c in range(flat_scores.size) if flat_scores[c] >= score_threshold]
    if max_candidates is not None:
        candidates = _order(candidates, flat_scores)[:max_candidates]

    groups = {}
    for c in candidates:
        groups.setdefault(0 if class_agnostic else int(flat_classes[c]), []).append(c)
    kept = []
    for members in groups.values():
        selected = []
        for c in _order(members, flat_scores):
            if all(iou(flat_boxes[c], flat_boxes[s]) <= iou_threshold for s in selected):
                selected.append(c)
        kept.extend(selected)
    kept = _order(kept, flat_scores)[:max_detections]
    return flat_boxes[kept], flat_scores[kept], flat_classes[kept].astype(np.int32)


def nms_batch(boxes, scores, max_detections=100, **kwargs) -> dict:
    """Batched `nms_image`, padded to `max_detections` rows like `non_max_suppression`."""
    boxes = np.asarray(boxes, np.float32)
    scores = np.asarray(scores, np.float32)
    batch = scores.shape[0]
    out = {
        "boxes": np.zeros([batch, max_detections, 4], np.float32),
        "scores": np.zeros([batch, max_detections], np.float32),
        "classes": np.zeros([batch, max_detections], np.int32),
        "num_detections": np.zeros([batch], np.int32),
    }
    for i in range(batch):
        b, s, c = nms_image(boxes[i], scores[i], max_detections=max_detections, **kwargs)
        k = len(s)
        out["boxes"][i, :k], out["scores"][i, :k], out["classes"][i, :k] = b, s, c
        out["num_detections"][i] = k
    return out
