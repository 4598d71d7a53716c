"""COCO evaluation through pycocotools, and the Keras callback that logs it."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from kerasdet.metrics import COCOEvaluator, COCOMetricCallback, coco_evaluate


def gt_batch(boxes_per_image, classes_per_image, m=4):
    b = len(boxes_per_image)
    boxes = np.zeros((b, m, 4), np.float32)
    classes = np.full((b, m), -1, np.int32)
    for i, (bx, cl) in enumerate(zip(boxes_per_image, classes_per_image, strict=True)):
        boxes[i, : len(bx)] = np.reshape(bx, (-1, 4))
        classes[i, : len(cl)] = cl
    return {"boxes": boxes, "classes": classes}


def det_batch(boxes_per_image, scores_per_image, classes_per_image, n=5, garbage=False):
    b = len(boxes_per_image)
    boxes = np.zeros((b, n, 4), np.float32)
    scores = np.zeros((b, n), np.float32)
    classes = np.zeros((b, n), np.int32)
    num = np.zeros((b,), np.int32)
    for i, (bx, sc, cl) in enumerate(
        zip(boxes_per_image, scores_per_image, classes_per_image, strict=True)
    ):
        k = len(bx)
        boxes[i, :k], scores[i, :k], classes[i, :k], num[i] = np.reshape(bx, (-1, 4)), sc, cl, k
        if garbage:  # rows past num_detections must be ignored
            boxes[i, k:] = [0, 0, 50, 50]
            scores[i, k:] = 0.99
    return {"boxes": boxes, "scores": scores, "classes": classes, "num_detections": num}


BOX_A = [10.0, 10.0, 110.0, 110.0]  # yxyx, 100x100
BOX_B = [150.0, 20.0, 190.0, 80.0]


def evaluate(gt, det, **kwargs):
    ev = COCOEvaluator(**kwargs)
    ev.update(gt, det)
    return ev.result()


def test_perfect_detections_give_ap_one(capsys):
    gt = gt_batch([[BOX_A, BOX_B], [BOX_B]], [[0, 1], [2]])
    det = det_batch([[BOX_A, BOX_B], [BOX_B]], [[0.9, 0.8], [0.7]], [[0, 1], [2]], garbage=True)
    r = evaluate(gt, det)
    for key in ("AP", "AP50", "AP75", "AR100"):
        assert r[key] == pytest.approx(1.0), key
    assert capsys.readouterr().out == ""  # pycocotools' prints are captured


def test_shifted_boxes_hand_computed_ious():
    # A 100x100 box shifted right by 20: IoU = 80*100 / (120*100) = 2/3 -> matched at
    # thresholds .50 .55 .60 .65 (4 of 10): AP50 = 1, AP75 = 0, AP = 0.4.
    gt = gt_batch([[BOX_A]], [[0]])
    r = evaluate(gt, det_batch([[[10.0, 30.0, 110.0, 130.0]]], [[0.9]], [[0]]))
    assert r["AP50"] == pytest.approx(1.0)
    assert r["AP75"] == pytest.approx(0.0)
    assert r["AP"] == pytest.approx(0.4)
    # Shifted by 10: IoU = 90/110 = 0.818 -> thresholds .50 ... .80 (7 of 10).
    r = evaluate(gt, det_batch([[[10.0, 20.0, 110.0, 120.0]]], [[0.9]], [[0]]))
    assert r["AP50"] == pytest.approx(1.0) and r["AP75"] == pytest.approx(1.0)
    assert r["AP"] == pytest.approx(0.7)


def test_missed_object_lowers_recall():
    gt = gt_batch([[BOX_A, BOX_B]], [[0, 0]])
    r = evaluate(gt, det_batch([[BOX_A]], [[0.9]], [[0]]))
    assert r["AR100"] == pytest.approx(0.5)
    assert r["AP"] == pytest.approx(51 / 101)  # precision 1 up to recall .5 (101-point)


def test_false_positive_matters_only_above_the_true_positive():
    gt = gt_batch([[BOX_A]], [[0]])
    far = [200.0, 200.0, 240.0, 240.0]
    low = evaluate(gt, det_batch([[BOX_A, far]], [[0.9, 0.1]], [[0, 0]]))
    assert low["AP"] == pytest.approx(1.0)
    high = evaluate(gt, det_batch([[BOX_A, far]], [[0.9, 0.95]], [[0, 0]]))
    assert high["AP"] == pytest.approx(0.5)  # precision 1/2 at recall 1
    wrong_class = evaluate(gt, det_batch([[BOX_A]], [[0.9]], [[1]]))
    assert wrong_class["AP"] == pytest.approx(0.0)


def test_images_without_ground_truth_or_detections():
    gt = gt_batch([[BOX_A], [], []], [[0], [], []])
    det = det_batch([[BOX_A], [], []], [[0.9], [], []], [[0], [], []], garbage=True)
    r = evaluate(gt, det)
    assert r["AP"] == pytest.approx(1.0) and r["AR100"] == pytest.approx(1.0)
    # a confident detection on an empty image is a false positive
    det = det_batch([[BOX_A], [BOX_B], []], [[0.5], [0.9], []], [[0], [0], []])
    assert evaluate(gt, det)["AP"] == pytest.approx(0.5)
    # nothing to measure at all -> NaN, not pycocotools' -1
    r = evaluate(gt_batch([[]], [[]]), det_batch([[]], [[]], [[]]))
    assert all(math.isnan(v) for v in r.values())


def test_area_ranges_and_per_class():
    small = [0.0, 0.0, 20.0, 20.0]  # 400 px^2 < 32^2
    gt = gt_batch([[BOX_A, small]], [[0, 1]])
    det = det_batch([[BOX_A, small]], [[0.9, 0.8]], [[0, 1]])
    r = evaluate(gt, det, class_names=["circle", "square"], per_class=True)
    assert r["APs"] == pytest.approx(1.0) and r["APl"] == pytest.approx(1.0)
    assert math.isnan(r["APm"])  # no medium objects
    assert r["AP/circle"] == pytest.approx(1.0) and r["AP/square"] == pytest.approx(1.0)


def test_accumulates_over_batches_accepts_tensors_and_resets():
    ev = COCOEvaluator(class_names=["a", "b", "c"])
    for _ in range(3):
        gt = gt_batch([[BOX_A], [BOX_B]], [[0], [2]])
        det = det_batch([[BOX_A], [BOX_B]], [[0.9], [0.8]], [[0], [2]])
        ev.update(
            {k: tf.constant(v) for k, v in gt.items()}, {k: tf.constant(v) for k, v in det.items()}
        )
    assert ev.num_images == 6
    assert ev.result()["AP"] == pytest.approx(1.0)
    assert "Average Precision" in ev.summary
    ev.reset()
    assert ev.num_images == 0
    with pytest.raises(ValueError, match="no images"):
        ev.result()


def test_coco_evaluate_on_dataset_tuples_and_ids():
    gts = [(np.zeros((1, 8, 8, 3)), gt_batch([[BOX_A]], [[0]])), (None, gt_batch([[BOX_B]], [[1]]))]
    dets = [det_batch([[BOX_A]], [[0.9]], [[0]]), det_batch([[BOX_B]], [[0.9]], [[1]])]
    assert coco_evaluate(gts, dets)["AP"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same number of batches"):
        coco_evaluate(gts, dets[:1])
    ev = COCOEvaluator()
    ev.update(gts[0][1], dets[0], image_ids=[42])
    with pytest.raises(ValueError, match="unique"):
        ev.update(gts[1][1], dets[1], image_ids=[42])


def test_bad_inputs_raise_value_errors():
    ev = COCOEvaluator(class_names=["a"])
    gt = gt_batch([[BOX_A]], [[0]])
    with pytest.raises(ValueError, match="boxes"):
        ev.update({"classes": gt["classes"]}, det_batch([[BOX_A]], [[0.9]], [[0]]))
    with pytest.raises(ValueError, match="batch size"):
        ev.update(gt, det_batch([[BOX_A], [BOX_A]], [[0.9], [0.9]], [[0], [0]]))
    with pytest.raises(ValueError, match="class id 3"):
        ev.update(gt, det_batch([[BOX_A]], [[0.9]], [[3]]))


class ConstantDetector(keras.Model):
    """Returns the same detections for every image; one dummy weight so fit can run."""

    def __init__(self, detections, **kwargs):
        super().__init__(**kwargs)
        self.detections = {k: np.asarray(v[0]) for k, v in detections.items()}
        self.dummy = self.add_weight(shape=(), initializer="ones", name="dummy")

    def call(self, images):
        batch = ops.shape(images)[0]
        zero = 0.0 * self.dummy
        out = {}
        for key, value in self.detections.items():
            tiled = ops.repeat(ops.expand_dims(ops.convert_to_tensor(value), 0), batch, axis=0)
            out[key] = tiled + ops.cast(zero, tiled.dtype) if tiled.dtype.is_floating else tiled
        return out

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return ops.square(self.dummy)


def test_callback_writes_val_ap_into_logs_and_history():
    gt = gt_batch([[BOX_A, BOX_B]], [[0, 1]])
    det = det_batch([[BOX_A, [150.0, 28.0, 190.0, 88.0]]], [[0.9, 0.8]], [[0, 1]])
    # second box shifted 8 px in a 60 px width: IoU = 52/68 = 0.76 -> AP50, AP75 = 1, AP < 1
    images = np.zeros((4, 200, 200, 3), np.float32)
    targets = {k: np.repeat(v, 4, axis=0) for k, v in gt.items()}
    ds = tf.data.Dataset.from_tensor_slices((images, targets)).batch(2)
    model = ConstantDetector(det)
    model.compile(optimizer="sgd")
    callback = COCOMetricCallback(ds, class_names=["a", "b"])
    history = model.fit(ds, epochs=1, callbacks=[callback], verbose=0, shuffle=False)
    assert history.history["val_AP50"] == [pytest.approx(1.0)]
    assert history.history["val_AP75"] == [pytest.approx(1.0)]
    assert history.history["val_AP"][0] == pytest.approx(callback.last_result["AP"])
    # class a: AP 1; class b: matched at .50 ... .75 (6 of 10) -> 0.6; mean 0.8
    assert history.history["val_AP"][0] == pytest.approx(0.8)
    assert "Average Precision" in callback.summary

    skip = COCOMetricCallback(ds, every_n_epochs=2)
    history = model.fit(ds, epochs=3, callbacks=[skip], verbose=0, shuffle=False)
    assert len(history.history["loss"]) == 3
    # evaluated after epoch 2 and after the last epoch (3), keys absent after epoch 1
    assert history.history["val_AP50"] == [pytest.approx(1.0)] * 2
    with pytest.raises(ValueError, match="every_n_epochs"):
        COCOMetricCallback(ds, every_n_epochs=0)
