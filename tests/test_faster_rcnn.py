"""FasterRCNN: detections from a call, training with fit, losses, saving (tiny backbone, 128×128)."""

import time
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasdet.data.shapes import make_example
from kerasdet.models import FasterRCNN, ProposalLayer

SIZE = (128, 128)
NUM_CLASSES = 3


def small_model(**kwargs):
    keras.utils.set_random_seed(0)
    kwargs.setdefault("head_units", (64, 64))
    kwargs.setdefault("rpn_batch_size", 64)
    kwargs.setdefault("rcnn_batch_size", 32)
    kwargs.setdefault("max_detections", 10)
    kwargs.setdefault(
        "proposal_layer",
        ProposalLayer(pre_nms_top_k_train=300, post_nms_top_k_train=64, pre_nms_top_k_test=200, post_nms_top_k_test=32),
    )
    return FasterRCNN(NUM_CLASSES, image_size=SIZE, **kwargs)


def shapes_batch(n, max_boxes=6):
    images, boxes, classes = [], np.zeros([n, max_boxes, 4], "float32"), -np.ones([n, max_boxes], "int32")
    for i in range(n):
        ex = make_example("train", i, "small")
        assert ex["image"].shape[:2] == SIZE
        images.append(ex["image"].astype("float32"))
        k = min(len(ex["classes"]), max_boxes)
        boxes[i, :k] = ex["boxes"][:k]
        classes[i, :k] = ex["classes"][:k] % NUM_CLASSES
    return np.stack(images), {"boxes": boxes, "classes": classes}


def check_detections(out, batch, d=10):
    assert set(out) == {"boxes", "scores", "classes", "num_detections"}
    assert out["boxes"].shape == (batch, d, 4) and out["boxes"].dtype == tf.float32
    assert out["scores"].shape == (batch, d) and out["scores"].dtype == tf.float32
    assert out["classes"].shape == (batch, d) and out["classes"].dtype == tf.int32
    assert out["num_detections"].shape == (batch,) and out["num_detections"].dtype == tf.int32
    boxes, n = out["boxes"].numpy(), out["num_detections"].numpy()
    assert (boxes >= 0).all() and (boxes[..., 0::2] <= SIZE[0]).all() and (boxes[..., 1::2] <= SIZE[1]).all()
    classes = out["classes"].numpy()
    assert ((classes >= 0) & (classes < NUM_CLASSES)).all()
    for i in range(batch):
        assert (out["scores"].numpy()[i, n[i]:] == 0).all()
        assert (out["scores"].numpy()[i, : n[i]] >= 0.05 - 1e-6).all()


@pytest.fixture(scope="module")
def trained():
    """A model after 30 fit steps on 4 shapes images (batch 4), with its loss history."""
    model = small_model()
    images, gt = shapes_batch(4)
    ds = tf.data.Dataset.from_tensor_slices((images, gt)).batch(4).repeat()
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    start = time.time()
    history = model.fit(ds, steps_per_epoch=1, epochs=30, verbose=0)
    print(f"30 steps: {time.time() - start:.1f}s")
    return model, images, gt, history.history


@pytest.mark.parametrize("batch", [1, 4])
def test_call_returns_postprocessed_detections(batch):
    model = small_model()
    images, _ = shapes_batch(batch)
    check_detections(model(images), batch)
    # predict gives the same as a call
    predicted = model.predict(images, verbose=0)
    np.testing.assert_allclose(predicted["boxes"], model(images)["boxes"].numpy(), atol=1e-3)


def test_fit_reduces_loss_and_logs_named_losses(trained):
    model, images, gt, history = trained
    for name in ("loss", "rpn_objectness", "rpn_box", "rcnn_class", "rcnn_box"):
        assert name in history and len(history[name]) == 30
        assert np.isfinite(history[name]).all()
    first, last = np.mean(history["loss"][:5]), np.mean(history["loss"][-5:])
    print(f"loss first 5 steps {first:.3f}, last 5 steps {last:.3f}")
    assert last < 0.8 * first, (first, last)
    # test_step reports the same names
    logs = model.evaluate(images, gt, batch_size=4, verbose=0, return_dict=True)
    assert set(logs) == {"loss", "rpn_objectness", "rpn_box", "rcnn_class", "rcnn_box"}
    check_detections(model(images), 4)


def test_losses_finite_without_objects_and_batch_one():
    model = small_model()
    images = np.random.default_rng(0).uniform(0, 255, (1, *SIZE, 3)).astype("float32")
    gt = {"boxes": np.zeros([1, 3, 4], "float32"), "classes": -np.ones([1, 3], "int32")}
    losses = model.compute_losses(images, gt)
    assert all(np.isfinite(float(v)) for v in losses.values())
    assert float(losses["rpn_box"]) == 0.0 and float(losses["rcnn_box"]) == 0.0
    model.compile(optimizer=keras.optimizers.SGD(1e-3))
    logs = model.fit(images, gt, batch_size=1, epochs=1, verbose=0).history
    assert all(np.isfinite(v[0]) for v in logs.values())


def test_save_weights_and_keras_round_trip(trained, tmp_path):
    model, images, _, _ = trained
    expected = model(images)
    path = str(tmp_path / "frcnn.weights.h5")
    model.save_weights(path)
    other = small_model()
    other.load_weights(path)
    for key in expected:
        np.testing.assert_allclose(other(images)[key], expected[key], atol=1e-4)

    path = str(tmp_path / "frcnn.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, FasterRCNN)
    config, loaded_config = model.get_config(), loaded.get_config()
    for key in ("num_classes", "backbone", "image_size", "head_units", "max_detections", "seed"):
        assert loaded_config[key] == config[key]
    assert loaded_config["proposal_layer"]["config"] == config["proposal_layer"]["config"]
    for key in expected:
        np.testing.assert_allclose(loaded(images)[key], expected[key], atol=1e-4)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        FasterRCNN(0, image_size=SIZE)
    with pytest.raises(ValueError, match="valid names"):
        FasterRCNN(2, backbone="alexnet", image_size=SIZE)


def test_image_size_not_a_multiple_of_the_stride_warns():
    with pytest.warns(UserWarning, match=r"image_size \(120, 120\) is not a multiple of the backbone stride 16.*\(128, 128\)"):
        FasterRCNN(3, backbone="tiny", image_size=(120, 120), head_units=(16, 16))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        FasterRCNN(3, backbone="tiny", image_size=(128, 128), head_units=(16, 16))


def test_rpn_iou_thresholds_reach_the_anchor_matcher(monkeypatch):
    """`rpn_positive_iou` / `rpn_negative_iou` (the notes' 0.5 instead of the paper's 0.7)
    are the RPN matcher's thresholds, and survive `get_config`."""
    import kerasdet.models.faster_rcnn as module

    seen = {}
    original = module.rpn_targets

    def recording(*args, **kwargs):
        seen.update(high=kwargs["high"], low=kwargs["low"], best=kwargs["best_matches_per_gt"])
        return original(*args, **kwargs)

    monkeypatch.setattr(module, "rpn_targets", recording)
    images, gt = shapes_batch(1)
    model = small_model(rpn_positive_iou=0.5, rpn_negative_iou=0.2, rpn_best_anchors_per_gt=3)
    assert all(np.isfinite(float(v)) for v in model.compute_losses(images, gt).values())
    assert seen == {"high": 0.5, "low": 0.2, "best": 3}
    config = model.get_config()
    assert (config["rpn_positive_iou"], config["rpn_negative_iou"], config["rpn_best_anchors_per_gt"]) == (0.5, 0.2, 3)
    with pytest.raises(ValueError, match=r"rpn_negative_iou=0\.6, rpn_positive_iou=0\.5"):
        small_model(rpn_positive_iou=0.5, rpn_negative_iou=0.6)
    with pytest.raises(ValueError, match=r"`rpn_best_anchors_per_gt` must be an int >= 1, got 0"):
        small_model(rpn_best_anchors_per_gt=0)


def test_loss_weights_scale_their_terms_and_survive_get_config():
    images, gt = shapes_batch(2)
    plain = small_model()
    weights = {"rpn_box": 4.0, "rcnn_class": 0.5}
    weighted = small_model(loss_weights=weights)
    weighted.set_weights(plain.get_weights())
    base, scaled = plain.compute_losses(images, gt), weighted.compute_losses(images, gt)
    terms = ("rpn_objectness", "rpn_box", "rcnn_class", "rcnn_box")
    for name in terms:
        np.testing.assert_allclose(float(scaled[name]), weights.get(name, 1.0) * float(base[name]), rtol=1e-5)
    np.testing.assert_allclose(float(scaled["loss"]), sum(float(scaled[name]) for name in terms), rtol=1e-5)
    assert weighted.get_config()["loss_weights"] == weights and plain.get_config()["loss_weights"] is None
    assert FasterRCNN.from_config(weighted.get_config()).loss_weights == weights
    with pytest.raises(ValueError, match=r"`loss_weights` has an unknown loss 'rpn'; expected one of"):
        small_model(loss_weights={"rpn": 1.0})
    with pytest.raises(ValueError, match=r"`loss_weights\['rpn_box'\]` must be a float >= 0, got -1.0"):
        small_model(loss_weights={"rpn_box": -1.0})


def test_rpn_options_configure_the_default_rpn_head():
    model = small_model(rpn_separable=True, rpn_kernel_size=5)
    assert model.rpn_head.separable and model.rpn_head.kernel_size == 5
    assert model.rpn_head.channels == 96  # min(512, tiny backbone channels), as without options
    assert small_model(rpn_channels=32).rpn_head.channels == 32
    from kerasdet.layers import RPNHead

    with pytest.raises(ValueError, match=r"with an `rpn_head` given they must stay unset, got rpn_channels=None, "
                                         r"rpn_separable=True, rpn_kernel_size=3"):
        small_model(rpn_head=RPNHead(num_anchors=9, channels=8), rpn_separable=True)
