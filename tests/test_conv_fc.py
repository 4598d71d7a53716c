"""Tests of `ConvFC`: equal to a Dense layer on flattened windows, sliding over bigger inputs."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from layer_checks import check_layer

from kerasdet.layers import ConvFC


def make_dense(rng, in_features, units=10, activation="relu"):
    dense = keras.layers.Dense(units, activation=activation)
    dense.build((None, in_features))
    dense.set_weights([
        rng.normal(0.0, 0.2, (in_features, units)).astype(np.float32),
        rng.normal(0.0, 0.5, (units,)).astype(np.float32),
    ])
    return dense


def numpy_dense_on_windows(x, kernel, bias, window, relu=True):
    """Dense on the row-major flattened crop `x[:, i:i+kh, j:j+kw, :]` at every (i, j)."""
    kh, kw = window
    batch, height, width, _ = x.shape
    out = np.zeros((batch, height - kh + 1, width - kw + 1, kernel.shape[1]))
    for i in range(height - kh + 1):
        for j in range(width - kw + 1):
            crop = x[:, i : i + kh, j : j + kw, :].reshape(batch, -1).astype(np.float64)
            out[:, i, j] = crop @ kernel + bias
    return np.maximum(out, 0.0) if relu else out


def test_from_dense_equals_dense_on_flattened_window(rng):
    dense = make_dense(rng, 5 * 5 * 8)
    fc = ConvFC.from_dense(dense, window=(5, 5))
    x = rng.normal(size=(3, 5, 5, 8)).astype(np.float32)
    out = fc(x)
    assert out.shape == (3, 1, 1, 10)
    expected = dense(keras.layers.Flatten()(x)).numpy()
    np.testing.assert_allclose(out.numpy()[:, 0, 0], expected, atol=1e-4)
    assert (expected == 0).any() and (expected > 0).any()  # the ReLU was carried over


def test_from_dense_on_larger_input_equals_dense_on_each_window_crop(rng):
    dense = make_dense(rng, 5 * 5 * 8)
    fc = ConvFC.from_dense(dense, window=(5, 5))
    x = rng.normal(size=(2, 9, 12, 8)).astype(np.float32)
    out = fc(x).numpy()
    assert out.shape == (2, 5, 8, 10)
    kernel, bias = (np.asarray(w, np.float64) for w in dense.get_weights())
    np.testing.assert_allclose(out, numpy_dense_on_windows(x, kernel, bias, (5, 5)), atol=1e-4)


def test_rectangular_window_without_activation(rng):
    dense = make_dense(rng, 2 * 3 * 4, units=5, activation=None)
    fc = ConvFC.from_dense(dense, window=(2, 3))
    x = rng.normal(size=(1, 4, 7, 4)).astype(np.float32)
    kernel, bias = (np.asarray(w, np.float64) for w in dense.get_weights())
    out = fc(x).numpy()
    assert out.shape == (1, 3, 5, 5)
    np.testing.assert_allclose(out, numpy_dense_on_windows(x, kernel, bias, (2, 3), relu=False), atol=1e-4)


def test_parameter_count_does_not_depend_on_input_size():
    small = keras.Model(*(lambda i: (i, ConvFC(10, kernel_size=5)(i)))(keras.Input((5, 5, 8))))
    large = keras.Model(*(lambda i: (i, ConvFC(10, kernel_size=5)(i)))(keras.Input((20, 30, 8))))
    assert small.count_params() == large.count_params() == 5 * 5 * 8 * 10 + 10
    assert small.output_shape == (None, 1, 1, 10)
    assert large.output_shape == (None, 16, 26, 10)
    # Unknown spatial size works too and still has the same parameters.
    free = keras.Model(*(lambda i: (i, ConvFC(10, kernel_size=5)(i)))(keras.Input((None, None, 8))))
    assert free.count_params() == 2010
    assert free(np.zeros([1, 7, 9, 8], np.float32)).shape == (1, 3, 5, 10)


def test_input_smaller_than_window_raises_naming_sizes():
    fc = ConvFC(4, kernel_size=5)
    with pytest.raises(ValueError, match=r"5×5.*4×6"):
        fc(tf.zeros([1, 4, 6, 3]))
    with pytest.raises(ValueError, match=r"5×5.*6×3"):
        ConvFC(4, kernel_size=5)(keras.Input((6, 3, 3)))
    built = ConvFC(4, kernel_size=(3, 2))
    built(tf.zeros([1, 3, 2, 1]))
    with pytest.raises(ValueError, match=r"3×2.*2×2"):
        built(tf.zeros([1, 2, 2, 1]))


def test_kernel_size_none_takes_window_from_first_build_input(rng):
    fc = ConvFC(3, activation="relu")
    x = rng.normal(size=(2, 6, 7, 4)).astype(np.float32)
    assert fc(x).shape == (2, 1, 1, 3)
    assert fc.kernel_size == (6, 7)
    assert tuple(fc.kernel.shape) == (6, 7, 4, 3)
    assert fc.count_params() == 6 * 7 * 4 * 3 + 3
    big = rng.normal(size=(1, 8, 10, 4)).astype(np.float32)
    kernel = fc.kernel.numpy().reshape(-1, 3).astype(np.float64)
    out = fc(big).numpy()
    assert out.shape == (1, 3, 4, 3)
    np.testing.assert_allclose(out, numpy_dense_on_windows(big, kernel, fc.bias.numpy(), (6, 7)), atol=1e-4)
    assert fc.get_config()["kernel_size"] == (6, 7)


def test_kernel_size_none_needs_static_spatial_size():
    with pytest.raises(ValueError, match="static height and width"):
        ConvFC(3)(keras.Input((None, None, 4)))


def test_load_dense_weights_rejects_mismatched_dense(rng):
    with pytest.raises(ValueError, match=r"5×5"):
        ConvFC(10, kernel_size=5).load_dense_weights(make_dense(rng, 5 * 5 * 8 + 1))
    with pytest.raises(ValueError, match="units"):
        ConvFC(11, kernel_size=5).load_dense_weights(make_dense(rng, 5 * 5 * 8))
    fc = ConvFC(10, kernel_size=5)
    fc.build((None, 5, 5, 3))
    with pytest.raises(ValueError, match="8 input channels"):
        fc.load_dense_weights(make_dense(rng, 5 * 5 * 8))
    with pytest.raises(ValueError, match="built"):
        ConvFC(10, kernel_size=5).load_dense_weights(keras.layers.Dense(10))


@pytest.mark.parametrize("kernel_size", [3, None])
def test_check_layer(kernel_size, rng, tmp_path):
    x = rng.normal(size=(2, 5, 6, 3)).astype(np.float32)
    out = check_layer(ConvFC(4, kernel_size=kernel_size, activation="relu"), [x], tmp_path)
    assert out.shape == ((2, 3, 4, 4) if kernel_size else (2, 1, 1, 4))


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="units.*0"):
        ConvFC(0)
    with pytest.raises(ValueError, match=r"kernel_size.*\(3, 0\)"):
        ConvFC(4, kernel_size=(3, 0))
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        ConvFC(4)(tf.zeros([2, 5]))


def test_compute_output_shape_before_build_with_kernel_size_none():
    assert ConvFC(4).compute_output_shape((None, 5, 7, 3)) == (None, 1, 1, 4)
    assert ConvFC(4, kernel_size=3).compute_output_shape((None, 5, 7, 3)) == (None, 3, 5, 4)
