"""The padded detections dict every kerasdet detector returns, and input checks shared
by the post-processing ops."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

DETECTION_KEYS = ("boxes", "scores", "classes", "num_detections")


def check_scores_finite(scores, name: str = "scores"):
    """Rejects NaN / inf scores with a clear error.

    Eagerly (concrete values) this raises `ValueError` in Python. Inside a graph it adds a
    `tf.debugging.Assert`, which raises `InvalidArgumentError` with the same message when
    the graph runs; the TFLite converter drops assertions, so an exported model does not
    check (TFLite has no builtin assert op).

    Returns:
        `scores`, with the assertion attached as a control dependency in graph mode.
    """
    scores = tf.convert_to_tensor(scores)
    if tf.executing_eagerly():
        values = scores.numpy()
        if not np.all(np.isfinite(values)):
            bad = np.argwhere(~np.isfinite(values))[0].tolist()
            raise ValueError(
                f"`{name}` must be finite, got {values[tuple(bad)]} at index {bad}"
            )
        return scores
    finite = tf.reduce_all(tf.math.is_finite(scores))
    assertion = tf.debugging.Assert(finite, [f"`{name}` must be finite (no NaN or inf)"])
    with tf.control_dependencies([assertion]):
        return tf.identity(scores)


def pad_detections(boxes, scores, classes, num_valid, max_detections: int):
    """Zeros every row at or past `num_valid` and returns the detections dict.

    Args:
        boxes: `[B, max_detections, 4]`, scores `[B, max_detections]`, classes
            `[B, max_detections]`, num_valid `[B]`.

    Returns:
        dict `boxes` float32 `[B, D, 4]`, `scores` float32 `[B, D]`, `classes` int32
        `[B, D]`, `num_detections` int32 `[B]`; padding rows are all zeros.
    """
    num_valid = tf.cast(num_valid, tf.int32)
    valid = tf.range(max_detections)[None, :] < num_valid[:, None]
    return {
        "boxes": tf.where(valid[..., None], tf.cast(boxes, tf.float32), 0.0),
        "scores": tf.where(valid, tf.cast(scores, tf.float32), 0.0),
        "classes": tf.where(valid, tf.cast(classes, tf.int32), 0),
        "num_detections": num_valid,
    }


def detections_spec(batch, max_detections: int) -> dict:
    """The symbolic form of the detections dict, for a layer's `compute_output_spec`.

    Args:
        batch: the static batch size, or `None`.
        max_detections: `D`, the static number of rows.

    Returns:
        dict of `keras.KerasTensor`: `boxes` float32 `[B, D, 4]`, `scores` float32 `[B, D]`,
        `classes` int32 `[B, D]`, `num_detections` int32 `[B]`.
    """
    d = int(max_detections)
    return {
        "boxes": keras.KerasTensor((batch, d, 4), dtype="float32"),
        "scores": keras.KerasTensor((batch, d), dtype="float32"),
        "classes": keras.KerasTensor((batch, d), dtype="int32"),
        "num_detections": keras.KerasTensor((batch,), dtype="int32"),
    }
