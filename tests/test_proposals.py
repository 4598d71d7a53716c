"""ProposalLayer: decode, clip, min size, top-k, NMS, padding, train/test sizes."""

import keras
import numpy as np
import tensorflow as tf

from kerasdet.layers import AnchorGenerator
from kerasdet.models import ProposalLayer

SIZE = (128, 128)


def rpn_outputs(batch, seed=0):
    anchors = AnchorGenerator(sizes=(16, 32, 64))(image_shape=SIZE)  # 8·8·9 = 576
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(batch, anchors.shape[0])).astype("float32")
    deltas = rng.normal(scale=0.5, size=(batch, anchors.shape[0], 4)).astype("float32")
    return anchors, logits, deltas


def test_proposals_inside_image_sorted_padded():
    anchors, logits, deltas = rpn_outputs(2)
    layer = ProposalLayer(pre_nms_top_k_test=100, post_nms_top_k_test=80, min_size=2.0)
    out = layer(logits, deltas, anchors, image_shape=SIZE)
    boxes, scores, valid, num = (out[k].numpy() for k in ("boxes", "scores", "valid", "num_proposals"))
    assert boxes.shape == (2, 80, 4) and scores.shape == (2, 80) and valid.shape == (2, 80) and num.shape == (2,)
    assert (boxes >= 0).all() and (boxes[..., 0::2] <= SIZE[0]).all() and (boxes[..., 1::2] <= SIZE[1]).all()
    for i in range(2):
        n = num[i]
        assert 0 < n <= 80
        assert valid[i, :n].all() and not valid[i, n:].any()
        assert (np.diff(scores[i, :n]) <= 1e-7).all()  # sorted by objectness
        assert (boxes[i, n:] == 0).all() and (scores[i, n:] == 0).all()
        kept = boxes[i, :n]
        assert ((kept[:, 2] - kept[:, 0] > 2.0) & (kept[:, 3] - kept[:, 1] > 2.0)).all()
        # NMS: no two kept boxes overlap more than 0.7
        iou = _iou(kept, kept)
        np.fill_diagonal(iou, 0)
        assert iou.max() <= 0.7 + 1e-6


def _iou(a, b):
    y1 = np.maximum(a[:, None, 0], b[None, :, 0])
    x1 = np.maximum(a[:, None, 1], b[None, :, 1])
    y2 = np.minimum(a[:, None, 2], b[None, :, 2])
    x2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(y2 - y1, 0, None) * np.clip(x2 - x1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def test_top_scoring_box_survives_and_training_sizes():
    anchors, logits, deltas = rpn_outputs(1)
    deltas[:] = 0.0
    logits[0, 300] = 50.0  # anchor 300 ranks first; its (clipped) box is the first proposal
    layer = ProposalLayer(pre_nms_top_k_train=200, post_nms_top_k_train=50, pre_nms_top_k_test=20, post_nms_top_k_test=5)
    test = layer(logits, deltas, anchors, image_shape=SIZE)
    expected = np.clip(anchors.numpy()[300], 0, 128)
    np.testing.assert_allclose(test["boxes"].numpy()[0, 0], expected, atol=1e-4)
    assert test["boxes"].shape == (1, 5, 4)
    train = layer(logits, deltas, anchors, image_shape=SIZE, training=True)
    assert train["boxes"].shape == (1, 50, 4)


def test_all_dropped_gives_empty_padding():
    anchors, logits, deltas = rpn_outputs(1)
    layer = ProposalLayer(min_size=1000.0, post_nms_top_k_test=7)
    out = layer(logits, deltas, anchors, image_shape=SIZE)
    assert int(out["num_proposals"][0]) == 0
    assert not out["valid"].numpy().any() and (out["boxes"].numpy() == 0).all()


def test_softmax_logits_and_unknown_batch_and_config():
    anchors, logits, deltas = rpn_outputs(3)
    layer = ProposalLayer(pre_nms_top_k_test=50, post_nms_top_k_test=10)
    two = np.stack([np.zeros_like(logits), logits], axis=-1)
    a = layer(logits, deltas, anchors, image_shape=SIZE)
    b = layer(two, deltas, anchors, image_shape=SIZE)
    np.testing.assert_allclose(a["boxes"], b["boxes"], atol=1e-5)
    fn = tf.function(
        lambda lg, d: layer(lg, d, anchors, image_shape=SIZE),
        input_signature=[tf.TensorSpec([None, None]), tf.TensorSpec([None, None, 4])],
    )
    c = fn(logits, deltas)
    for key in a:
        np.testing.assert_allclose(a[key], c[key], atol=1e-5)
    clone = ProposalLayer.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer)).nms_iou == 0.7
