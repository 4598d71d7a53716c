"""OverFeat architectures: the paper's parameter counts, spatial outputs, strides, and the
dense-equals-crops property of FC-as-convolution."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasdet.analysis import spatial_geometry
from kerasdet.layers.offset_max_pool import InterleaveOffsets, OffsetMaxPool
from kerasdet.models.overfeat import overfeat_classifier

# (input size) → spatial output of OverFeat-accurate: the paper's six detection scales.
ACCURATE_SCALES = {
    (221, 221): (1, 1),
    (245, 245): (1, 1),
    (281, 317): (2, 3),
    (317, 389): (3, 5),
    (389, 461): (5, 7),
    (425, 497): (6, 8),
    (461, 569): (7, 10),
}


@pytest.fixture(scope="module")
def accurate():
    return overfeat_classifier("accurate", num_classes=1000)


def test_accurate_has_the_papers_parameter_count(accurate):
    assert accurate.count_params() == 144_656_488


def test_fast_has_the_papers_parameter_count():
    model = overfeat_classifier("fast", num_classes=1000)
    assert model.count_params() == 145_920_872
    geometry = spatial_geometry(model, (231, 231))
    assert geometry.output_size == (1, 1)
    assert geometry.effective_stride == (32, 32)


@pytest.mark.parametrize("size,expected", sorted(ACCURATE_SCALES.items()))
def test_accurate_spatial_output_at_the_six_scales(accurate, size, expected):
    assert spatial_geometry(accurate, size).output_size == expected
    # The model itself agrees with the analysis.
    assert tuple(accurate.compute_output_shape((1, *size, 3))[1:3]) == expected


def test_accurate_last_pool_sees_15x15_and_stride_is_36(accurate):
    pre_pool = keras.Model(accurate.input, accurate.get_layer("conv6").output)
    assert tuple(pre_pool.compute_output_shape((1, 221, 221, 3))[1:3]) == (15, 15)
    geometry = spatial_geometry(accurate, (221, 221))
    assert geometry.effective_stride == (36, 36)
    assert geometry.receptive_field == (317, 317)


def test_parameter_count_does_not_depend_on_input_size():
    small = overfeat_classifier("accurate", input_shape=(221, 221, 3))
    large = overfeat_classifier("accurate", input_shape=(461, 569, 3))
    assert small.count_params() == large.count_params() == 144_656_488


def test_offset_pooling_is_three_times_denser_with_stride_12():
    model = overfeat_classifier("accurate", last_pool="offset")
    assert spatial_geometry(model, (461, 569)).output_size == (21, 30)
    assert spatial_geometry(model, (221, 221)).output_size == (3, 3)
    assert spatial_geometry(model, (221, 221)).effective_stride == (12, 12)
    assert tuple(model.compute_output_shape((1, 461, 569, 3))[1:3]) == (21, 30)


def test_stride2_last_pool_alternative():
    model = overfeat_classifier("accurate", last_pool="stride2")
    geometry = spatial_geometry(model, (221, 221))
    assert geometry.output_size == (3, 3)
    assert geometry.effective_stride == (24, 24)


def test_tiny_geometry_and_forward_shape():
    model = overfeat_classifier("tiny", num_classes=4)
    geometry = spatial_geometry(model, (86, 86))
    assert geometry.output_size == (1, 1)
    assert geometry.effective_stride == (24, 24)
    out = model(np.zeros([2, 86 + 24 * 3, 86 + 24, 3], "float32"))
    assert out.shape == (2, 4, 2, 4)


def test_dense_output_equals_classifier_on_each_crop():
    # Padding-free variant: then location (i, j) of the dense output is exactly the
    # classifier applied to the crop at (i·stride, j·stride).
    keras.utils.set_random_seed(0)
    model = overfeat_classifier("tiny", num_classes=5, conv_padding="valid")
    stride = spatial_geometry(model, (86, 86)).effective_stride[0]
    image = np.random.default_rng(0).uniform(0, 255, [1, 86 + 2 * stride, 86 + 3 * stride, 3]).astype("float32")
    dense = model(image).numpy()
    assert dense.shape == (1, 3, 4, 5)
    crops = np.concatenate(
        [image[:, i * stride : i * stride + 86, j * stride : j * stride + 86] for i in range(3) for j in range(4)]
    )
    per_crop = model(crops).numpy().reshape(3, 4, 5)
    np.testing.assert_allclose(dense[0], per_crop, rtol=1e-4, atol=1e-4)


def test_offset_pool_matches_naive_pooling_at_each_offset():
    rng = np.random.default_rng(1)
    x = rng.normal(size=[2, 11, 8, 3]).astype("float32")
    out = OffsetMaxPool(3)(x).numpy().reshape(2, 3, 3, 3, 2, 3)  # [B, Δy, Δx, i, j, C]
    for dy in range(3):
        for dx in range(3):
            for i in range(3):
                for j in range(2):
                    y0, x0 = dy + 3 * i, dx + 3 * j
                    window = x[:, y0 : min(y0 + 3, 11), x0 : min(x0 + 3, 8)]
                    np.testing.assert_allclose(out[:, dy, dx, i, j], window.max(axis=(1, 2)))


def test_interleave_places_offsets_between_locations():
    k, h, w = 3, 2, 2
    maps = np.arange(k * k * h * w, dtype="float32").reshape(k * k, h, w, 1)
    out = InterleaveOffsets(k)(maps).numpy()[0, :, :, 0]
    for dy in range(k):
        for dx in range(k):
            for i in range(h):
                for j in range(w):
                    assert out[k * i + dy, k * j + dx] == maps[dy * k + dx, i, j, 0]


def test_offset_classifier_equals_shifted_standard_classifier():
    # Offset (Δy, Δx) of the last pool == the standard model on the image shifted by
    # Δ × (stride before the last pool) pixels, away from the ceil-mode edge.
    keras.utils.set_random_seed(3)
    standard = overfeat_classifier("tiny", num_classes=3, conv_padding="valid")
    offset = overfeat_classifier("tiny", num_classes=3, conv_padding="valid", last_pool="offset")
    offset.set_weights(standard.get_weights())
    image = np.random.default_rng(3).uniform(0, 255, [1, 86 + 2 * 24 + 16, 86 + 24 + 16, 3]).astype("float32")
    dense = offset(image).numpy()
    for dy in range(3):
        for dx in range(3):
            shifted = image[:, 8 * dy :, 8 * dx :]
            reference = standard(shifted).numpy()
            rows, cols = reference.shape[1:3]
            np.testing.assert_allclose(dense[0, dy :: 3, dx :: 3][:rows, :cols], reference[0], rtol=1e-4, atol=1e-4)


def test_offset_layers_config_and_save(tmp_path):
    model = overfeat_classifier("tiny", num_classes=3, last_pool="offset")
    image = np.random.default_rng(0).uniform(0, 255, [1, 110, 134, 3]).astype("float32")
    expected = model(image).numpy()
    path = tmp_path / "overfeat_tiny.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_allclose(restored(image).numpy(), expected, atol=1e-5)


def test_spatial_geometry_rejects_too_small_input():
    model = overfeat_classifier("tiny")
    with pytest.raises(ValueError, match="too small"):
        spatial_geometry(model, (40, 40))


def test_unknown_architecture_and_pool_mode_are_named():
    with pytest.raises(ValueError, match="'huge'"):
        overfeat_classifier("huge")
    with pytest.raises(ValueError, match="'ceil'"):
        overfeat_classifier("tiny", last_pool="ceil")


def test_offset_pool_converts_to_builtin_tflite():
    from kerasdet.export import convert_builtin_only, tflite_op_names

    model = overfeat_classifier("tiny", num_classes=3, last_pool="offset")
    ops = tflite_op_names(convert_builtin_only(model, [tf.TensorSpec([1, 110, 110, 3], tf.float32)]))
    assert not [op for op in ops if op.startswith("CUSTOM")], ops


def test_batch_norm_option_keeps_geometry_and_dense_equals_crops():
    """Batch norm (inference mode) is a per-channel affine map: geometry, parameter count
    (conv biases → 4 values per channel) and the dense-equals-crops identity all hold."""
    keras.utils.set_random_seed(0)
    plain = overfeat_classifier("tiny", num_classes=5, conv_padding="valid")
    model = overfeat_classifier("tiny", num_classes=5, conv_padding="valid", batch_norm=True)
    assert spatial_geometry(model, (86, 86)) == spatial_geometry(plain, (86, 86))
    conv_channels = sum(layer.filters for layer in plain.layers if isinstance(layer, keras.layers.Conv2D))
    assert model.count_params() == plain.count_params() + 3 * conv_channels  # −bias, +γ β mean var
    # Non-trivial statistics, so the normalization is not the identity.
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 2, c), rng.normal(0, 1, c), rng.normal(0, 1, c), rng.uniform(0.5, 2, c)])
    stride = spatial_geometry(model, (86, 86)).effective_stride[0]
    image = rng.uniform(0, 255, [1, 86 + 2 * stride, 86 + stride, 3]).astype("float32")
    dense = model(image).numpy()
    crops = np.concatenate(
        [image[:, i * stride : i * stride + 86, j * stride : j * stride + 86] for i in range(3) for j in range(2)]
    )
    np.testing.assert_allclose(dense[0], model(crops).numpy().reshape(3, 2, 5), rtol=1e-4, atol=1e-4)
