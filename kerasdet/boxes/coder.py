"""Faster R-CNN box parameterization: boxes ↔ deltas relative to anchors."""

from __future__ import annotations

import math

import tensorflow as tf

# exp() of a larger height/width delta would scale an anchor more than 1000/16 ≈ 62×: such
# deltas only appear early in training or from garbage inputs and would overflow float16 /
# produce inf boxes, so they are clamped before exp (torchvision and Detectron do the same).
DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16.0)

# Zero-size boxes (padding rows, degenerate ground truth) would encode to log(0) = -inf;
# flooring sizes keeps every delta finite so a masked loss never multiplies 0 by inf.
_MIN_SIZE = 1e-3


class BoxCoder:
    """Encodes boxes as deltas relative to anchors, and decodes them back.

    Deltas are ordered like the boxes, `[dy, dx, dh, dw]`, with (Faster R-CNN, eq. 2):

        dy = wy · (y − ya) / ha      dx = wx · (x − xa) / wa
        dh = wh · log(h / ha)        dw = ww · log(w / wa)

    where (y, x) is the box center, (h, w) its size, and `a` marks the anchor.

    Args:
        weights: `(wy, wx, wh, ww)` multipliers, default `(1, 1, 1, 1)` (the paper).
            Faster R-CNN's second stage usually uses `(10, 10, 5, 5)`.
        scale_clamp: upper bound for `dh / wh` and `dw / ww` before `exp` when decoding;
            default `log(1000 / 16)`.

    Example:
    >>> coder = BoxCoder(weights=(10., 10., 5., 5.))
    >>> anchors = [[0., 0., 10., 10.]]
    >>> deltas = coder.encode([[1., 2., 11., 12.]], anchors)
    >>> coder.decode(deltas, anchors).numpy().round(4)
    array([[ 1.,  2., 11., 12.]], dtype=float32)
    """

    def __init__(self, weights=(1.0, 1.0, 1.0, 1.0), scale_clamp: float = DEFAULT_SCALE_CLAMP):
        weights = tuple(float(w) for w in weights)
        if len(weights) != 4 or any(not w > 0 for w in weights):
            raise ValueError(f"`weights` must be 4 positive numbers (wy, wx, wh, ww), got {weights}")
        self.weights = weights
        self.scale_clamp = float(scale_clamp)

    def get_config(self):
        return {"weights": self.weights, "scale_clamp": self.scale_clamp}

    @staticmethod
    def _center_size(boxes):
        y1, x1, y2, x2 = tf.unstack(boxes, axis=-1)
        height = tf.maximum(y2 - y1, _MIN_SIZE)
        width = tf.maximum(x2 - x1, _MIN_SIZE)
        return (y1 + y2) / 2.0, (x1 + x2) / 2.0, height, width

    def encode(self, boxes, anchors) -> tf.Tensor:
        """Boxes → deltas.

        Args:
            boxes: float `[..., 4]` yxyx, target boxes.
            anchors: float `[..., 4]` yxyx, broadcastable to `boxes`.

        Returns:
            float32 `[..., 4]` deltas `[dy, dx, dh, dw]`.
        """
        boxes = tf.cast(boxes, tf.float32)
        anchors = tf.cast(anchors, tf.float32)
        y, x, h, w = self._center_size(boxes)
        ya, xa, ha, wa = self._center_size(anchors)
        wy, wx, wh, ww = self.weights
        return tf.stack(
            [wy * (y - ya) / ha, wx * (x - xa) / wa, wh * tf.math.log(h / ha), ww * tf.math.log(w / wa)],
            axis=-1,
        )

    def decode(self, deltas, anchors) -> tf.Tensor:
        """Deltas → boxes.

        Args:
            deltas: float `[..., 4]` `[dy, dx, dh, dw]` (any float dtype; computed in
                float32).
            anchors: float `[..., 4]` yxyx, broadcastable to `deltas`.

        Returns:
            float32 `[..., 4]` yxyx boxes (not clipped to the image).
        """
        deltas = tf.cast(deltas, tf.float32)
        anchors = tf.cast(anchors, tf.float32)
        ya, xa, ha, wa = self._center_size(anchors)
        wy, wx, wh, ww = self.weights
        dy, dx, dh, dw = tf.unstack(deltas, axis=-1)
        dy, dx = dy / wy, dx / wx
        # Clamp before exp (see DEFAULT_SCALE_CLAMP).
        dh = tf.minimum(dh / wh, self.scale_clamp)
        dw = tf.minimum(dw / ww, self.scale_clamp)
        y = ya + dy * ha
        x = xa + dx * wa
        h = ha * tf.exp(dh)
        w = wa * tf.exp(dw)
        return tf.stack([y - h / 2.0, x - w / 2.0, y + h / 2.0, x + w / 2.0], axis=-1)
