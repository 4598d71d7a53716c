"""Tests of `kerasdet.boxes`: formats, area, IoU, clipping, validity and BoxCoder.

Expected values are literals worked out by hand or NumPy references written from the
spec, never the code under test.
"""

import math

import numpy as np
import pytest
import tensorflow as tf

from kerasdet.boxes import (
    DEFAULT_SCALE_CLAMP,
    FORMATS,
    BoxCoder,
    box_area,
    clip_boxes,
    convert_format,
    pairwise_iou,
    valid_boxes_mask,
)

# One box, y1=10, x1=20, y2=50, x2=80 (height 40, width 60), in every format; the image is
# 100 high and 200 wide for the relative one.
IMAGE_HW = (100, 200)
SAME_BOX = {
    "yxyx": [10.0, 20.0, 50.0, 80.0],
    "xyxy": [20.0, 10.0, 80.0, 50.0],
    "xywh": [20.0, 10.0, 60.0, 40.0],
    "center_xywh": [50.0, 30.0, 60.0, 40.0],
    "rel_yxyx": [0.1, 0.1, 0.5, 0.4],
}


def random_boxes(rng, shape, low=0.0, high=300.0, min_size=1.0, max_size=120.0):
    """yxyx boxes `shape + [4]` with positive sizes."""
    y1 = rng.uniform(low, high, shape)
    x1 = rng.uniform(low, high, shape)
    h = rng.uniform(min_size, max_size, shape)
    w = rng.uniform(min_size, max_size, shape)
    return np.stack([y1, x1, y1 + h, x1 + w], -1).astype(np.float32)


def numpy_iou(a, b):
    """Plain-loop IoU of `[N, 4]` × `[M, 4]` yxyx boxes in float64 (0 for empty unions)."""
    out = np.zeros((len(a), len(b)))
    for i, (ay1, ax1, ay2, ax2) in enumerate(np.asarray(a, np.float64)):
        for j, (by1, bx1, by2, bx2) in enumerate(np.asarray(b, np.float64)):
            inter = max(min(ay2, by2) - max(ay1, by1), 0) * max(min(ax2, bx2) - max(ax1, bx1), 0)
            union = max(ay2 - ay1, 0) * max(ax2 - ax1, 0) + max(by2 - by1, 0) * max(bx2 - bx1, 0) - inter
            out[i, j] = inter / union if union > 0 else 0.0
    return out


# --- convert_format ----------------------------------------------------------------------


@pytest.mark.parametrize("source", FORMATS)
@pytest.mark.parametrize("target", FORMATS)
def test_convert_format_literal_box_between_every_pair(source, target):
    out = convert_format([SAME_BOX[source]], source=source, target=target, image_shape=IMAGE_HW)
    assert out.dtype == tf.float32
    np.testing.assert_allclose(out.numpy(), [SAME_BOX[target]], rtol=1e-6, atol=1e-5)


def test_convert_format_coco_xywh_example():
    # COCO [x, y, width, height] = [10, 20, 30, 40] → y1 = 20, x1 = 10, y2 = 60, x2 = 40.
    out = convert_format([[10.0, 20.0, 30.0, 40.0]], source="xywh", target="yxyx")
    np.testing.assert_array_equal(out.numpy(), [[20.0, 10.0, 60.0, 40.0]])


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "yxyx"])
def test_convert_format_round_trips_batched_boxes(fmt, rng):
    boxes = random_boxes(rng, (2, 7))
    there = convert_format(boxes, source="yxyx", target=fmt, image_shape=(480, 640))
    back = convert_format(there, source=fmt, target="yxyx", image_shape=(480, 640))
    assert back.shape == (2, 7, 4)
    np.testing.assert_allclose(back.numpy(), boxes, rtol=1e-5, atol=1e-3)


def test_convert_format_rel_yxyx_accepts_tensor_and_per_image_shapes():
    rel = np.array([[[0.5, 0.25, 1.0, 0.75]], [[0.5, 0.25, 1.0, 0.75]]], np.float32)  # [2, 1, 4]
    shapes = tf.constant([[[100, 200]], [[10, 40]]], tf.int32)  # [2, 1, 2]: one per image
    out = convert_format(rel, source="rel_yxyx", target="yxyx", image_shape=shapes)
    np.testing.assert_allclose(out.numpy(), [[[50, 50, 100, 150]], [[5, 10, 10, 30]]])
    out = convert_format(rel[0], source="rel_yxyx", target="xywh", image_shape=tf.constant([100, 200]))
    np.testing.assert_allclose(out.numpy(), [[50, 50, 100, 50]])


@pytest.mark.parametrize("source, target", [("rel_yxyx", "yxyx"), ("xyxy", "rel_yxyx")])
def test_convert_format_rel_yxyx_without_image_shape_raises(source, target):
    with pytest.raises(ValueError, match="image_shape"):
        convert_format([[0.1, 0.1, 0.5, 0.5]], source=source, target=target)


def test_convert_format_rejects_unknown_format_and_bad_last_dim():
    with pytest.raises(ValueError, match="'cxcywh'"):
        convert_format([[0.0, 0.0, 1.0, 1.0]], source="cxcywh", target="yxyx")
    with pytest.raises(ValueError, match="'YXYX'"):
        convert_format([[0.0, 0.0, 1.0, 1.0]], source="yxyx", target="YXYX")
    with pytest.raises(ValueError, match=r"\[\.\.\., 4\]"):
        convert_format([[0.0, 0.0, 1.0]], source="yxyx", target="xyxy")


# --- box_area / pairwise_iou ---------------------------------------------------------------


def test_box_area_literals_and_inverted_boxes_are_zero():
    boxes = [[0, 0, 2, 3], [10, 10, 10, 20], [5, 5, 1, 9], [1.5, 2.0, 4.0, 2.5]]
    np.testing.assert_allclose(box_area(boxes).numpy(), [6.0, 0.0, 0.0, 1.25])


def test_pairwise_iou_literals():
    a = [[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 10.0, 10.0]]
    b = [[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [20.0, 20.0, 30.0, 30.0], [0.0, 2.0, 2.0, 4.0]]
    # a0·b0: 1 / 7; a0·b1 identical; a0·b2 disjoint; a0·b3 shares an edge only.
    # a1·b0: 4 / 100; a1·b1: 4 / 100; a1·b2: 0; a1·b3: 4 / 100.
    expected = [[1 / 7, 1.0, 0.0, 0.0], [0.04, 0.04, 0.0, 0.04]]
    out = pairwise_iou(a, b)
    assert out.shape == (2, 4) and out.dtype == tf.float32
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6)


def test_pairwise_iou_batched_matches_numpy(rng):
    a = random_boxes(rng, (3, 5), high=100.0)
    b = random_boxes(rng, (3, 6), high=100.0)
    out = pairwise_iou(a, b).numpy()
    assert out.shape == (3, 5, 6)
    for i in range(3):
        np.testing.assert_allclose(out[i], numpy_iou(a[i], b[i]), atol=1e-6)
    assert out.max() > 0.0  # some pairs do overlap


def test_pairwise_iou_zero_area_pairs_are_zero_not_nan():
    zeros = np.zeros([2, 4], np.float32)  # padding rows
    real = np.array([[0, 0, 4, 4], [1, 1, 1, 5]], np.float32)  # second is a line: zero area
    for a, b in [(zeros, zeros), (zeros, real), (real, zeros), (real[1:], real[1:])]:
        out = pairwise_iou(a, b).numpy()
        assert np.all(np.isfinite(out)), out
    np.testing.assert_array_equal(pairwise_iou(zeros, zeros).numpy(), np.zeros([2, 2]))
    np.testing.assert_array_equal(pairwise_iou(real[1:], real[1:]).numpy(), [[0.0]])
    np.testing.assert_array_equal(pairwise_iou(zeros, real).numpy(), np.zeros([2, 2]))


# --- clip_boxes / valid_boxes_mask ---------------------------------------------------------


def test_clip_boxes_literals():
    boxes = [[-5.0, -5.0, 10.0, 300.0], [20.0, 30.0, 40.0, 50.0], [150.0, 10.0, 170.0, 20.0]]
    out = clip_boxes(boxes, (100, 200))
    expected = [[0.0, 0.0, 10.0, 200.0], [20.0, 30.0, 40.0, 50.0], [100.0, 10.0, 100.0, 20.0]]
    np.testing.assert_array_equal(out.numpy(), expected)
    np.testing.assert_array_equal(clip_boxes(boxes, tf.constant([100, 200])).numpy(), expected)
    # The box entirely below the image ends up with zero height, hence invalid.
    np.testing.assert_array_equal(valid_boxes_mask(out).numpy(), [True, True, False])


def test_valid_boxes_mask_literals():
    boxes = [
        [0.0, 0.0, 10.0, 10.0],
        [0.0, 0.0, 0.0, 0.0],  # padding
        [5.0, 5.0, 4.0, 9.0],  # inverted
        [0.0, 0.0, np.nan, 10.0],
        [0.0, 0.0, np.inf, 10.0],
        [0.0, 0.0, 2.0, 10.0],
    ]
    np.testing.assert_array_equal(
        valid_boxes_mask(boxes).numpy(), [True, False, False, False, False, True]
    )
    np.testing.assert_array_equal(
        valid_boxes_mask(boxes, min_size=2.0).numpy(), [True, False, False, False, False, False]
    )


# --- BoxCoder ------------------------------------------------------------------------------


def test_box_coder_encode_literals():
    anchor = [[0.0, 0.0, 10.0, 10.0]]  # center (5, 5), 10 × 10
    # Shifted by (1, 2), same size: dy = 1/10, dx = 2/10, dh = dw = 0.
    np.testing.assert_allclose(
        BoxCoder().encode([[1.0, 2.0, 11.0, 12.0]], anchor).numpy(), [[0.1, 0.2, 0.0, 0.0]], atol=1e-6
    )
    # Box [0, 0, 20, 40]: center (10, 20), h 20, w 40 → dy = 0.5, dx = 1.5, dh = log 2, dw = log 4;
    # times weights (10, 10, 5, 5).
    out = BoxCoder(weights=(10, 10, 5, 5)).encode([[0.0, 0.0, 20.0, 40.0]], anchor)
    np.testing.assert_allclose(
        out.numpy(), [[5.0, 15.0, 5 * math.log(2.0), 5 * math.log(4.0)]], rtol=1e-6
    )


def test_box_coder_decode_literal():
    # Anchor center (20, 40), 8 high, 16 wide; deltas with weights (10, 10, 5, 5):
    # dy = 10 · 0.5 → y = 20 + 4 = 24; dx = 10 · (-0.25) → x = 40 - 4 = 36;
    # dh = 5 · log 2 → h = 16; dw = 0 → w = 16.
    anchors = [[16.0, 32.0, 24.0, 48.0]]
    deltas = [[5.0, -2.5, 5 * math.log(2.0), 0.0]]
    out = BoxCoder(weights=(10, 10, 5, 5)).decode(deltas, anchors)
    np.testing.assert_allclose(out.numpy(), [[16.0, 28.0, 32.0, 44.0]], rtol=1e-6)


@pytest.mark.parametrize("weights", [(1, 1, 1, 1), (10, 10, 5, 5)])
def test_box_coder_decode_encode_round_trip_broadcasting_anchors(weights, rng):
    anchors = random_boxes(rng, (6,), min_size=8.0)  # [N, 4], broadcast over the batch
    boxes = random_boxes(rng, (2, 6), min_size=4.0)  # [B, N, 4]
    coder = BoxCoder(weights=weights)
    deltas = coder.encode(boxes, anchors)
    assert deltas.shape == (2, 6, 4) and deltas.dtype == tf.float32
    np.testing.assert_allclose(coder.decode(deltas, anchors).numpy(), boxes, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("weights", [(1, 1, 1, 1), (10, 10, 5, 5)])
def test_box_coder_huge_size_deltas_are_clamped_before_exp(weights):
    coder = BoxCoder(weights=weights)
    anchors = np.array([[0.0, 0.0, 16.0, 16.0]] * 4, np.float32)  # center (8, 8), 16 × 16
    deltas = np.array(
        [[0.0, 0.0, 1e4, 1e4], [0.0, 0.0, 1e30, -1.0], [0.0, 0.0, np.inf, 0.0], [0.0, 0.0, 300.0, 300.0]],
        np.float32,
    )
    out = coder.decode(deltas, anchors).numpy()
    assert np.all(np.isfinite(out)), out
    height, width = out[:, 2] - out[:, 0], out[:, 3] - out[:, 1]
    # At most anchor size × 1000 / 16 = 1000 pixels.
    np.testing.assert_allclose(height, [1000.0, 1000.0, 1000.0, 1000.0], rtol=1e-5)
    np.testing.assert_allclose(width[[0, 3]], [1000.0, 1000.0], rtol=1e-5)
    np.testing.assert_allclose(width[2], 16.0, rtol=1e-6)
    np.testing.assert_allclose(width[1], 16.0 * math.exp(-1.0 / weights[3]), rtol=1e-5)
    np.testing.assert_allclose((out[:, 0] + out[:, 2]) / 2, 8.0, atol=1e-3)  # centers unchanged
    assert DEFAULT_SCALE_CLAMP == pytest.approx(math.log(1000.0 / 16.0))


def test_box_coder_delta_just_below_clamp_is_not_clamped():
    coder = BoxCoder(weights=(10, 10, 5, 5))
    dh = 5 * (math.log(1000.0 / 16.0) - 0.5)
    out = coder.decode([[0.0, 0.0, dh, 0.0]], [[0.0, 0.0, 16.0, 16.0]]).numpy()
    np.testing.assert_allclose(out[0, 2] - out[0, 0], 1000.0 * math.exp(-0.5), rtol=1e-5)


def test_box_coder_padding_boxes_encode_to_finite_deltas():
    coder = BoxCoder(weights=(10, 10, 5, 5))
    zeros = np.zeros([3, 4], np.float32)
    anchors = np.array([[0, 0, 16, 16], [8, 8, 40, 24], [0, 0, 0, 0]], np.float32)
    for boxes, anc in [(zeros, anchors), (anchors, zeros), (zeros, zeros)]:
        deltas = coder.encode(boxes, anc).numpy()
        assert np.all(np.isfinite(deltas)), deltas
    # Identical zero boxes encode to zero deltas.
    np.testing.assert_array_equal(coder.encode(zeros, zeros).numpy(), np.zeros([3, 4]))


def test_box_coder_decodes_float16_deltas_in_float32():
    deltas = tf.constant([[0.0, 0.0, 0.0, 0.0]], tf.float16)
    out = BoxCoder().decode(deltas, [[100.0, 200.0, 132.0, 264.0]])
    assert out.dtype == tf.float32
    np.testing.assert_array_equal(out.numpy(), [[100.0, 200.0, 132.0, 264.0]])


@pytest.mark.parametrize("weights", [(1, 1, 1), (10, 10, 0, 5), (10, -10, 5, 5)])
def test_box_coder_rejects_bad_weights(weights):
    with pytest.raises(ValueError, match="weights"):
        BoxCoder(weights=weights)
