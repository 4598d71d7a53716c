"""Tests of `kerasdet.training.Matcher` against the NumPy reference and literal cases."""

import numpy as np
import pytest
import tensorflow as tf
from reference_targets import iou_matrix, match_image

from kerasdet.boxes import pairwise_iou
from kerasdet.training import Matcher


def run(matcher, iou, gt_valid=None, anchor_valid=None):
    matches, labels = matcher(iou, gt_valid, anchor_valid)
    assert matches.dtype == tf.int32 and labels.dtype == tf.int32
    return matches.numpy(), labels.numpy()


def reference(iou, gt_valid, anchor_valid, high, low, allow, best_per_gt=1):
    out = [match_image(iou[b], gt_valid[b], anchor_valid[b], high, low, allow, best_per_gt) for b in range(len(iou))]
    return np.stack([o[0] for o in out]), np.stack([o[1] for o in out])


def assert_matches_reference(iou, gt_valid, anchor_valid, high, low, allow, best_per_gt=1):
    matches, labels = run(Matcher(high, low, allow, best_per_gt), iou, gt_valid, anchor_valid)
    ref_matches, ref_labels = reference(iou, gt_valid, anchor_valid, high, low, allow, best_per_gt)
    np.testing.assert_array_equal(labels, ref_labels)
    # The match is only meaningful where an image has a valid gt.
    has_gt = gt_valid.any(axis=1)
    np.testing.assert_array_equal(matches[has_gt], ref_matches[has_gt])
    np.testing.assert_array_equal(matches[~has_gt], 0)


# --- Against the reference ---------------------------------------------------------------


@pytest.mark.parametrize("allow", [True, False])
@pytest.mark.parametrize("high, low", [(0.7, 0.3), (0.5, 0.5), (0.6, 0.0)])
def test_matcher_reference_quantized_iou_with_ties_and_exact_thresholds(allow, high, low, rng):
    # IoUs from {0, 0.1, ..., 1}: many ties per anchor and per gt, values exactly on the thresholds.
    iou = (rng.integers(0, 11, (3, 40, 6)) / 10.0).astype(np.float32)
    iou[2] = np.minimum(iou[2], 0.4)  # an image whose gts only have low-quality matches
    iou[1, :, 4] = 0.0  # a gt overlapping nothing: skipped by the low-quality rule
    gt_valid = rng.uniform(size=(3, 6)) < 0.7
    gt_valid[0] = False  # an image without objects
    anchor_valid = rng.uniform(size=(3, 40)) < 0.8
    assert_matches_reference(iou, gt_valid, anchor_valid, high, low, allow)


@pytest.mark.parametrize("allow", [True, False])
def test_matcher_reference_random_boxes_with_duplicate_anchors(allow, rng):
    centers = rng.uniform(20, 180, (30, 2))
    sizes = rng.uniform(10, 60, (30, 2))
    anchors = np.concatenate([centers - sizes / 2, centers + sizes / 2], -1).astype(np.float32)
    anchors[20:] = anchors[:10]  # exact duplicates: ties for a gt's best anchor
    gt = np.zeros((2, 5, 4), np.float32)
    gt[:, :4] = anchors[rng.integers(0, 20, (2, 4))] + rng.normal(0, 4, (2, 4, 4)).astype(np.float32)
    gt_valid = np.array([[True] * 4 + [False], [True, True, False, False, False]])
    iou = pairwise_iou(np.broadcast_to(anchors, (2, 30, 4)), gt).numpy()
    np.testing.assert_allclose(iou[0], iou_matrix(anchors, gt[0]), atol=1e-6)
    assert_matches_reference(iou, gt_valid, np.ones((2, 30), bool), 0.7, 0.3, allow)


@pytest.mark.parametrize("best_per_gt", [2, 3, 50])
@pytest.mark.parametrize("high, low", [(0.7, 0.3), (0.6, 0.0)])
def test_matcher_reference_several_best_anchors_per_gt(best_per_gt, high, low, rng):
    # Quantized IoUs (ties at the k-th value) in image 1; image 2's gts overlap no anchor
    # by `high`, with distinct IoUs, so k > 1 adds positives there. 50 > the 40 anchors
    # takes every valid one at IoU >= low.
    iou = (rng.integers(0, 11, (3, 40, 6)) / 10.0).astype(np.float32)
    iou[2] = rng.uniform(0.0, 0.45, (40, 6)).astype(np.float32)
    iou[1, :, 4] = 0.0
    gt_valid = rng.uniform(size=(3, 6)) < 0.7
    gt_valid[0] = False
    anchor_valid = rng.uniform(size=(3, 40)) < 0.8
    assert_matches_reference(iou, gt_valid, anchor_valid, high, low, True, best_per_gt)
    positives = [(run(Matcher(high, low, True, k), iou, gt_valid, anchor_valid)[1] == 1).sum() for k in (1, best_per_gt)]
    assert positives[1] > positives[0]  # the option changed something


def test_matcher_several_best_anchors_give_a_small_box_more_positives():
    # A 12 px box among 16 px anchors on a stride-8 grid overlaps none by 0.7: rule (i)
    # alone gives it one positive (its best anchor), k = 3 gives three (IoU >= 0.3 each).
    centers = np.stack(np.meshgrid(np.arange(4, 64, 8), np.arange(4, 64, 8), indexing="ij"), -1).reshape(-1, 2)
    anchors = np.concatenate([centers - 8, centers + 8], -1).astype(np.float32)
    gt = np.array([[[20.0, 20.0, 32.0, 32.0]]], np.float32)  # IoUs 0.56, 0.32, 0.32, 0.19, ...
    iou = pairwise_iou(anchors[None], gt).numpy()
    assert iou.max() < 0.7
    _, one = run(Matcher(0.7, 0.3), iou)
    _, three = run(Matcher(0.7, 0.3, best_matches_per_gt=3), iou)
    assert (one == 1).sum() == 1 and (three == 1).sum() == 3
    assert (iou[0, three[0] == 1, 0] >= 0.3).all()


def test_matcher_best_anchors_below_the_negative_threshold_stay_negative():
    # k = 3, but the third-best anchor (IoU 0.25 < low 0.3) stays a negative.
    iou = tf.constant([[[0.5], [0.35], [0.25], [0.1]]])
    _, labels = run(Matcher(0.7, 0.3, best_matches_per_gt=3), iou)
    np.testing.assert_array_equal(labels, [[1, 1, 0, 0]])


def test_matcher_rejects_bad_best_matches_per_gt():
    with pytest.raises(ValueError, match="`best_matches_per_gt` must be an int >= 1, got 0"):
        Matcher(0.7, 0.3, best_matches_per_gt=0)
    with pytest.raises(ValueError, match="`best_matches_per_gt`=3 needs `allow_low_quality_matches=True`"):
        Matcher(0.7, 0.3, allow_low_quality_matches=False, best_matches_per_gt=3)


# --- Literal cases -----------------------------------------------------------------------


def test_matcher_thresholds_are_inclusive_high_exclusive_low():
    iou = tf.constant([[[0.7], [0.69], [0.3], [0.29], [1.0]]])
    _, labels = run(Matcher(0.7, 0.3, allow_low_quality_matches=False), iou)
    np.testing.assert_array_equal(labels, [[1, -1, -1, 0, 1]])


def test_matcher_low_quality_match_makes_all_tied_best_anchors_positive():
    # gt 1's best IoU is 0.4, tied by anchors 1 and 3; anchor 3's own best is gt 0 (0.5).
    iou = tf.constant([[[0.9, 0.0], [0.1, 0.4], [0.2, 0.39], [0.5, 0.4]]])
    matches, labels = run(Matcher(0.7, 0.3, True), iou)
    np.testing.assert_array_equal(labels, [[1, 1, -1, 1]])
    np.testing.assert_array_equal(matches, [[0, 1, 1, 0]])  # anchor 3 keeps its own best gt
    _, labels = run(Matcher(0.7, 0.3, False), iou)
    np.testing.assert_array_equal(labels, [[1, -1, -1, -1]])


def test_matcher_low_quality_skips_gt_without_overlap():
    # gt 1 overlaps no anchor: its "best" IoU 0 would tie every anchor; it is skipped.
    iou = tf.constant([[[0.8, 0.0], [0.1, 0.0], [0.0, 0.0]]])
    matches, labels = run(Matcher(0.7, 0.3, True), iou)
    np.testing.assert_array_equal(labels, [[1, 0, 0]])
    np.testing.assert_array_equal(matches, [[0, 0, 0]])


def test_matcher_argmax_ties_pick_lowest_gt_index():
    iou = tf.constant([[[0.2, 0.8, 0.8], [0.5, 0.5, 0.1]]])
    matches, _ = run(Matcher(0.7, 0.3, False), iou)
    np.testing.assert_array_equal(matches, [[1, 0]])


def test_matcher_image_without_objects():
    iou = tf.constant(np.random.default_rng(0).uniform(size=(2, 6, 3)).astype(np.float32))
    gt_valid = tf.constant([[False] * 3, [True, False, False]])
    matches, labels = run(Matcher(0.7, 0.3, True), iou, gt_valid)
    np.testing.assert_array_equal(labels[0], 0)
    np.testing.assert_array_equal(matches[0], 0)
    # Zero gt columns at all (M = 0): all negative too.
    matches, labels = run(Matcher(0.7, 0.3, True), tf.zeros([2, 5, 0]))
    np.testing.assert_array_equal(labels, np.zeros((2, 5)))
    np.testing.assert_array_equal(matches, np.zeros((2, 5)))


def test_matcher_padding_gt_columns_never_match():
    iou = tf.constant([[[0.2, 0.9], [0.6, 1.0]]])
    matches, labels = run(Matcher(0.7, 0.3, True), iou, gt_valid=[[True, False]])
    np.testing.assert_array_equal(matches, [[0, 0]])
    np.testing.assert_array_equal(labels, [[0, 1]])  # anchor 1 is gt 0's best (0.6)


def test_matcher_invalid_anchors_ignored_and_never_a_gts_best():
    iou = tf.constant([[[0.9], [0.5], [0.1]]])
    _, labels = run(Matcher(0.7, 0.3, True), iou, anchor_valid=[False, True, True])
    np.testing.assert_array_equal(labels, [[-1, 1, 0]])  # anchor 1 becomes gt 0's best


def test_matcher_in_tf_function_with_unknown_batch():
    matcher = Matcher(0.7, 0.3, True)
    fn = tf.function(
        lambda iou, valid: matcher(iou, valid),
        input_signature=[tf.TensorSpec([None, 4, 2], tf.float32), tf.TensorSpec([None, 2], tf.bool)],
    )
    iou = np.array([[[0.8, 0.1], [0.5, 0.2], [0.1, 0.05], [0.2, 0.4]]] * 3, np.float32)
    matches, labels = fn(iou, np.array([[True, True], [True, False], [False, False]]))
    assert matches.shape == labels.shape == (3, 4)
    np.testing.assert_array_equal(labels.numpy(), [[1, -1, 0, 1], [1, -1, 0, 0], [0, 0, 0, 0]])


@pytest.mark.parametrize(
    "high, low, match",
    [(1.5, 0.3, "high_threshold"), (0.7, 0.8, "low_threshold"), (0.7, -0.1, "low_threshold")],
)
def test_matcher_rejects_bad_thresholds(high, low, match):
    with pytest.raises(ValueError, match=match):
        Matcher(high, low)


def test_matcher_rejects_bad_iou_rank():
    with pytest.raises(ValueError, match=r"\[B, A, M\]"):
        Matcher(0.7, 0.3)(tf.zeros([4, 3]))


def test_matcher_docstring_example():
    import doctest

    (test,) = doctest.DocTestFinder().find(Matcher, "Matcher", globs={"tf": tf, "Matcher": Matcher})
    assert doctest.DocTestRunner().run(test).failed == 0
