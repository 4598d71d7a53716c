"""Clipping boxes to the image and masking degenerate boxes."""

from __future__ import annotations

import tensorflow as tf


def clip_boxes(boxes, image_shape) -> tf.Tensor:
    """Clips yxyx boxes to the image `[0, H] × [0, W]`.

    Args:
        boxes: float tensor `[..., 4]`, yxyx pixels.
        image_shape: `(height, width)`, a tuple or an int/float tensor `[2]`.

    Returns:
        float32 tensor `[..., 4]`; a box entirely outside ends up with zero height or
        width (see `valid_boxes_mask`).
    """
    boxes = tf.cast(boxes, tf.float32)
    shape = tf.cast(tf.convert_to_tensor(image_shape), tf.float32)
    height, width = shape[..., 0], shape[..., 1]
    y1, x1, y2, x2 = tf.unstack(boxes, axis=-1)
    y1 = tf.clip_by_value(y1, 0.0, height)
    y2 = tf.clip_by_value(y2, 0.0, height)
    x1 = tf.clip_by_value(x1, 0.0, width)
    x2 = tf.clip_by_value(x2, 0.0, width)
    return tf.stack([y1, x1, y2, x2], axis=-1)


def valid_boxes_mask(boxes, min_size: float = 0.0) -> tf.Tensor:
    """True where a yxyx box is finite and taller and wider than `min_size` pixels.

    Args:
        boxes: float tensor `[..., 4]`.
        min_size: boxes with height or width `<= min_size` are invalid (0 keeps every box
            with positive area).

    Returns:
        bool tensor `[...]`.
    """
    boxes = tf.cast(boxes, tf.float32)
    height = boxes[..., 2] - boxes[..., 0]
    width = boxes[..., 3] - boxes[..., 1]
    finite = tf.reduce_all(tf.math.is_finite(boxes), axis=-1)
    return finite & (height > min_size) & (width > min_size)
