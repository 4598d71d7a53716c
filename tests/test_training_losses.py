"""Tests of `rpn_losses`, `rcnn_losses` and `smooth_l1`: literal values, references, edge cases."""

import math

import numpy as np
import pytest
import reference_targets as ref
import tensorflow as tf

from kerasdet.layers import AnchorGenerator, RPNHead
from kerasdet.training import rcnn_losses, rcnn_targets, rpn_losses, rpn_targets, smooth_l1


def rpn_dict(objectness, objectness_weights, box_targets, box_weights):
    return {
        "objectness": np.asarray(objectness, np.float32),
        "objectness_weights": np.asarray(objectness_weights, np.float32),
        "box_targets": np.asarray(box_targets, np.float32),
        "box_weights": np.asarray(box_weights, np.float32),
    }


def random_rpn_targets(rng, batch, anchors):
    weights = rng.uniform(size=(batch, anchors)) < 0.5
    objectness = (rng.uniform(size=(batch, anchors)) < 0.4) & weights
    return rpn_dict(objectness, weights, rng.normal(0, 0.3, (batch, anchors, 4)), objectness & weights)


# --- Literal values ----------------------------------------------------------------------


def test_smooth_l1_below_and_above_beta():
    x = tf.constant([0.0, 0.05, -0.05, 1.0, -2.0, 1.0 / 9.0])
    beta = 1.0 / 9.0
    # below: 0.5 · x² / β; above: |x| − β / 2; continuous at |x| = β (β / 2 = 1/18).
    expected = [0.0, 0.5 * 0.0025 * 9, 0.5 * 0.0025 * 9, 1 - 1 / 18, 2 - 1 / 18, 1 / 18]
    np.testing.assert_allclose(smooth_l1(x, beta).numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(smooth_l1(x, 1.0).numpy(), [0, 0.00125, 0.00125, 0.5, 1.5, 0.5 / 81], rtol=1e-6)
    np.testing.assert_allclose(smooth_l1(x, 0.0).numpy(), np.abs(x.numpy()))  # β = 0: L1


def test_rpn_sigmoid_logit_zero_is_log2():
    targets = rpn_dict([[1, 0, 0]], [[1, 1, 0]], np.zeros((1, 3, 4)), [[1, 0, 0]])
    cls, box = rpn_losses(targets, tf.zeros([1, 3]), tf.zeros([1, 3, 4]))
    assert cls.dtype == tf.float32 and cls.shape == ()
    np.testing.assert_allclose(float(cls), math.log(2.0), rtol=1e-6)
    assert float(box) == 0.0


def test_rpn_sigmoid_literal_logits():
    # Positive with logit ln 3: −log σ = log(4/3); negative with logit ln 3: −log(1 − σ) = log 4.
    targets = rpn_dict([[1, 0]], [[1, 1]], np.zeros((1, 2, 4)), [[1, 0]])
    cls, _ = rpn_losses(targets, tf.fill([1, 2], math.log(3.0)), tf.zeros([1, 2, 4]))
    np.testing.assert_allclose(float(cls), (math.log(4 / 3) + math.log(4)) / 2, rtol=1e-6)


def test_rpn_softmax_literal_logits():
    # [background, object] = [0, ln 3]: object has p = 3/4.
    targets = rpn_dict([[1, 0]], [[1, 1]], np.zeros((1, 2, 4)), [[1, 0]])
    logits = tf.constant([[[0.0, math.log(3.0)], [0.0, math.log(3.0)]]])
    cls, _ = rpn_losses(targets, logits, tf.zeros([1, 2, 4]))
    np.testing.assert_allclose(float(cls), (math.log(4 / 3) + math.log(4)) / 2, rtol=1e-6)
    cls, _ = rpn_losses(targets, tf.zeros([1, 2, 2]), tf.zeros([1, 2, 4]))
    np.testing.assert_allclose(float(cls), math.log(2.0), rtol=1e-6)


def test_rpn_box_loss_literal_normalized_by_sampled_anchors():
    # 4 sampled anchors, 1 positive with errors (0.05, 1, 0, 0): (0.01125 + 1 − 1/18) / 4.
    targets = rpn_dict([[1, 0, 0, 0, 0]], [[1, 1, 1, 1, 0]], np.zeros((1, 5, 4)), [[1, 0, 0, 0, 0]])
    deltas = np.zeros((1, 5, 4), np.float32)
    deltas[0, 0] = [0.05, 1.0, 0.0, 0.0]
    _, box = rpn_losses(targets, tf.zeros([1, 5]), deltas)
    np.testing.assert_allclose(float(box), (0.01125 + 1 - 1 / 18) / 4, rtol=1e-5)
    _, box = rpn_losses(targets, tf.zeros([1, 5]), deltas, beta=1.0)
    np.testing.assert_allclose(float(box), (0.00125 + 0.5) / 4, rtol=1e-5)


def test_rcnn_literal_values():
    # RoI 0: class 2 (column 1 of 2), logits 0 → log 3; deltas 0.5 vs 0 → 4 · 0.125.
    # RoI 1: background, logits [ln 2, 0, 0] → −log(2/4) = log 2. RoI 2: padding.
    logits = np.zeros((1, 3, 3), np.float32)
    logits[0, 1, 0] = math.log(2.0)
    logits[0, 2] = [100.0, -100.0, 50.0]  # padding: must not count
    deltas = np.zeros((1, 3, 2, 4), np.float32)
    deltas[0, 0, 1] = 0.5
    deltas[0, 0, 0] = 9.0  # another class's deltas: ignored
    deltas[0, 1] = 7.0  # background: no box loss
    cls, box = rcnn_losses(
        [[2, 0, -1]], np.zeros((1, 3, 4)), [[1.0, 0.0, 0.0]], [[True, True, False]], logits, deltas
    )
    np.testing.assert_allclose(float(cls), (math.log(3.0) + math.log(2.0)) / 2, rtol=1e-6)
    np.testing.assert_allclose(float(box), 0.5 / 2, rtol=1e-6)


# --- Against the reference ---------------------------------------------------------------


@pytest.mark.parametrize("softmax", [False, True])
def test_rpn_losses_match_reference(softmax, rng):
    targets = random_rpn_targets(rng, 2, 30)
    logits = rng.normal(0, 3, (2, 30, 2) if softmax else (2, 30)).astype(np.float32)
    deltas = rng.normal(0, 0.5, (2, 30, 4)).astype(np.float32)
    cls, box = rpn_losses(targets, logits, deltas)
    expected = ref.rpn_losses(targets, logits, deltas)
    np.testing.assert_allclose([float(cls), float(box)], expected, rtol=1e-5)


def test_rcnn_losses_match_reference(rng):
    batch, samples, classes = 2, 12, 4
    valid = rng.uniform(size=(batch, samples)) < 0.8
    class_targets = np.where(valid, rng.integers(0, classes + 1, (batch, samples)), 0).astype(np.int32)
    box_weights = (class_targets > 0).astype(np.float32)
    box_targets = rng.normal(0, 1, (batch, samples, 4)).astype(np.float32)
    logits = rng.normal(0, 2, (batch, samples, classes + 1)).astype(np.float32)
    deltas = rng.normal(0, 1.5, (batch, samples, classes, 4)).astype(np.float32)
    args = (class_targets, box_targets, box_weights, valid)
    expected = ref.rcnn_losses(*args, logits, deltas)
    np.testing.assert_allclose([float(v) for v in rcnn_losses(*args, logits, deltas)], expected, rtol=1e-5)
    # [B, S, 4·C] is the same layout flattened.
    flat = rcnn_losses(*args, logits, deltas.reshape(batch, samples, classes * 4))
    np.testing.assert_allclose([float(v) for v in flat], expected, rtol=1e-5)


def test_rcnn_class_agnostic_deltas():
    deltas = np.full((1, 2, 4), 0.5, np.float32)
    _, box = rcnn_losses([[3, 1]], np.zeros((1, 2, 4)), [[1.0, 1.0]], [[True, True]], np.zeros((1, 2, 4)), deltas)
    np.testing.assert_allclose(float(box), 0.5, rtol=1e-6)  # 2 RoIs × 4 · 0.125 / 2


# --- Edge cases --------------------------------------------------------------------------


def test_negatives_contribute_no_box_loss(rng):
    targets = random_rpn_targets(rng, 2, 20)
    deltas = rng.normal(0, 0.5, (2, 20, 4)).astype(np.float32)
    huge = np.where((targets["box_weights"] > 0)[..., None], deltas, 1e30).astype(np.float32)
    _, box = rpn_losses(targets, tf.zeros([2, 20]), deltas)
    _, box_huge = rpn_losses(targets, tf.zeros([2, 20]), huge)
    assert float(box) > 0 and float(box) == float(box_huge)


def test_losses_finite_on_all_padding_batch():
    anchors = AnchorGenerator(sizes=(16,), aspect_ratios=(1.0,), stride=16)(image_shape=(32, 32))
    boxes, classes = tf.zeros([2, 3, 4]), tf.fill([2, 3], -1)
    rpn = rpn_targets(anchors, boxes, classes, (32, 32), seed=0)
    cls, box = rpn_losses(rpn, tf.zeros([2, 4]), tf.ones([2, 4, 4]))
    np.testing.assert_allclose(float(cls), math.log(2.0), rtol=1e-6)
    assert float(box) == 0.0
    # Nothing sampled at all (no proposals either): both losses 0, not NaN.
    rcnn = rcnn_targets(tf.zeros([2, 5, 4]), boxes, classes, num_samples=8, seed=0)
    assert not rcnn["valid"].numpy().any()
    losses = rcnn_losses(
        rcnn["class_targets"], rcnn["box_targets"], rcnn["box_weights"], rcnn["valid"],
        tf.zeros([2, 8, 3]), tf.ones([2, 8, 2, 4]),
    )
    assert [float(v) for v in losses] == [0.0, 0.0]
    empty = rpn_dict(np.zeros((2, 4)), np.zeros((2, 4)), np.zeros((2, 4, 4)), np.zeros((2, 4)))
    assert [float(v) for v in rpn_losses(empty, tf.zeros([2, 4]), tf.zeros([2, 4, 4]))] == [0.0, 0.0]


@pytest.mark.parametrize("scale", [1e4, 1e6])
def test_gradients_finite_on_extreme_inputs(scale, rng):
    targets = random_rpn_targets(rng, 2, 16)
    logits = tf.Variable(rng.choice([-scale, scale], (2, 16)).astype(np.float32))
    softmax_logits = tf.Variable(rng.choice([-scale, scale], (2, 16, 2)).astype(np.float32))
    deltas = tf.Variable(rng.choice([-scale, scale], (2, 16, 4)).astype(np.float32))
    rcnn_logits = tf.Variable(rng.choice([-scale, scale], (2, 6, 4)).astype(np.float32))
    rcnn_deltas = tf.Variable(rng.choice([-scale, scale], (2, 6, 3, 4)).astype(np.float32))
    class_targets = np.array([[0, 1, 2, 3, 0, -1]] * 2, np.int32)
    valid = class_targets >= 0
    with tf.GradientTape() as tape:
        losses = [
            *rpn_losses(targets, logits, deltas),
            *rpn_losses(targets, softmax_logits, deltas),
            *rcnn_losses(class_targets, np.zeros((2, 6, 4)), (class_targets > 0) * 1.0, valid, rcnn_logits, rcnn_deltas),
        ]
        total = tf.add_n(losses)
    grads = tape.gradient(total, [logits, softmax_logits, deltas, rcnn_logits, rcnn_deltas])
    assert all(np.isfinite(float(v)) for v in losses)
    assert all(g is not None and np.isfinite(g.numpy()).all() for g in grads)


def test_losses_float16_inputs_give_float32():
    targets = rpn_dict([[1, 0]], [[1, 1]], np.zeros((1, 2, 4)), [[1, 0]])
    cls, box = rpn_losses(targets, tf.zeros([1, 2], tf.float16), tf.fill([1, 2, 4], tf.constant(0.5, tf.float16)))
    assert cls.dtype == box.dtype == tf.float32
    np.testing.assert_allclose(float(cls), math.log(2.0), rtol=1e-6)


def test_losses_in_tf_function_with_unknown_batch(rng):
    anchors = AnchorGenerator(sizes=(16, 32), aspect_ratios=(1.0,), stride=16)(image_shape=(64, 64))
    head = RPNHead(num_anchors=2, channels=8)
    head(tf.zeros([1, 4, 4, 8]))  # build (create variables) outside the traced function

    @tf.function(input_signature=[tf.TensorSpec([None, 4, 4, 8]), tf.TensorSpec([None, 2, 4]), tf.TensorSpec([None, 2], tf.int32)])
    def step(features, boxes, classes):
        with tf.GradientTape() as tape:
            out = head(features)
            targets = rpn_targets(anchors, boxes, classes, (64, 64), num_samples=16, seed=[0, 1])
            cls, box = rpn_losses(targets, out["objectness_logits"], out["box_deltas"])
            rois = rcnn_targets(boxes, boxes, classes, num_samples=8, seed=[0, 2])
            logits = tf.zeros([tf.shape(features)[0], 8, 3]) + tf.reduce_mean(out["objectness_logits"])
            rcnn_cls, rcnn_box = rcnn_losses(
                rois["class_targets"], rois["box_targets"], rois["box_weights"], rois["valid"],
                logits, tf.zeros([tf.shape(features)[0], 8, 2, 4]),
            )
            total = cls + box + rcnn_cls + rcnn_box
        return total, tape.gradient(total, head.trainable_variables)

    boxes = np.array([[[8, 8, 40, 40], [0, 0, 0, 0]], [[0, 0, 0, 0], [0, 0, 0, 0]]], np.float32)
    classes = np.array([[1, -1], [-1, -1]], np.int32)
    total, grads = step(rng.normal(size=(2, 4, 4, 8)).astype(np.float32), boxes, classes)
    assert np.isfinite(total.numpy()) and total.numpy() > 0
    assert all(np.isfinite(g.numpy()).all() for g in grads)
    assert any(np.abs(g.numpy()).sum() > 0 for g in grads)


@pytest.mark.parametrize(
    "logits, deltas, match",
    [
        (np.zeros((1, 2, 3)), np.zeros((1, 2, 4)), "softmax"),
        (np.zeros((1, 2, 2, 1)), np.zeros((1, 2, 4)), "objectness_logits"),
        (np.zeros((1, 2)), np.zeros((1, 8)), "box_deltas"),
    ],
)
def test_rpn_losses_reject_bad_shapes(logits, deltas, match):
    targets = rpn_dict(np.zeros((1, 2)), np.zeros((1, 2)), np.zeros((1, 2, 4)), np.zeros((1, 2)))
    with pytest.raises(ValueError, match=match):
        rpn_losses(targets, logits, deltas)


@pytest.mark.parametrize(
    "logits, deltas, match",
    [
        (np.zeros((1, 2, 3)), np.zeros((1, 2, 3, 4)), "C = 2"),
        (np.zeros((1, 2, 3)), np.zeros((1, 2, 6)), "divisible by 4"),
        (np.zeros((2, 3)), np.zeros((1, 2, 2, 4)), "class_logits"),
    ],
)
def test_rcnn_losses_reject_bad_shapes(logits, deltas, match):
    with pytest.raises(ValueError, match=match):
        rcnn_losses(np.zeros((1, 2), np.int32), np.zeros((1, 2, 4)), np.zeros((1, 2)), np.ones((1, 2), bool), logits, deltas)


def test_smooth_l1_rejects_negative_beta():
    with pytest.raises(ValueError, match="beta"):
        smooth_l1(tf.zeros([2]), -1.0)


@pytest.mark.parametrize("function", [rpn_losses, rcnn_losses])
def test_losses_docstring_examples(function):
    import doctest

    globs = {"tf": tf, function.__name__: function}
    (test,) = doctest.DocTestFinder().find(function, function.__name__, globs=globs)
    assert doctest.DocTestRunner().run(test).failed == 0
