"""OverFeat localization and detection: targets, loss, decoding, the detector model."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasdet.analysis import spatial_geometry
from kerasdet.data.crops import window_crops
from kerasdet.models import overfeat_classifier
from kerasdet.models.overfeat_detector import DenseWindowDecoder, overfeat_detector, with_last_pool
from kerasdet.models.overfeat_localizer import (
    LocalizationLoss,
    decode_window_boxes,
    encode_window_boxes,
    feature_layers,
    overfeat_localizer,
)
from kerasdet.training.overfeat import _flip_crops, fit_localizer


def test_window_box_encoding_round_trip_and_literal():
    boxes = tf.constant([[10.0, 20.0, 60.0, 90.0]])
    targets = encode_window_boxes(boxes, [[41.0, 41.0]], 86)
    np.testing.assert_allclose(targets.numpy(), [[(10 - 41) / 86, (20 - 41) / 86, (60 - 41) / 86, (90 - 41) / 86]], rtol=1e-6)
    np.testing.assert_allclose(decode_window_boxes(targets, [[41.0, 41.0]], 86).numpy(), boxes.numpy(), atol=1e-4)


def test_localization_loss_ignores_windows_below_iou_half():
    loss = LocalizationLoss()
    y_true = np.array([[0.1, 0.2, 0.3, 0.4, 1], [0, 0, 0, 0, -1]], np.float32)
    pred = np.zeros([2, 1, 1, 8], np.float32)
    pred[0, 0, 0, 4:8] = [0.1, 0.2, 0.3, 0.5]  # class 1, error 0.1 on one coordinate
    base = float(loss(y_true, pred))
    np.testing.assert_allclose(base, 0.01, rtol=1e-5)  # mean over the one included window
    pred[1] = 100.0  # an excluded window's prediction does not matter
    assert float(loss(y_true, pred)) == pytest.approx(base)
    pred[0, 0, 0, 0:4] = 100.0  # nor another class's outputs of an included window
    assert float(loss(y_true, pred)) == pytest.approx(base)


def test_localization_loss_without_included_windows_is_zero_and_finite():
    y_true = np.array([[0, 0, 0, 0, -1]], np.float32)
    assert float(LocalizationLoss()(y_true, np.ones([1, 8], np.float32))) == 0.0


def test_crop_targets_decode_to_the_object_and_low_iou_is_excluded():
    rng = np.random.default_rng(0)
    image = np.zeros([200, 200, 3], np.uint8)
    boxes = np.array([[50, 60, 110, 100]], np.float32)
    crops, labels, targets = window_crops(
        image, boxes, [2], window=86, window_center=(41.0, 41.0), rng=rng,
        crops_per_object=40, backgrounds=0, object_fraction=(0.3, 1.0),
    )
    assert (labels == 3).all()
    included = targets[:, 4] >= 0
    assert 0 < included.sum() < len(targets)  # some windows are below IoU 0.5
    assert (targets[included, 4] == 2).all()
    # A target decodes to a box of the object's size (scaled into the crop).
    decoded = targets[:, :4] * 86 + np.array([41, 41, 41, 41])
    heights = decoded[:, 2] - decoded[:, 0]
    widths = decoded[:, 3] - decoded[:, 1]
    np.testing.assert_allclose(heights / widths, 60 / 40, rtol=1e-4)


def test_flipping_a_crop_mirrors_its_targets():
    # A filled box in an 86×86 crop, window centre x = 41 (not the crop centre).
    crop = np.zeros([1, 86, 86, 3], np.float32)
    crop[0, 20:50, 10:30] = 255.0
    center = 41.0
    target = np.array([[(20 - center) / 86, (10 - center) / 86, (50 - center) / 86, (30 - center) / 86, 0]], np.float32)
    tf.random.set_seed(0)
    for _ in range(10):  # the flip is random per crop
        flipped, mirrored = _flip_crops(tf.constant(crop), tf.constant(target), True, (86 - 2 * center) / 86)
        cols = np.where(flipped.numpy()[0, 30].max(-1) > 0)[0]
        box = mirrored.numpy()[0, :4] * 86 + center
        np.testing.assert_allclose([box[1], box[3]], [cols.min(), cols.max() + 1], atol=1e-4)


def test_dense_window_decoder_geometry():
    # Location (i, j) looks at the window centred at first_center + stride·(i, j); with a
    # regressor output of ±0.5 the decoded box is exactly that window, divided by scale.
    logits = np.zeros([1, 2, 3, 3], np.float32)
    logits[..., 2] = 5.0  # class 1 wins everywhere
    boxes = np.tile(np.array([0, 0, 0, 0, -0.5, -0.5, 0.5, 0.5], np.float32), [1, 2, 3, 1])
    decoder = DenseWindowDecoder(scale=2.0, stride=24, first_center=(41, 41), window=86, image_size=(500, 500))
    out_boxes, scores, classes = decoder(logits, boxes)
    assert out_boxes.shape == (1, 6, 4)
    assert (classes.numpy() == 1).all()
    np.testing.assert_allclose(scores.numpy(), np.exp(5) / (np.exp(5) + 2), rtol=1e-5)
    i, j = 1, 2  # flattened index 5
    cy, cx = 41 + 24 * i, 41 + 24 * j
    np.testing.assert_allclose(out_boxes.numpy()[0, 5], np.array([cy - 43, cx - 43, cy + 43, cx + 43]) / 2.0, atol=1e-4)


@pytest.fixture(scope="module")
def tiny_parts():
    keras.utils.set_random_seed(0)
    classifier = overfeat_classifier("tiny", num_classes=4)
    localizer = overfeat_localizer(classifier, "tiny", num_classes=3)
    return classifier, localizer


@pytest.mark.parametrize("merge", ["greedy", "nms", "greedy_nms"])
def test_detector_outputs_padded_static_dict(tiny_parts, merge):
    classifier, localizer = tiny_parts
    detector = overfeat_detector(
        classifier, localizer, "tiny", image_size=(128, 160), scales=(1.0, 1.5), merge=merge,
        score_threshold=0.2, max_detections=10,
    )
    images = np.random.default_rng(0).uniform(0, 255, [2, 128, 160, 3]).astype("float32")
    out = detector(images)
    assert out["boxes"].shape == (2, 10, 4) and out["scores"].shape == (2, 10)
    assert out["classes"].dtype == tf.int32 and out["num_detections"].shape == (2,)
    boxes = out["boxes"].numpy()
    assert (boxes >= 0).all() and (boxes[..., 2] <= 128).all() and (boxes[..., 3] <= 160).all()
    for b in range(2):  # rows past num_detections are zeros
        n = int(out["num_detections"][b])
        assert (boxes[b, n:] == 0).all()


def _numpy_per_class_nms(boxes, scores, classes, iou):
    """Reference: visit by score (index order on ties); keep a box unless a kept box of its
    class overlaps it with IoU > `iou`."""
    keep = []
    for q in sorted(range(len(scores)), key=lambda k: (-scores[k], k)):
        ok = True
        for k in keep:
            if classes[k] != classes[q]:
                continue
            y1, x1 = np.maximum(boxes[q, :2], boxes[k, :2])
            y2, x2 = np.minimum(boxes[q, 2:], boxes[k, 2:])
            inter = max(y2 - y1, 0) * max(x2 - x1, 0)
            area = lambda b: (b[2] - b[0]) * (b[3] - b[1])  # noqa: E731
            ok &= inter / (area(boxes[q]) + area(boxes[k]) - inter) <= iou
        if ok:
            keep.append(q)
    return keep


def test_greedy_nms_is_the_greedy_merge_then_per_class_nms():
    keras.utils.set_random_seed(3)
    classifier = overfeat_classifier("tiny", num_classes=3)
    localizer = overfeat_localizer(classifier, "tiny", num_classes=2)
    # Window-sized boxes with small random offsets (an untrained regressor's boxes are often
    # inverted), so neighbouring windows' boxes overlap and a strict merge leaves many.
    regressor = localizer.get_layer("reg_boxes")
    kernel, _ = regressor.get_weights()
    regressor.set_weights([kernel * 0.02, np.tile([-0.4, -0.4, 0.4, 0.4], 2).astype("float32")])
    settings = dict(image_size=(128, 160), scales=(1.0, 1.5), score_threshold=0.2, match_threshold=0.05,
                    iou_threshold=0.3, max_detections=50)
    greedy = overfeat_detector(classifier, localizer, "tiny", merge="greedy", **settings)
    both = overfeat_detector(classifier, localizer, "tiny", merge="greedy_nms", **settings)
    images = np.random.default_rng(2).uniform(0, 255, [2, 128, 160, 3]).astype("float32")
    merged, suppressed = greedy(images), both(images)
    removed = 0
    for b in range(2):
        n = int(merged["num_detections"][b])
        boxes, scores = merged["boxes"].numpy()[b, :n], merged["scores"].numpy()[b, :n]
        classes = merged["classes"].numpy()[b, :n]
        keep = _numpy_per_class_nms(boxes, scores, classes, 0.3)
        m = int(suppressed["num_detections"][b])
        assert m == len(keep)
        np.testing.assert_allclose(suppressed["boxes"].numpy()[b, :m], boxes[keep], atol=1e-5)
        np.testing.assert_allclose(suppressed["scores"].numpy()[b, :m], scores[keep], rtol=1e-6)
        np.testing.assert_array_equal(suppressed["classes"].numpy()[b, :m], classes[keep])
        assert (suppressed["scores"].numpy()[b, m:] == 0).all()
        removed += n - m
    assert removed > 0, "nothing was suppressed: the test compared no NMS decision"


def test_detector_keras_save_load(tiny_parts, tmp_path):
    classifier, localizer = tiny_parts
    detector = overfeat_detector(classifier, localizer, "tiny", image_size=(96, 96), scales=(1.0, 1.3), score_threshold=0.2)
    images = np.random.default_rng(1).uniform(0, 255, [1, 96, 96, 3]).astype("float32")
    expected = detector(images)
    detector.save(tmp_path / "detector.keras")
    restored = keras.saving.load_model(tmp_path / "detector.keras")
    got = restored(images)
    for key in expected:
        np.testing.assert_allclose(np.asarray(got[key]), np.asarray(expected[key]), atol=1e-4)


def test_detector_rejects_scales_smaller_than_the_window(tiny_parts):
    classifier, localizer = tiny_parts
    with pytest.raises(ValueError, match="smaller than the 86×86 window"):
        overfeat_detector(classifier, localizer, "tiny", image_size=(100, 100), scales=(0.5,))
    with pytest.raises(ValueError, match="'soft'"):
        overfeat_detector(classifier, localizer, "tiny", image_size=(100, 100), merge="soft")


def test_offset_pool_detector_decodes_the_shifted_standard_windows():
    # The same weights with the last pool in offset mode (test time only): location
    # (3i + Δy, 3j + Δx) is the standard model's location (i, j) on the image shifted by
    # 8·Δ pixels (stride 24 / 3), so its regressor output is the same and its decoded box is
    # that one moved back by 8·Δ — the decoder's window centres use the effective stride 8.
    keras.utils.set_random_seed(4)
    standard = overfeat_classifier("tiny", num_classes=3, conv_padding="valid", dropout=0.0)
    standard_loc = overfeat_localizer(standard, "tiny", num_classes=2)
    offset = overfeat_classifier("tiny", num_classes=3, conv_padding="valid", last_pool="offset", dropout=0.0)
    offset_loc = overfeat_localizer(offset, "tiny", num_classes=2)
    offset.set_weights(standard.get_weights())
    offset_loc.set_weights(standard_loc.get_weights())
    height, width = 86 + 2 * 24 + 16, 86 + 24 + 16

    def decoded(classifier, localizer, images):  # the detector's candidates as [h, w] maps
        size = images.shape[1:3]
        detector = overfeat_detector(classifier, localizer, "tiny", image_size=size, score_threshold=0.01)
        boxes, scores, _ = keras.Model(detector.input, detector.get_layer("decode_0").output)(images)
        rows, cols = spatial_geometry(classifier, size).output_size
        return boxes.numpy().reshape(rows, cols, 4), scores.numpy().reshape(rows, cols)

    image = np.random.default_rng(4).uniform(0, 255, [1, height, width, 3]).astype("float32")
    dense_boxes, dense_scores = decoded(offset, offset_loc, image)
    dense_loc = offset_loc(image).numpy()[0]
    assert spatial_geometry(offset, (height, width)).effective_stride == (8, 8)
    for dy in range(3):
        for dx in range(3):
            shifted = image[:, 8 * dy :, 8 * dx :]
            reference_loc = standard_loc(shifted).numpy()[0]
            rows, cols = reference_loc.shape[:2]
            np.testing.assert_allclose(dense_loc[dy::3, dx::3][:rows, :cols], reference_loc, rtol=1e-4, atol=1e-4)
            ref_boxes, ref_scores = decoded(standard, standard_loc, shifted)
            shift = np.array([8 * dy, 8 * dx, 8 * dy, 8 * dx], np.float32)
            np.testing.assert_allclose(dense_boxes[dy::3, dx::3][:rows, :cols], ref_boxes + shift, atol=1e-2)
            np.testing.assert_allclose(dense_scores[dy::3, dx::3][:rows, :cols], ref_scores, atol=1e-5)


def test_fit_localizer_keeps_layers_1_to_5_and_classifier_fixed():
    keras.utils.set_random_seed(2)
    classifier = overfeat_classifier("tiny", num_classes=3)
    localizer = overfeat_localizer(classifier, "tiny", num_classes=2)
    before = [w.copy() for w in classifier.get_weights()]
    reg_before = localizer.get_layer("reg_boxes").get_weights()[0].copy()
    rng = np.random.default_rng(2)
    crops = rng.uniform(0, 255, [16, 86, 86, 3]).astype("float32")
    targets = np.concatenate([rng.normal(0, 0.2, [16, 4]), rng.integers(-1, 2, [16, 1])], 1).astype("float32")
    center = spatial_geometry(classifier, (86, 86)).first_center
    fit_localizer(localizer, crops, targets, window_center_x=center[1], epochs=1, batch_size=8, verbose=0)
    for w0, w1 in zip(before, classifier.get_weights()):
        np.testing.assert_array_equal(w0, w1)
    assert not np.allclose(reg_before, localizer.get_layer("reg_boxes").get_weights()[0])
    assert all(not layer.trainable for layer in feature_layers(localizer))


@pytest.mark.parametrize("batch_norm", [False, True])
def test_with_last_pool_keeps_the_trained_weights(batch_norm):
    """`with_last_pool`: the standard pool returns the same networks; offset pooling rebuilds
    them (batch norm kept) with the same weights, so its offset-(0, 0) locations are the
    standard model's outputs."""
    keras.utils.set_random_seed(3)
    classifier = overfeat_classifier("tiny", num_classes=4, dropout=0.0, batch_norm=batch_norm)
    localizer = overfeat_localizer(classifier, "tiny", num_classes=3)
    assert with_last_pool(classifier, localizer, "tiny", "standard") == (classifier, localizer)
    offset, offset_localizer = with_last_pool(classifier, localizer, "tiny", "offset")
    assert offset.get_layer("offset_pool") is not None
    assert any(isinstance(layer, keras.layers.BatchNormalization) for layer in offset.layers) == batch_norm
    image = np.random.default_rng(0).uniform(0, 255, [1, 86 + 24, 86 + 48, 3]).astype("float32")
    standard_out, dense_out = classifier(image).numpy(), offset(image).numpy()
    np.testing.assert_allclose(dense_out[:, ::3, ::3][:, : standard_out.shape[1], : standard_out.shape[2]],
                               standard_out, rtol=1e-4, atol=1e-4)
    standard_boxes, dense_boxes = localizer(image).numpy(), offset_localizer(image).numpy()
    np.testing.assert_allclose(dense_boxes[:, ::3, ::3][:, : standard_boxes.shape[1], : standard_boxes.shape[2]],
                               standard_boxes, rtol=1e-4, atol=1e-4)
