"""NumPy reference of OverFeat's greedy merge, written directly from the spec.

Deliberately naive: one image at a time, a full score matrix, a sequential loop that picks
the first minimum in row-major order (`np.argmin` on the flattened matrix), merges, and
recomputes the merged box's row and column. Used only by the tests.
"""

from __future__ import annotations

import numpy as np


def match_score(a, b):
    """match(a, b) = |center(a) - center(b)| / mean(diag(a), diag(b)) + (1 - IoU(a, b)).

    `a`, `b`: broadcastable [..., 4] arrays of `[y1, x1, y2, x2]`.
    """
    a, b = np.asarray(a), np.asarray(b)
    ay1, ax1, ay2, ax2 = np.moveaxis(a, -1, 0)
    by1, bx1, by2, bx2 = np.moveaxis(b, -1, 0)
    ah, aw = np.maximum(ay2 - ay1, 0), np.maximum(ax2 - ax1, 0)
    bh, bw = np.maximum(by2 - by1, 0), np.maximum(bx2 - bx1, 0)
    inter = np.maximum(np.minimum(ay2, by2) - np.maximum(ay1, by1), 0) * np.maximum(
        np.minimum(ax2, bx2) - np.maximum(ax1, bx1), 0
    )
    union = ah * aw + bh * bw - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
        dist = np.hypot((ay1 + ay2) / 2 - (by1 + by2) / 2, (ax1 + ax2) / 2 - (bx1 + bx2) / 2)
        mean_diag = (np.hypot(ah, aw) + np.hypot(bh, bw)) / 2
        # Zero-size boxes: coincident ones have no center term, distinct ones never match.
        center_term = np.where(mean_diag > 0, dist / mean_diag, np.where(dist == 0, 0.0, np.inf))
    return center_term + (1.0 - iou)


def greedy_merge_image(boxes, scores, classes, match_threshold=1.0, score_threshold=0.05,
                       max_candidates=None, dtype=np.float64):
    """Merges one image's detections; returns (boxes [K, 4], scores [K], classes [K], merges)
    sorted by merged score descending (stable)."""
    boxes = np.asarray(boxes, dtype)
    scores = np.asarray(scores, dtype)
    classes = np.asarray(classes, np.int64)
    keep = np.flatnonzero(scores >= score_threshold)
    if max_candidates is not None and keep.size > max_candidates:
        # Best `max_candidates` by score (stable), then back to input order.
        keep = np.sort(keep[np.argsort(-scores[keep], kind="stable")[:max_candidates]])
    sums = boxes[keep].copy()
    counts = np.ones(keep.size)
    score_sums = scores[keep].copy()
    cls = classes[keep]
    alive = np.ones(keep.size, bool)
    n = keep.size

    def row_of(r):
        """Scores of box r against every box; +inf for itself, removed boxes and other
        classes."""
        means = sums / counts[:, None]
        row = match_score(means[r], means)
        row[(cls != cls[r]) | ~alive] = np.inf
        row[r] = np.inf
        return row

    matrix = np.full((n, n), np.inf)
    for r in range(n):
        matrix[r] = row_of(r)
    merges = 0
    while n > 0:
        flat = int(np.argmin(matrix))  # first minimum in row-major order
        r, c = divmod(flat, n)
        if not matrix[r, c] <= match_threshold:  # also stops on +inf
            break
        sums[r] += sums[c]
        counts[r] += counts[c]
        score_sums[r] += score_sums[c]
        alive[c] = False
        matrix[c, :] = np.inf
        matrix[:, c] = np.inf
        matrix[r, :] = matrix[:, r] = row_of(r)
        merges += 1
    idx = np.flatnonzero(alive)
    order = idx[np.argsort(-score_sums[idx], kind="stable")]
    return (sums[order] / counts[order][:, None], score_sums[order], cls[order], merges)


def greedy_merge_batch(boxes, scores, classes, max_detections=100, **kwargs):
    """Batched reference returning the padded detections dict as NumPy arrays."""
    b = len(boxes)
    out = {
        "boxes": np.zeros((b, max_detections, 4), np.float32),
        "scores": np.zeros((b, max_detections), np.float32),
        "classes": np.zeros((b, max_detections), np.int32),
        "num_detections": np.zeros((b,), np.int32),
    }
    for i in range(b):
        mb, ms, mc, _ = greedy_merge_image(boxes[i], scores[i], classes[i], **kwargs)
        k = min(len(ms), max_detections)
        out["boxes"][i, :k] = mb[:k]
        out["scores"][i, :k] = ms[:k]
        out["classes"][i, :k] = mc[:k]
        out["num_detections"][i] = k
    return out
