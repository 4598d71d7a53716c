"""NumPy references of Faster R-CNN's matching, target and loss rules, from the spec.

Deliberately naive (plain Python loops, one image at a time). Used only by the tests.

Matching (one image; IoU `[A, M]`, comparisons in float32 like the code under test):

1. Each valid anchor's match is the valid gt with the largest IoU, the lowest gt index on a
   tie; with no valid gt the match is 0 and the best IoU is -1.
2. Label 1 if best ≥ high, 0 if best < low, else -1.
3. Low-quality matches: for each valid gt, its best IoU over the valid anchors; if that is
   > 0, every valid anchor with exactly that IoU becomes 1 (its match stays its own best).
4. Invalid anchors (e.g. crossing the border) are -1.
"""

from __future__ import annotations

import math

import numpy as np


def iou(a, b) -> float:
    """IoU of two yxyx boxes in float64; 0 when the union is empty."""
    ay1, ax1, ay2, ax2 = (float(v) for v in a)
    by1, bx1, by2, bx2 = (float(v) for v in b)
    inter = max(min(ay2, by2) - max(ay1, by1), 0.0) * max(min(ax2, bx2) - max(ax1, bx1), 0.0)
    union = max(ay2 - ay1, 0.0) * max(ax2 - ax1, 0.0) + max(by2 - by1, 0.0) * max(bx2 - bx1, 0.0) - inter
    return inter / union if union > 0.0 else 0.0


def iou_matrix(boxes1, boxes2) -> np.ndarray:
    """`[N, M]` float32 (computed in float64, then rounded like the graph's float32 math)."""
    out = np.zeros((len(boxes1), len(boxes2)), np.float64)
    for i, a in enumerate(boxes1):
        for j, b in enumerate(boxes2):
            out[i, j] = iou(a, b)
    return out.astype(np.float32)


def gt_is_valid(box, cls) -> bool:
    """A gt row is real if its class is ≥ 0 and the box has positive height and width."""
    return int(cls) >= 0 and box[2] > box[0] and box[3] > box[1]


def match_image(iou_am, gt_valid, anchor_valid, high, low, allow_low_quality, best_per_gt=1):
    """Returns `(matches [A] int, labels [A] int, best [A] float)` for one image.

    With `allow_low_quality`, each valid gt's best valid anchor(s) are positive, and with
    `best_per_gt = k > 1` also its valid anchors whose IoU is at least the k-th largest
    valid IoU, at least `low` and above 0."""
    iou_am = np.asarray(iou_am, np.float32)
    num_anchors, num_gt = iou_am.shape
    high, low = np.float32(high), np.float32(low)
    matches = np.zeros(num_anchors, np.int64)
    labels = np.zeros(num_anchors, np.int64)
    bests = np.full(num_anchors, -1.0, np.float32)
    for a in range(num_anchors):
        best, index = None, 0
        for m in range(num_gt):
            if gt_valid[m] and (best is None or iou_am[a, m] > best):
                best, index = iou_am[a, m], m
        if best is None:
            best = np.float32(-1.0)
        matches[a], bests[a] = index, best
        labels[a] = 1 if best >= high else (0 if best < low else -1)
    if allow_low_quality:
        for m in range(num_gt):
            if not gt_valid[m]:
                continue
            values = [iou_am[a, m] for a in range(num_anchors) if anchor_valid[a]]
            if not values or max(values) <= 0:
                continue
            kth = sorted(values, reverse=True)[min(best_per_gt, len(values)) - 1]
            for a in range(num_anchors):
                if anchor_valid[a] and iou_am[a, m] == max(values):
                    labels[a] = 1
                if best_per_gt > 1 and anchor_valid[a] and iou_am[a, m] >= max(kth, low) and iou_am[a, m] > 0:
                    labels[a] = 1
    for a in range(num_anchors):
        if not anchor_valid[a]:
            labels[a] = -1
    return matches, labels, bests


def inside_image(anchor, height, width) -> bool:
    y1, x1, y2, x2 = (float(v) for v in anchor)
    return y1 >= 0 and x1 >= 0 and y2 <= height and x2 <= width


def rpn_labels_image(anchors, gt_boxes, gt_classes, image_hw, high=0.7, low=0.3,
                     allow_low_quality=True, ignore_cross_boundary=True):
    """`(matches, labels)` of the RPN anchors of one image (before sampling)."""
    gt_valid = [gt_is_valid(b, c) for b, c in zip(gt_boxes, gt_classes)]
    if ignore_cross_boundary:
        anchor_valid = [inside_image(a, *image_hw) for a in anchors]
    else:
        anchor_valid = [True] * len(anchors)
    matches, labels, _ = match_image(
        iou_matrix(anchors, gt_boxes), gt_valid, anchor_valid, high, low, allow_low_quality
    )
    return matches, labels


def rcnn_label_box(roi, gt_boxes, gt_classes, fg_iou=0.5, bg_iou_high=0.5, bg_iou_low=0.0):
    """`(class_target, matched_gt_index or None, best_iou)` of one RoI; class_target is
    k + 1 for foreground of class k, 0 for background, None if the RoI should not have
    been sampled."""
    best, index = -1.0, None
    for m, (box, cls) in enumerate(zip(gt_boxes, gt_classes)):
        if gt_is_valid(box, cls):
            value = np.float32(iou(roi, box))
            if index is None or value > best:
                best, index = value, m
    if index is not None and best >= np.float32(fg_iou):
        return int(gt_classes[index]) + 1, index, best
    best = max(best, 0.0)
    if np.float32(bg_iou_low) <= best < np.float32(bg_iou_high):
        return 0, None, best
    return None, None, best


def encode(box, anchor, weights=(1.0, 1.0, 1.0, 1.0)):
    """Faster R-CNN eq. 2 deltas `[dy, dx, dh, dw]` of one box w.r.t. one anchor (float64)."""
    y = (box[0] + box[2]) / 2.0
    x = (box[1] + box[3]) / 2.0
    h, w = box[2] - box[0], box[3] - box[1]
    ya = (anchor[0] + anchor[2]) / 2.0
    xa = (anchor[1] + anchor[3]) / 2.0
    ha, wa = anchor[2] - anchor[0], anchor[3] - anchor[1]
    wy, wx, wh, ww = weights
    return [wy * (y - ya) / ha, wx * (x - xa) / wa, wh * math.log(h / ha), ww * math.log(w / wa)]


def smooth_l1(x, beta) -> float:
    x = abs(float(x))
    if beta == 0:
        return x
    return 0.5 * x * x / beta if x < beta else x - 0.5 * beta


def sigmoid_ce(label, logit) -> float:
    """−[y log σ(z) + (1 − y) log(1 − σ(z))], in a stable form."""
    z = float(logit)
    return max(z, 0.0) - z * float(label) + math.log1p(math.exp(-abs(z)))


def softmax_ce(label, logits) -> float:
    logits = [float(v) for v in logits]
    top = max(logits)
    return top + math.log(sum(math.exp(v - top) for v in logits)) - logits[int(label)]


def rpn_losses(targets, logits, deltas, beta=1.0 / 9.0):
    """Loops over the batch: `(objectness_loss, box_loss)`."""
    weights = np.asarray(targets["objectness_weights"])
    total_cls, total_box, count = 0.0, 0.0, 0.0
    batch, num_anchors = weights.shape
    for b in range(batch):
        for a in range(num_anchors):
            if weights[b, a] > 0:
                count += weights[b, a]
                label = targets["objectness"][b, a]
                if np.ndim(logits) == 3:
                    ce = softmax_ce(int(label > 0.5), logits[b, a])
                else:
                    ce = sigmoid_ce(label, logits[b, a])
                total_cls += weights[b, a] * ce
            if targets["box_weights"][b, a] > 0:
                total_box += targets["box_weights"][b, a] * sum(
                    smooth_l1(deltas[b, a, i] - targets["box_targets"][b, a, i], beta) for i in range(4)
                )
    normalizer = max(count, 1.0)
    return total_cls / normalizer, total_box / normalizer


def rcnn_losses(class_targets, box_targets, box_weights, valid, logits, deltas, beta=1.0):
    """Loops over the batch: `(class_loss, box_loss)`; deltas `[B, S, C, 4]`."""
    total_cls, total_box, count = 0.0, 0.0, 0.0
    batch, num_samples = np.shape(class_targets)
    for b in range(batch):
        for s in range(num_samples):
            if not valid[b, s]:
                continue
            count += 1
            total_cls += softmax_ce(class_targets[b, s], logits[b, s])
            if box_weights[b, s] > 0:
                k = int(class_targets[b, s]) - 1
                total_box += box_weights[b, s] * sum(
                    smooth_l1(deltas[b, s, k, i] - box_targets[b, s, i], beta) for i in range(4)
                )
    normalizer = max(count, 1.0)
    return total_cls / normalizer, total_box / normalizer
