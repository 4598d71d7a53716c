"""Do two runs of a detector agree? The parity rule `kerasdet demo` applies to Keras vs TFLite.

Converted models are not bit-exact: TFLite kernels sum in another order, and a box near
an NMS or score threshold can flip. So the rule compares what a user sees, not tensors:
every reference detection scoring at least `min_score` (0.3) must have a detection of
the same class in the other run with IoU ≥ `min_iou` (0.9) and a score within
`max_score_diff` (0.02). Low-scoring detections are left out because they are the ones a
rounding difference can legitimately push across the detector's score threshold.
"""

from __future__ import annotations

import dataclasses

import numpy as np

PARITY_MIN_SCORE = 0.3
PARITY_MIN_IOU = 0.9
PARITY_MAX_SCORE_DIFF = 0.02


@dataclasses.dataclass(frozen=True)
class ParityReport:
    """The result of `check_parity`.

    Attributes:
        compared: reference detections the rule applied to (score ≥ `min_score`).
        matched: how many of them found their match.
        failures: one line per unmatched detection (image, class, score, box, and the
            closest candidate of its class).
        min_score, min_iou, max_score_diff: the rule's thresholds.
    """

    compared: int
    matched: int
    failures: tuple
    min_score: float
    min_iou: float
    max_score_diff: float

    @property
    def ok(self) -> bool:
        """Every compared detection matched, and there was something to compare: a check
        that compared nothing proves nothing."""
        return self.compared > 0 and self.matched == self.compared

    def rule(self) -> str:
        """The rule in words, for reports."""
        return (
            f"each detection scoring ≥ {self.min_score:g} has one of its class with "
            f"IoU ≥ {self.min_iou:g} and |Δscore| ≤ {self.max_score_diff:g}"
        )


def box_iou(box, boxes) -> np.ndarray:
    """IoU of one yxyx box with each of `boxes [n, 4]` → float64 `[n]` (0 for empty unions)."""
    box = np.asarray(box, np.float64).reshape(4)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    height = np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0])
    width = np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1])
    intersection = np.maximum(height, 0.0) * np.maximum(width, 0.0)

    def area(b):
        return np.maximum(b[..., 2] - b[..., 0], 0.0) * np.maximum(b[..., 3] - b[..., 1], 0.0)

    union = area(box) + area(boxes) - intersection
    return np.where(union > 0, intersection / np.where(union > 0, union, 1.0), 0.0)


def _rows(detections, name, index):
    missing = [k for k in ("boxes", "scores", "classes") if k not in detections]
    if missing:
        raise ValueError(f"`{name}[{index}]` must be a detections dict with boxes, scores, classes; missing {missing}")
    boxes = np.asarray(detections["boxes"], np.float64).reshape(-1, 4)
    scores = np.asarray(detections["scores"], np.float64).reshape(-1)
    classes = np.asarray(detections["classes"]).reshape(-1).astype(np.int64)
    if not len(boxes) == len(scores) == len(classes):
        raise ValueError(
            f"`{name}[{index}]` has {len(boxes)} boxes, {len(scores)} scores and "
            f"{len(classes)} classes; expected one of each per detection"
        )
    return boxes, scores, classes


def check_parity(
    reference,
    candidate,
    *,
    min_score: float = PARITY_MIN_SCORE,
    min_iou: float = PARITY_MIN_IOU,
    max_score_diff: float = PARITY_MAX_SCORE_DIFF,
    class_names=None,
) -> ParityReport:
    """Checks that `candidate` reproduces every confident detection of `reference`.

    Args:
        reference: one detections dict per image (`boxes [n, 4]` yxyx, `scores [n]`,
            `classes [n]`; only real rows, no padding), e.g. the Keras model's.
        candidate: the same for the run under test (e.g. `TFLiteDetector.detect`), same
            images in the same order.
        min_score: reference detections scoring below this are not compared.
        min_iou: smallest IoU of a match.
        max_score_diff: largest |score difference| of a match.
        class_names: optional names by class id, for the failure lines.

    Returns:
        A `ParityReport`; `report.ok` is the verdict.

    Raises:
        ValueError: the two lists hold different numbers of images, or a dict lacks
            `boxes` / `scores` / `classes` or has rows of different lengths.
    """
    reference, candidate = list(reference), list(candidate)
    if len(reference) != len(candidate):
        raise ValueError(
            f"`reference` has {len(reference)} images and `candidate` {len(candidate)}; "
            "expected detections of the same images"
        )
    compared = matched = 0
    failures = []
    for i, (want, got) in enumerate(zip(reference, candidate)):
        boxes, scores, classes = _rows(want, "reference", i)
        got_boxes, got_scores, got_classes = _rows(got, "candidate", i)
        for box, score, cls in zip(boxes, scores, classes):
            if score < min_score:
                continue
            compared += 1
            same = got_classes == cls
            ious = box_iou(box, got_boxes[same])
            diffs = np.abs(got_scores[same] - score)
            if np.any((ious >= min_iou) & (diffs <= max_score_diff)):
                matched += 1
                continue
            name = class_names[cls] if class_names is not None and 0 <= cls < len(class_names) else f"class {cls}"
            if ious.size:
                best = int(np.argmax(ious))
                closest = f"closest of its class: IoU {ious[best]:.3f}, |Δscore| {diffs[best]:.3f}"
            else:
                closest = "no detection of its class"
            failures.append(f"image {i}: {name} {score:.3f} at {np.round(box, 1).tolist()}: {closest}")
    return ParityReport(compared, matched, tuple(failures), min_score, min_iou, max_score_diff)
