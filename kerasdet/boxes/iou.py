"""Box area and pairwise intersection-over-union."""

from __future__ import annotations

import tensorflow as tf


def box_area(boxes) -> tf.Tensor:
    """Area of yxyx boxes `[..., 4]` → `[...]`; degenerate (inverted) boxes have area 0."""
    boxes = tf.cast(boxes, tf.float32)
    y1, x1, y2, x2 = tf.unstack(boxes, axis=-1)
    return tf.maximum(y2 - y1, 0.0) * tf.maximum(x2 - x1, 0.0)


def pairwise_iou(boxes1, boxes2) -> tf.Tensor:
    """Intersection over union of every box in `boxes1` with every box in `boxes2`.

    Args:
        boxes1: float tensor `[..., N, 4]`, yxyx.
        boxes2: float tensor `[..., M, 4]`, yxyx, with the same leading (batch) dims.

    Returns:
        float32 tensor `[..., N, M]` in [0, 1]. Two boxes whose union is empty (both of
        zero area) have IoU 0, not NaN.

    Example:
    >>> pairwise_iou([[0., 0., 2., 2.]], [[1., 1., 3., 3.], [0., 0., 2., 2.]]).numpy()
    array([[0.14285715, 1.        ]], dtype=float32)
    """
    boxes1 = tf.cast(boxes1, tf.float32)
    boxes2 = tf.cast(boxes2, tf.float32)
    a = tf.expand_dims(boxes1, -2)  # [..., N, 1, 4]
    b = tf.expand_dims(boxes2, -3)  # [..., 1, M, 4]
    top = tf.maximum(a[..., 0], b[..., 0])
    left = tf.maximum(a[..., 1], b[..., 1])
    bottom = tf.minimum(a[..., 2], b[..., 2])
    right = tf.minimum(a[..., 3], b[..., 3])
    intersection = tf.maximum(bottom - top, 0.0) * tf.maximum(right - left, 0.0)
    union = tf.expand_dims(box_area(boxes1), -1) + tf.expand_dims(box_area(boxes2), -2) - intersection
    # Zero-area pairs (e.g. padding rows) would be 0/0: define their IoU as 0.
    return tf.math.divide_no_nan(intersection, union)
