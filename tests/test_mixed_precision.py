"""Mixed precision: Faster R-CNN and the OverFeat detector under `mixed_bfloat16` and
`mixed_float16` match float32 within the tolerances below, keep box math, losses and NMS in
float32, and train without NaN.

Tolerances. A float32 model's weights are copied into the same model built under each
policy, so the only difference is the compute dtype of the convolutions and dense layers:
bfloat16 keeps 8 significant bits (unit roundoff 2^-8 ≈ 0.4 %), float16 11 bits
(2^-11 ≈ 0.05 %), and the errors of a dozen layers add up. The bounds are 3–10x what this
CPU measured (in brackets), and 8x tighter for float16, as its roundoff is:

- backbone features, max |error| / max |feature|: bfloat16 0.02 [0.005], float16 0.0025 [0.0007];
- class probabilities (softmax in float32): bfloat16 0.005 [0.0015], float16 0.000625 [0.00013];
- boxes, pixels on a 128-pixel image (decoded in float32 from low-precision deltas):
  bfloat16 0.5 [0.1], float16 0.0625 [0.006]; OverFeat's boxes (its regressor's output
  times the 86-pixel window) twice that [0.35 and 0.04].

Detections themselves can differ in which near-tied boxes survive NMS or fill the last
slots, so they are compared on the same proposals (second stage) and by matching: at least
90 % of the float32 detections scoring 0.1 or more have a detection of the same class with
IoU ≥ 0.9 and a score within the probability tolerance, and the other way round (measured:
97 % under bfloat16, all under float16).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasdet.boxes import pairwise_iou
from kerasdet.models import FasterRCNN, ProposalLayer, overfeat_classifier
from kerasdet.models.overfeat_detector import overfeat_detector
from kerasdet.models.overfeat_localizer import overfeat_localizer

SIZE = (128, 128)
POLICIES = ["mixed_bfloat16", "mixed_float16"]
TOLERANCE = {
    "mixed_bfloat16": {"features": 0.02, "scores": 0.005, "boxes": 0.5},
    "mixed_float16": {"features": 0.0025, "scores": 0.000625, "boxes": 0.0625},  # 1/8: 3 more bits
}


@pytest.fixture
def policy(request):
    """Sets the global dtype policy for the test; float32 again afterwards."""
    keras.mixed_precision.set_global_policy(request.param)
    yield request.param
    keras.mixed_precision.set_global_policy("float32")


def small_model():
    keras.utils.set_random_seed(0)
    return FasterRCNN(
        3, image_size=SIZE, head_units=(32, 32), rpn_batch_size=64, rcnn_batch_size=32, max_detections=20,
        proposal_layer=ProposalLayer(
            pre_nms_top_k_train=300, post_nms_top_k_train=64, pre_nms_top_k_test=200, post_nms_top_k_test=48
        ),
    )


def synthetic_batch(n=4):
    """Bright rectangles (classes 0–2) on dim noise."""
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 60, (n, *SIZE, 3)).astype("float32")
    boxes, classes = np.zeros((n, 3, 4), "float32"), -np.ones((n, 3), "int32")
    for i in range(n):
        for j in range(3):
            h, w = rng.integers(20, 56, 2)
            y, x = rng.integers(0, SIZE[0] - h), rng.integers(0, SIZE[1] - w)
            images[i, y:y + h, x:x + w, j] = 230.0
            boxes[i, j], classes[i, j] = [y, x, y + h, x + w], j
    return images, {"boxes": boxes, "classes": classes}


@pytest.fixture(scope="module")
def reference():
    """A float32 Faster R-CNN trained for 15 steps (scores no longer all tied), its data,
    outputs and intermediate values."""
    assert keras.mixed_precision.global_policy().name == "float32"
    model = small_model()
    images, gt = synthetic_batch()
    model.compile(optimizer=keras.optimizers.Adam(3e-3), run_eagerly=True)
    ds = tf.data.Dataset.from_tensor_slices((images, gt)).batch(2).repeat()
    model.fit(ds, steps_per_epoch=15, epochs=1, verbose=0)
    return model, images, gt


def second_stage(model, images, proposals):
    """Backbone features and per-proposal `(boxes, scores)` of `model` on given proposals."""
    features = model.backbone(images)
    pooled = model.roi_pool(features, proposals["boxes"])
    logits, deltas = model.roi_head(pooled)
    boxes, scores = model.decode(logits, deltas, proposals["boxes"], proposals["valid"])
    return features, boxes, scores


def max_relative_error(got, want):
    got, want = np.asarray(tf.cast(got, tf.float32)), np.asarray(want)
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


def _matched_fraction(want, got, score_tolerance, min_score=0.1):
    """The fraction of `want`'s detections scoring ≥ `min_score` that `got` has too: same
    class, IoU ≥ 0.9, score within `score_tolerance`."""
    found = total = 0
    for b in range(want["boxes"].shape[0]):
        n, m = int(want["num_detections"][b]), int(got["num_detections"][b])
        iou = pairwise_iou(want["boxes"][b, :n], got["boxes"][b, :m]).numpy()
        for i in np.flatnonzero(want["scores"][b, :n].numpy() >= min_score):
            total += 1
            same = (got["classes"][b, :m].numpy() == int(want["classes"][b, i])) & (iou[i] >= 0.9)
            close = np.abs(got["scores"][b, :m].numpy() - float(want["scores"][b, i])) <= score_tolerance
            found += bool((same & close).any())
    assert total >= 10, total  # the comparison is not vacuous
    return found / total


@pytest.mark.parametrize("policy", POLICIES, indirect=True)
def test_faster_rcnn_inference_matches_float32(reference, policy):
    ref_model, images, _ = reference
    tol = TOLERANCE[policy]
    model = small_model()
    model.set_weights(ref_model.get_weights())

    # The network computes in low precision; anchors, proposals, decoding and NMS in float32.
    low = "bfloat16" if policy == "mixed_bfloat16" else "float16"
    assert model.backbone.compute_dtype == low and model.roi_head.compute_dtype == low
    for layer in (model.anchors, model.proposal_layer, model.decode, model.nms):
        assert layer.compute_dtype == "float32", layer.name
    assert all(v.dtype == "float32" for v in model.weights)  # variables stay float32

    # Second stage on the float32 model's proposals: position-by-position comparison.
    ref_features = ref_model.backbone(images)
    rpn = ref_model.rpn_head(ref_features)
    proposals = ref_model.proposal_layer(
        rpn["objectness_logits"], rpn["box_deltas"], ref_model.anchors(ref_features), image_shape=SIZE
    )
    want = second_stage(ref_model, images, proposals)
    got = second_stage(model, images, proposals)
    assert got[0].dtype == low and got[1].dtype == got[2].dtype == tf.float32
    feature_error = max_relative_error(got[0], want[0])
    box_error = float(np.max(np.abs(got[1] - want[1])))
    score_error = float(np.max(np.abs(got[2] - want[2])))
    print(f"{policy}: features {feature_error:.2g}, boxes {box_error:.2g} px, scores {score_error:.2g}")
    assert feature_error <= tol["features"]
    assert box_error <= tol["boxes"]
    assert score_error <= tol["scores"]

    # End to end: detections are float32, finite, and the confident ones are all found.
    out, ref_out = model(images), ref_model(images)
    assert {k: out[k].dtype for k in out} == {k: ref_out[k].dtype for k in ref_out}
    assert out["boxes"].dtype == out["scores"].dtype == tf.float32
    assert np.isfinite(out["boxes"].numpy()).all() and np.isfinite(out["scores"].numpy()).all()
    recall, precision = _matched_fraction(ref_out, out, tol["scores"]), _matched_fraction(out, ref_out, tol["scores"])
    print(f"{policy}: confident detections matched {recall:.0%} (float32 in mixed), {precision:.0%} (mixed in float32)")
    assert recall >= 0.9 and precision >= 0.9


@pytest.mark.parametrize("policy", POLICIES, indirect=True)
def test_faster_rcnn_trains_with_float32_losses(reference, policy):
    ref_model, images, gt = reference
    model = small_model()
    model.set_weights(ref_model.get_weights())
    # The samplers' seeds follow the optimizer's step: use the reference model's.
    model.compile(optimizer=keras.optimizers.SGD(1e-3), run_eagerly=True)
    model.optimizer.iterations.assign(ref_model.optimizer.iterations)
    losses = model.compute_losses(images, gt)
    want = ref_model.compute_losses(images, gt)
    assert all(v.dtype == tf.float32 for v in losses.values())
    # RPN targets and samples do not depend on the predictions, so the RPN losses differ only
    # by the logits' precision; the second stage samples RoIs among the proposals, whose
    # order can change with precision, so its losses are only checked to be finite.
    for name in ("rpn_objectness", "rpn_box"):
        print(f"{policy}: {name} {float(losses[name]):.5f} vs float32 {float(want[name]):.5f}")
        np.testing.assert_allclose(float(losses[name]), float(want[name]), rtol=5 * TOLERANCE[policy]["scores"])

    # mixed_float16 needs loss scaling: compile wraps the optimizer in a LossScaleOptimizer.
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) == (policy == "mixed_float16")
    history = model.fit(images, gt, batch_size=2, epochs=1, verbose=0).history
    assert set(history) == {"loss", "rpn_objectness", "rpn_box", "rcnn_class", "rcnn_box"}
    assert all(np.isfinite(v).all() for v in history.values()), history
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert int(model.optimizer.iterations) == int(ref_model.optimizer.iterations) + 2


def _overfeat():
    keras.utils.set_random_seed(0)
    classifier = overfeat_classifier("tiny", num_classes=4)
    localizer = overfeat_localizer(classifier, "tiny", num_classes=3)
    return overfeat_detector(
        classifier, localizer, "tiny", image_size=(128, 160), scales=(1.0, 1.5), score_threshold=0.2, max_detections=10
    )


def _candidates(detector):
    """The detector up to the merge: every location's box, score and class, in a fixed order."""
    names = ("all_boxes", "all_scores", "all_classes")
    return keras.Model(detector.input, [detector.get_layer(n).output for n in names])


@pytest.fixture(scope="module")
def overfeat_reference():
    """A float32 OverFeat tiny detector (random weights), images, its candidates and detections."""
    assert keras.mixed_precision.global_policy().name == "float32"
    reference = _overfeat()
    images = np.random.default_rng(0).uniform(0, 255, [2, 128, 160, 3]).astype("float32")
    candidates = [np.asarray(t) for t in _candidates(reference)(images)]
    return reference, images, candidates, reference(images)


@pytest.mark.parametrize("policy", POLICIES, indirect=True)
def test_overfeat_detector_inference_matches_float32(overfeat_reference, policy):
    reference, images, (want_boxes, want_scores, want_classes), ref_out = overfeat_reference
    detector = _overfeat()
    detector.set_weights(reference.get_weights())
    assert detector.get_layer("dense_windows").compute_dtype in ("bfloat16", "float16")
    # Decoding, the concatenation of the scales' candidates and the merge stay float32 (a
    # default Concatenate would round the boxes to the compute dtype).
    for name in ("decode_0", "decode_1", "all_boxes", "all_scores", "merge"):
        assert detector.get_layer(name).compute_dtype == "float32", name
    boxes, scores, classes = (np.asarray(t) for t in _candidates(detector)(images))
    assert boxes.dtype == scores.dtype == np.float32
    tol = TOLERANCE[policy]
    # Boxes: the regressor's output scaled by the 86-pixel window (and up to 1/0.6 by the
    # pyramid), hence twice the Faster R-CNN bound.
    box_error, score_error = float(np.max(np.abs(boxes - want_boxes))), float(np.max(np.abs(scores - want_scores)))
    print(f"{policy}: OverFeat boxes {box_error:.2g} px, scores {score_error:.2g}")
    assert box_error <= 2 * tol["boxes"]
    assert score_error <= tol["scores"]
    # A location's top class may flip between near-tied classes, rarely.
    assert np.mean(classes == want_classes) >= 0.95

    out = detector(images)
    assert out["boxes"].dtype == out["scores"].dtype == tf.float32
    assert np.isfinite(out["boxes"].numpy()).all() and np.isfinite(out["scores"].numpy()).all()
    np.testing.assert_array_equal(out["num_detections"], ref_out["num_detections"])
