"""Tests of `rpn_targets` and `rcnn_targets` against the NumPy reference and literal cases."""

import numpy as np
import pytest
import tensorflow as tf
from reference_targets import encode, gt_is_valid, rcnn_label_box, rpn_labels_image

from kerasdet.boxes import BoxCoder
from kerasdet.layers import AnchorGenerator
from kerasdet.training import rcnn_targets, rpn_targets

IMAGE_HW = (64, 96)
RCNN_WEIGHTS = (10.0, 10.0, 5.0, 5.0)


def small_anchors():
    # 4 × 6 locations × 6 shapes; the 32-pixel ones on the border cross it.
    return AnchorGenerator(sizes=(16, 32), aspect_ratios=(0.5, 1.0, 2.0), stride=16)(image_shape=IMAGE_HW).numpy()


def random_gt(rng, batch, num_gt, height, width, min_size=8.0, max_size=40.0):
    """gt inside the image; image b has `num_gt - b` objects (≥ 0), the rest padding."""
    boxes = np.zeros((batch, num_gt, 4), np.float32)
    classes = np.full((batch, num_gt), -1, np.int32)
    for b in range(batch):
        for m in range(max(num_gt - b, 0)):
            h, w = rng.uniform(min_size, max_size, 2)
            y, x = rng.uniform(0, height - h), rng.uniform(0, width - w)
            boxes[b, m] = [y, x, y + h, x + w]
            classes[b, m] = rng.integers(0, 5)
    return boxes, classes


def numpy_targets(targets):
    return {k: v.numpy() for k, v in targets.items()}


# --- rpn_targets -------------------------------------------------------------------------


@pytest.mark.parametrize("ignore_cross_boundary", [True, False])
def test_rpn_targets_match_reference_labels_counts_and_deltas(ignore_cross_boundary, rng):
    anchors = small_anchors()
    gt, classes = random_gt(rng, 4, 3, *IMAGE_HW)  # 3, 2, 1 and 0 objects
    t = numpy_targets(
        rpn_targets(anchors, gt, classes, IMAGE_HW, num_samples=32, ignore_cross_boundary=ignore_cross_boundary, seed=0)
    )
    assert t["objectness"].shape == t["objectness_weights"].shape == t["box_weights"].shape == (4, len(anchors))
    assert t["box_targets"].shape == (4, len(anchors), 4)
    for b in range(4):
        matches, labels = rpn_labels_image(
            anchors, gt[b], classes[b], IMAGE_HW, ignore_cross_boundary=ignore_cross_boundary
        )
        np.testing.assert_array_equal(t["objectness"][b], labels == 1)
        sampled = t["objectness_weights"][b] > 0
        assert not (sampled & (labels == -1)).any()
        num_pos, num_neg = (labels == 1).sum(), (labels == 0).sum()
        assert (sampled & (labels == 1)).sum() == min(num_pos, 16)
        assert (sampled & (labels == 0)).sum() == min(num_neg, 32 - min(num_pos, 16))
        np.testing.assert_array_equal(t["box_weights"][b], sampled & (labels == 1))
        for a in np.flatnonzero(labels == 1):
            expected = encode(gt[b, matches[a]].astype(np.float64), anchors[a].astype(np.float64))
            np.testing.assert_allclose(t["box_targets"][b, a], expected, atol=1e-4)
        assert not t["box_targets"][b, labels != 1].any()
    assert not t["objectness"][3].any() and t["objectness_weights"][3].sum() == 32  # no objects


def test_rpn_box_targets_decode_back_to_matched_gt(rng):
    anchors = small_anchors()
    gt, classes = random_gt(rng, 2, 4, *IMAGE_HW)
    t = rpn_targets(anchors, gt, classes, IMAGE_HW, seed=3)
    decoded = BoxCoder().decode(t["box_targets"], anchors[None]).numpy()
    for b in range(2):
        matches, labels = rpn_labels_image(anchors, gt[b], classes[b], IMAGE_HW)
        assert (labels == 1).sum() >= 1
        positive = labels == 1
        np.testing.assert_allclose(decoded[b, positive], gt[b, matches[positive]], atol=1e-3)


def test_rpn_cross_boundary_anchors_ignored():
    anchors = np.array(
        [
            [-2.0, -2.0, 24.0, 24.0],  # crosses the border; gt's best anchor (IoU 0.85)
            [0.0, 0.0, 16.0, 16.0],  # inside; IoU 0.44, the best inside anchor
            [50.0, 50.0, 70.0, 70.0],  # inside, negative
            [90.0, 90.0, 110.0, 110.0],  # crosses, IoU 0
        ],
        np.float32,
    )
    gt, classes = np.array([[[0.0, 0.0, 24.0, 24.0]]], np.float32), np.array([[1]], np.int32)
    t = numpy_targets(rpn_targets(anchors, gt, classes, (100, 100), seed=0))
    np.testing.assert_array_equal(t["objectness"], [[0, 1, 0, 0]])
    np.testing.assert_array_equal(t["objectness_weights"], [[0, 1, 1, 0]])
    np.testing.assert_array_equal(t["box_weights"], [[0, 1, 0, 0]])
    t = numpy_targets(rpn_targets(anchors, gt, classes, (100, 100), ignore_cross_boundary=False, seed=0))
    np.testing.assert_array_equal(t["objectness"], [[1, 0, 0, 0]])
    np.testing.assert_array_equal(t["objectness_weights"], [[1, 0, 1, 1]])


def test_rpn_cross_boundary_with_per_image_shapes():
    anchors = np.array([[10.0, 10.0, 30.0, 30.0], [50.0, 50.0, 70.0, 70.0]], np.float32)
    gt = np.zeros((2, 1, 4), np.float32)
    classes = np.full((2, 1), -1, np.int32)
    t = rpn_targets(anchors, gt, classes, tf.constant([[100, 100], [60, 60]]), seed=0)
    np.testing.assert_array_equal(t["objectness_weights"].numpy(), [[1, 1], [1, 0]])


def test_rpn_targets_image_without_objects():
    anchors = small_anchors()
    inside = (anchors[:, :2] >= 0).all(1) & (anchors[:, 2] <= 64) & (anchors[:, 3] <= 96)
    gt = np.zeros((2, 3, 4), np.float32)
    classes = np.full((2, 3), -1, np.int32)
    classes[1, 0] = 2  # a class with a zero-size box is not an object either
    t = numpy_targets(rpn_targets(anchors, gt, classes, IMAGE_HW, num_samples=64, seed=0))
    assert not t["objectness"].any() and not t["box_weights"].any() and not t["box_targets"].any()
    np.testing.assert_array_equal(t["objectness_weights"].sum(1), [64, 64])
    assert not t["objectness_weights"][:, ~inside].any()
    # No gt columns at all (M = 0).
    t = numpy_targets(rpn_targets(anchors, np.zeros((2, 0, 4)), np.zeros((2, 0), np.int32), IMAGE_HW, seed=0))
    assert not t["objectness"].any() and t["objectness_weights"].sum() == 2 * inside.sum()


def test_rpn_targets_paper_defaults_sample_256_with_at_most_128_positives(rng):
    anchors = AnchorGenerator(sizes=(32, 64, 128))(image_shape=(256, 320)).numpy()  # 2880
    gt, classes = random_gt(rng, 2, 12, 256, 320, 20.0, 150.0)
    t = numpy_targets(rpn_targets(anchors, gt, classes, (256, 320), seed=0))
    positives = (t["box_weights"] > 0).sum(1)
    assert (positives <= 128).all() and (positives > 0).all()
    np.testing.assert_array_equal(t["objectness_weights"].sum(1), [256, 256])


def test_rpn_targets_deterministic_and_in_tf_function_with_unknown_batch(rng):
    anchors = small_anchors()
    gt, classes = random_gt(rng, 2, 3, *IMAGE_HW)

    @tf.function(input_signature=[tf.TensorSpec([None, 3, 4]), tf.TensorSpec([None, 3], tf.int32), tf.TensorSpec([2], tf.int32)])
    def fn(boxes, labels, seed):
        return rpn_targets(anchors, boxes, labels, IMAGE_HW, num_samples=16, seed=seed)

    first = numpy_targets(fn(gt, classes, tf.constant([1, 2])))
    eager = numpy_targets(rpn_targets(anchors, gt, classes, IMAGE_HW, num_samples=16, seed=(1, 2)))
    for key in first:  # graph rewrites may round box deltas differently: allclose
        np.testing.assert_allclose(first[key], eager[key], rtol=1e-5, atol=1e-6)
    other = numpy_targets(fn(gt, classes, tf.constant([1, 3])))
    assert (first["objectness_weights"] != other["objectness_weights"]).any()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"anchors": np.zeros((5, 3), np.float32)}, "anchors"),
        ({"gt_boxes": np.zeros((1, 2, 5), np.float32)}, "gt_boxes"),
        ({"gt_classes": np.zeros((1, 3), np.int32)}, "gt_classes"),
        ({"image_shape": (0, 64)}, "image_shape"),
        ({"high": 0.2}, "low_threshold"),
        ({"num_samples": 0}, "num_samples"),
    ],
)
def test_rpn_targets_reject_bad_inputs(kwargs, match):
    args = {
        "anchors": np.zeros((5, 4), np.float32),
        "gt_boxes": np.zeros((1, 2, 4), np.float32),
        "gt_classes": np.zeros((1, 2), np.int32),
        "image_shape": (64, 64),
        "seed": 0,
        **kwargs,
    }
    with pytest.raises(ValueError, match=match):
        rpn_targets(**args)


# --- rcnn_targets ------------------------------------------------------------------------


def jittered_proposals(rng, gt, count, spread=6.0, height=200.0, width=200.0):
    """Half the proposals jittered around gt boxes, half random, a few zero padding rows."""
    batch = gt.shape[0]
    out = np.zeros((batch, count, 4), np.float32)
    for b in range(batch):
        real = [g for g in gt[b] if g[2] > g[0]]
        for n in range(count - 3):
            if real and n % 2 == 0:
                out[b, n] = real[n % len(real)] + rng.normal(0, spread, 4)
            else:
                h, w = rng.uniform(10, 80, 2)
                y, x = rng.uniform(0, height - h), rng.uniform(0, width - w)
                out[b, n] = [y, x, y + h, x + w]
    return out


def reference_candidates(proposals, gt, classes, **thresholds):
    """Per image: (#foreground, #background) candidates among proposals + valid gt."""
    result = []
    for b in range(len(proposals)):
        candidates = [p for p in proposals[b] if p[2] > p[0] and p[3] > p[1]]
        candidates += [g for g, c in zip(gt[b], classes[b]) if gt_is_valid(g, c)]
        labels = [rcnn_label_box(c, gt[b], classes[b], **thresholds)[0] for c in candidates]
        result.append((sum(1 for v in labels if v not in (None, 0)), sum(1 for v in labels if v == 0)))
    return result


def test_rcnn_targets_match_reference_per_roi(rng):
    gt, classes = random_gt(rng, 3, 5, 200, 200, 15.0, 80.0)
    proposals = jittered_proposals(rng, gt, 80)
    thresholds = {"fg_iou": 0.5, "bg_iou_high": 0.5, "bg_iou_low": 0.1}
    t = numpy_targets(rcnn_targets(proposals, gt, classes, num_samples=48, seed=0, **thresholds))
    assert t["rois"].shape == (3, 48, 4) and t["class_targets"].dtype == np.int32
    for b, (num_fg, num_bg) in enumerate(reference_candidates(proposals, gt, classes, **thresholds)):
        valid = t["valid"][b]
        fg = t["class_targets"][b] > 0
        assert fg.sum() == min(num_fg, 12)  # 25 % of 48
        assert valid.sum() == min(num_fg, 12) + min(num_bg, 48 - min(num_fg, 12))
        assert not fg[~valid].any() and not t["rois"][b, ~valid].any()
        np.testing.assert_array_equal(t["box_weights"][b], fg)
        for s in np.flatnonzero(valid):
            roi = t["rois"][b, s]
            cls, index, best = rcnn_label_box(roi, gt[b], classes[b], **thresholds)
            assert cls == t["class_targets"][b, s], (b, s, best)
            if cls > 0:
                expected = encode(gt[b, index].astype(np.float64), roi.astype(np.float64), RCNN_WEIGHTS)
                np.testing.assert_allclose(t["box_targets"][b, s], expected, atol=2e-3)
            else:
                assert 0.1 <= best < 0.5 and not t["box_targets"][b, s].any()
        # Foreground first, then background.
        order = t["class_targets"][b][valid] > 0
        assert not (np.diff(order.astype(int)) > 0).any()


def test_rcnn_gt_boxes_appended_as_candidates():
    gt = np.array([[[10.0, 10.0, 50.0, 40.0], [60.0, 20.0, 90.0, 90.0], [0.0, 0.0, 0.0, 0.0]]], np.float32)
    classes = np.array([[3, 0, -1]], np.int32)
    far = np.array([[[150.0, 150.0, 190.0, 190.0], [120.0, 0.0, 180.0, 40.0]]], np.float32)  # IoU 0
    t = numpy_targets(rcnn_targets(far, gt, classes, num_samples=8, positive_fraction=0.5, seed=0))
    fg = t["class_targets"][0] > 0
    np.testing.assert_array_equal(t["valid"][0], [True] * 4 + [False] * 4)
    np.testing.assert_array_equal(t["rois"][0, fg], gt[0, :2])  # exactly the gt boxes
    np.testing.assert_array_equal(t["class_targets"][0, fg], [4, 1])  # class k → k + 1
    np.testing.assert_allclose(t["box_targets"][0, fg], 0.0, atol=1e-6)  # gt vs itself
    t = numpy_targets(rcnn_targets(far, gt, classes, num_samples=8, add_gt_boxes=False, seed=0))
    assert not (t["class_targets"] > 0).any() and t["valid"].sum() == 2


def test_rcnn_foreground_capped_at_25_percent(rng):
    gt = np.array([[[50.0, 50.0, 150.0, 150.0]]], np.float32)
    near = gt[0, 0] + rng.uniform(-5, 5, (600, 4))  # IoU > 0.8
    far = np.tile([[200.0, 200.0, 260.0, 260.0]], (600, 1)) + rng.uniform(-5, 5, (600, 4))
    proposals = np.concatenate([near, far])[None].astype(np.float32)
    t = numpy_targets(rcnn_targets(proposals, gt, np.array([[0]], np.int32), seed=0))
    assert t["rois"].shape == (1, 512, 4)
    assert (t["class_targets"] == 1).sum() == 128 and t["box_weights"].sum() == 128
    assert t["valid"].all() and (t["class_targets"] == 0).sum() == 384


def test_rcnn_background_range_excludes_low_iou():
    gt = np.array([[[0.0, 0.0, 100.0, 100.0]]], np.float32)
    proposals = np.array(
        [[[0.0, 0.0, 100.0, 40.0], [0.0, 0.0, 100.0, 5.0], [200.0, 200.0, 250.0, 250.0]]], np.float32
    )  # IoU 0.4 (background), 0.05 and 0 (below bg_iou_low = 0.1: never sampled)
    kwargs = {"num_samples": 8, "add_gt_boxes": False, "seed": 0}
    t = numpy_targets(rcnn_targets(proposals, gt, np.array([[0]], np.int32), bg_iou_low=0.1, **kwargs))
    np.testing.assert_array_equal(t["valid"][0], [True] + [False] * 7)
    np.testing.assert_array_equal(t["rois"][0, 0], proposals[0, 0])
    t = numpy_targets(rcnn_targets(proposals, gt, np.array([[0]], np.int32), **kwargs))
    assert t["valid"].sum() == 3 and not t["class_targets"].any()


def test_rcnn_padding_validity_with_fewer_candidates_than_samples():
    proposals = np.array([[[0.0, 0.0, 20.0, 20.0], [30.0, 30.0, 60.0, 50.0], [5.0, 5.0, 22.0, 21.0], [0.0] * 4]], np.float32)
    gt = np.array([[[0.0, 0.0, 20.0, 21.0], [0.0] * 4]], np.float32)
    classes = np.array([[1, -1]], np.int32)
    t = numpy_targets(rcnn_targets(proposals, gt, classes, num_samples=16, positive_fraction=0.5, seed=0))
    valid = t["valid"][0]
    assert valid.sum() == 4  # 3 real proposals + 1 gt box; the zero rows are never sampled
    assert not t["rois"][0, ~valid].any() and not t["class_targets"][0, ~valid].any()
    assert not t["box_weights"][0, ~valid].any() and not t["box_targets"][0, ~valid].any()
    assert (t["rois"][0, valid][:, 2:] > t["rois"][0, valid][:, :2]).all()
    np.testing.assert_array_equal(np.sort(t["class_targets"][0, valid]), [0, 2, 2, 2])


def test_rcnn_image_without_objects_is_all_background(rng):
    gt = np.zeros((2, 2, 4), np.float32)
    classes = np.full((2, 2), -1, np.int32)
    proposals = jittered_proposals(rng, gt, 40)  # 37 random + 3 zero rows
    t = numpy_targets(rcnn_targets(proposals, gt, classes, num_samples=32, seed=0))
    assert t["valid"].all() and not t["class_targets"].any()
    assert not t["box_weights"].any() and not t["box_targets"].any()
    t = numpy_targets(rcnn_targets(proposals, gt, classes, num_samples=64, seed=0))
    np.testing.assert_array_equal(t["valid"].sum(1), [37, 37])
    # No proposals and no gt at all: nothing valid, no crash.
    t = numpy_targets(rcnn_targets(np.zeros((2, 0, 4)), np.zeros((2, 0, 4)), np.zeros((2, 0), np.int32), num_samples=4, seed=0))
    assert t["rois"].shape == (2, 4, 4) and not t["valid"].any()


def test_rcnn_targets_deterministic_and_in_tf_function_with_unknown_batch(rng):
    gt, classes = random_gt(rng, 2, 3, 200, 200, 15.0, 80.0)
    proposals = jittered_proposals(rng, gt, 50)

    @tf.function(input_signature=[tf.TensorSpec([None, 50, 4]), tf.TensorSpec([None, 3, 4]), tf.TensorSpec([None, 3], tf.int32)])
    def fn(proposals, boxes, labels):
        return rcnn_targets(proposals, boxes, labels, num_samples=24, seed=tf.constant([4, 5]))

    graph = numpy_targets(fn(proposals, gt, classes))
    assert graph["rois"].shape == (2, 24, 4)
    eager = numpy_targets(rcnn_targets(proposals, gt, classes, num_samples=24, seed=(4, 5)))
    for key in graph:  # graph rewrites may round box deltas differently: allclose
        np.testing.assert_allclose(graph[key], eager[key], rtol=1e-5, atol=1e-6)
    assert fn.get_concrete_function().structured_outputs["rois"].shape.as_list() == [None, 24, 4]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"proposals": np.zeros((1, 4), np.float32)}, "proposals"),
        ({"fg_iou": 0.4}, "bg_iou_high"),
        ({"bg_iou_low": 0.6}, "bg_iou_low"),
        ({"fg_iou": 1.5}, "fg_iou"),
        ({"positive_fraction": -0.5}, "positive_fraction"),
    ],
)
def test_rcnn_targets_reject_bad_inputs(kwargs, match):
    args = {
        "proposals": np.zeros((1, 3, 4), np.float32),
        "gt_boxes": np.zeros((1, 2, 4), np.float32),
        "gt_classes": np.zeros((1, 2), np.int32),
        "seed": 0,
        **kwargs,
    }
    with pytest.raises(ValueError, match=match):
        rcnn_targets(**args)


@pytest.mark.parametrize("function", [rpn_targets, rcnn_targets])
def test_targets_docstring_examples(function):
    import doctest

    globs = {"tf": tf, function.__name__: function}
    (test,) = doctest.DocTestFinder().find(function, function.__name__, globs=globs)
    assert doctest.DocTestRunner().run(test).failed == 0
