"""Per-class non-maximum suppression on `tf.image`'s NMS kernel, batched, into the detections dict."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from kerasdet.postprocess.detections import check_scores_finite, detections_spec, pad_detections
from kerasdet.postprocess.per_image import map_images


def _flatten_candidates(boxes, scores):
    """Class-shared `[B, N, 4]` or class-specific `[B, N, C, 4]` boxes → per-(box, class)
    candidates `[B, N·C, 4]`, scores `[B, N·C]`, classes `[B, N·C]` (box-major)."""
    batch = tf.shape(scores)[0]
    num_classes = tf.shape(scores)[2]
    if boxes.shape.rank == 3:
        boxes = tf.broadcast_to(boxes[:, :, None, :], tf.concat([tf.shape(scores), [4]], 0))
    classes = tf.broadcast_to(tf.range(num_classes)[None, None, :], tf.shape(scores))
    return (
        tf.reshape(boxes, [batch, -1, 4]),
        tf.reshape(scores, [batch, -1]),
        tf.reshape(classes, [batch, -1]),
    )


def non_max_suppression(
    boxes,
    scores,
    *,
    iou_threshold: float = 0.5,
    score_threshold: float = 0.05,
    max_detections: int = 100,
    max_candidates: int = 5000,
    class_agnostic: bool = False,
    check_finite: bool = True,
) -> dict:
    """Batched per-class NMS with confidence thresholding.

    Runs `NonMaxSuppressionV5`, the kernel behind `tf.image.non_max_suppression_with_scores`
    and a TFLite builtin, called directly for its padded static-shape output.

    Candidates are every (box, class) pair whose score is at least `score_threshold`; at
    most `max_candidates` of the highest-scoring ones per image enter NMS (a static bound,
    like Faster R-CNN's pre-NMS top-k). NMS runs per class (boxes of different classes never
    suppress each other) unless `class_agnostic`. Ties in score are broken by candidate
    order (box index, then class), the same in TensorFlow and TFLite.

    Args:
        boxes: float `[B, N, 4]` yxyx pixels shared by all classes, or class-specific
            `[B, N, C, 4]`.
        scores: float `[B, N, C]`, per-class scores (e.g. softmax without background).
        iou_threshold: a box is suppressed by a higher-scoring box of its class whose IoU
            with it is above this; in [0, 1).
        score_threshold: candidates scoring below it are dropped first.
        max_detections: `D`, the static number of output rows per image.
        max_candidates: static bound on candidates per image entering NMS.
        class_agnostic: suppress across classes too.
        check_finite: reject NaN / inf scores (see `check_scores_finite`).

    Returns:
        dict of `boxes` float32 `[B, D, 4]`, `scores` float32 `[B, D]`, `classes` int32
        `[B, D]` (0-based), `num_detections` int32 `[B]`. Rows are sorted by score
        (descending); rows at or past `num_detections` are zeros.

    Example:
    >>> boxes = tf.constant([[[0., 0., 10., 10.], [1., 1., 11., 11.], [50., 50., 60., 60.]]])
    >>> scores = tf.constant([[[0.9], [0.8], [0.7]]])
    >>> out = non_max_suppression(boxes, scores, max_detections=5)
    >>> out["num_detections"].numpy(), out["scores"].numpy()[0, :2]
    (array([2], dtype=int32), array([0.9, 0.7], dtype=float32))
    """
    _check_args(iou_threshold, max_detections, max_candidates)
    boxes = tf.cast(tf.convert_to_tensor(boxes), tf.float32)
    scores = tf.cast(tf.convert_to_tensor(scores), tf.float32)
    if scores.shape.rank != 3:
        raise ValueError(f"`scores` must be [B, N, C], got shape {scores.shape}")
    if boxes.shape.rank not in (3, 4) or boxes.shape[-1] not in (4, None):
        raise ValueError(f"`boxes` must be [B, N, 4] or [B, N, C, 4], got shape {boxes.shape}")
    if check_finite:
        scores = check_scores_finite(scores)

    flat_boxes, flat_scores, flat_classes = _flatten_candidates(boxes, scores)
    # Class-agnostic NMS puts every candidate in one "class" for suppression only.
    flat_classes_for_nms = tf.zeros_like(flat_classes) if class_agnostic else flat_classes

    out = map_images(
        lambda b, sc, c, c_nms: _select(
            b, sc, c, c_nms, iou_threshold, score_threshold, max_detections, max_candidates
        ),
        (flat_boxes, flat_scores, flat_classes, flat_classes_for_nms),
        (
            tf.TensorSpec([max_detections, 4], tf.float32),
            tf.TensorSpec([max_detections], tf.float32),
            tf.TensorSpec([max_detections], tf.int32),
            tf.TensorSpec([], tf.int32),
        ),
    )
    return pad_detections(*out, max_detections=max_detections)


def _check_args(iou_threshold, max_detections, max_candidates):
    # 1.0 is excluded: "suppress IoU > 1" never suppresses in TF, while TFLite's kernel
    # (IoU >= threshold) would still drop exact duplicates, and TF's kernel rejects the
    # one-ulp-up threshold used below.
    if not 0.0 <= iou_threshold < 1.0:
        raise ValueError(f"`iou_threshold` must be in [0, 1), got {iou_threshold}")
    if isinstance(max_detections, bool) or not isinstance(max_detections, (int, np.integer)) or max_detections <= 0:
        raise ValueError(f"`max_detections` must be a positive int, got {max_detections!r}")
    if isinstance(max_candidates, bool) or not isinstance(max_candidates, (int, np.integer)) or max_candidates <= 0:
        raise ValueError(f"`max_candidates` must be a positive int, got {max_candidates!r}")


def nms_indices(boxes, scores, *, max_output_size: int, iou_threshold: float, score_threshold: float):
    """Single-image NMS kernel call, the same in TensorFlow and TFLite.

    Runs `NonMaxSuppressionV5`, a TFLite builtin with a native kernel (tf.image's padded NMS
    lowers to a while loop instead), padded to `max_output_size`.

    Args:
        boxes: `[K, 4]` float32; scores: `[K]` float32, ideally distinct (ties are broken
            differently by the two kernels).
        iou_threshold: a box is suppressed by a higher-scoring one with IoU above this.

    Returns:
        `(selected int32 [max_output_size], num_valid int32 scalar)`.
    """
    selected, _, num_valid = tf.raw_ops.NonMaxSuppressionV5(
        boxes=boxes,
        scores=scores,
        max_output_size=max_output_size,
        # TF's kernel suppresses IoU > threshold, TFLite's IoU ≥ threshold: one float32
        # step up makes both "IoU > iou_threshold".
        iou_threshold=float(np.nextafter(np.float32(iou_threshold), np.float32(np.inf))),
        score_threshold=score_threshold,
        soft_nms_sigma=0.0,
        pad_to_max_output_size=True,
    )
    return selected, num_valid


def _select(boxes, scores, classes, nms_classes, iou_threshold, score_threshold, max_detections, max_candidates):
    """NMS for one image; returns boxes, scores, classes (padded) and the valid count."""
    num = tf.shape(scores)[0]
    valid = scores >= score_threshold
    keyed = tf.where(valid, scores, tf.float32.min)
    k = tf.minimum(num, max_candidates)
    # top_k is stable (lower index first among equal scores), which fixes the tie order.
    _, order = tf.math.top_k(keyed, k=k)
    boxes = tf.gather(boxes, order)
    scores = tf.gather(scores, order)
    classes = tf.gather(classes, order)
    nms_classes = tf.gather(nms_classes, order)
    valid = tf.gather(valid, order)
    # One never-selected dummy candidate (zero box, rank score 0) is appended so the gathers
    # below stay valid with zero candidates (N = 0 or C = 0): padding rows of the selection
    # point at index 0, and are zeroed later.
    boxes = tf.concat([boxes, tf.zeros([1, 4])], axis=0)
    scores = tf.concat([scores, tf.zeros([1])], axis=0)
    classes = tf.concat([classes, tf.zeros([1], classes.dtype)], axis=0)
    nms_classes = tf.concat([nms_classes, tf.zeros([1], nms_classes.dtype)], axis=0)
    valid = tf.concat([valid, [False]], axis=0)
    # Per-class NMS in one call: move each class's boxes to a region of its own
    # (torchvision's batched_nms trick). Offsets are multiples of this image's coordinate
    # span, not of absolute coordinates, to keep float32 precision with many classes.
    low = tf.reduce_min(boxes)
    span = tf.reduce_max(boxes) - low + 1.0
    offsets = tf.cast(nms_classes, tf.float32) * span
    shifted = boxes - low + offsets[:, None]
    # Degenerate boxes (zero area or inverted) overlap nothing (IoU 0, as `pairwise_iou`
    # defines it). The NMS kernels disagree on them (TF re-orients inverted boxes, TFLite
    # mishandles zero-area ones), so each gets a unit box of its own beyond every class
    # region: it can neither suppress nor be suppressed. Outputs use the original boxes.
    y1, x1, y2, x2 = tf.unstack(boxes, axis=-1)
    degenerate = (y2 <= y1) | (x2 <= x1)
    far = tf.reduce_max(shifted) + 2.0 + 2.0 * tf.cast(tf.range(tf.shape(boxes)[0]), tf.float32)
    unit = tf.stack([far, tf.zeros_like(far), far + 1.0, tf.ones_like(far)], axis=-1)
    shifted = tf.where(degenerate[:, None], unit, shifted)
    # NMS ranks by these strictly decreasing scores instead of the real ones, so TF's and
    # TFLite's kernels (which break score ties differently) select the same boxes.
    kf = tf.maximum(tf.cast(k, tf.float32), 1.0)
    rank_scores = tf.where(valid, (kf - tf.cast(tf.range(k + 1), tf.float32)) / kf, 0.0)
    selected, num_valid = nms_indices(
        shifted, rank_scores, max_output_size=max_detections, iou_threshold=iou_threshold,
        score_threshold=0.5 / kf,
    )
    return (
        tf.gather(boxes, selected),
        tf.gather(scores, selected),
        tf.gather(classes, selected),
        tf.cast(num_valid, tf.int32),
    )


@keras.saving.register_keras_serializable(package="kerasdet")
class NonMaxSuppression(keras.layers.Layer):
    """Keras layer form of `non_max_suppression` (same arguments), for functional models.

    Call arguments:
        boxes: `[B, N, 4]` or `[B, N, C, 4]` yxyx pixels.
        scores: `[B, N, C]`.

    Returns:
        The padded detections dict (see `non_max_suppression`).
    """

    def __init__(
        self,
        iou_threshold: float = 0.5,
        score_threshold: float = 0.05,
        max_detections: int = 100,
        max_candidates: int = 5000,
        class_agnostic: bool = False,
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        _check_args(iou_threshold, max_detections, max_candidates)
        self.iou_threshold = float(iou_threshold)
        self.score_threshold = float(score_threshold)
        self.max_detections = int(max_detections)
        self.max_candidates = int(max_candidates)
        self.class_agnostic = bool(class_agnostic)

    def call(self, boxes, scores):
        return non_max_suppression(
            boxes,
            scores,
            iou_threshold=self.iou_threshold,
            score_threshold=self.score_threshold,
            max_detections=self.max_detections,
            max_candidates=self.max_candidates,
            class_agnostic=self.class_agnostic,
        )

    def compute_output_spec(self, boxes, scores):
        return detections_spec(scores.shape[0], self.max_detections)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "iou_threshold": self.iou_threshold,
                "score_threshold": self.score_threshold,
                "max_detections": self.max_detections,
                "max_candidates": self.max_candidates,
                "class_agnostic": self.class_agnostic,
            }
        )
        return config
