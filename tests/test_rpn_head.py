"""Tests of `RPNHead`: a NumPy reference of the convs, and the anchor-aligned output order."""

import numpy as np
import pytest
import tensorflow as tf
from layer_checks import check_layer

from kerasdet.layers import AnchorGenerator, RPNHead


def randomize(layer, rng):
    """Random weights *and* biases, so a wrong order or a missing bias shows."""
    layer.set_weights([rng.normal(0.0, 0.3, w.shape).astype(np.float32) for w in layer.get_weights()])


def numpy_head(x, head):
    """NumPy reference: 3×3 'same' conv + ReLU, then 1×1 convs, without reshaping."""
    k1, b1 = (np.asarray(w, np.float64) for w in head.conv.get_weights())
    k2, b2 = (np.asarray(w, np.float64) for w in head.objectness_conv.get_weights())
    k3, b3 = (np.asarray(w, np.float64) for w in head.delta_conv.get_weights())
    x = np.asarray(x, np.float64)
    padded = np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)])
    batch, height, width, _ = x.shape
    hidden = np.zeros((batch, height, width, k1.shape[-1]))
    for i in range(height):
        for j in range(width):
            window = padded[:, i : i + 3, j : j + 3, :]
            hidden[:, i, j] = np.einsum("bhwc,hwcd->bd", window, k1) + b1
    hidden = np.maximum(hidden, 0.0)
    return hidden @ k2[0, 0] + b2, hidden @ k3[0, 0] + b3


@pytest.mark.parametrize("objectness, per_anchor", [("sigmoid", 1), ("softmax", 2)])
def test_outputs_match_numpy_convs_in_row_column_anchor_order(objectness, per_anchor, rng):
    k, batch, height, width = 3, 2, 4, 5
    head = RPNHead(num_anchors=k, channels=6, objectness=objectness)
    x = rng.normal(size=(batch, height, width, 7)).astype(np.float32)
    head(x)
    randomize(head, rng)
    out = head(x)
    logits, deltas = out["objectness_logits"].numpy(), out["box_deltas"].numpy()
    if objectness == "sigmoid":
        assert logits.shape == (batch, height * width * k)
    else:
        assert logits.shape == (batch, height * width * k, 2)
    assert deltas.shape == (batch, height * width * k, 4)

    ref_logits, ref_deltas = numpy_head(x, head)
    assert ref_logits.shape[-1] == k * per_anchor and ref_deltas.shape[-1] == 4 * k
    for b in range(batch):
        for i in range(height):
            for j in range(width):
                for a in range(k):
                    row = (i * width + j) * k + a
                    if objectness == "sigmoid":
                        assert logits[b, row] == pytest.approx(ref_logits[b, i, j, a], abs=1e-4)
                    else:
                        np.testing.assert_allclose(
                            logits[b, row], ref_logits[b, i, j, 2 * a : 2 * a + 2], atol=1e-4
                        )
                    np.testing.assert_allclose(
                        deltas[b, row], ref_deltas[b, i, j, 4 * a : 4 * a + 4], atol=1e-4
                    )


def test_output_index_matches_raw_conv_outputs_of_sublayers(rng):
    k, height, width = 9, 3, 4
    head = RPNHead(num_anchors=k, channels=8)
    x = tf.constant(rng.normal(size=(2, height, width, 5)).astype(np.float32))
    head(x)
    randomize(head, rng)
    out = head(x)
    hidden = head.conv(x)
    raw_logits = head.objectness_conv(hidden).numpy()  # [B, H, W, k]
    raw_deltas = head.delta_conv(hidden).numpy()  # [B, H, W, 4k]
    logits, deltas = out["objectness_logits"].numpy(), out["box_deltas"].numpy()
    for b in range(2):
        for i in range(height):
            for j in range(width):
                for a in range(k):
                    row = (i * width + j) * k + a
                    assert logits[b, row] == raw_logits[b, i, j, a]
                    for c in range(4):
                        assert deltas[b, row, c] == raw_deltas[b, i, j, a * 4 + c]


def test_hidden_conv_is_3x3_relu_and_heads_are_1x1():
    head = RPNHead(num_anchors=9, channels=16, objectness="softmax")
    head(tf.zeros([1, 6, 6, 4]))
    assert tuple(head.conv.kernel.shape) == (3, 3, 4, 16)
    assert tuple(head.objectness_conv.kernel.shape) == (1, 1, 16, 18)
    assert tuple(head.delta_conv.kernel.shape) == (1, 1, 16, 36)
    assert head.count_params() == (9 * 4 * 16 + 16) + (16 * 18 + 18) + (16 * 36 + 36)


def test_multi_level_list_input_concatenates_levels(rng):
    k = 3
    head = RPNHead(num_anchors=k, channels=6, objectness="softmax")
    levels = [rng.normal(size=(2, h, w, 5)).astype(np.float32) for h, w in [(4, 6), (2, 3), (1, 1)]]
    head(levels[0])
    randomize(head, rng)
    out = head(levels)
    total = (24 + 6 + 1) * k
    assert out["objectness_logits"].shape == (2, total, 2)
    assert out["box_deltas"].shape == (2, total, 4)
    start = 0
    for level in levels:
        ref_logits, ref_deltas = numpy_head(level, head)
        n = level.shape[1] * level.shape[2] * k
        np.testing.assert_allclose(
            out["objectness_logits"].numpy()[:, start : start + n], ref_logits.reshape(2, n, 2), atol=1e-4
        )
        np.testing.assert_allclose(
            out["box_deltas"].numpy()[:, start : start + n], ref_deltas.reshape(2, n, 4), atol=1e-4
        )
        start += n


def test_output_count_lines_up_with_anchor_generator():
    anchors = AnchorGenerator()(image_shape=(600, 1000))
    out = RPNHead(num_anchors=9, channels=4)(tf.zeros([1, 38, 63, 3]))
    assert out["objectness_logits"].shape == (1, anchors.shape[0])
    assert out["box_deltas"].shape == (1, anchors.shape[0], 4)


@pytest.mark.parametrize("objectness", ["sigmoid", "softmax"])
def test_check_layer(objectness, rng, tmp_path):
    x = rng.normal(size=(2, 5, 6, 4)).astype(np.float32)
    out = check_layer(RPNHead(num_anchors=3, channels=8, objectness=objectness), [x], tmp_path)
    assert out["box_deltas"].shape == (2, 90, 4)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="'tanh'"):
        RPNHead(objectness="tanh")
    with pytest.raises(ValueError, match="num_anchors.*0"):
        RPNHead(num_anchors=0)
    with pytest.raises(ValueError, match="channels.*-1"):
        RPNHead(channels=-1)


def numpy_separable_hidden(x, head):
    """NumPy reference of the separable conv: a k×k depthwise 'same' conv (one filter per
    input channel), then a 1×1 conv with bias, then ReLU."""
    depthwise, pointwise, bias = (np.asarray(w, np.float64) for w in head.conv.get_weights())
    size = head.kernel_size
    x = np.asarray(x, np.float64)
    pad = size // 2
    padded = np.pad(x, [(0, 0), (pad, pad), (pad, pad), (0, 0)])
    batch, height, width, channels = x.shape
    spatial = np.zeros_like(x)
    for i in range(height):
        for j in range(width):
            window = padded[:, i : i + size, j : j + size, :]
            spatial[:, i, j] = np.einsum("bhwc,hwc->bc", window, depthwise[..., 0])
    return np.maximum(spatial @ pointwise[0, 0] + bias, 0.0)


@pytest.mark.parametrize("kernel_size", [3, 5])
def test_separable_conv_matches_numpy_depthwise_then_pointwise(kernel_size, rng):
    k, height, width = 3, 4, 6
    head = RPNHead(num_anchors=k, channels=8, separable=True, kernel_size=kernel_size)
    x = rng.normal(size=(2, height, width, 5)).astype(np.float32)
    head(x)
    randomize(head, rng)
    assert tuple(head.conv.depthwise_kernel.shape) == (kernel_size, kernel_size, 5, 1)
    assert tuple(head.conv.pointwise_kernel.shape) == (1, 1, 5, 8)
    out = head(x)
    hidden = numpy_separable_hidden(x, head)
    k2, b2 = (np.asarray(w, np.float64) for w in head.objectness_conv.get_weights())
    k3, b3 = (np.asarray(w, np.float64) for w in head.delta_conv.get_weights())
    np.testing.assert_allclose(out["objectness_logits"].numpy(), (hidden @ k2[0, 0] + b2).reshape(2, -1), atol=1e-4)
    np.testing.assert_allclose(out["box_deltas"].numpy(), (hidden @ k3[0, 0] + b3).reshape(2, -1, 4), atol=1e-4)


def test_separable_head_is_about_nine_times_cheaper_on_a_wide_map():
    """ResNet-50 C4's 1024 channels: the paper's dense 3×3 conv to 512 has 9·1024·512
    weights; a 5×5 depthwise + 1×1 to 512 has 25·1024 + 1024·512."""
    dense = RPNHead(num_anchors=15, channels=512)
    separable = RPNHead(num_anchors=15, channels=512, separable=True, kernel_size=5)
    for head in (dense, separable):
        head(tf.zeros([1, 2, 2, 1024]))
    assert dense.conv.count_params() == 9 * 1024 * 512 + 512
    assert separable.conv.count_params() == 25 * 1024 + 1024 * 512 + 512
    assert dense.conv.count_params() / separable.conv.count_params() > 8.5


def test_separable_depthwise_start_keeps_the_input_scale():
    """The depthwise kernel starts variance-preserving (not σ = 0.01), so the hidden map of
    a fresh head is not ~100× smaller than a dense head's."""
    x = tf.random.stateless_normal([1, 16, 16, 256], seed=[1, 2])
    dense = RPNHead(num_anchors=3, channels=128)
    separable = RPNHead(num_anchors=3, channels=128, separable=True, kernel_size=5)
    ratio = float(tf.math.reduce_std(separable.conv(x)) / tf.math.reduce_std(dense.conv(x)))
    assert 0.1 < ratio < 10.0


def test_separable_check_layer(rng, tmp_path):
    x = rng.normal(size=(2, 5, 6, 4)).astype(np.float32)
    head = RPNHead(num_anchors=3, channels=8, separable=True, kernel_size=5)
    out = check_layer(head, [x], tmp_path)
    assert out["box_deltas"].shape == (2, 90, 4)


def test_bad_separable_arguments_raise():
    with pytest.raises(ValueError, match="kernel_size.*4"):
        RPNHead(kernel_size=4)
    with pytest.raises(ValueError, match="separable.*'yes'"):
        RPNHead(separable="yes")
