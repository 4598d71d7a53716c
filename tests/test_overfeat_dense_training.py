"""Dense (fully convolutional) OverFeat training: per-location targets, losses, patches, fit."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasdet.data.shapes import generate_example
from kerasdet.models import overfeat_classifier
from kerasdet.models.overfeat_localizer import (
    LocalizationLoss,
    decode_window_boxes,
    overfeat_localizer,
)
from kerasdet.training.overfeat_dense import dense_targets
from kerasdet.training.overfeat_dense_data import DensePatchSampler, resample_patches
from kerasdet.training.overfeat_dense_fit import (
    DenseClassificationLoss,
    DenseLocalizationLoss,
    fit_dense_classifier,
    fit_dense_localizer,
)

S, STRIDE, CENTER = 86, 24, 41.0  # tiny: window, stride, output centre on an S×S crop


def reference_targets(boxes, classes, output_size, first_center, overlap="coverage"):
    """Loop-per-location reference of `dense_targets` with its default bounds."""
    h, w = output_size
    labels = np.zeros([h, w], np.int32)
    targets = np.zeros([h, w, 5], np.float32)
    targets[..., 4] = -1
    for i in range(h):
        for j in range(w):
            cy, cx = first_center[0] + STRIDE * i, first_center[1] + STRIDE * j  # output centre
            y0, x0 = cy - CENTER, cx - CENTER  # window's top-left
            best_pos, best_reg, ambiguous = None, None, False
            for k, box in enumerate(boxes):
                fraction = max(box[2] - box[0], box[3] - box[1]) / S
                offset = max(abs((box[0] + box[2]) / 2 - (y0 + S / 2)), abs((box[1] + box[3]) / 2 - (x0 + S / 2))) / S
                inter = max(0, min(box[2], y0 + S) - max(box[0], y0)) * max(0, min(box[3], x0 + S) - max(box[1], x0))
                area = (box[2] - box[0]) * (box[3] - box[1])
                over = inter / area if overlap == "coverage" else inter / (area + S * S - inter)
                if 0.45 <= fraction <= 0.95 and offset <= 0.15 and (best_pos is None or offset < best_pos[0]):
                    best_pos = (offset, k)
                if 0.35 <= fraction <= 1.2 and offset <= 0.3:
                    ambiguous = True
                if 0.3 <= fraction <= 1.3 and over >= 0.5 and (best_reg is None or offset < best_reg[0]):
                    best_reg = (offset, k)
            if best_pos is not None:
                labels[i, j] = classes[best_pos[1]] + 1
            elif ambiguous:
                labels[i, j] = -1
            chosen = best_pos or best_reg
            if chosen is not None:
                box = boxes[chosen[1]]
                targets[i, j, :4] = (np.array(box) - [cy, cx, cy, cx]) / S
                targets[i, j, 4] = classes[chosen[1]]
    return labels, targets


def hand_made_boxes():
    # On a 230×230 input (7×7 locations, window (i, j) covers [24i, 24i + 86)):
    return np.array([
        [24 + 13, 24 + 13, 24 + 73, 24 + 73],  # 60 px (0.70 S), centred on window (1, 1)
        [96 + 28, 96 + 20, 96 + 58, 96 + 66],  # 46 × 30 (0.53 S), centred on window (4, 4)
        [0, 150, 20, 170],                     # 20 px: too small for any window here
        [60, 100, 200, 200],                   # 140 px: too large (1.6 S)
    ], np.float32), np.array([2, 0, 4, 1])


@pytest.mark.parametrize("overlap", ["coverage", "iou"])
def test_dense_targets_match_the_numpy_reference(overlap):
    boxes, classes = hand_made_boxes()
    rng = np.random.default_rng(0)
    # Plus random boxes of every size and place, so every band is exercised.
    sizes = rng.uniform(10, 130, size=[40, 2])
    corners = rng.uniform(-20, 230, size=[40, 2])
    boxes = np.concatenate([boxes, np.concatenate([corners, corners + sizes], 1).astype(np.float32)])
    classes = np.concatenate([classes, rng.integers(0, 5, 40)])
    for n in (4, 8, len(boxes)):  # a few objects and a crowd
        labels, targets = dense_targets(
            boxes[:n], classes[:n], output_size=(7, 7), stride=(24, 24), first_center=(41.0, 41.0),
            window_center=(CENTER, CENTER), window=S, overlap=overlap,
        )
        ref_labels, ref_targets = reference_targets(boxes[:n], classes[:n], (7, 7), (41.0, 41.0), overlap)
        np.testing.assert_array_equal(labels, ref_labels)
        np.testing.assert_allclose(targets, ref_targets, atol=1e-6)


def test_dense_targets_on_hand_made_boxes():
    boxes, classes = hand_made_boxes()
    labels, targets = dense_targets(
        boxes, classes, output_size=(7, 7), stride=(24, 24), first_center=(41.0, 41.0),
        window_center=(CENTER, CENTER), window=S,
    )
    assert labels[1, 1] == 3 and labels[4, 4] == 1  # class + 1 at the objects' windows
    assert labels[0, 6] == 0  # the 20 px box is background at this scale
    assert set(np.unique(labels)) <= {-1, 0, 1, 3}  # the 140 px box is nobody's object
    assert labels[6, 0] == 0  # far from everything
    assert labels[0, 1] == -1  # one stride off the 60 px box: the ignored band
    # The positive's box target decodes to its box around the location's output centre.
    decoded = decode_window_boxes(targets[1, 1, :4], [41.0 + 24, 41.0 + 24], S).numpy()
    np.testing.assert_allclose(decoded, boxes[0], atol=1e-4)
    assert targets[1, 1, 4] == 2 and targets[6, 0, 4] == -1


def test_no_boxes_is_all_background():
    labels, targets = dense_targets(
        np.zeros([0, 4]), np.zeros([0]), output_size=(3, 2), stride=24, first_center=(41.0, 41.0),
        window_center=(CENTER, CENTER), window=S,
    )
    assert (labels == 0).all() and (targets[..., 4] == -1).all()


def test_classification_loss_ignores_minus_one_and_weights_foreground():
    labels = np.array([[[0, 2], [-1, -1]]], np.int32)
    logits = np.random.default_rng(0).normal(size=[1, 2, 2, 4]).astype(np.float32)
    loss = DenseClassificationLoss(foreground_weight=3.0)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=np.maximum(labels, 0), logits=logits).numpy()
    expected = (ce[0, 0, 0] + 3 * ce[0, 0, 1]) / 4
    np.testing.assert_allclose(float(loss(labels, logits)), expected, rtol=1e-5)
    logits[0, 1] = 100 * np.arange(4)  # ignored locations' logits do not matter
    np.testing.assert_allclose(float(loss(labels, logits)), expected, rtol=1e-5)
    assert float(loss(-np.ones_like(labels), logits)) == 0.0  # nothing included: 0, finite


def test_dense_localization_loss_is_the_crop_loss_per_location():
    rng = np.random.default_rng(0)
    y_true = np.concatenate([rng.normal(size=[2, 3, 3, 4]), rng.integers(-1, 3, [2, 3, 3, 1])], -1).astype(np.float32)
    y_pred = rng.normal(size=[2, 3, 3, 12]).astype(np.float32)
    dense = float(DenseLocalizationLoss()(y_true, y_pred))
    crops = float(LocalizationLoss()(y_true.reshape(-1, 5), y_pred.reshape(-1, 12)))
    np.testing.assert_allclose(dense, crops, rtol=1e-5)


def test_resample_patches_equals_resize_then_crop():
    image = np.random.default_rng(0).integers(0, 256, [64, 80, 3]).astype(np.uint8)
    full = tf.image.resize(image.astype(np.float32), (96, 120)).numpy()  # scale 1.5
    patch = resample_patches(image[None], [1.5], [(10, 20)], 50)[0]
    np.testing.assert_allclose(patch, full[10:60, 20:70], atol=1e-2)  # float32 coordinates
    outside = resample_patches(image[None], [0.5], [(-30, -30)], 40)[0]  # 32×40 image inside
    assert (outside[:20, :20] == 127).all()


def _examples(count, size=96, seed=0):
    rng = np.random.default_rng(seed)
    return [generate_example(rng, size, size, min_size=20, max_size=60, max_objects=2, empty_prob=0) for _ in range(count)]


def test_sampler_targets_agree_with_what_the_model_outputs():
    model = overfeat_classifier("tiny", num_classes=6, dropout=0.0)
    sampler = DensePatchSampler(_examples(4), model=model, window=S, patch_size=134, scale_range=(0.9, 2.0), seed=1)
    images, labels, targets = sampler.sample(6)
    assert images.shape == (6, 134, 134, 3) and images.dtype == np.float32
    assert model(images).shape[:3] == labels.shape == targets.shape[:3] == (6, 3, 3)
    assert (labels > 0).any()


@pytest.mark.parametrize("batch_norm", [False, True])
def test_dense_fit_steps_reduce_the_losses(batch_norm):
    keras.utils.set_random_seed(0)
    model = overfeat_classifier("tiny", num_classes=6, dropout=0.0, batch_norm=batch_norm)
    sampler = DensePatchSampler(_examples(6), model=model, window=S, patch_size=110, scale_range=(1.0, 1.6), object_prob=1.0)
    images, labels, targets = sampler.sample(8)
    # One fixed batch, so the loss before and after a few steps is comparable.
    data = tf.data.Dataset.from_tensors((images, labels)).repeat()
    loss = DenseClassificationLoss(3.0)
    before = float(loss(labels, model(images)))
    fit_dense_classifier(model, data, steps=8, learning_rate=1e-3, verbose=0)
    assert float(loss(labels, model(images))) < before

    localizer = overfeat_localizer(model, "tiny", num_classes=5)
    conv1 = model.get_layer("conv1").get_weights()[0].copy()
    bn_mean = model.get_layer("conv1_bn").get_weights()[2].copy() if batch_norm else None
    loc_loss = DenseLocalizationLoss()
    before = float(loc_loss(targets, localizer(images)))
    fit_dense_localizer(localizer, tf.data.Dataset.from_tensors((images, targets)).repeat(), steps=8, verbose=0)
    assert float(loc_loss(targets, localizer(images))) < before
    np.testing.assert_array_equal(model.get_layer("conv1").get_weights()[0], conv1)  # frozen
    if batch_norm:  # frozen batch norm runs in inference mode: its statistics stay the classifier's
        np.testing.assert_array_equal(model.get_layer("conv1_bn").get_weights()[2], bn_mean)
