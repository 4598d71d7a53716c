"""Training targets of Faster R-CNN's two stages: RPN anchors and Fast R-CNN RoIs.

Targets are not differentiated: inputs are wrapped in `tf.stop_gradient` (proposals are
treated as constants, the "approximate joint training" of the paper and torchvision).
"""

from __future__ import annotations

import tensorflow as tf

from kerasdet.boxes import BoxCoder, pairwise_iou, valid_boxes_mask
from kerasdet.training.matcher import POSITIVE, Matcher
from kerasdet.training.sampler import sample_balanced, sample_balanced_indices

RCNN_BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)


def _ground_truth(gt_boxes, gt_classes):
    """float32 boxes `[B, M + 1, 4]`, int32 classes and bool validity `[B, M + 1]`.

    One padding row is appended so `M ≥ 1`: gathers never index an empty tensor.
    """
    boxes = tf.stop_gradient(tf.cast(tf.convert_to_tensor(gt_boxes), tf.float32))
    classes = tf.cast(tf.convert_to_tensor(gt_classes), tf.int32)
    if boxes.shape.rank is not None and (boxes.shape.rank != 3 or boxes.shape[-1] not in (4, None)):
        raise ValueError(f"`gt_boxes` must have shape [B, M, 4], got {boxes.shape}")
    if classes.shape.rank is not None and not classes.shape.is_compatible_with(boxes.shape[:-1]):
        raise ValueError(f"`gt_classes` must have shape [B, M] = {boxes.shape[:-1]}, got {classes.shape}")
    boxes = tf.pad(boxes, [[0, 0], [0, 1], [0, 0]])
    classes = tf.pad(classes, [[0, 0], [0, 1]], constant_values=-1)
    return boxes, classes, (classes >= 0) & valid_boxes_mask(boxes)


def _inside_image(anchors, image_shape):
    """bool `[1, A]` (or `[B, A]` for per-image shapes `[B, 2]`): anchor within the image."""
    shape = tf.convert_to_tensor(image_shape)
    static = tf.get_static_value(shape)
    if shape.shape.rank not in (None, 1, 2) or (shape.shape.rank is not None and shape.shape[-1] not in (2, None)):
        raise ValueError(f"`image_shape` must be (height, width) or [B, 2], got shape {shape.shape}")
    if static is not None and (static <= 0).any():
        raise ValueError(f"`image_shape` must be positive (height, width), got {static.tolist()!r}")
    shape = tf.reshape(tf.cast(shape, tf.float32), [-1, 1, 2])
    y1, x1, y2, x2 = tf.unstack(anchors[None], axis=-1)
    return (y1 >= 0.0) & (x1 >= 0.0) & (y2 <= shape[..., 0]) & (x2 <= shape[..., 1])


def rpn_targets(
    anchors,
    gt_boxes,
    gt_classes,
    image_shape,
    *,
    high: float = 0.7,
    low: float = 0.3,
    num_samples: int = 256,
    positive_fraction: float = 0.5,
    allow_low_quality_matches: bool = True,
    best_matches_per_gt: int = 1,
    ignore_cross_boundary: bool = True,
    seed,
    box_coder: BoxCoder | None = None,
):
    """RPN training targets (Faster R-CNN §3.1.2).

    Anchors are matched to the ground truth by IoU (`Matcher`: positive ≥ `high`, negative
    < `low`, each gt's best anchor(s) positive), then `num_samples` anchors per image are
    sampled with at most `positive_fraction` positives (`sample_balanced`). With
    `ignore_cross_boundary` (the paper's training rule) anchors not inside
    `[0, H] × [0, W]` are ignored before matching: never sampled, never a gt's best anchor.

    Args:
        anchors: float `[A, 4]` yxyx pixels (e.g. from `AnchorGenerator`).
        gt_boxes: float `[B, M, 4]` yxyx pixels, padding rows zeros.
        gt_classes: int `[B, M]`, padding rows −1 (only validity is used here).
        image_shape: `(height, width)`, a tensor `[2]`, or per-image `[B, 2]`.
        high: float, default 0.7, positive IoU threshold.
        low: float, default 0.3, negative IoU threshold.
        num_samples: int, default 256, sampled anchors per image.
        positive_fraction: float, default 0.5, cap on positives among the samples.
        allow_low_quality_matches: bool, default True, each gt's best anchor is positive.
        best_matches_per_gt: int, default 1, with `allow_low_quality_matches` each gt's
            this many best anchors at IoU ≥ `low` are positive (see `Matcher`).
        ignore_cross_boundary: bool, default True, see above.
        seed: int, pair or int tensor `[2]`, required: the sampling seed (stateless).
        box_coder: `BoxCoder`, default `BoxCoder()` (weights 1, the paper's).

    Returns:
        dict of
        - `"objectness"`: float32 `[B, A]`, 1 on positive anchors, 0 elsewhere;
        - `"objectness_weights"`: float32 `[B, A]`, 1 on sampled anchors;
        - `"box_targets"`: float32 `[B, A, 4]`, deltas of the matched gt w.r.t. the anchor
          on positive anchors, 0 elsewhere;
        - `"box_weights"`: float32 `[B, A]`, 1 on sampled positives.

    Example:
    >>> anchors = tf.constant([[0., 0., 10., 10.], [20., 20., 30., 30.]])
    >>> t = rpn_targets(anchors, [[[0., 0., 10., 12.]]], [[0]], (32, 32), seed=0)
    >>> t["objectness"].numpy(), t["objectness_weights"].numpy()
    (array([[1., 0.]], dtype=float32), array([[1., 1.]], dtype=float32))
    """
    anchors = tf.stop_gradient(tf.cast(tf.convert_to_tensor(anchors), tf.float32))
    if anchors.shape.rank is not None and (anchors.shape.rank != 2 or anchors.shape[-1] not in (4, None)):
        raise ValueError(f"`anchors` must have shape [A, 4], got {anchors.shape}")
    coder = box_coder or BoxCoder()
    matcher = Matcher(high, low, allow_low_quality_matches, best_matches_per_gt)
    boxes, _, gt_valid = _ground_truth(gt_boxes, gt_classes)

    iou = pairwise_iou(anchors[None], boxes)  # [B, A, M + 1]
    inside = _inside_image(anchors, image_shape) if ignore_cross_boundary else None
    matches, labels = matcher(iou, gt_valid, inside)
    sampled = sample_balanced(labels, num_samples, positive_fraction, seed=seed)

    positive = labels == POSITIVE
    matched_boxes = tf.gather(boxes, matches, batch_dims=1)  # [B, A, 4]
    deltas = coder.encode(matched_boxes, anchors[None])
    return {
        "objectness": tf.cast(positive, tf.float32),
        "objectness_weights": tf.cast(sampled, tf.float32),
        "box_targets": tf.where(positive[..., None], deltas, 0.0),
        "box_weights": tf.cast(sampled & positive, tf.float32),
    }


def rcnn_targets(
    proposals,
    gt_boxes,
    gt_classes,
    *,
    num_samples: int = 512,
    positive_fraction: float = 0.25,
    fg_iou: float = 0.5,
    bg_iou_high: float = 0.5,
    bg_iou_low: float = 0.0,
    add_gt_boxes: bool = True,
    seed,
    box_coder: BoxCoder | None = None,
):
    """Fast R-CNN training targets: samples RoIs from the proposals and labels them.

    The (valid) ground-truth boxes are appended to the proposals when `add_gt_boxes` (as
    the paper's code and torchvision do), so every image has foreground candidates. A
    candidate whose best IoU with a gt is ≥ `fg_iou` is foreground with that gt's class;
    one with best IoU in `[bg_iou_low, bg_iou_high)` is background; others are not
    sampled. Per image `num_samples` RoIs are sampled with at most `positive_fraction`
    foreground (`sample_balanced_indices`); fewer candidates than that leave padding slots
    (`valid == False`). Proposals that are not proper boxes (zero padding rows) are never
    sampled. An image without gt has only background (with `bg_iou_low = 0`; a positive
    `bg_iou_low` leaves it no samples).

    Args:
        proposals: float `[B, N, 4]` yxyx pixels (padding rows zeros).
        gt_boxes: float `[B, M, 4]` yxyx pixels, padding rows zeros.
        gt_classes: int `[B, M]`, 0-based foreground classes, padding rows −1.
        num_samples: int, default 512, RoIs per image.
        positive_fraction: float, default 0.25, cap on foreground among the RoIs.
        fg_iou: float, default 0.5, foreground IoU threshold.
        bg_iou_high: float ≤ `fg_iou`, default 0.5, background IoU upper bound (excluded).
        bg_iou_low: float ≤ `bg_iou_high`, default 0.0, background IoU lower bound (Fast
            R-CNN used 0.1).
        add_gt_boxes: bool, default True.
        seed: int, pair or int tensor `[2]`, required: the sampling seed (stateless).
        box_coder: `BoxCoder`, default `BoxCoder(weights=(10, 10, 5, 5))`.

    Returns:
        dict of
        - `"rois"`: float32 `[B, S, 4]` sampled RoIs (foreground first), zeros on padding;
        - `"class_targets"`: int32 `[B, S]`, 0 = background (and padding), k + 1 = class k;
        - `"box_targets"`: float32 `[B, S, 4]`, the matched gt encoded w.r.t. the RoI on
          foreground, 0 elsewhere;
        - `"box_weights"`: float32 `[B, S]`, 1 on foreground;
        - `"valid"`: bool `[B, S]`, False on padding slots.

    Example:
    >>> t = rcnn_targets([[[0., 0., 10., 10.], [50., 50., 60., 60.]]], [[[0., 0., 10., 12.]]],
    ...                  [[2]], num_samples=4, positive_fraction=0.5, seed=0)
    >>> t["class_targets"].numpy(), t["valid"].numpy()
    (array([[3, 3, 0, 0]], dtype=int32), array([[ True,  True,  True, False]]))
    """
    for name, value in (("fg_iou", fg_iou), ("bg_iou_high", bg_iou_high), ("bg_iou_low", bg_iou_low)):
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"`{name}` must be in [0, 1], got {value!r}")
    if not float(bg_iou_low) <= float(bg_iou_high) <= float(fg_iou):
        raise ValueError(
            f"Need bg_iou_low ≤ bg_iou_high ≤ fg_iou, got bg_iou_low={bg_iou_low}, "
            f"bg_iou_high={bg_iou_high}, fg_iou={fg_iou}"
        )
    proposals = tf.stop_gradient(tf.cast(tf.convert_to_tensor(proposals), tf.float32))
    if proposals.shape.rank is not None and (proposals.shape.rank != 3 or proposals.shape[-1] not in (4, None)):
        raise ValueError(f"`proposals` must have shape [B, N, 4], got {proposals.shape}")
    coder = box_coder or BoxCoder(weights=RCNN_BOX_WEIGHTS)
    boxes, classes, gt_valid = _ground_truth(gt_boxes, gt_classes)

    candidates, candidate_valid = proposals, valid_boxes_mask(proposals)
    if add_gt_boxes:
        candidates = tf.concat([candidates, boxes], axis=1)
        candidate_valid = tf.concat([candidate_valid, gt_valid], axis=1)
    # One invalid zero row so gathers never index an empty tensor (N = 0, no gt added).
    candidates = tf.pad(candidates, [[0, 0], [0, 1], [0, 0]])
    candidate_valid = tf.pad(candidate_valid, [[0, 0], [0, 1]])

    iou = pairwise_iou(candidates, boxes)  # [B, K, M + 1]
    matches, labels = Matcher(fg_iou, bg_iou_high, allow_low_quality_matches=False)(
        iou, gt_valid, candidate_valid
    )
    best_iou = tf.reduce_max(tf.where(gt_valid[:, None, :], iou, 0.0), axis=2)  # 0 without gt
    labels = tf.where((labels == 0) & (best_iou < float(bg_iou_low)), -1, labels)

    indices, valid = sample_balanced_indices(labels, num_samples, positive_fraction, seed=seed)
    rois = tf.where(valid[..., None], tf.gather(candidates, indices, batch_dims=1), 0.0)
    foreground = valid & (tf.gather(labels, indices, batch_dims=1) == POSITIVE)
    matched = tf.gather(matches, indices, batch_dims=1)
    matched_classes = tf.gather(classes, matched, batch_dims=1)
    matched_boxes = tf.gather(boxes, matched, batch_dims=1)
    return {
        "rois": rois,
        "class_targets": tf.where(foreground, matched_classes + 1, 0),
        "box_targets": tf.where(foreground[..., None], coder.encode(matched_boxes, rois), 0.0),
        "box_weights": tf.cast(foreground, tf.float32),
        "valid": valid,
    }
