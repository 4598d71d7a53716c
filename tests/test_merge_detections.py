"""`merge_detections` / `MergeDetections` against the NumPy references of the greedy merge
and per-class NMS, composed here by hand."""

import doctest

import keras
import numpy as np
import pytest
import tensorflow as tf
from reference_greedy_merge import greedy_merge_image
from reference_nms import nms_batch

import kerasdet.postprocess.merge as merge_module
from kerasdet.postprocess import MERGE_MODES, MergeDetections, merge_detections, one_hot_scores
from kerasdet.postprocess.merge import OneHotScores

NUM_CLASSES = 3


def _candidates(seed=0, batch=2, clusters=6, per_cluster=5):
    """Clusters of jittered boxes, one class per cluster, scores in (0.05, 1): the kind of
    input a dense detector gives (several windows per object)."""
    rng = np.random.default_rng(seed)
    boxes, scores, classes = [], [], []
    for _ in range(batch):
        centers = rng.uniform(20, 180, [clusters, 2])
        sizes = rng.uniform(15, 60, [clusters, 2])
        jitter = rng.normal(0, 4, [clusters, per_cluster, 4])
        b = np.concatenate([centers - sizes / 2, centers + sizes / 2], -1)[:, None, :] + jitter
        boxes.append(b.reshape(-1, 4))
        scores.append(rng.uniform(0.06, 1.0, clusters * per_cluster))
        classes.append(np.repeat(rng.integers(0, NUM_CLASSES, clusters), per_cluster))
    return (np.asarray(boxes, np.float32), np.asarray(scores, np.float32), np.asarray(classes, np.int32))


def _reference(boxes, scores, classes, merge, score_threshold, match_threshold, iou_threshold, max_detections):
    one_hot = lambda s, c: np.eye(NUM_CLASSES, dtype=np.float32)[c] * s[:, None]  # noqa: E731
    if merge == "nms":
        per_class = np.stack([one_hot(s, c) for s, c in zip(scores, classes)])
        return nms_batch(boxes, per_class, max_detections=max_detections, iou_threshold=iou_threshold,
                         score_threshold=score_threshold)
    merged = [greedy_merge_image(b, s, c, match_threshold=match_threshold, score_threshold=score_threshold)
              for b, s, c in zip(boxes, scores, classes)]
    if merge == "greedy":
        out = {"boxes": np.zeros((len(boxes), max_detections, 4), np.float32),
               "scores": np.zeros((len(boxes), max_detections), np.float32),
               "classes": np.zeros((len(boxes), max_detections), np.int32),
               "num_detections": np.zeros(len(boxes), np.int32)}
        for i, (mb, ms, mc, _) in enumerate(merged):
            k = min(len(ms), max_detections)
            out["boxes"][i, :k], out["scores"][i, :k], out["classes"][i, :k] = mb[:k], ms[:k], mc[:k]
            out["num_detections"][i] = k
        return out
    # greedy_nms: NMS on the merged boxes (at most max_detections of them, padded with zeros).
    padded_boxes = np.zeros((len(boxes), max_detections, 4), np.float32)
    padded_scores = np.zeros((len(boxes), max_detections, NUM_CLASSES), np.float32)
    for i, (mb, ms, mc, _) in enumerate(merged):
        k = min(len(ms), max_detections)
        padded_boxes[i, :k], padded_scores[i, :k] = mb[:k], one_hot(ms[:k], mc[:k])
    return nms_batch(padded_boxes, padded_scores, max_detections=max_detections, iou_threshold=iou_threshold,
                     score_threshold=score_threshold)


@pytest.mark.parametrize("merge", MERGE_MODES)
def test_each_mode_matches_the_numpy_references(merge):
    boxes, scores, classes = _candidates()
    settings = dict(score_threshold=0.1, match_threshold=0.3, iou_threshold=0.3, max_detections=20)
    got = merge_detections(boxes, scores, classes, num_classes=NUM_CLASSES, merge=merge, **settings)
    expected = _reference(boxes, scores, classes, merge, **settings)
    np.testing.assert_array_equal(got["num_detections"].numpy(), expected["num_detections"])
    np.testing.assert_allclose(got["boxes"].numpy(), expected["boxes"], atol=1e-3)
    np.testing.assert_allclose(got["scores"].numpy(), expected["scores"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got["classes"].numpy(), expected["classes"])


def test_greedy_nms_removes_what_the_greedy_merge_left():
    # The strict match threshold leaves several clusters per object, which NMS then removes:
    # otherwise the comparison above could pass with NMS doing nothing.
    boxes, scores, classes = _candidates(seed=1)
    settings = dict(num_classes=NUM_CLASSES, score_threshold=0.1, match_threshold=0.05, iou_threshold=0.3)
    greedy = merge_detections(boxes, scores, classes, merge="greedy", **settings)
    both = merge_detections(boxes, scores, classes, merge="greedy_nms", **settings)
    assert (both["num_detections"].numpy() < greedy["num_detections"].numpy()).all()


def test_layer_round_trips_its_config_and_matches_the_function():
    boxes, scores, classes = _candidates(seed=2)
    layer = MergeDetections(num_classes=NUM_CLASSES, merge="greedy_nms", score_threshold=0.2,
                            match_threshold=0.4, iou_threshold=0.4, max_detections=12, max_candidates=25,
                            name="merge")
    restored = MergeDetections.from_config(layer.get_config())
    assert restored.get_config() == layer.get_config()
    expected = merge_detections(boxes, scores, classes, num_classes=NUM_CLASSES, merge="greedy_nms",
                                score_threshold=0.2, match_threshold=0.4, iou_threshold=0.4, max_detections=12,
                                max_candidates=25)
    got = restored(boxes, scores, classes)
    for key in expected:
        np.testing.assert_array_equal(np.asarray(got[key]), expected[key].numpy())


def test_layer_in_a_saved_functional_model(tmp_path):
    boxes, scores, classes = _candidates(seed=3)
    inputs = [keras.Input((30, 4)), keras.Input((30,)), keras.Input((30,), dtype="int32")]
    outputs = MergeDetections(num_classes=NUM_CLASSES, merge="nms", max_detections=10)(*inputs)
    model = keras.Model(inputs, outputs)
    model.save(tmp_path / "merge.keras")
    restored = keras.saving.load_model(tmp_path / "merge.keras")
    expected, got = model([boxes, scores, classes]), restored([boxes, scores, classes])
    for key in expected:
        np.testing.assert_array_equal(np.asarray(got[key]), np.asarray(expected[key]))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(merge="soft"), "`merge` must be one of .*'soft'"),
        (dict(num_classes=0), "`num_classes` must be a positive int, got 0"),
        (dict(merge="nms", iou_threshold=1.0), r"`iou_threshold` must be in \[0, 1\), got 1.0"),
        (dict(max_detections=0), "`max_detections`"),
        (dict(score_threshold=0.0), "`score_threshold`"),
    ],
)
def test_bad_arguments_name_the_value(kwargs, message):
    settings = {"num_classes": NUM_CLASSES, **kwargs}
    with pytest.raises(ValueError, match=message):
        MergeDetections(**settings)
    with pytest.raises(ValueError, match=message):
        merge_detections(tf.zeros([1, 2, 4]), tf.zeros([1, 2]), tf.zeros([1, 2], tf.int32), **settings)


def test_thresholds_are_checked_only_where_their_step_runs():
    boxes, scores, classes = _candidates(seed=5)
    # A greedy-only merge has no NMS: any iou_threshold is accepted, and ignored.
    greedy = merge_detections(boxes, scores, classes, num_classes=NUM_CLASSES, iou_threshold=1.0)
    again = merge_detections(boxes, scores, classes, num_classes=NUM_CLASSES, iou_threshold=0.2)
    np.testing.assert_array_equal(greedy["boxes"].numpy(), again["boxes"].numpy())
    with pytest.raises(ValueError, match=r"`iou_threshold` must be in \[0, 1\), got 1.0"):
        MergeDetections(num_classes=NUM_CLASSES, merge="greedy_nms", iou_threshold=1.0)


def test_one_hot_scores_and_its_legacy_layer():
    scores = np.array([[0.9, 0.2, 0.0]], np.float32)
    classes = np.array([[2, 0, 1]], np.int32)
    expected = [[[0.0, 0.0, 0.9], [0.2, 0.0, 0.0], [0.0, 0.0, 0.0]]]
    np.testing.assert_allclose(one_hot_scores(scores, classes, 3).numpy(), expected)
    # Kept registered so that detectors saved before MergeDetections load.
    layer = OneHotScores.from_config(OneHotScores(3, name="class_scores").get_config())
    np.testing.assert_allclose(layer(scores, classes).numpy(), expected)
    assert keras.saving.get_registered_object("kerasdet>OneHotScores") is OneHotScores


def test_docstring_examples():
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner()
    for test in finder.find(merge_module, globs={"tf": tf, **vars(merge_module)}):
        assert runner.run(test).failed == 0, test.name
