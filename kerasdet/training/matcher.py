"""IoU matcher: assigns each anchor (or proposal) a ground-truth box and a label."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

POSITIVE = 1
NEGATIVE = 0
IGNORE = -1



def check_best_matches_per_gt(value, name: str = "best_matches_per_gt") -> int:
    """`value` as an int ≥ 1 (numpy ints accepted, bools not); a one-line error naming
    `name` otherwise. Callers that configure a `Matcher` check it at construction with it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be an int >= 1, got {value!r}")
    return int(value)


class Matcher:
    """Labels anchors positive / negative / ignored by their IoU with the ground truth.

    Each anchor is matched to the ground-truth box it overlaps most (lowest gt index on a
    tie) and labelled from that best IoU:

    - `1` (positive) if IoU ≥ `high_threshold`;
    - `0` (negative) if IoU < `low_threshold`;
    - `-1` (ignored) in between.

    With `allow_low_quality_matches=True` (Faster R-CNN's RPN rule (i)), every ground-truth
    box also makes its best anchor(s) positive — all anchors that tie its maximum IoU, as
    torchvision — even below `high_threshold`, so no object is left without a positive.
    Such an anchor keeps its own best gt as its match (torchvision's choice). A gt box whose
    best IoU is 0 (it overlaps no valid anchor) is skipped: otherwise every anchor it does
    not touch would tie at 0 and become positive.

    `best_matches_per_gt = k > 1` extends that rule to each gt's `k` best anchors (ties at
    the k-th IoU included) whose IoU is at least `low_threshold`: anchors of the ignored
    band become positives of a gt that has few good ones. Such are small objects: a 12 px
    box overlaps no 16 px anchor on a stride-8 grid by 0.7, so rule (i) alone gives it one
    positive where a large box gets dozens (S3FD's "scale compensation" matching, Zhang
    et al. 2017, §3.2, is the same idea).

    An image without ground truth gets all anchors negative. Anchors marked invalid (e.g.
    crossing the image border) are ignored (`-1`) and never count as a gt's best anchor.

    Comparisons run in float32 (thresholds are cast to float32, like the IoU).

    Args:
        high_threshold: float in [0, 1], IoU at or above which an anchor is positive
            (0.7 for the RPN, 0.5 for Fast R-CNN RoIs).
        low_threshold: float in [0, `high_threshold`], IoU below which an anchor is
            negative (0.3 for the RPN). Equal thresholds leave no ignored band.
        allow_low_quality_matches: bool, default True; see above.
        best_matches_per_gt: int ≥ 1, default 1 (the paper's rule (i)); see above. Only
            with `allow_low_quality_matches`.

    Call arguments:
        iou: float `[B, A, M]`, IoU of anchors × ground-truth boxes.
        gt_valid: optional bool `[B, M]`, False on padding gt columns (default all True).
        anchor_valid: optional bool `[A]` or `[B, A]`, False on anchors to ignore.

    Returns:
        `(matches, labels)`: int32 `[B, A]` index of the matched gt (0 when the image has
        no gt; only meaningful where `labels == 1`), and int32 `[B, A]` labels in
        {1, 0, -1}.

    Example:
    >>> matcher = Matcher(0.7, 0.3)
    >>> iou = tf.constant([[[0.8, 0.1], [0.5, 0.2], [0.1, 0.05], [0.2, 0.4]]])
    >>> matches, labels = matcher(iou)
    >>> matches.numpy(), labels.numpy()
    (array([[0, 0, 0, 1]], dtype=int32), array([[ 1, -1,  0,  1]], dtype=int32))
    """

    def __init__(self, high_threshold: float, low_threshold: float, allow_low_quality_matches: bool = True,
                 best_matches_per_gt: int = 1):
        high, low = float(high_threshold), float(low_threshold)
        if not 0.0 <= high <= 1.0:
            raise ValueError(f"`high_threshold` must be in [0, 1], got {high_threshold!r}")
        if not 0.0 <= low <= high:
            raise ValueError(
                f"`low_threshold` must be in [0, high_threshold={high}], got {low_threshold!r}"
            )
        self.high_threshold = high
        self.low_threshold = low
        self.allow_low_quality_matches = bool(allow_low_quality_matches)
        best_matches_per_gt = check_best_matches_per_gt(best_matches_per_gt)
        if best_matches_per_gt > 1 and not allow_low_quality_matches:
            raise ValueError(
                f"`best_matches_per_gt`={best_matches_per_gt} needs `allow_low_quality_matches=True` "
                "(it extends that rule)"
            )
        self.best_matches_per_gt = best_matches_per_gt

    def get_config(self):
        return {
            "high_threshold": self.high_threshold,
            "low_threshold": self.low_threshold,
            "allow_low_quality_matches": self.allow_low_quality_matches,
            "best_matches_per_gt": self.best_matches_per_gt,
        }

    def __call__(self, iou, gt_valid=None, anchor_valid=None):
        iou = tf.cast(tf.convert_to_tensor(iou), tf.float32)
        if iou.shape.rank is not None and iou.shape.rank != 3:
            raise ValueError(f"`iou` must have shape [B, A, M], got {iou.shape}")
        batch, num_anchors, num_gt = tf.unstack(tf.shape(iou))
        if gt_valid is None:
            gt_valid = tf.ones([batch, num_gt], tf.bool)
        gt_valid = tf.cast(gt_valid, tf.bool)
        if anchor_valid is None:
            anchor_valid = tf.ones([batch, num_anchors], tf.bool)
        anchor_valid = tf.cast(anchor_valid, tf.bool)
        anchor_valid = tf.broadcast_to(
            anchor_valid if anchor_valid.shape.rank == 2 else anchor_valid[None], [batch, num_anchors]
        )

        # Padding gt columns get IoU -1 so they can never be an anchor's best match; an image
        # without gt then has best IoU -1 (< low): all negative.
        gt_iou = tf.where(gt_valid[:, None, :], iou, -1.0)
        best = tf.reduce_max(gt_iou, axis=2, keepdims=True)  # [B, A, 1]
        # First gt index reaching the max: tf.argmax does not promise which one on ties.
        columns = tf.range(num_gt, dtype=tf.int32)
        matches = tf.reduce_min(tf.where(gt_iou >= best, columns, num_gt), axis=2)
        matches = tf.minimum(matches, tf.maximum(num_gt - 1, 0))  # M = 0: index 0, never used
        best = best[..., 0]

        high = tf.constant(self.high_threshold, tf.float32)
        low = tf.constant(self.low_threshold, tf.float32)
        labels = tf.where(best >= high, POSITIVE, tf.where(best < low, NEGATIVE, IGNORE))

        if self.allow_low_quality_matches:
            pair_valid = gt_valid[:, None, :] & anchor_valid[:, :, None]
            pair_iou = tf.where(pair_valid, iou, -1.0)
            best_per_gt = tf.reduce_max(pair_iou, axis=1, keepdims=True)  # [B, 1, M]
            # best_per_gt > 0 skips gts that overlap no valid anchor (else all zeros tie).
            is_best = (pair_iou >= best_per_gt) & (best_per_gt > 0.0) & pair_valid
            if self.best_matches_per_gt > 1 and iou.shape[1] != 0:
                # A static k where the anchor count is known (XLA wants static top-k sizes).
                static_anchors = iou.shape[1]
                k = (min(self.best_matches_per_gt, static_anchors) if static_anchors is not None
                     else tf.minimum(self.best_matches_per_gt, num_anchors))
                kth = tf.math.top_k(tf.transpose(pair_iou, [0, 2, 1]), k).values[..., -1]  # [B, M]
                is_best |= (pair_iou >= kth[:, None, :]) & (pair_iou >= low) & (pair_iou > 0.0) & pair_valid
            labels = tf.where(tf.reduce_any(is_best, axis=2), POSITIVE, labels)

        labels = tf.where(anchor_valid, labels, IGNORE)
        return tf.cast(matches, tf.int32), tf.cast(labels, tf.int32)
