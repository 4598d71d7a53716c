"""OverFeat's offset max pooling (§3.3): the last pooling layer at every pixel offset."""

from __future__ import annotations

import keras
import tensorflow as tf


def _check_pool_size(pool_size) -> int:
    if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
        raise ValueError(f"`pool_size` must be a positive int, got {pool_size!r}")
    return pool_size


@keras.saving.register_keras_serializable(package="kerasdet")
class OffsetMaxPool(keras.layers.Layer):
    """Non-overlapping `k×k` max pooling applied at each offset `(Δy, Δx) ∈ {0..k−1}²`.

    A pooling layer of stride `k` keeps one output per `k` input positions, so a network's
    spatial output is `k×` coarser than its feature map. OverFeat recovers the lost
    resolution by pooling at all `k²` offsets; the layers after it run on each pooled map,
    and `InterleaveOffsets` weaves the results into one map `k×` denser per axis (the
    notes' "9× more boxes" for k = 3).

    For an input of length `L`, every offset keeps `n = floor(L / k)` windows
    `[Δ + k·i, Δ + k·i + k) ∩ [0, L)`, `i < n` — the last windows of the larger offsets may
    stop at the edge, as in ceil-mode pooling, so all offsets share one size. (With
    OverFeat-accurate: 461×569 → pre-pool 35×44 → 11×14 per offset → 21×30 outputs; 221×221
    → 15×15 → 5×5 → 3×3.)

    Offsets are folded into the batch axis, offset-major: output row `b·k² + Δy·k + Δx`.

    Args:
        pool_size: `k` (window = stride = k), default 3.

    Call arguments:
        inputs: `[B, H, W, C]` with `H, W ≥ k`.

    Returns:
        `[B·k², floor(H/k), floor(W/k), C]`.
    """

    def __init__(self, pool_size: int = 3, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = _check_pool_size(pool_size)

    def call(self, inputs):
        k = self.pool_size
        shape = tf.shape(inputs)
        n_h, n_w = shape[1] // k, shape[2] // k
        # Pad the far edges by k−1 copies of the last row/column: a window that reaches
        # past the edge always contains that last cell, so the copies leave its max
        # unchanged and no extreme constant enters (which would spoil int8 calibration).
        x = tf.concat([inputs, tf.repeat(inputs[:, -1:], k - 1, axis=1)], axis=1)
        x = tf.concat([x, tf.repeat(x[:, :, -1:], k - 1, axis=2)], axis=2)
        pooled = []
        for dy in range(k):
            for dx in range(k):
                window = x[:, dy : dy + k * n_h, dx : dx + k * n_w]
                pooled.append(tf.nn.max_pool2d(window, k, k, "VALID"))
        stacked = tf.stack(pooled, axis=1)  # [B, k², n_h, n_w, C]
        return tf.reshape(stacked, tf.concat([[-1], tf.shape(stacked)[2:]], axis=0))

    def compute_output_shape(self, input_shape):
        k = self.pool_size
        batch = None if input_shape[0] is None else input_shape[0] * k * k
        height = None if input_shape[1] is None else input_shape[1] // k
        width = None if input_shape[2] is None else input_shape[2] // k
        return (batch, height, width, input_shape[3])

    def get_config(self):
        config = super().get_config()
        config["pool_size"] = self.pool_size
        return config


@keras.saving.register_keras_serializable(package="kerasdet")
class InterleaveOffsets(keras.layers.Layer):
    """Inverse of `OffsetMaxPool`'s batch folding: weaves the `k²` offset maps together.

    Call arguments:
        inputs: `[B·k², h, w, C]`, offset-major as `OffsetMaxPool` produces.

    Returns:
        `[B, k·h, k·w, C]`; output `(k·i + Δy, k·j + Δx)` is location `(i, j)` of offset
        `(Δy, Δx)`, so neighbouring outputs are `stride / k` input pixels apart.
    """

    def __init__(self, pool_size: int = 3, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = _check_pool_size(pool_size)

    def call(self, inputs):
        k = self.pool_size
        shape = tf.shape(inputs)
        h, w, c = shape[1], shape[2], shape[3]
        x = tf.reshape(inputs, [-1, k, k, h, w, c])  # [B, Δy, Δx, i, j, C]
        x = tf.transpose(x, [0, 3, 1, 4, 2, 5])  # [B, i, Δy, j, Δx, C]
        return tf.reshape(x, [-1, k * h, k * w, c])

    def compute_output_shape(self, input_shape):
        k = self.pool_size
        batch = None if input_shape[0] is None else input_shape[0] // (k * k)
        height = None if input_shape[1] is None else input_shape[1] * k
        width = None if input_shape[2] is None else input_shape[2] * k
        return (batch, height, width, input_shape[3])

    def get_config(self):
        config = super().get_config()
        config["pool_size"] = self.pool_size
        return config
