"""Tests of OverFeat's greedy merge (`kerasdet.postprocess.greedy_merge`)."""

import numpy as np
import pytest
import tensorflow as tf

from kerasdet.export.tflite import convert_builtin_only, tflite_op_names
from kerasdet.postprocess.greedy_merge import GreedyMerge, greedy_merge, match_scores
from tests.layer_checks import check_layer, run_tflite
from tests.reference_greedy_merge import greedy_merge_batch, greedy_merge_image

KEYS = ("boxes", "scores", "classes", "num_detections")


def clustered(rng, batch, n, objects=6, classes=3):
    """Jittered boxes around a few objects (most of them merge) plus scattered ones."""
    center = rng.uniform(50, 450, (batch, objects, 2))
    size = rng.uniform(20, 120, (batch, objects, 2))
    who = rng.integers(0, objects, (batch, n))
    c = np.take_along_axis(center, who[..., None], 1) + rng.normal(0, 6, (batch, n, 2))
    s = np.take_along_axis(size, who[..., None], 1) * rng.uniform(0.8, 1.25, (batch, n, 2))
    stray = rng.random((batch, n)) < 0.1
    c[stray] = rng.uniform(0, 500, (stray.sum(), 2))
    boxes = np.concatenate([c - s / 2, c + s / 2], -1).astype(np.float32)
    scores = rng.uniform(0.0, 1.0, (batch, n)).astype(np.float32)  # some below 0.05
    return boxes, scores, rng.integers(0, classes, (batch, n)).astype(np.int32)


def run(boxes, scores, classes, **kwargs):
    # Plain graph unless a test asks for XLA: each new input shape costs an XLA compile.
    kwargs.setdefault("jit_compile", False)
    out = greedy_merge(
        tf.constant(np.asarray(boxes, np.float32)),
        tf.constant(np.asarray(scores, np.float32)),
        tf.constant(np.asarray(classes, np.int32)),
        **kwargs,
    )
    return {k: v.numpy() for k, v in out.items()}


def assert_matches(out, ref, atol=2e-3):
    np.testing.assert_array_equal(out["num_detections"], ref["num_detections"])
    np.testing.assert_array_equal(out["classes"], ref["classes"])
    np.testing.assert_allclose(out["boxes"], ref["boxes"], atol=atol, rtol=0)
    np.testing.assert_allclose(out["scores"], ref["scores"], atol=1e-4, rtol=1e-5)


def single(boxes, scores, classes=None, **kwargs):
    """Runs one image; returns (boxes, scores, classes) of the valid rows."""
    classes = np.zeros(len(scores), np.int32) if classes is None else classes
    out = run([boxes], [scores], [classes], max_detections=8, **kwargs)
    k = out["num_detections"][0]
    assert not out["boxes"][0, k:].any() and not out["scores"][0, k:].any()
    assert not out["classes"][0, k:].any()
    return out["boxes"][0, :k], out["scores"][0, :k], out["classes"][0, :k]


# --- Against the NumPy reference -------------------------------------------------------


@pytest.mark.parametrize(
    "seed, batch, n, threshold, jit_compile",
    [
        (0, 2, 60, 1.0, True),
        (1, 1, 150, 1.0, False),
        (2, 2, 120, 0.6, True),
        (3, 1, 300, 1.3, True),
        (4, 1, 300, 1.0, False),
    ],
)
def test_matches_reference(seed, batch, n, threshold, jit_compile):
    boxes, scores, classes = clustered(np.random.default_rng(seed), batch, n)
    kwargs = dict(match_threshold=threshold, score_threshold=0.05)
    out = run(boxes, scores, classes, max_detections=n, jit_compile=jit_compile, **kwargs)
    assert_matches(out, greedy_merge_batch(boxes, scores, classes, max_detections=n, **kwargs))
    assert out["num_detections"].min() > 0 and out["num_detections"].max() < 0.5 * n


@pytest.mark.parametrize("jit_compile", [False, True])
def test_matches_reference_with_many_exact_ties(jit_compile):
    # Boxes on a coarse integer grid: many congruent pairs, hence bitwise-equal scores,
    # and duplicates; only the row-major tie rule decides the merge order.
    rng = np.random.default_rng(11)
    corner = rng.integers(0, 6, (2, 80, 2)) * 4
    size = rng.integers(2, 4, (2, 80, 2)) * 4
    boxes = np.concatenate([corner, corner + size], -1).astype(np.float32)
    scores = rng.integers(1, 5, (2, 80)).astype(np.float32) / 4
    classes = rng.integers(0, 2, (2, 80)).astype(np.int32)
    out = run(boxes, scores, classes, max_detections=80, match_threshold=0.8,
              jit_compile=jit_compile)
    ref = greedy_merge_batch(boxes, scores, classes, max_detections=80, match_threshold=0.8)
    assert_matches(out, ref, atol=1e-4)


def test_lazy_refreshes_are_exercised():
    # Guards the coverage of the random tests: stale rows get popped and refreshed.
    from kerasdet.postprocess.greedy_merge import _greedy_merge_impl

    boxes, scores, classes = clustered(np.random.default_rng(1), 1, 150)
    _, stats = _greedy_merge_impl(tf.constant(boxes), tf.constant(scores), tf.constant(classes),
                                  1.0, 0.05, 100, None, True, False)
    merges, iterations = int(stats["merges"][0]), int(stats["iterations"])
    assert merges > 50 and iterations > merges + 10


def test_max_candidates_keeps_best_scores():
    boxes, scores, classes = clustered(np.random.default_rng(10), 2, 80)
    out = run(boxes, scores, classes, max_detections=20, max_candidates=30)
    ref = greedy_merge_batch(boxes, scores, classes, max_detections=20, max_candidates=30)
    assert_matches(out, ref)


def test_xla_gives_identical_results():
    boxes, scores, classes = clustered(np.random.default_rng(5), 2, 200)
    plain = run(boxes, scores, classes, max_detections=50, jit_compile=False)
    xla = run(boxes, scores, classes, max_detections=50, jit_compile=True)
    for key in KEYS:
        np.testing.assert_array_equal(plain[key], xla[key])


# --- Literal, hand-computed cases ------------------------------------------------------


def test_identical_boxes_merge_into_one():
    boxes, scores, _ = single([[10, 10, 50, 50], [10, 10, 50, 50]], [0.5, 0.25])
    np.testing.assert_allclose(boxes, [[10, 10, 50, 50]])
    np.testing.assert_allclose(scores, [0.75])


@pytest.mark.parametrize(
    "threshold, merged",
    [(0.75, True), (float(np.nextafter(np.float32(0.75), np.float32(0))), False), (0.76, True), (0.74, False)],
)
def test_threshold_is_inclusive(threshold, merged):
    # Same center, IoU = 4/16: match = 0 + (1 - 0.25) = 0.75 exactly in float32.
    boxes, scores, _ = single([[0, 0, 4, 4], [1, 1, 3, 3]], [0.5, 0.25], match_threshold=threshold)
    if merged:
        np.testing.assert_allclose(boxes, [[0.5, 0.5, 3.5, 3.5]])
        np.testing.assert_allclose(scores, [0.75])
    else:
        np.testing.assert_allclose(boxes, [[0, 0, 4, 4], [1, 1, 3, 3]])


def test_match_scores_values():
    a = [[0.0, 0.0, 4.0, 4.0], [0.0, 0.0, 10.0, 10.0]]
    b = [[1.0, 1.0, 3.0, 3.0], [0.0, 3.0, 10.0, 13.0]]
    got = match_scores(tf.constant(a), tf.constant(b)).numpy()
    # [0, 3, 10, 13] vs [0, 0, 10, 10]: 3 / (10 sqrt 2) + 1 - 70 / 130.
    np.testing.assert_allclose(np.diag(got), [0.75, 3 / (10 * 2**0.5) + 1 - 70 / 130], rtol=1e-6)
    np.testing.assert_array_equal(got, match_scores(tf.constant(b), tf.constant(a)).numpy().T)


def test_chain_merges_closest_pair_first_and_averages_originals():
    # Boxes 10x10 at x = 0, 3, 7. match(a, b) = 0.674, match(b, c) = 0.854, both below
    # 0.9; (a, b) goes first, and the merged box [0, 1.5, 10, 11.5] is 1.099 from c.
    chain = [[0, 0, 10, 10], [0, 3, 10, 13], [0, 7, 10, 17]]
    boxes, scores, _ = single(chain, [0.5, 0.4, 0.3], match_threshold=0.9)
    np.testing.assert_allclose(boxes, [[0, 1.5, 10, 11.5], [0, 7, 10, 17]], atol=1e-6)
    np.testing.assert_allclose(scores, [0.9, 0.3], atol=1e-6)
    # At 1.1 c joins, and the box is the mean of the 3 originals, not of (ab, c).
    boxes, scores, _ = single(chain, [0.5, 0.4, 0.3], match_threshold=1.1)
    np.testing.assert_allclose(boxes, [[0, 10 / 3, 10, 10 + 10 / 3]], atol=1e-5)
    np.testing.assert_allclose(scores, [1.2], atol=1e-6)


def test_tied_pairs_follow_row_major_order():
    # b is exactly as close to a as to c (0.854 both); the first minimum in row-major
    # order is (0, 1), whichever boxes sit at indices 0 and 1.
    a, b, c = [0, 0, 10, 10], [0, 4, 10, 14], [0, 8, 10, 18]
    boxes, scores, _ = single([a, b, c], [0.3, 0.5, 0.4], match_threshold=0.9)
    np.testing.assert_allclose(boxes, [[0, 2, 10, 12], c])
    np.testing.assert_allclose(scores, [0.8, 0.4], atol=1e-6)
    boxes, scores, _ = single([c, b, a], [0.4, 0.5, 0.3], match_threshold=0.9)
    np.testing.assert_allclose(boxes, [[0, 6, 10, 16], a])
    np.testing.assert_allclose(scores, [0.9, 0.3], atol=1e-6)


def test_tie_rules_on_xla():
    a, b, c = [0, 0, 10, 10], [0, 4, 10, 14], [0, 8, 10, 18]
    boxes, _, _ = single([c, b, a], [0.4, 0.5, 0.3], match_threshold=0.9, jit_compile=True)
    np.testing.assert_allclose(boxes, [[0, 6, 10, 16], a])
    boxes, _, _ = single([a, b, c], [0.3, 0.5, 0.4], match_threshold=0.9, jit_compile=True)
    np.testing.assert_allclose(boxes, [[0, 2, 10, 12], c])
    far = [[0, 0, 10, 10], [100, 100, 110, 110], [200, 200, 210, 210]]
    boxes, _, _ = single(far, [0.5, 0.7, 0.5], jit_compile=True)
    np.testing.assert_allclose(boxes, [far[1], far[0], far[2]])


def test_classes_never_merge():
    box = [10, 10, 50, 50]
    boxes, scores, classes = single([box, box, box], [0.5, 0.3, 0.25], np.array([0, 1, 0]))
    np.testing.assert_allclose(boxes, [box, box])
    np.testing.assert_allclose(scores, [0.75, 0.3])
    np.testing.assert_array_equal(classes, [0, 1])


def test_tied_scores_keep_input_order():
    far = [[0, 0, 10, 10], [100, 100, 110, 110], [200, 200, 210, 210]]
    boxes, scores, _ = single(far, [0.5, 0.7, 0.5])
    np.testing.assert_allclose(boxes, [far[1], far[0], far[2]])
    np.testing.assert_allclose(scores, [0.7, 0.5, 0.5])


def test_score_threshold_applies_before_merging():
    # The low-scoring middle box would bridge the two others; dropped first, it cannot.
    boxes, scores, _ = single(
        [[0, 0, 10, 10], [0, 3, 10, 13], [0, 7, 10, 17]], [0.5, 0.04, 0.3], match_threshold=0.9
    )
    np.testing.assert_allclose(boxes, [[0, 0, 10, 10], [0, 7, 10, 17]])
    np.testing.assert_allclose(scores, [0.5, 0.3])


# --- Empty and degenerate inputs -------------------------------------------------------


@pytest.mark.parametrize(
    "boxes, scores",
    [
        (np.zeros((2, 0, 4)), np.zeros((2, 0))),  # zero boxes in
        (np.random.default_rng(0).uniform(0, 50, (2, 5, 4)), np.full((2, 5), 0.01)),  # all low
        (np.zeros((2, 5, 4)), np.zeros((2, 5))),  # all padding
    ],
    ids=["zero_boxes", "all_below_threshold", "all_padding"],
)
def test_nothing_to_return(boxes, scores):
    out = run(boxes, scores, np.zeros(scores.shape, np.int32), max_detections=7)
    assert out["boxes"].shape == (2, 7, 4) and out["scores"].shape == (2, 7)
    assert out["classes"].shape == (2, 7) and out["num_detections"].shape == (2,)
    for value in out.values():
        assert not value.any()


def test_more_detections_than_boxes_are_padded():
    out = run([[[0, 0, 10, 10], [50, 50, 60, 60]]], [[0.9, 0.8]], [[3, 4]], max_detections=5)
    assert out["boxes"].shape == (1, 5, 4)
    np.testing.assert_array_equal(out["classes"], [[3, 4, 0, 0, 0]])
    assert out["num_detections"].tolist() == [2]


def test_max_detections_truncates_but_counts_only_kept_rows():
    far = [[i * 20, 0, i * 20 + 10, 10] for i in range(6)]
    out = run([far], [[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]], [[0] * 6], max_detections=4)
    assert out["num_detections"].tolist() == [4]
    np.testing.assert_allclose(out["scores"][0], [0.6, 0.5, 0.4, 0.3])


# --- Errors ----------------------------------------------------------------------------


def test_nan_scores_rejected_eagerly():
    with pytest.raises(ValueError, match=r"`scores` contains NaN at \[batch, box\] \[0, 1\]"):
        run([[[0, 0, 1, 1], [0, 0, 1, 1]]], [[0.5, np.nan]], [[0, 0]])


def test_nan_scores_rejected_in_graph():
    fn = tf.function(lambda b, s, c: greedy_merge(b, s, c, max_detections=4, jit_compile=False))
    args = (tf.zeros([1, 2, 4]), tf.constant([[0.5, np.nan]]), tf.zeros([1, 2], tf.int32))
    with pytest.raises(tf.errors.InvalidArgumentError, match="scores` contain NaN"):
        fn(*args)
    # Without the check (as in a TFLite export) the NaN row is simply not a candidate.
    fn = tf.function(lambda b, s, c: greedy_merge(b, s, c, max_detections=4, check_finite=False,
                                                  jit_compile=False))
    assert fn(*args)["num_detections"].numpy().tolist() == [1]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(boxes=np.zeros((1, 3, 5))), r"`boxes` must have shape \[B, N, 4\]"),
        (dict(scores=np.zeros((1, 4), np.float32)), "must agree on"),
        (dict(classes=np.zeros((1, 3), np.float32)), "`classes` must be int32, got float32"),
        (dict(boxes=np.full((1, 3, 4), np.inf)), "`boxes` contains NaN or inf"),
        (dict(match_threshold=-1.0), r"`match_threshold` must be a finite number >= 0.0, got -1.0"),
        (dict(score_threshold=0.0), r"`score_threshold` must be a finite number > 0.0, got 0.0"),
        (dict(max_detections=0), "`max_detections` must be a positive int, got 0"),
        (dict(max_candidates=2.5), "`max_candidates` must be a positive int or None, got 2.5"),
    ],
)
def test_bad_input_raises_value_error(kwargs, match):
    args = dict(
        boxes=np.zeros((1, 3, 4), np.float32),
        scores=np.ones((1, 3), np.float32),
        classes=np.zeros((1, 3), np.int32),
    )
    args.update(kwargs)
    tensors = [tf.constant(args.pop(k).astype(np.float32) if k == "boxes" else args.pop(k))
               for k in ("boxes", "scores", "classes")]
    with pytest.raises(ValueError, match=match):
        greedy_merge(*tensors, **args)


def test_unknown_n_needs_max_candidates():
    spec = [tf.TensorSpec([None, None, 4]), tf.TensorSpec([None, None]),
            tf.TensorSpec([None, None], tf.int32)]
    with pytest.raises(ValueError, match="`max_candidates` is required"):
        tf.function(greedy_merge, input_signature=spec).get_concrete_function()
    fn = tf.function(lambda b, s, c: greedy_merge(b, s, c, max_candidates=16, max_detections=4,
                                                  jit_compile=False),
                     input_signature=spec)
    boxes, scores, classes = clustered(np.random.default_rng(6), 2, 10)  # fewer than 16
    np.testing.assert_array_equal(
        fn(boxes, scores, classes)["num_detections"].numpy(),
        greedy_merge_batch(boxes, scores, classes, max_detections=4)["num_detections"],
    )


# --- Graph mode, batches, shapes -------------------------------------------------------


@pytest.mark.parametrize("jit_compile", [False, True])
def test_unknown_batch_in_tf_function_static_outputs(jit_compile):
    n = 40
    spec = [tf.TensorSpec([None, n, 4]), tf.TensorSpec([None, n]), tf.TensorSpec([None, n], tf.int32)]
    fn = tf.function(lambda b, s, c: greedy_merge(b, s, c, max_detections=30, jit_compile=jit_compile),
                     input_signature=spec)
    outputs = fn.get_concrete_function().structured_outputs
    assert outputs["boxes"].shape.as_list() == [None, 30, 4] and outputs["boxes"].dtype == tf.float32
    assert outputs["scores"].shape.as_list() == [None, 30] and outputs["scores"].dtype == tf.float32
    assert outputs["classes"].shape.as_list() == [None, 30] and outputs["classes"].dtype == tf.int32
    assert outputs["num_detections"].shape.as_list() == [None]
    assert outputs["num_detections"].dtype == tf.int32
    # A batch of 2 different images gives what each image gives alone.
    boxes, scores, classes = clustered(np.random.default_rng(7), 2, n)
    scores[1, 20:] = 0.0  # second image: half padding
    both = {k: v.numpy() for k, v in fn(boxes, scores, classes).items()}
    assert both["num_detections"][0] != both["num_detections"][1]
    for i in range(2):
        alone = fn(boxes[i : i + 1], scores[i : i + 1], classes[i : i + 1])
        for key in KEYS:
            np.testing.assert_array_equal(both[key][i], alone[key].numpy()[0])
    assert_matches(both, greedy_merge_batch(boxes, scores, classes, max_detections=30))


# --- Keras layer and TFLite ------------------------------------------------------------


def test_layer_checks(tmp_path):
    boxes, scores, classes = clustered(np.random.default_rng(8), 2, 30)
    layer = GreedyMerge(match_threshold=0.9, score_threshold=0.1, max_detections=12,
                        max_candidates=25, jit_compile=False, name="greedy_merge")
    out = check_layer(layer, [boxes, scores, classes], tmp_path)
    ref = greedy_merge_batch(boxes, scores, classes, max_detections=12, match_threshold=0.9,
                             score_threshold=0.1, max_candidates=25)
    assert_matches({k: v.numpy() for k, v in out.items()}, ref)
    assert layer.get_config()["max_candidates"] == 25


def test_tflite_builtin_only_matches_tf():
    boxes, scores, classes = clustered(np.random.default_rng(9), 1, 60)
    # The XLA flag stays on: the converter inlines the function and ignores it.
    layer = GreedyMerge(max_detections=16, check_finite=False)
    specs = [tf.TensorSpec(x.shape, tf.as_dtype(x.dtype)) for x in (boxes, scores, classes)]
    flatbuffer = convert_builtin_only(layer, specs)
    ops = tflite_op_names(flatbuffer)
    assert "WHILE" in ops and not [op for op in ops if op.startswith("CUSTOM:")]
    expected = {k: v.numpy() for k, v in layer(boxes, scores, classes).items()}
    got = run_tflite(flatbuffer, [boxes, scores, classes])
    # Match outputs by (shape, dtype): the four are distinct.
    by_signature = {(x.shape, x.dtype): x for x in got}
    for key in KEYS:
        value = by_signature[(expected[key].shape, expected[key].dtype)]
        np.testing.assert_allclose(value, expected[key], atol=1e-4, rtol=0)
    assert expected["num_detections"][0] > 1


def test_tflite_tie_rules():
    # Tied pair (c, b) vs (b, a) and tied output scores, through ARG_MIN / TOPK_V2.
    a, b, c = [0, 0, 10, 10], [0, 4, 10, 14], [0, 8, 10, 18]
    far1, far2 = [100, 100, 110, 110], [200, 200, 210, 210]
    boxes = np.array([[c, b, a, far1, far2]], np.float32)
    scores = np.array([[0.4, 0.5, 0.3, 0.35, 0.35]], np.float32)
    classes = np.zeros((1, 5), np.int32)
    fn = lambda bx, s, cl: greedy_merge(bx, s, cl, match_threshold=0.9, max_detections=5,  # noqa: E731
                                        check_finite=False)
    specs = [tf.TensorSpec(x.shape, tf.as_dtype(x.dtype)) for x in (boxes, scores, classes)]
    got = {(x.shape, x.dtype): x for x in run_tflite(convert_builtin_only(fn, specs),
                                                     [boxes, scores, classes])}
    np.testing.assert_allclose(got[((1, 5, 4), np.dtype("float32"))][0],
                               [[0, 6, 10, 16], far1, far2, a, [0, 0, 0, 0]])
    np.testing.assert_allclose(got[((1, 5), np.dtype("float32"))][0], [0.9, 0.35, 0.35, 0.3, 0], atol=1e-6)


def test_reference_itself_on_literal_case():
    # Guards the reference: the chain case by hand (see the chain test above).
    boxes, scores, _, merges = greedy_merge_image(
        [[0, 0, 10, 10], [0, 3, 10, 13], [0, 7, 10, 17]], [0.5, 0.4, 0.3], [1, 1, 1], 0.9
    )
    np.testing.assert_allclose(boxes, [[0, 1.5, 10, 11.5], [0, 7, 10, 17]])
    assert merges == 1


def test_layer_under_mixed_precision_policy_computes_in_float32():
    import keras

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        layer = GreedyMerge(max_detections=4, jit_compile=False)
        out = layer(tf.constant([[[0.0, 0.0, 10.0, 10.0], [0.0, 1.0, 10.0, 11.0]]], tf.float16),
                    tf.constant([[0.5, 0.25]], tf.float16), tf.constant([[1, 1]]))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert out["boxes"].dtype == tf.float32 and out["num_detections"].numpy().tolist() == [1]
    np.testing.assert_allclose(out["scores"].numpy()[0, 0], 0.75)
