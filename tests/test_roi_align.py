"""RoIAlign: agreement with the plain-loop reference (torchvision semantics), edge cases,
gradients, unknown shapes, Keras round trips and builtin-only TFLite."""

import numpy as np
import pytest
import tensorflow as tf
from layer_checks import check_layer, run_tflite
from reference_roi import random_rois, roi_align_reference

from kerasdet.export.tflite import convert_builtin_only, tflite_op_names
from kerasdet.layers.roi_align import RoIAlign, roi_align

MAP_4X4 = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)  # value = 4 * row + col
ATOL = 2e-5  # float32 sums of up to 4 * sampling_ratio**2 terms, in another order


def test_roi_align_hand_computed_example():
    # aligned: pixel centres at +0.5; 2x2 bins of 2x2 pixels, one sample at each bin centre.
    out = RoIAlign(pool_size=2, spatial_scale=1.0, sampling_ratio=1)(
        MAP_4X4, np.array([[[0, 0, 4, 4]]], np.float32)
    )
    np.testing.assert_allclose(out.numpy()[0, 0, ..., 0], [[2.5, 4.5], [10.5, 12.5]])
    legacy = RoIAlign(pool_size=1, spatial_scale=1.0, sampling_ratio=2, aligned=False)
    rois = np.array(
        [
            [
                [0, 0, 3, 3],  # samples at 0.75 and 2.25: the map is linear, mean = 7.5
                [3.2, 0, 3.8, 0],  # legacy RoIs span >= 1 px; y = 3.45, 3.95 clamp to row 3
                [-1.4, 0, -0.6, 0],  # y = -1.15 (< -1: dropped) and -0.65 (clamped to 0)
                [-3, -3, -2.2, -2.2],  # every sample more than 1 px off the map
            ]
        ],
        np.float32,
    )
    out = legacy(MAP_4X4, rois).numpy()[0, :, 0, 0, 0]
    # RoI 1: row 3 at x = 0.25 / 0.75 -> 12.5. RoI 2: only the two samples at y = -0.65 count,
    # still divided by all four: (0.25 + 0.75) / 4.
    np.testing.assert_allclose(out, [7.5, 12.5, 0.25, 0.0], atol=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_roi_align_matches_reference_random(seed):
    rng = np.random.default_rng(seed)
    height, width = int(rng.integers(1, 24)), int(rng.integers(1, 24))
    pool_size = (int(rng.integers(1, 8)), int(rng.integers(1, 8)))
    scale = float(rng.choice([1.0, 0.5, 1 / 16]))
    sampling_ratio, aligned = int(rng.integers(1, 4)), bool(seed % 2)
    features = rng.standard_normal((2, height, width, 3)).astype(np.float32)
    rois = random_rois(rng, 2, 12, height / scale, width / scale)
    expected = roi_align_reference(features, rois, pool_size, scale, sampling_ratio, aligned)
    got = roi_align(features, rois, pool_size, scale, sampling_ratio, aligned)
    np.testing.assert_allclose(got.numpy(), expected, atol=ATOL, rtol=0)


def test_roi_align_samples_off_map(rng):
    features = rng.standard_normal((1, 6, 8, 2)).astype(np.float32)
    rois = np.array(
        [
            [
                [-40, -40, -10, -10],
                [100, 100, 200, 200],
                [-3, -3, 2, 2],
                [3, 5, 30, 40],
                [-10, -10, 20, 20],
            ]
        ],
        np.float32,
    )
    for aligned in (True, False):
        out = RoIAlign(pool_size=(3, 4), spatial_scale=1.0, aligned=aligned)(features, rois).numpy()
        expected = roi_align_reference(features, rois, (3, 4), 1.0, 2, aligned)
        np.testing.assert_allclose(out, expected, atol=ATOL, rtol=0)
        assert np.all(out[0, :2] == 0)


def test_roi_align_zero_rois():
    features = np.ones((2, 6, 7, 3), np.float32)
    rois = np.zeros((2, 0, 4), np.float32)
    assert RoIAlign(pool_size=(2, 3))(features, rois).shape == (2, 0, 2, 3, 3)
    traced = tf.function(
        lambda f, r: roi_align(f, r, (2, 3)),
        input_signature=[tf.TensorSpec([None, None, None, 3]), tf.TensorSpec([None, None, 4])],
    )
    assert traced(features, rois).shape == (2, 0, 2, 3, 3)


def test_roi_align_dynamic_spatial_shape():
    traced = tf.function(
        lambda f, r: roi_align(f, r, (3, 5), 0.25, 2, True),
        input_signature=[tf.TensorSpec([None, None, None, None]), tf.TensorSpec([None, None, 4])],
    )
    for seed, (height, width) in enumerate([(13, 7), (1, 30), (5, 1)]):
        rng = np.random.default_rng(seed)
        features = rng.standard_normal((2, height, width, 2)).astype(np.float32)
        rois = random_rois(rng, 2, 9, height / 0.25, width / 0.25)
        expected = roi_align_reference(features, rois, (3, 5), 0.25, 2, True)
        np.testing.assert_allclose(traced(features, rois).numpy(), expected, atol=ATOL, rtol=0)
    assert traced.experimental_get_tracing_count() == 1


def test_roi_align_gradient_matches_reference():
    # RoIAlign is linear in the features: the reference on each one-hot map gives the
    # coefficients, hence the exact gradient.
    rng = np.random.default_rng(5)
    shape = (1, 5, 6, 1)
    rois = random_rois(rng, 1, 6, 5 / 0.5, 6 / 0.5)
    upstream = rng.uniform(-1, 1, (1, 6, 2, 3, 1)).astype(np.float32)
    expected = np.zeros(shape, np.float32)
    for index in np.ndindex(shape):
        one_hot = np.zeros(shape, np.float32)
        one_hot[index] = 1
        expected[index] = np.sum(
            roi_align_reference(one_hot, rois, (2, 3), 0.5, 2, True) * upstream
        )
    features = tf.constant(rng.standard_normal(shape).astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(features)
        loss = tf.reduce_sum(roi_align(features, rois, (2, 3), 0.5, 2, True) * upstream)
    np.testing.assert_allclose(tape.gradient(loss, features).numpy(), expected, atol=1e-5)


def test_roi_align_bad_inputs():
    for bad in (0, -1, 2.5, "2", None, True):
        with pytest.raises(ValueError, match="sampling_ratio.*got"):
            RoIAlign(sampling_ratio=bad)
    with pytest.raises(ValueError, match="adaptive sampling"):
        RoIAlign(sampling_ratio=-1)
    for bad in (0, (2,), (3, -1), 1.5):
        with pytest.raises(ValueError, match="pool_size.*got"):
            RoIAlign(pool_size=bad)
    with pytest.raises(ValueError, match="spatial_scale.*got"):
        RoIAlign(spatial_scale=-1)
    with pytest.raises(ValueError, match="aligned.*got"):
        RoIAlign(aligned="yes")
    layer = RoIAlign(pool_size=2)
    with pytest.raises(ValueError, match=r"rank 4 \[B, H, W, C\], got shape \(4, 4, 1\)"):
        layer(MAP_4X4[0], np.zeros((1, 3, 4), np.float32))
    with pytest.raises(
        ValueError, match=r"rois must have shape \[B, N, 4\], got shape \(1, 3, 2\)"
    ):
        layer(MAP_4X4, np.zeros((1, 3, 2), np.float32))


def test_roi_align_layer_checks(tmp_path, rng):
    features = rng.standard_normal((2, 10, 13, 4)).astype(np.float32)
    rois = random_rois(rng, 2, 6, 10 * 8, 13 * 8)
    layer = RoIAlign(
        pool_size=(3, 2), spatial_scale=1 / 8, sampling_ratio=3, aligned=False, name="align"
    )
    out = check_layer(layer, [features, rois], tmp_path)
    expected = roi_align_reference(features, rois, (3, 2), 1 / 8, 3, False)
    np.testing.assert_allclose(out.numpy(), expected, atol=ATOL, rtol=0)
    assert layer.get_config()["sampling_ratio"] == 3


def test_roi_align_tflite_builtin_only(rng):
    features = rng.standard_normal((1, 19, 25, 8)).astype(np.float32)
    rois = random_rois(rng, 1, 20, 19 * 16, 25 * 16)
    layer = RoIAlign(pool_size=7, spatial_scale=1 / 16, sampling_ratio=2)
    model = convert_builtin_only(
        layer, [tf.TensorSpec([1, 19, 25, 8], tf.float32), tf.TensorSpec([1, 20, 4], tf.float32)]
    )
    ops = tflite_op_names(model)
    assert not [op for op in ops if op.startswith("CUSTOM")], ops
    got = run_tflite(model, [features, rois], num_threads=2)[0]
    np.testing.assert_allclose(got, layer(features, rois).numpy(), atol=1e-4, rtol=0)


def test_roi_align_docstring_example():
    import doctest

    finder = doctest.DocTestFinder()
    (test,) = finder.find(RoIAlign, "RoIAlign", globs={"np": np, "RoIAlign": RoIAlign})
    assert doctest.DocTestRunner().run(test).failed == 0
