"""Scored candidate boxes (one class each) → detections: OverFeat's greedy merge, per-class
NMS, or the greedy merge followed by per-class NMS — one definition of each for the
detector, its tuning and its benchmarks."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from kerasdet.postprocess.detections import detections_spec
from kerasdet.postprocess.greedy_merge import _check_args as _check_greedy_args
from kerasdet.postprocess.greedy_merge import greedy_merge
from kerasdet.postprocess.nms import _check_args as _check_nms_args
from kerasdet.postprocess.nms import non_max_suppression

# "greedy_nms": the greedy merge leaves an object's windows in several clusters when some of
# them do not match within t (other scales, off-centre windows); those leftover clusters are
# duplicates and fragments of the object, and on held-out shapes images they, not
# background, were most of the false positives. NMS on the merged boxes removes them.
MERGE_MODES = ("greedy", "nms", "greedy_nms")

__all__ = ["MERGE_MODES", "MergeDetections", "OneHotScores", "merge_detections", "one_hot_scores"]


def one_hot_scores(scores, classes, num_classes: int):
    """Per-class scores from one class per row: the input `non_max_suppression` expects.

    Args:
        scores: float `[B, N]`.
        classes: int `[B, N]` in `[0, num_classes)`.
        num_classes: `C`.

    Returns:
        float32 `[B, N, C]`: each row's score at its class, zero elsewhere.
    """
    return tf.one_hot(classes, int(num_classes), dtype=tf.float32) * tf.cast(scores, tf.float32)[..., None]


def _check_merge_args(merge, num_classes, match_threshold, score_threshold, iou_threshold, max_detections,
                      max_candidates):
    if merge not in MERGE_MODES:
        raise ValueError(f"`merge` must be one of {MERGE_MODES}, got {merge!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes <= 0:
        raise ValueError(f"`num_classes` must be a positive int, got {num_classes!r}")
    # Each threshold is checked only where its step runs (a greedy-only config may carry any
    # iou_threshold, as before this layer).
    if merge in ("greedy", "greedy_nms"):
        _check_greedy_args(match_threshold, score_threshold, max_detections, max_candidates)
    if merge in ("nms", "greedy_nms"):
        _check_nms_args(iou_threshold, max_detections, max_candidates)


def merge_detections(
    boxes,
    scores,
    classes,
    *,
    num_classes: int,
    merge: str = "greedy",
    score_threshold: float = 0.05,
    match_threshold: float = 1.0,
    iou_threshold: float = 0.5,
    max_detections: int = 100,
    max_candidates: int = 2000,
    jit_compile: bool = True,
) -> dict:
    """Merges candidate boxes, each with one class and score, into padded detections.

    - `"greedy"`: OverFeat's greedy merge (`greedy_merge`); a merged box's score is the sum
      of its members' confidences.
    - `"nms"`: per-class NMS at `iou_threshold` (`non_max_suppression`).
    - `"greedy_nms"`: the greedy merge, then per-class NMS at `iou_threshold` on the merged
      boxes. Every merged score is a sum of confidences ≥ `score_threshold`, so the NMS's
      own threshold (the same value) keeps every merged box and drops only the zero-score
      padding rows; its candidates are the merge's `max_detections` rows.

    Args:
        boxes: float `[B, N, 4]` yxyx pixels.
        scores: float `[B, N]`, each candidate's confidence for its class.
        classes: int32 `[B, N]` in `[0, num_classes)`.
        num_classes: `C`, the number of object classes.
        merge: one of `MERGE_MODES`.
        score_threshold: candidates scoring below it are dropped first (> 0).
        match_threshold: the greedy merge's threshold t (`"greedy"`, `"greedy_nms"`).
        iou_threshold: the NMS IoU threshold (`"nms"`, `"greedy_nms"`); in [0, 1).
        max_detections: `D`, the static number of output rows.
        max_candidates: at most this many of the highest-scoring candidates per image enter
            the merge (or the NMS for `"nms"`).
        jit_compile: run the greedy merge's loop with XLA (identical results).

    Returns:
        The padded detections dict: `boxes [B, D, 4]`, `scores [B, D]`, `classes [B, D]`
        int32, `num_detections [B]` int32.

    Example:
    >>> boxes = tf.constant([[[0., 0., 10., 10.], [0., 1., 10., 11.]]])
    >>> out = merge_detections(boxes, tf.constant([[0.9, 0.8]]), tf.constant([[1, 1]]),
    ...                        num_classes=2, merge="nms", max_detections=3)
    >>> out["num_detections"].numpy().tolist(), out["classes"][0, 0].numpy().item()
    ([1], 1)
    """
    _check_merge_args(merge, num_classes, match_threshold, score_threshold, iou_threshold, max_detections,
                      max_candidates)
    if merge == "nms":
        return non_max_suppression(
            boxes, one_hot_scores(scores, classes, num_classes), iou_threshold=iou_threshold,
            score_threshold=score_threshold, max_detections=max_detections, max_candidates=max_candidates,
        )
    merged = greedy_merge(
        boxes, scores, classes, match_threshold=match_threshold, score_threshold=score_threshold,
        max_detections=max_detections, max_candidates=max_candidates, jit_compile=jit_compile,
    )
    if merge == "greedy":
        return merged
    return non_max_suppression(
        merged["boxes"], one_hot_scores(merged["scores"], merged["classes"], num_classes),
        iou_threshold=iou_threshold, score_threshold=score_threshold, max_detections=max_detections,
        max_candidates=max_detections,
    )


@keras.saving.register_keras_serializable(package="kerasdet")
class MergeDetections(keras.layers.Layer):
    """Keras layer form of `merge_detections` (same arguments), for functional models.

    Call arguments: `boxes` `[B, N, 4]`, `scores` `[B, N]`, `classes` `[B, N]`.

    Returns:
        The padded detections dict (see `merge_detections`).

    Example:
    >>> layer = MergeDetections(num_classes=3, merge="greedy_nms", max_detections=10)
    >>> out = layer(tf.zeros([2, 5, 4]), tf.zeros([2, 5]), tf.zeros([2, 5], tf.int32))
    >>> out["boxes"].shape, out["num_detections"].numpy().tolist()
    (TensorShape([2, 10, 4]), [0, 0])
    """

    def __init__(
        self,
        num_classes: int,
        merge: str = "greedy",
        score_threshold: float = 0.05,
        match_threshold: float = 1.0,
        iou_threshold: float = 0.5,
        max_detections: int = 100,
        max_candidates: int = 2000,
        jit_compile: bool = True,
        **kwargs,
    ):
        # Box math stays float32 under a mixed-precision policy.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        _check_merge_args(merge, num_classes, match_threshold, score_threshold, iou_threshold, max_detections,
                          max_candidates)
        self.num_classes = int(num_classes)
        self.merge = merge
        self.score_threshold = float(score_threshold)
        self.match_threshold = float(match_threshold)
        self.iou_threshold = float(iou_threshold)
        self.max_detections = int(max_detections)
        self.max_candidates = int(max_candidates)
        self.jit_compile = bool(jit_compile)

    def call(self, boxes, scores, classes):
        return merge_detections(
            boxes, scores, classes, num_classes=self.num_classes, merge=self.merge,
            score_threshold=self.score_threshold, match_threshold=self.match_threshold,
            iou_threshold=self.iou_threshold, max_detections=self.max_detections,
            max_candidates=self.max_candidates, jit_compile=self.jit_compile,
        )

    def compute_output_spec(self, boxes, scores, classes):
        return detections_spec(boxes.shape[0], self.max_detections)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "merge": self.merge,
                "score_threshold": self.score_threshold,
                "match_threshold": self.match_threshold,
                "iou_threshold": self.iou_threshold,
                "max_detections": self.max_detections,
                "max_candidates": self.max_candidates,
                "jit_compile": self.jit_compile,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="kerasdet")
class OneHotScores(keras.layers.Layer):
    """Layer form of `one_hot_scores`: `(scores [B, N], classes [B, N])` → `[B, N, C]`.

    The OverFeat detector used it before `MergeDetections`; it stays registered so that
    `.keras` detectors saved then still load.
    """

    def __init__(self, num_classes: int, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)

    def call(self, scores, classes):
        return one_hot_scores(scores, classes, self.num_classes)

    def compute_output_spec(self, scores, classes):
        return keras.KerasTensor(tuple(scores.shape) + (self.num_classes,), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config["num_classes"] = self.num_classes
        return config
