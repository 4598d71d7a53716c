"""RoIPool: exact agreement with the plain-loop reference (torchvision semantics), edge
cases, gradients, unknown shapes, Keras round trips and builtin-only TFLite."""

import numpy as np
import pytest
import tensorflow as tf
from layer_checks import check_layer, run_tflite
from reference_roi import random_rois, roi_pool_reference, roi_pool_reference_grad

import kerasdet.layers.roi_pool as roi_pool_module
from kerasdet.export.tflite import convert_builtin_only, tflite_op_names
from kerasdet.layers.roi_pool import RoIPool, roi_pool

MAP_4X4 = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)  # value = 4 * row + col


def _graph(pool_size, spatial_scale, spatial=(None, None), channels=None):
    signature = [
        tf.TensorSpec([None, *spatial, channels], tf.float32),
        tf.TensorSpec([None, None, 4], tf.float32),
    ]
    return tf.function(
        lambda f, r: roi_pool(f, r, pool_size, spatial_scale), input_signature=signature
    )


def test_roi_pool_hand_computed_example():
    rois = np.array(
        [
            [
                [0, 0, 3, 3],  # whole map: 2x2 bins of 2x2 pixels
                [1, 0, 1, 3],  # one row: both row bins are row 1
                [0.4, 0.6, 2.5, 2.49],  # rounds to rows 0..3, columns 1..2
                [-2, 2, 1, 6],  # partly outside: top row bins and right column bins empty
                [5, 5, 8, 8],  # fully outside
            ]
        ],
        np.float32,
    )
    out = RoIPool(pool_size=2, spatial_scale=1.0)(MAP_4X4, rois)
    assert out.shape == (1, 5, 2, 2, 1)
    expected = [
        [[5, 7], [13, 15]],
        [[5, 7], [5, 7]],
        [[5, 6], [13, 14]],
        [[0, 0], [7, 0]],
        [[0, 0], [0, 0]],
    ]
    np.testing.assert_array_equal(out.numpy()[0, ..., 0], np.array(expected, np.float32))
    # Non-square bins: 4 / 3 columns per bin gives column ranges [0, 2), [1, 3), [2, 4).
    out = RoIPool(pool_size=(1, 3), spatial_scale=1.0)(MAP_4X4, rois[:, :1])
    np.testing.assert_array_equal(out.numpy()[0, 0, ..., 0], [[13, 14, 15]])


@pytest.mark.parametrize("seed", range(5))
def test_roi_pool_matches_reference_random(seed):
    rng = np.random.default_rng(seed)
    height, width = int(rng.integers(1, 24)), int(rng.integers(1, 24))
    pool_size = (int(rng.integers(1, 8)), int(rng.integers(1, 8)))
    scale = float(rng.choice([1.0, 0.5, 0.25, 1 / 16]))
    features = rng.standard_normal((2, height, width, 3)).astype(np.float32)
    rois = random_rois(rng, 2, 12, height / scale, width / scale)
    expected = roi_pool_reference(features, rois, pool_size, scale)
    np.testing.assert_array_equal(roi_pool(features, rois, pool_size, scale).numpy(), expected)
    static = _graph(pool_size, scale, (height, width), 3)
    np.testing.assert_array_equal(static(features, rois).numpy(), expected)


def test_roi_pool_roi_outside_map(rng):
    features = rng.standard_normal((1, 6, 8, 2)).astype(np.float32)
    rois = np.array(
        [
            [
                [-40, -40, -10, -10],  # entirely above-left
                [100, 100, 200, 200],  # entirely below-right
                [-3, -3, 2, 2],  # overlapping the top-left corner
                [3, 5, 30, 40],  # overlapping the bottom-right corner
                [-10, -10, 20, 20],  # containing the whole map
            ]
        ],
        np.float32,
    )
    out = RoIPool(pool_size=(3, 4), spatial_scale=1.0)(features, rois).numpy()
    np.testing.assert_array_equal(out, roi_pool_reference(features, rois, (3, 4), 1.0))
    assert np.all(out[0, :2] == 0)
    assert out[0, 4].max() == features.max()


def test_roi_pool_zero_size_roi(rng):
    features = rng.standard_normal((1, 5, 5, 2)).astype(np.float32)
    rois = np.array([[[2, 3, 2, 3], [2.2, 3.1, 1.9, 2.8], [4, 1, 1, 4]]], np.float32)
    out = RoIPool(pool_size=3, spatial_scale=1.0)(features, rois).numpy()
    np.testing.assert_array_equal(out, roi_pool_reference(features, rois, 3, 1.0))
    # A point RoI (and one that rounds to a point) is one pixel in every bin.
    np.testing.assert_array_equal(out[0, 0], np.broadcast_to(features[0, 2, 3], (3, 3, 2)))
    np.testing.assert_array_equal(out[0, 1], out[0, 0])
    # Inverted boxes count as one pixel tall / wide, starting at y1' / x1'.
    np.testing.assert_array_equal(
        out[0, 2, :, 0], np.broadcast_to(features[0, 4, 1:3].max(0), (3, 2))
    )


def test_roi_pool_empty_bin_is_zero():
    features = -1.0 - MAP_4X4  # all negative: 0 can only come from an empty bin
    rois = np.array([[[-4, -4, 1, 1], [2, 2, 9, 9]]], np.float32)
    out = RoIPool(pool_size=2, spatial_scale=1.0)(features, rois).numpy()[0, ..., 0]
    np.testing.assert_array_equal(out[0], [[0, 0], [0, -1]])
    np.testing.assert_array_equal(out[1], [[-11, 0], [0, 0]])


def test_roi_pool_zero_rois():
    features = np.ones((2, 6, 7, 3), np.float32)
    rois = np.zeros((2, 0, 4), np.float32)
    assert RoIPool(pool_size=(2, 3))(features, rois).shape == (2, 0, 2, 3, 3)
    assert _graph((2, 3), 1 / 16, (6, 7), 3)(features, rois).shape == (2, 0, 2, 3, 3)
    assert _graph((2, 3), 1 / 16)(features, rois).shape == (2, 0, 2, 3, 3)


def test_roi_pool_rounds_half_away_from_zero():
    # Scaled edges 0.5, 2.5 and -0.5: C round gives 1, 3 and -1; tf.round would give 0, 2, -0.
    rois = np.array([[[8, 8, 40, 40], [-8, -8, 8, 8]]], np.float32)
    out = RoIPool(pool_size=1, spatial_scale=1 / 16)(MAP_4X4, rois).numpy()[0, :, 0, 0, 0]
    # RoI 0 covers rows/cols 1..3 -> max 15 with any rounding; the first column / row is out,
    # which shows on its min, checked through a 3x3 pooling below.
    assert out[0] == 15
    assert out[1] == 5  # rows/cols -1..1 -> clipped 0..1 -> pixel (1, 1)
    out = RoIPool(pool_size=3, spatial_scale=1 / 16)(MAP_4X4, rois[:, :1]).numpy()[0, 0, ..., 0]
    np.testing.assert_array_equal(out, [[5, 6, 7], [9, 10, 11], [13, 14, 15]])
    # Just below one half rounds down (x + 0.5 would round up to 1.0 in float32).
    below_half = np.nextafter(np.float32(0.5), np.float32(0))
    rois = np.array([[[below_half, below_half, 1, 1]]], np.float32)
    out = RoIPool(pool_size=2, spatial_scale=1.0)(MAP_4X4, rois).numpy()[0, 0, ..., 0]
    np.testing.assert_array_equal(out, [[0, 1], [4, 5]])


@pytest.mark.parametrize("graph", [False, True])
def test_roi_pool_gradient_reaches_max_positions(graph):
    rng = np.random.default_rng(3)
    shape = (2, 9, 11, 3)
    features = rng.permutation(np.prod(shape)).reshape(shape).astype(np.float32)  # no ties
    rois = random_rois(rng, 2, 8, 9 / 0.5, 11 / 0.5)
    upstream = rng.uniform(1, 2, (2, 8, 3, 2, 3)).astype(np.float32)

    def grad(f):
        with tf.GradientTape() as tape:
            tape.watch(f)
            loss = tf.reduce_sum(roi_pool(f, rois, (3, 2), 0.5) * upstream)
        return tape.gradient(loss, f)

    if graph:
        grad = tf.function(grad)
    got = grad(tf.constant(features)).numpy()
    expected = roi_pool_reference_grad(features, rois, (3, 2), 0.5, upstream)
    assert np.count_nonzero(expected) > 20
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-5)
    np.testing.assert_array_equal(got != 0, expected != 0)


def test_roi_pool_dynamic_spatial_shape():
    traced = _graph((3, 5), 0.25)  # batch, height, width and N all unknown at trace time
    for seed, (height, width) in enumerate([(13, 7), (1, 30), (24, 24), (5, 1)]):
        rng = np.random.default_rng(seed)
        features = rng.standard_normal((2, height, width, 2)).astype(np.float32)
        rois = random_rois(rng, 2, 9, height / 0.25, width / 0.25)
        np.testing.assert_array_equal(
            traced(features, rois).numpy(), roi_pool_reference(features, rois, (3, 5), 0.25)
        )
    assert traced.experimental_get_tracing_count() == 1

    # Gradients also flow through the while-loop table (no ties: a permutation).
    features = np.random.default_rng(9).permutation(2 * 8 * 9).reshape(2, 8, 9, 1)
    features = features.astype(np.float32)
    rois = random_rois(np.random.default_rng(9), 2, 5, 8 / 0.25, 9 / 0.25)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 1], tf.float32)])
    def grad(f):
        with tf.GradientTape() as tape:
            tape.watch(f)
            loss = tf.reduce_sum(roi_pool(f, rois, (3, 5), 0.25))
        return tape.gradient(loss, f)

    expected = roi_pool_reference_grad(features, rois, (3, 5), 0.25, np.ones((2, 5, 3, 5, 1)))
    np.testing.assert_array_equal(grad(features).numpy(), expected)


def test_roi_pool_channel_groups(monkeypatch):
    # Force many channel groups (run one after another in graph mode) on a small input.
    monkeypatch.setattr(roi_pool_module, "_GROUP_TABLE_BYTES", 100_000)  # groups of 6, 6, 6, 4
    rng = np.random.default_rng(7)
    features = rng.standard_normal((2, 17, 12, 22)).astype(np.float32)
    rois = random_rois(rng, 2, 10, 17 * 16, 12 * 16)
    expected = roi_pool_reference(features, rois, 4, 1 / 16)
    np.testing.assert_array_equal(_graph(4, 1 / 16, (17, 12), 22)(features, rois).numpy(), expected)
    with tf.GradientTape() as tape:  # and the gradient through the split / concat
        f = tf.constant(features)
        tape.watch(f)
        loss = tf.reduce_sum(tf.function(lambda f: roi_pool(f, rois, 4, 1 / 16))(f))
    np.testing.assert_array_equal(
        tape.gradient(loss, f).numpy(),
        roi_pool_reference_grad(features, rois, 4, 1 / 16, np.ones(expected.shape)),
    )


def test_roi_pool_bin_edges_match_float32():
    # The int32 emulation of torchvision's float32 `floor(i * (L / p))` / `ceil(...)`.
    lengths = np.concatenate(
        [np.arange(1, 1200), np.random.default_rng(0).integers(1, 2**23, 3000)]
    )
    for p in (1, 3, 6, 7, 14, 100, 128):
        floors, ceils = roi_pool_module._float32_bin_edges(tf.constant(lengths, tf.int32), p)
        value = (
            np.arange(p + 1, dtype=np.float32)
            * (lengths.astype(np.float32) / np.float32(p))[:, None]
        )
        np.testing.assert_array_equal(floors.numpy(), np.floor(value))
        np.testing.assert_array_equal(ceils.numpy(), np.ceil(value))


def test_roi_pool_keeps_feature_dtype(rng):
    features = rng.standard_normal((1, 6, 6, 2)).astype(np.float16)
    rois = np.array([[[0, 0, 50, 70], [20, 10, 90, 90]]], np.float32)
    out = RoIPool(pool_size=2, spatial_scale=1 / 16)(features, rois)
    assert out.dtype == tf.float16
    np.testing.assert_array_equal(out.numpy(), roi_pool_reference(features, rois, 2, 1 / 16))
    layer = RoIPool(pool_size=2, dtype="mixed_float16")
    assert layer(features.astype(np.float32), rois).dtype == tf.float32


def test_roi_pool_bad_inputs():
    for bad in (0, -1, 2.5, True, "7", (2,), (2, 0), (2, 3, 4), 129):
        with pytest.raises(ValueError, match="pool_size.*got"):
            RoIPool(pool_size=bad)
    for bad in (0, -0.5, float("nan"), float("inf"), "x", None):
        with pytest.raises(ValueError, match="spatial_scale.*got"):
            RoIPool(spatial_scale=bad)
    layer = RoIPool(pool_size=2)
    rois = np.zeros((1, 3, 4), np.float32)
    with pytest.raises(ValueError, match=r"rank 4 \[B, H, W, C\], got shape \(4, 4, 1\)"):
        layer(MAP_4X4[0], rois)
    with pytest.raises(
        ValueError, match=r"rois must have shape \[B, N, 4\], got shape \(1, 3, 5\)"
    ):
        layer(MAP_4X4, np.zeros((1, 3, 5), np.float32))
    with pytest.raises(ValueError, match=r"rois must have shape \[B, N, 4\], got shape \(3, 4\)"):
        layer(MAP_4X4, rois[0])
    with pytest.raises(ValueError, match="same batch size, got 1 and 2"):
        layer(MAP_4X4, np.zeros((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match="features must be a float tensor, got dtype int32"):
        roi_pool(tf.zeros((1, 4, 4, 1), tf.int32), rois)


def test_roi_pool_layer_checks(tmp_path, rng):
    features = rng.standard_normal((2, 10, 13, 4)).astype(np.float32)
    rois = random_rois(rng, 2, 6, 10 * 8, 13 * 8)
    layer = RoIPool(pool_size=(3, 2), spatial_scale=1 / 8, name="roi_pool")
    out = check_layer(layer, [features, rois], tmp_path, atol=0)
    np.testing.assert_array_equal(out.numpy(), roi_pool_reference(features, rois, (3, 2), 1 / 8))
    assert layer.get_config()["pool_size"] == (3, 2)


def test_roi_pool_tflite_builtin_only(rng):
    features = rng.standard_normal((1, 19, 25, 8)).astype(np.float32)
    layer = RoIPool(pool_size=7, spatial_scale=1 / 16)
    model = convert_builtin_only(
        layer, [tf.TensorSpec([1, 19, 25, 8], tf.float32), tf.TensorSpec([1, 20, 4], tf.float32)]
    )
    ops = tflite_op_names(model)
    assert not [op for op in ops if op.startswith("CUSTOM")], ops
    assert "GATHER" in ops
    # No control flow: XNNPACK only accelerates the main subgraph.
    assert "IF" not in ops and "WHILE" not in ops, ops
    inside = np.clip(random_rois(rng, 1, 20, 19 * 16, 25 * 16), 0, 19 * 16)
    anywhere = random_rois(rng, 1, 20, 19 * 16, 25 * 16)
    for rois in (inside, anywhere):
        got = run_tflite(model, [features, rois], num_threads=2)[0]
        np.testing.assert_allclose(got, layer(features, rois).numpy(), atol=1e-4, rtol=0)
        np.testing.assert_array_equal(got, roi_pool_reference(features, rois, 7, 1 / 16))


def test_roi_pool_docstring_example():
    import doctest

    finder = doctest.DocTestFinder()
    (test,) = finder.find(RoIPool, "RoIPool", globs={"np": np, "RoIPool": RoIPool})
    assert doctest.DocTestRunner().run(test).failed == 0
