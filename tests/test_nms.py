"""Tests of `non_max_suppression` / `NonMaxSuppression` against the NumPy reference."""

import numpy as np
import pytest
import tensorflow as tf
from layer_checks import check_layer, run_tflite
from reference_nms import nms_batch

from kerasdet.export.tflite import convert_builtin_only, tflite_op_names
from kerasdet.postprocess import NonMaxSuppression, non_max_suppression

KEYS = ("boxes", "scores", "classes", "num_detections")


def clustered(rng, batch, n, num_classes, specific, objects=5):
    """Boxes jittered around a few objects (so NMS has work to do), uniform scores."""
    centers = rng.uniform(20.0, 200.0, (batch, objects, 2))
    who = rng.integers(0, objects, (batch, n))
    center = np.take_along_axis(centers, who[..., None], 1)
    shape = (batch, n, num_classes, 2) if specific else (batch, n, 2)
    if specific:
        center = center[:, :, None, :]
    center = center + rng.normal(0.0, 6.0, shape)
    size = rng.uniform(15.0, 60.0, shape)
    boxes = np.concatenate([center - size / 2, center + size / 2], -1).astype(np.float32)
    scores = rng.uniform(0.0, 1.0, (batch, n, num_classes)).astype(np.float32)
    return boxes, scores


def run(boxes, scores, **kwargs):
    out = non_max_suppression(tf.constant(boxes, tf.float32), tf.constant(scores, tf.float32), **kwargs)
    return {k: v.numpy() for k, v in out.items()}


def assert_matches(out, ref):
    np.testing.assert_array_equal(out["num_detections"], ref["num_detections"])
    np.testing.assert_array_equal(out["classes"], ref["classes"])
    np.testing.assert_array_equal(out["scores"], ref["scores"])
    np.testing.assert_allclose(out["boxes"], ref["boxes"], atol=1e-5, rtol=0)


def assert_well_formed(out, max_detections):
    batch = out["num_detections"].shape[0]
    assert out["boxes"].shape == (batch, max_detections, 4) and out["boxes"].dtype == np.float32
    assert out["scores"].shape == (batch, max_detections) and out["scores"].dtype == np.float32
    assert out["classes"].shape == (batch, max_detections) and out["classes"].dtype == np.int32
    assert out["num_detections"].dtype == np.int32
    for i, k in enumerate(out["num_detections"]):
        assert np.all(np.diff(out["scores"][i, :k]) <= 0)  # sorted by score, descending
        assert not out["boxes"][i, k:].any() and not out["scores"][i, k:].any()
        assert not out["classes"][i, k:].any()


# --- Against the reference on random inputs ----------------------------------------------


@pytest.mark.parametrize(
    "seed, specific, n, num_classes, iou_threshold, max_detections",
    [
        (0, False, 40, 3, 0.5, 30),
        (1, True, 40, 3, 0.5, 30),
        (2, False, 60, 1, 0.3, 12),  # truncation to D
        (3, True, 25, 4, 0.7, 100),
        (4, False, 70, 2, 0.6, 100),
        (5, True, 50, 2, 0.4, 8),
    ],
)
def test_nms_matches_reference_random(seed, specific, n, num_classes, iou_threshold, max_detections):
    boxes, scores = clustered(np.random.default_rng(seed), 2, n, num_classes, specific)
    kwargs = dict(iou_threshold=iou_threshold, score_threshold=0.1, max_detections=max_detections)
    out = run(boxes, scores, **kwargs)
    ref = nms_batch(boxes, scores, **kwargs)
    assert_matches(out, ref)
    assert_well_formed(out, max_detections)
    assert 0 < ref["num_detections"].min()
    # Suppression happened (fewer kept than candidates above threshold), unless truncated.
    assert (ref["num_detections"] < (scores >= 0.1).sum(axis=(1, 2))).all()


@pytest.mark.parametrize("seed, specific", [(6, False), (7, True)])
def test_nms_max_candidates_keeps_best_scores(seed, specific):
    boxes, scores = clustered(np.random.default_rng(seed), 2, 40, 3, specific)
    kwargs = dict(iou_threshold=0.5, score_threshold=0.05, max_detections=40, max_candidates=15)
    out = run(boxes, scores, **kwargs)
    ref = nms_batch(boxes, scores, **kwargs)
    assert_matches(out, ref)
    assert not np.array_equal(ref["num_detections"], nms_batch(boxes, scores, max_detections=40)["num_detections"])


def test_nms_literal_example():
    boxes = [[[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 9]]]
    scores = [[[0.9, 0.1], [0.8, 0.7], [0.7, 0.02], [0.3, 0.6]]]
    out = run(boxes, scores, iou_threshold=0.5, score_threshold=0.05, max_detections=6)
    # Class 0: box 0 (0.9) suppresses box 1 (IoU 100/142 = 0.70) and box 3 (IoU 0.9); box 2 kept.
    # Class 1: box 1 (0.7) suppresses box 3 (IoU 81/(100 + 90 − 81) = 0.74), box 0 (0.1) too
    # (IoU 0.70); box 2 is below the score threshold.
    assert out["num_detections"].tolist() == [3]
    np.testing.assert_allclose(out["scores"][0], [0.9, 0.7, 0.7, 0, 0, 0])
    assert out["classes"][0].tolist() == [0, 1, 0, 0, 0, 0]  # tie 0.7: box 1·2+1=3 before 2·2+0=4
    np.testing.assert_array_equal(out["boxes"][0, :3], [[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]])


# --- Edge cases ----------------------------------------------------------------------------


def test_nms_zero_boxes():
    for boxes in (np.zeros([2, 0, 4], np.float32), np.zeros([2, 0, 3, 4], np.float32)):
        out = run(boxes, np.zeros([2, 0, 3], np.float32), max_detections=4)
        assert_well_formed(out, 4)
        np.testing.assert_array_equal(out["num_detections"], [0, 0])
        assert not out["boxes"].any()
    traced = tf.function(
        lambda b, s: non_max_suppression(b, s, max_detections=4),
        input_signature=[tf.TensorSpec([None, None, 4]), tf.TensorSpec([None, None, 3])],
    )
    out = traced(tf.zeros([2, 0, 4]), tf.zeros([2, 0, 3]))
    np.testing.assert_array_equal(out["num_detections"].numpy(), [0, 0])
    assert out["boxes"].shape == (2, 4, 4)


def test_nms_all_below_threshold():
    boxes, scores = clustered(np.random.default_rng(8), 2, 20, 3, False)
    out = run(boxes, scores * 0.04, score_threshold=0.05, max_detections=10)
    assert_well_formed(out, 10)
    np.testing.assert_array_equal(out["num_detections"], [0, 0])
    assert not out["boxes"].any() and not out["scores"].any() and not out["classes"].any()


def test_nms_score_equal_to_threshold_is_kept():
    boxes = [[[0, 0, 10, 10], [20, 20, 30, 30]]]
    out = run(boxes, [[[0.5], [0.25]]], score_threshold=0.5, max_detections=3)
    assert out["num_detections"].tolist() == [1]
    np.testing.assert_array_equal(out["scores"][0], [0.5, 0.0, 0.0])


@pytest.mark.parametrize("iou_threshold", [0.5, 0.25])
def test_nms_iou_equal_to_threshold_is_not_suppressed(iou_threshold):
    # Spec: suppress only when IoU > threshold. [0, 0, 10, 10] vs [0, 0, 10, 5]: IoU 50/100 = 0.5;
    # vs [0, 0, 10, 2.5]: 25/100 = 0.25 (both exact in float32).
    other = [0, 0, 10, 5] if iou_threshold == 0.5 else [0, 0, 10, 2.5]
    boxes = [[[0, 0, 10, 10], other]]
    out = run(boxes, [[[0.9], [0.8]]], iou_threshold=iou_threshold, max_detections=3)
    assert out["num_detections"].tolist() == [2]
    ref = nms_batch(boxes, [[[0.9], [0.8]]], iou_threshold=iou_threshold, max_detections=3)
    assert ref["num_detections"].tolist() == [2]
    # Just above the IoU: suppressed.
    out = run(boxes, [[[0.9], [0.8]]], iou_threshold=iou_threshold - 1e-3, max_detections=3)
    assert out["num_detections"].tolist() == [1]


def test_nms_zero_area_box_is_kept_like_reference():
    # Zero-area boxes overlap nothing (IoU 0), so with a good score they are kept, wherever
    # they lie — including an all-zero box at the image's minimum coordinate.
    boxes = [[[0, 0, 0, 0], [5, 5, 15, 15], [3, 3, 3, 9], [6, 6, 16, 16]]]
    scores = [[[0.9], [0.8], [0.7], [0.6]]]
    out = run(boxes, scores, max_detections=5)
    assert out["num_detections"].tolist() == [3]
    np.testing.assert_array_equal(out["boxes"][0, :3], [[0, 0, 0, 0], [5, 5, 15, 15], [3, 3, 3, 9]])
    assert_matches(out, nms_batch(boxes, scores, max_detections=5))


def test_nms_inverted_top_box_does_not_disable_suppression():
    # An inverted box (y2 < y1) counts as empty; the others are still suppressed normally
    # ([20, 20, 30, 30] vs [21, 21, 31, 31]: IoU 81/119 = 0.68 > 0.5).
    boxes = [[[10, 10, 0, 0], [0, 0, 10, 10], [20, 20, 30, 30], [21, 21, 31, 31]]]
    scores = [[[0.9], [0.8], [0.7], [0.6]]]
    out = run(boxes, scores, max_detections=5)
    assert out["num_detections"].tolist() == [3]
    np.testing.assert_array_equal(out["boxes"][0, :3], [[10, 10, 0, 0], [0, 0, 10, 10], [20, 20, 30, 30]])
    assert_matches(out, nms_batch(boxes, scores, max_detections=5))


def tied_inputs():
    """Class-shared boxes with many exactly tied scores, overlapping and not."""
    rng = np.random.default_rng(9)
    boxes, _ = clustered(rng, 2, 30, 3, False, objects=3)
    boxes[:, 10:14] = boxes[:, 5:6]  # exact duplicates with tied scores
    scores = (rng.integers(1, 5, (2, 30, 3)) / 4.0).astype(np.float32)
    scores[:, 5:6] = scores[:, 10:14] = 0.75
    return boxes, scores


def test_nms_tied_scores_deterministic():
    # Two identical boxes, same score: the lower index wins. Across classes with a tie, the
    # lower candidate index (box · C + class) comes first.
    out = run([[[0, 0, 10, 10], [0, 0, 10, 10], [30, 30, 40, 40]]], [[[0.5, 0.0], [0.5, 0.0], [0.0, 0.5]]],
              max_detections=4)
    assert out["num_detections"].tolist() == [2]
    np.testing.assert_array_equal(out["boxes"][0, :2], [[0, 0, 10, 10], [30, 30, 40, 40]])
    assert out["classes"][0, :2].tolist() == [0, 1]
    out = run([[[30, 30, 40, 40], [0, 0, 10, 10]]], [[[0.0, 0.5], [0.5, 0.0]]], max_detections=4)
    assert out["classes"][0, :2].tolist() == [1, 0]  # candidate 0·2+1 = 1 before 1·2+0 = 2
    np.testing.assert_array_equal(out["boxes"][0, :2], [[30, 30, 40, 40], [0, 0, 10, 10]])

    boxes, scores = tied_inputs()
    kwargs = dict(iou_threshold=0.5, score_threshold=0.2, max_detections=40)
    first = run(boxes, scores, **kwargs)
    for _ in range(3):
        again = run(boxes, scores, **kwargs)
        for key in KEYS:
            np.testing.assert_array_equal(again[key], first[key])
    assert_matches(first, nms_batch(boxes, scores, **kwargs))
    traced = tf.function(lambda b, s: non_max_suppression(b, s, **kwargs))
    assert_matches({k: v.numpy() for k, v in traced(boxes, scores).items()}, first)


def test_nms_nan_scores_rejected():
    boxes = np.array([[[0, 0, 10, 10], [20, 20, 30, 30]]], np.float32)
    for bad in (np.nan, np.inf):
        scores = np.array([[[0.9], [bad]]], np.float32)
        with pytest.raises(ValueError, match="finite"):
            non_max_suppression(boxes, scores)
        with pytest.raises(ValueError, match="finite"):
            NonMaxSuppression()(boxes, scores)
        traced = tf.function(lambda b, s: non_max_suppression(b, s))
        with pytest.raises(tf.errors.InvalidArgumentError, match="finite"):
            traced(boxes, scores)
    # The check can be turned off: the finite score still comes out.
    out = non_max_suppression(boxes, np.array([[[0.9], [np.nan]]], np.float32), check_finite=False)
    assert out["scores"].numpy()[0, 0] == np.float32(0.9)


def test_nms_class_agnostic():
    boxes = [[[0, 0, 10, 10], [1, 0, 11, 10], [40, 40, 50, 50]]]
    scores = [[[0.9, 0.0], [0.0, 0.8], [0.0, 0.3]]]
    per_class = run(boxes, scores, max_detections=4)
    assert per_class["num_detections"].tolist() == [3]
    agnostic = run(boxes, scores, max_detections=4, class_agnostic=True)
    assert agnostic["num_detections"].tolist() == [2]
    assert agnostic["classes"][0, :2].tolist() == [0, 1]
    np.testing.assert_allclose(agnostic["scores"][0], [0.9, 0.3, 0, 0])

    for seed, specific in [(10, False), (11, True)]:
        boxes, scores = clustered(np.random.default_rng(seed), 2, 40, 3, specific)
        kwargs = dict(iou_threshold=0.5, score_threshold=0.1, max_detections=120)
        out = run(boxes, scores, class_agnostic=True, **kwargs)
        assert_matches(out, nms_batch(boxes, scores, class_agnostic=True, **kwargs))
        assert (out["num_detections"] < run(boxes, scores, **kwargs)["num_detections"]).all()


def test_nms_unknown_batch_tf_function():
    kwargs = dict(iou_threshold=0.5, score_threshold=0.1, max_detections=20)
    traced = tf.function(
        lambda b, s: non_max_suppression(b, s, **kwargs),
        input_signature=[tf.TensorSpec([None, 30, 3, 4]), tf.TensorSpec([None, 30, 3])],
    )
    for batch, seed in [(2, 12), (3, 13), (1, 14)]:
        boxes, scores = clustered(np.random.default_rng(seed), batch, 30, 3, True)
        out = {k: v.numpy() for k, v in traced(boxes, scores).items()}
        assert_matches(out, nms_batch(boxes, scores, **kwargs))
    assert len(traced._list_all_concrete_functions_for_serialization()) == 1


def test_nms_layer_config_and_keras_save(tmp_path):
    layer = NonMaxSuppression(iou_threshold=0.4, score_threshold=0.2, max_detections=12,
                              max_candidates=50, class_agnostic=False)
    config = layer.get_config()
    assert {k: config[k] for k in ("iou_threshold", "score_threshold", "max_detections",
                                   "max_candidates", "class_agnostic")} == {
        "iou_threshold": 0.4, "score_threshold": 0.2, "max_detections": 12,
        "max_candidates": 50, "class_agnostic": False,
    }
    boxes, scores = clustered(np.random.default_rng(15), 2, 30, 2, False)
    out = check_layer(layer, [boxes, scores], tmp_path)
    ref = nms_batch(boxes, scores, iou_threshold=0.4, score_threshold=0.2, max_detections=12, max_candidates=50)
    assert_matches({k: np.asarray(v) for k, v in out.items()}, ref)


def test_nms_rejects_bad_arguments():
    boxes, scores = np.zeros([1, 2, 4], np.float32), np.zeros([1, 2, 1], np.float32)
    with pytest.raises(ValueError, match="iou_threshold.*1.5"):
        non_max_suppression(boxes, scores, iou_threshold=1.5)
    with pytest.raises(ValueError, match=r"iou_threshold.*\[0, 1\).*1.0"):
        non_max_suppression(boxes, scores, iou_threshold=1.0)
    with pytest.raises(ValueError, match="max_detections.*0"):
        NonMaxSuppression(max_detections=0)
    with pytest.raises(ValueError, match="max_detections.*0"):
        non_max_suppression(boxes, scores, max_detections=0)
    with pytest.raises(ValueError, match="max_candidates.*-1"):
        non_max_suppression(boxes, scores, max_candidates=-1)
    with pytest.raises(ValueError, match="scores"):
        non_max_suppression(boxes, np.zeros([1, 2], np.float32))
    with pytest.raises(ValueError, match="boxes"):
        non_max_suppression(np.zeros([1, 2, 5], np.float32), scores)


# --- TFLite --------------------------------------------------------------------------------


def test_nms_tflite_builtin_matches_tf():
    kwargs = dict(iou_threshold=0.5, score_threshold=0.2, max_detections=25)
    n, num_classes = 30, 3
    tflite_model = convert_builtin_only(
        lambda b, s: [non_max_suppression(b, s, **kwargs)[k] for k in KEYS],
        [tf.TensorSpec([1, n, 4], tf.float32), tf.TensorSpec([1, n, num_classes], tf.float32)],
    )
    ops = tflite_op_names(tflite_model)
    assert ops and not [op for op in ops if op.startswith("CUSTOM:")], ops

    tied_boxes, tied_scores = tied_inputs()
    inputs = [clustered(np.random.default_rng(16), 1, n, num_classes, False), (tied_boxes[:1], tied_scores[:1])]
    # IoU exactly at the threshold (kept) and a below-threshold score.
    exact_boxes, exact_scores = clustered(np.random.default_rng(17), 1, n, num_classes, False)
    exact_boxes[0, :2] = [[0, 0, 10, 10], [0, 0, 10, 5]]
    exact_scores[0, :2] = [[0.9, 0.0, 0.0], [0.8, 0.0, 0.0]]
    inputs.append((exact_boxes, exact_scores))
    # Degenerate boxes: an inverted top box and an all-zero box with a good score.
    odd_boxes, odd_scores = clustered(np.random.default_rng(18), 1, n, num_classes, False)
    odd_boxes[0, :2] = [[60, 60, 40, 40], [0, 0, 0, 0]]
    odd_scores[0, :2] = [[0.99, 0.0, 0.0], [0.98, 0.0, 0.0]]
    inputs.append((odd_boxes, odd_scores))
    for boxes, scores in inputs:
        expected = run(boxes, scores, **kwargs)
        assert_matches(expected, nms_batch(boxes, scores, **kwargs))
        got = dict(zip(KEYS, run_tflite(tflite_model, [boxes, scores]), strict=True))
        assert_matches(got, expected)
