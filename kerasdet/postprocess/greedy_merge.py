"""OverFeat's greedy merge of detections, as an in-graph TensorFlow op and a Keras layer.

OverFeat (Sermanet et al., 2014) does not suppress overlapping detections as NMS does: it
repeatedly *merges* the two closest boxes of a class into one, until no pair is closer than
a threshold. The closeness ("match score", lower is closer) of boxes a and b is

    match(a, b) = |center(a) - center(b)| / ((diag(a) + diag(b)) / 2) + (1 - IoU(a, b))

with diag = sqrt(h² + w²). A merged box's coordinates are the mean of all the original
boxes merged into it and its score is the sum of their scores, so a location found by many
windows ends up with a high score.

See `_greedy_merge_loop.py` for how the loop stays O(M) per merge (lazy per-row minima).
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from kerasdet.postprocess import _greedy_merge_loop as _loop
from kerasdet.postprocess.detections import detections_spec, pad_detections

__all__ = ["GreedyMerge", "greedy_merge", "match_scores"]


def match_scores(boxes_a, boxes_b):
    """Pairwise OverFeat match scores (lower = closer).

    `match(a, b) = |center(a) - center(b)| / ((diag(a) + diag(b)) / 2) + (1 - IoU(a, b))`,
    diag = sqrt(h² + w²). Boxes with y2 < y1 or x2 < x1 count as empty. Zero-size boxes
    are guarded: their area and diagonal are floored at 1e-30, so coincident ones score 1
    and distinct ones get a huge (~1e30, never merging) center term instead of NaN.

    Args:
        boxes_a: [..., Na, 4] float32 `[y1, x1, y2, x2]`.
        boxes_b: [..., Nb, 4] float32, same leading dims as `boxes_a`.

    Returns:
        [..., Na, Nb] float32 match scores; symmetric when `boxes_a is boxes_b`.

    Example:
    >>> a = tf.constant([[0.0, 0.0, 4.0, 4.0]])
    >>> b = tf.constant([[1.0, 1.0, 3.0, 3.0]])
    >>> float(match_scores(a, b)[0, 0])  # same center, IoU 1/4
    0.75
    """
    fa = _loop.box_features(tf.convert_to_tensor(boxes_a, tf.float32))
    fb = _loop.box_features(tf.convert_to_tensor(boxes_b, tf.float32))
    return _loop.match_from_features(fa[..., :, None, :], fb[..., None, :, :])


def _check_number(name, value, low, low_inclusive):
    ok = isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and (value >= low if low_inclusive else value > low)
    if not ok:
        bound = f">= {low}" if low_inclusive else f"> {low}"
        raise ValueError(f"`{name}` must be a finite number {bound}, got {value!r}")


def _check_int(name, value, allow_none=False):
    if allow_none and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive int{' or None' if allow_none else ''}, got {value!r}")


def _check_args(match_threshold, score_threshold, max_detections, max_candidates):
    _check_number("match_threshold", match_threshold, 0.0, True)
    # > 0 so that the project's zero-score padding rows are never candidates.
    _check_number("score_threshold", score_threshold, 0.0, False)
    _check_int("max_detections", max_detections)
    _check_int("max_candidates", max_candidates, allow_none=True)


def _is_concrete(*tensors):
    return all(isinstance(t, tf.Tensor) and hasattr(t, "numpy") for t in tensors)


# The loop always runs as a graph: called eagerly, a `tf.while_loop` would execute op by op
# from Python (~100x slower). Inside an outer tf.function (Keras, TFLite conversion) the
# call is inlined. `jit_compile=True` additionally has XLA fuse each iteration into a few
# kernels (compiled once per input shape); the tests check both give identical results.
_merge_loop_graph = tf.function(_loop.merge_loop, autograph=False, reduce_retracing=True)
_merge_loop_xla = tf.function(_loop.merge_loop, autograph=False, jit_compile=True)


def _empty_detections(batch, max_detections):
    return {
        "boxes": tf.zeros(tf.stack([batch, max_detections, 4]), tf.float32),
        "scores": tf.zeros(tf.stack([batch, max_detections]), tf.float32),
        "classes": tf.zeros(tf.stack([batch, max_detections]), tf.int32),
        "num_detections": tf.zeros(tf.reshape(batch, [1]), tf.int32),
    }


def _greedy_merge_impl(
    boxes,
    scores,
    classes,
    match_threshold,
    score_threshold,
    max_detections,
    max_candidates,
    check_finite,
    jit_compile,
):
    """Validated tensors in, (detections dict, stats dict) out."""
    n_static = scores.shape[1]
    if max_candidates is None:
        if n_static is None:
            raise ValueError(
                "`max_candidates` is required when the number of input boxes is unknown at "
                f"trace time (scores shape {scores.shape}); expected an int"
            )
        m = n_static
    else:
        m = max_candidates if n_static is None else min(max_candidates, n_static)

    if check_finite and not _is_concrete(boxes, scores):
        # Graph mode: fails at run time with this message. The TFLite converter strips
        # Assert ops, so exported models simply drop NaN-score rows (NaN >= t is False).
        finite = tf.reduce_all(tf.math.is_finite(boxes)) & tf.reduce_all(~tf.math.is_nan(scores))
        assert_op = tf.debugging.Assert(
            finite, ["greedy_merge: `scores` contain NaN or `boxes` NaN/inf; expected finite values"]
        )
        with tf.control_dependencies([assert_op]):
            scores = tf.identity(scores)

    if m == 0:  # no input rows at all: nothing to merge (and no empty reductions)
        return _empty_detections(tf.shape(scores)[0], max_detections), {
            "merges": tf.zeros(tf.shape(scores)[:1], tf.int32),
            "iterations": tf.constant(0, tf.int32),
        }

    is_candidate = scores >= score_threshold
    if m == n_static:
        cand_boxes, cand_scores, cand_classes, active = boxes, scores, classes, is_candidate
    else:
        if n_static is None:
            # N is only known at run time and may be below `m`: pad with non-candidates
            # so the top-k below always has `m` rows to pick from.
            boxes = tf.pad(boxes, [[0, 0], [0, m], [0, 0]])
            scores = tf.pad(scores, [[0, 0], [0, m]])
            classes = tf.pad(classes, [[0, 0], [0, m]])
            is_candidate = tf.pad(is_candidate, [[0, 0], [0, m]])
        # Pre-merge top-k: the `m` best candidates, then back to input order so that the
        # index-based tie rule refers to input order.
        masked = tf.where(is_candidate, scores, float("-inf"))
        idx = tf.sort(tf.math.top_k(masked, k=m, sorted=False).indices, axis=1)
        cand_boxes = tf.gather(boxes, idx, batch_dims=1)
        cand_scores = tf.gather(scores, idx, batch_dims=1)
        cand_classes = tf.gather(classes, idx, batch_dims=1)
        active = tf.gather(is_candidate, idx, batch_dims=1)

    threshold = tf.constant(match_threshold, tf.float32)
    loop = _merge_loop_xla if jit_compile else _merge_loop_graph
    acc, alive, iterations = loop(cand_boxes, cand_scores, cand_classes, active, threshold)

    # Sort by merged score, descending; top_k puts the lower index first on ties.
    k = min(max_detections, m)
    merged_scores = tf.where(alive, acc[..., 5], float("-inf"))
    order = tf.math.top_k(merged_scores, k=k, sorted=True).indices
    valid = tf.gather(alive, order, batch_dims=1)  # alive rows sort first
    out_acc = tf.gather(acc, order, batch_dims=1)
    out_boxes = out_acc[..., :4] / tf.maximum(out_acc[..., 4:5], 1.0)
    out_scores = out_acc[..., 5]
    out_classes = tf.gather(cand_classes, order, batch_dims=1)
    num = tf.reduce_sum(tf.cast(valid, tf.int32), axis=1)
    if k < max_detections:
        pad = max_detections - k
        out_boxes = tf.pad(out_boxes, [[0, 0], [0, pad], [0, 0]])
        out_scores = tf.pad(out_scores, [[0, 0], [0, pad]])
        out_classes = tf.pad(out_classes, [[0, 0], [0, pad]])
    detections = pad_detections(out_boxes, out_scores, out_classes, num, max_detections)
    num_candidates = tf.reduce_sum(tf.cast(active, tf.int32), axis=1)
    num_merged = tf.reduce_sum(tf.cast(alive, tf.int32), axis=1)
    stats = {"merges": num_candidates - num_merged, "iterations": iterations}
    return detections, stats


def _validate_inputs(boxes, scores, classes):
    boxes = tf.convert_to_tensor(boxes)
    scores = tf.convert_to_tensor(scores)
    classes = tf.convert_to_tensor(classes)
    if boxes.dtype != tf.float32 or scores.dtype != tf.float32:
        raise ValueError(
            f"`boxes` and `scores` must be float32, got {boxes.dtype.name} and {scores.dtype.name}"
        )
    if classes.dtype != tf.int32:
        raise ValueError(f"`classes` must be int32, got {classes.dtype.name}")
    if boxes.shape.rank != 3 or boxes.shape[-1] != 4:
        raise ValueError(f"`boxes` must have shape [B, N, 4], got {boxes.shape}")
    if scores.shape.rank != 2 or classes.shape.rank != 2:
        raise ValueError(
            f"`scores` and `classes` must have shape [B, N], got {scores.shape} and {classes.shape}"
        )
    if not (boxes.shape[:2].is_compatible_with(scores.shape)
            and scores.shape.is_compatible_with(classes.shape)):
        raise ValueError(
            f"`boxes` {boxes.shape}, `scores` {scores.shape} and `classes` {classes.shape} "
            "must agree on [B, N]"
        )
    if _is_concrete(boxes, scores):
        # Eager inputs: check here, with a Python error naming the offending row.
        nan_rows = np.argwhere(np.isnan(scores.numpy()))
        if nan_rows.size:
            raise ValueError(
                f"`scores` contains NaN at [batch, box] {nan_rows[0].tolist()} "
                f"({len(nan_rows)} in total); expected finite scores"
            )
        bad_rows = np.argwhere(~np.isfinite(boxes.numpy()).all(axis=-1))
        if bad_rows.size:
            raise ValueError(
                f"`boxes` contains NaN or inf at [batch, box] {bad_rows[0].tolist()}; "
                "expected finite coordinates"
            )
    return boxes, scores, classes


def greedy_merge(
    boxes,
    scores,
    classes,
    *,
    match_threshold=1.0,
    score_threshold=0.05,
    max_detections=100,
    max_candidates=None,
    check_finite=True,
    jit_compile=True,
):
    """OverFeat's greedy merge of per-class detections, batched and in-graph.

    Per image and per class, repeatedly takes the pair of boxes with the smallest match
    score (see `match_scores`); if that score is <= `match_threshold` the pair is replaced
    by one box whose coordinates are the mean of all the original boxes merged into it and
    whose score is the sum of their scores, otherwise merging stops. Boxes of different
    classes never merge. Input rows with `score < score_threshold` are dropped first.

    Ties are broken exactly: the pair is the first minimum, in row-major order, of the full
    symmetric score matrix over the candidates in input order (diagonal = +inf), i.e. the
    smallest row index attaining the minimum and the smallest column in that row; the
    merged box keeps the smaller index.

    Cost: O(M²) once to seed per-row minima, then O(M) per merge (lazy row minima, see
    `_greedy_merge_loop.py`); memory O(B·M²) for the seeding step.

    NaN handling: eager inputs are checked in Python and raise a `ValueError`. In graph
    mode (tf.function, Keras `predict`) a NaN cannot raise a Python error, so with
    `check_finite=True` a `tf.debugging.Assert` fails the run with an `InvalidArgumentError`
    naming the problem. Asserts are not TFLite builtins: the TFLite converter strips them,
    and an exported model drops NaN-score rows instead (NaN >= threshold is False). Set
    `check_finite=False` to leave the assert out of the graph altogether.

    Args:
        boxes: [B, N, 4] float32 `[y1, x1, y2, x2]` in pixels.
        scores: [B, N] float32 confidences. Padding rows must score below
            `score_threshold` (the project pads with 0).
        classes: [B, N] int32 class ids.
        match_threshold: merge while the best pair's match score is <= this (>= 0).
        score_threshold: drop input rows scoring below this before merging (> 0, so the
            zero-score padding rows are never candidates).
        max_detections: static number of output rows.
        max_candidates: bound on the number of candidates per image, like the pre-NMS
            top-k of Faster R-CNN: if more than this many rows pass `score_threshold`,
            only the `max_candidates` best-scoring ones (lower index first on ties) are
            merged and the rest are ignored. `None` (default) means N, so nothing is
            dropped; it is required if N is not known at trace time. The merge costs
            O(max_candidates²) to seed plus O(max_candidates) per merge.
        check_finite: add the in-graph NaN check described above (graph mode only).
        jit_compile: run the merge loop with XLA: ~10x faster on CPU (the loop runs ~2
            iterations per merge, and XLA fuses each into a few kernels), at the cost of
            a compilation (~2 s) per new input shape. Results are identical with False,
            which is the plain TF graph. TFLite conversion works either way (the
            converter inlines the function and ignores the XLA attribute).

    Returns:
        A dict of padded tensors, rows sorted by merged score descending (stable: the
        lower candidate index first on ties):
            "boxes": [B, max_detections, 4] float32,
            "scores": [B, max_detections] float32 (sums of the merged input scores),
            "classes": [B, max_detections] int32,
            "num_detections": [B] int32.
        Only the first `num_detections[b]` rows of image b are valid; the padding rows
        have boxes 0, scores 0 and classes 0.

    Raises:
        ValueError: for bad shapes, dtypes or arguments, and for NaN scores in eager mode.

    Example:
    >>> boxes = tf.constant([[[0.0, 0.0, 10.0, 10.0], [0.0, 1.0, 10.0, 11.0],
    ...                       [50.0, 50.0, 60.0, 60.0]]])
    >>> out = greedy_merge(boxes, tf.constant([[0.5, 0.25, 0.5]]),
    ...                    tf.constant([[1, 1, 1]]), max_detections=4)
    >>> out["num_detections"].numpy().tolist()
    [2]
    >>> out["boxes"][0, 0].numpy().tolist(), out["scores"][0, 0].numpy().item()
    ([0.0, 0.5, 10.0, 10.5], 0.75)
    """
    _check_args(match_threshold, score_threshold, max_detections, max_candidates)
    boxes, scores, classes = _validate_inputs(boxes, scores, classes)
    detections, _ = _greedy_merge_impl(
        boxes,
        scores,
        classes,
        float(match_threshold),
        float(score_threshold),
        int(max_detections),
        None if max_candidates is None else int(max_candidates),
        bool(check_finite),
        bool(jit_compile),
    )
    return detections


@keras.saving.register_keras_serializable(package="kerasdet")
class GreedyMerge(keras.layers.Layer):
    """Keras layer running OverFeat's greedy merge (`greedy_merge`) on detections.

    Call arguments: `boxes` [B, N, 4] float32, `scores` [B, N] float32, `classes` [B, N]
    int32. Returns the padded detections dict of `greedy_merge`.

    Args:
        match_threshold: merge while the best pair's match score is <= this.
        score_threshold: drop input rows scoring below this first (> 0).
        max_detections: static number of output rows.
        max_candidates: bound on candidates per image (pre-merge top-k); `None` = N.
        check_finite: in-graph NaN check (stripped by the TFLite converter).
        jit_compile: run the merge loop with XLA (faster; compiles per input shape).
            Identical results and TFLite conversion either way.
        **kwargs: base `keras.layers.Layer` arguments (e.g. `name`).

    Example:
    >>> layer = GreedyMerge(match_threshold=1.0, max_detections=10)
    >>> out = layer(tf.zeros([2, 5, 4]), tf.zeros([2, 5]), tf.zeros([2, 5], tf.int32))
    >>> out["boxes"].shape, out["num_detections"].numpy().tolist()
    (TensorShape([2, 10, 4]), [0, 0])
    """

    def __init__(
        self,
        match_threshold=1.0,
        score_threshold=0.05,
        max_detections=100,
        max_candidates=None,
        check_finite=True,
        jit_compile=True,
        **kwargs,
    ):
        # Box math stays float32 under a mixed-precision policy (inputs are cast, not
        # rejected by the float32 check of `greedy_merge`).
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        _check_args(match_threshold, score_threshold, max_detections, max_candidates)
        self.match_threshold = float(match_threshold)
        self.score_threshold = float(score_threshold)
        self.max_detections = int(max_detections)
        self.max_candidates = None if max_candidates is None else int(max_candidates)
        self.check_finite = bool(check_finite)
        self.jit_compile = bool(jit_compile)

    def call(self, boxes, scores, classes):
        return greedy_merge(
            boxes,
            scores,
            classes,
            match_threshold=self.match_threshold,
            score_threshold=self.score_threshold,
            max_detections=self.max_detections,
            max_candidates=self.max_candidates,
            check_finite=self.check_finite,
            jit_compile=self.jit_compile,
        )

    def compute_output_spec(self, boxes, scores, classes):
        return detections_spec(boxes.shape[0], self.max_detections)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "match_threshold": self.match_threshold,
                "score_threshold": self.score_threshold,
                "max_detections": self.max_detections,
                "max_candidates": self.max_candidates,
                "check_finite": self.check_finite,
                "jit_compile": self.jit_compile,
            }
        )
        return config
