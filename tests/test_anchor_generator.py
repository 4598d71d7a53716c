"""Tests of `AnchorGenerator` against anchors typed out by hand."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasdet.layers import AnchorGenerator

# 16·√0.5 / 2 and 16/√0.5 / 2: half-height / half-width of the size-16 anchors with
# aspect ratio (h / w) 0.5 → 11.3137 × 22.6274, and 2 → 22.6274 × 11.3137.
A = 5.656854  # 8·√0.5
B = 11.313708  # 8·√2

# 32×48 image, stride 16 → a 2 × 3 grid, centers y ∈ {8, 24}, x ∈ {8, 24, 40}; per location
# ratio 0.5 (wide), 1 (square), 2 (tall). Order: row, column, ratio.
EXPECTED_32x48 = np.array(
    [
        # (i, j) = (0, 0), center (8, 8)
        [8 - A, 8 - B, 8 + A, 8 + B],
        [0, 0, 16, 16],
        [8 - B, 8 - A, 8 + B, 8 + A],
        # (0, 1), center (8, 24)
        [2.343146, 12.686292, 13.656854, 35.313708],
        [0, 16, 16, 32],
        [-3.313708, 18.343146, 19.313708, 29.656854],
        # (0, 2), center (8, 40)
        [2.343146, 28.686292, 13.656854, 51.313708],
        [0, 32, 16, 48],
        [-3.313708, 34.343146, 19.313708, 45.656854],
        # (1, 0), center (24, 8)
        [18.343146, -3.313708, 29.656854, 19.313708],
        [16, 0, 32, 16],
        [12.686292, 2.343146, 35.313708, 13.656854],
        # (1, 1), center (24, 24)
        [18.343146, 12.686292, 29.656854, 35.313708],
        [16, 16, 32, 32],
        [12.686292, 18.343146, 35.313708, 29.656854],
        # (1, 2), center (24, 40)
        [18.343146, 28.686292, 29.656854, 51.313708],
        [16, 32, 32, 48],
        [12.686292, 34.343146, 35.313708, 45.656854],
    ],
    np.float32,
)

# YOLOv5 P3/P4 anchors (w, h) with strides 8 and 16 on a 16 × 16 image: level 0 is a 2 × 2
# grid (centers 4, 12), level 1 a single location (center 8).
YOLO_ANCHORS = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119]]
EXPECTED_YOLO_16x16 = np.array(
    [
        [-2.5, -1, 10.5, 9], [-11, -4, 19, 12], [-7.5, -12.5, 15.5, 20.5],  # (4, 4)
        [-2.5, 7, 10.5, 17], [-11, 4, 19, 20], [-7.5, -4.5, 15.5, 28.5],  # (4, 12)
        [5.5, -1, 18.5, 9], [-3, -4, 27, 12], [0.5, -12.5, 23.5, 20.5],  # (12, 4)
        [5.5, 7, 18.5, 17], [-3, 4, 27, 20], [0.5, -4.5, 23.5, 28.5],  # (12, 12)
        [-22.5, -7, 38.5, 23], [-14.5, -23, 30.5, 39], [-51.5, -21.5, 67.5, 37.5],  # level 1 (8, 8)
    ],
    np.float32,
)


def test_literal_anchors_32x48_stride16_size16_three_ratios():
    gen = AnchorGenerator(sizes=(16,), aspect_ratios=(0.5, 1.0, 2.0), stride=16)
    anchors = gen(image_shape=(32, 48))
    assert anchors.dtype == tf.float32
    assert anchors.shape == (18, 4)  # 2 · 3 · 3
    np.testing.assert_allclose(anchors.numpy(), EXPECTED_32x48, atol=1e-4)
    # The convention spelled out: ratio 0.5 is wide (h = S·√r = 11.31, w = S/√r = 22.63).
    h, w = EXPECTED_32x48[0, 2] - EXPECTED_32x48[0, 0], EXPECTED_32x48[0, 3] - EXPECTED_32x48[0, 1]
    assert h == pytest.approx(16 * math.sqrt(0.5), abs=1e-4) and w == pytest.approx(16 / math.sqrt(0.5), abs=1e-4)


def test_shapes_are_aspect_ratio_major_then_size():
    # One location (16 × 16 image, stride 16, center (8, 8)); for each ratio, every size.
    gen = AnchorGenerator(sizes=(8, 16), aspect_ratios=(1.0, 4.0), stride=16)
    expected = [
        [4, 4, 12, 12],  # r = 1, S = 8
        [0, 0, 16, 16],  # r = 1, S = 16
        [0, 6, 16, 10],  # r = 4, S = 8: h = 16, w = 4
        [-8, 4, 24, 12],  # r = 4, S = 16: h = 32, w = 8
    ]
    np.testing.assert_allclose(gen(image_shape=(16, 16)).numpy(), expected, atol=1e-5)
    assert gen.anchors_per_location == [4]


def test_explicit_yolo_anchors_two_levels_literal():
    gen = AnchorGenerator(anchors=YOLO_ANCHORS, stride=(8, 16))
    anchors = gen(image_shape=(16, 16))
    assert anchors.shape == (15, 4)  # 2·2·3 + 1·1·3
    np.testing.assert_allclose(anchors.numpy(), EXPECTED_YOLO_16x16, atol=1e-5)
    # The same anchors given as (w, h) pairs.
    pairs = [[(10, 13), (16, 30), (33, 23)], [(30, 61), (62, 45), (59, 119)]]
    paired = AnchorGenerator(anchors=pairs, stride=(8, 16))(image_shape=(16, 16))
    np.testing.assert_allclose(paired.numpy(), EXPECTED_YOLO_16x16, atol=1e-5)


def test_default_600x1000_gives_21546_anchors():
    gen = AnchorGenerator()
    anchors = gen(image_shape=(600, 1000)).numpy()
    assert anchors.shape == (21546, 4)  # ceil(600/16)=38, ceil(1000/16)=63, 38·63·9
    # First location, first shape: ratio 0.5, size 128 → h = 90.51, w = 181.02 at (8, 8).
    h, w = 128 * math.sqrt(0.5), 128 / math.sqrt(0.5)
    np.testing.assert_allclose(anchors[0], [8 - h / 2, 8 - w / 2, 8 + h / 2, 8 + w / 2], atol=1e-3)
    # Last anchor: location (37, 62) → center (600, 1000); ratio 2, size 512 (tall).
    h, w = 512 * math.sqrt(2.0), 512 / math.sqrt(2.0)
    np.testing.assert_allclose(anchors[-1], [600 - h / 2, 1000 - w / 2, 600 + h / 2, 1000 + w / 2], atol=1e-3)
    # Anchor index (i·63 + j)·9 + a: location (1, 2), shape 4 (ratio 1, size 256).
    np.testing.assert_allclose(anchors[(1 * 63 + 2) * 9 + 4], [24 - 128, 40 - 128, 24 + 128, 40 + 128], atol=1e-3)


@pytest.mark.parametrize(
    "image_shape, stride, expected",
    [((33, 47), 16, 3 * 3 * 9), ((1, 1), 16, 9), ((64, 64), 32, 2 * 2 * 9), ((65, 64), 32, 3 * 2 * 9)],
)
def test_anchor_count_rounds_feature_size_up(image_shape, stride, expected):
    assert AnchorGenerator(stride=stride)(image_shape=image_shape).shape == (expected, 4)


def test_multi_level_sizes_concatenate_levels_in_order():
    gen = AnchorGenerator(sizes=((32,), (64, 128)), aspect_ratios=(1.0,), stride=(8, 16))
    anchors = gen(image_shape=(16, 32)).numpy()
    assert gen.anchors_per_location == [1, 2]
    assert anchors.shape == (2 * 4 * 1 + 1 * 2 * 2, 4)
    np.testing.assert_allclose(anchors[0], [4 - 16, 4 - 16, 4 + 16, 4 + 16])
    np.testing.assert_allclose(anchors[7], [12 - 16, 28 - 16, 12 + 16, 28 + 16])  # level 0, (1, 3)
    np.testing.assert_allclose(
        anchors[8:],
        [[-24, -24, 40, 40], [-56, -56, 72, 72], [-24, -8, 40, 56], [-56, -40, 72, 88]],
    )


def test_image_shape_as_tensor_and_dynamic_in_tf_function():
    gen = AnchorGenerator(sizes=(16,), aspect_ratios=(0.5, 1.0, 2.0), stride=16)
    np.testing.assert_allclose(gen(image_shape=tf.constant([32, 48])).numpy(), EXPECTED_32x48, atol=1e-4)

    traced = tf.function(lambda shape: gen(image_shape=shape), input_signature=[tf.TensorSpec([2], tf.int32)])
    np.testing.assert_allclose(traced(tf.constant([32, 48])).numpy(), EXPECTED_32x48, atol=1e-4)
    # The same trace handles other sizes, with ceil division: 17 × 33 → 2 × 3 locations.
    np.testing.assert_allclose(traced(tf.constant([17, 33])).numpy(), EXPECTED_32x48, atol=1e-4)
    assert traced(tf.constant([600, 1000])).shape == (38 * 63 * 3, 4)
    assert len(traced._list_all_concrete_functions_for_serialization()) == 1
    default = AnchorGenerator()
    traced_default = tf.function(lambda shape: default(image_shape=shape), input_signature=[tf.TensorSpec([2], tf.int32)])
    dynamic = traced_default(tf.constant([600, 1000]))
    assert dynamic.shape == (21546, 4)
    np.testing.assert_allclose(dynamic.numpy(), default(image_shape=(600, 1000)).numpy(), atol=1e-4)

    yolo = AnchorGenerator(anchors=YOLO_ANCHORS, stride=(8, 16))
    traced = tf.function(lambda shape: yolo(image_shape=shape), input_signature=[tf.TensorSpec([2], tf.int32)])
    np.testing.assert_allclose(traced(tf.constant([16, 16])).numpy(), EXPECTED_YOLO_16x16, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sizes": (16, 32), "aspect_ratios": (0.5, 1.0, 2.0), "stride": 16},
        {"sizes": ((32,), (64, 128)), "aspect_ratios": ((1.0,), (0.5, 2.0)), "stride": (8, 16)},
        {"anchors": YOLO_ANCHORS, "stride": (8, 16)},
    ],
)
def test_config_round_trip_gives_same_anchors(kwargs):
    gen = AnchorGenerator(**kwargs)
    clone = AnchorGenerator.from_config(gen.get_config())
    assert clone.get_config() == gen.get_config()
    np.testing.assert_array_equal(clone(image_shape=(40, 72)).numpy(), gen(image_shape=(40, 72)).numpy())
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(gen))
    np.testing.assert_array_equal(restored(image_shape=(40, 72)).numpy(), gen(image_shape=(40, 72)).numpy())


def test_odd_length_anchor_list_raises_naming_it():
    with pytest.raises(ValueError, match=r"odd-length.*\[10, 13, 16, 30, 33\]"):
        AnchorGenerator(anchors=[[10, 13, 16, 30, 33]], stride=8)


def test_mismatched_levels_raise_naming_counts():
    with pytest.raises(ValueError, match=r"2 levels.*\[8\]"):
        AnchorGenerator(anchors=YOLO_ANCHORS, stride=8)
    with pytest.raises(ValueError, match=r"sizes.*\(2\).*3 entries"):
        AnchorGenerator(sizes=((16,), (32,), (64,)), stride=(8, 16))


@pytest.mark.parametrize("stride, shown", [(0, "0"), (-16, "-16"), ((8, 0), r"\(8, 0\)")])
def test_non_positive_stride_raises_naming_it(stride, shown):
    with pytest.raises(ValueError, match=rf"stride.*{shown}"):
        AnchorGenerator(stride=stride)


def test_other_bad_arguments_raise():
    with pytest.raises(ValueError, match=r"\(0, 13\)"):
        AnchorGenerator(anchors=[[0, 13]], stride=8)
    with pytest.raises(ValueError, match="not both"):
        AnchorGenerator(anchors=[[10, 13]], sizes=(16,), stride=8)
    with pytest.raises(ValueError, match="-1"):
        AnchorGenerator(sizes=(16, -1))
    with pytest.raises(ValueError, match=r"image_shape.*0"):
        AnchorGenerator()(image_shape=(0, 32))


def test_keras_save_load_in_a_functional_model(tmp_path):
    # image_shape as a model input of shape [2] (batch_size=2 stands for (H, W)).
    gen = AnchorGenerator(sizes=(16,), aspect_ratios=(0.5, 1.0, 2.0), stride=16)
    shape_in = keras.Input(shape=(), batch_size=2, dtype="int32")
    model = keras.Model(shape_in, gen(image_shape=shape_in))
    path = str(tmp_path / "anchors.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_allclose(restored(tf.constant([32, 48])).numpy(), EXPECTED_32x48, atol=1e-4)
