"""Helpers of the Faster R-CNN benchmark scripts in tools/ (recall, box conversion, FLOPs)."""

import importlib.util
import pathlib
import sys

import keras
import numpy as np
import pytest

from kerasdet.analysis import count_flops
from kerasdet.boxes import pairwise_iou
from kerasdet.models import build_backbone
from kerasdet.models.faster_rcnn import RoIHead

_TOOLS = pathlib.Path(__file__).resolve().parent.parent / "tools"


def _load(name):
    # The benchmarks import their shared `tools/timing.py` as a sibling module, which works
    # when run as scripts (`python tools/x.py` puts tools/ on the path).
    if str(_TOOLS) not in sys.path:
        sys.path.insert(0, str(_TOOLS))
    spec = importlib.util.spec_from_file_location(name, _TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def proposals_tool():
    return _load("bench_proposals")


@pytest.fixture(scope="module")
def latency_tool():
    return _load("bench_faster_rcnn_latency")


def test_rects_to_yxyx(proposals_tool):
    out = proposals_tool.rects_to_yxyx(np.array([[10, 20, 30, 40], [0, 0, 500, 375]], np.int32))
    np.testing.assert_array_equal(out, [[20, 10, 60, 40], [0, 0, 375, 500]])
    assert proposals_tool.rects_to_yxyx(np.zeros([0, 4])).shape == (0, 4)


def test_iou_matrix_matches_pairwise_iou(proposals_tool, rng):
    def boxes(n):
        yx = rng.uniform(0, 100, (n, 2))
        return np.concatenate([yx, yx + rng.uniform(0, 50, (n, 2))], axis=1).astype(np.float32)

    a, b = boxes(7), boxes(11)
    b[0] = [5, 5, 5, 9]  # zero area
    np.testing.assert_allclose(proposals_tool.iou_matrix(a, b), pairwise_iou(a, b).numpy(), atol=1e-6)


def test_recall_pools_images_and_cuts_at_top(proposals_tool):
    gt = [np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32), np.zeros([0, 4]), np.array([[0, 0, 4, 4]])]
    props = [
        np.array([[50, 50, 60, 60], [0, 0, 10, 11], [20, 20, 30, 30]], np.float32),  # 2nd: IoU 10/11
        np.array([[0, 0, 1, 1]], np.float32),  # image without objects
        np.zeros([0, 4], np.float32),  # no proposals
    ]
    assert proposals_tool.recall(props, gt) == (2 / 3, 2, 3)
    assert proposals_tool.recall(props, gt, top=2) == (1 / 3, 1, 3)
    assert proposals_tool.recall(props, gt, iou=0.95)[1] == 1  # the exact match only
    assert np.isnan(proposals_tool.recall([np.zeros([0, 4])], [np.zeros([0, 4])])[0])


def test_validation_images_are_deterministic_and_sized(proposals_tool):
    first = proposals_tool.validation_images(2, 375, 500, seed=0)
    again = proposals_tool.validation_images(2, 375, 500, seed=0)
    for a, b in zip(first, again):
        assert a["image"].shape == (375, 500, 3) and a["image"].dtype == np.uint8
        np.testing.assert_array_equal(a["image"], b["image"])
        boxes = a["boxes"]
        assert np.all(boxes[:, :2] >= 0) and np.all(boxes[:, 2] <= 375) and np.all(boxes[:, 3] <= 500)


def test_held_out_images_are_training_split_images_past_the_recipes(proposals_tool):
    from kerasdet.data.shapes import ShapesConfig, generate_example

    config = ShapesConfig(name="bench")
    held_out = proposals_tool.validation_images(2, 375, 500, seed=0, split_id=0, start=2000)
    expected = generate_example(np.random.default_rng([0, 0, 2001]), 375, 500, max_objects=config.max_objects,
                                min_size=config.min_size, max_size=config.max_size, empty_prob=config.empty_prob)
    np.testing.assert_array_equal(held_out[1]["image"], expected["image"])
    validation = proposals_tool.validation_images(2, 375, 500, seed=0)
    assert not np.array_equal(held_out[1]["image"], validation[1]["image"])


def test_model_flops_matches_count_flops_on_a_chain(latency_tool):
    backbone = build_backbone("tiny", input_shape=(64, 96, 3))
    assert latency_tool.model_flops(backbone) == count_flops(backbone, (64, 96)) > 0


def test_layer_flops_depthwise_and_dense(latency_tool):
    inputs = keras.Input((8, 8, 3))
    depthwise = keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2)
    x = depthwise(inputs)
    dense = keras.layers.Dense(5)
    dense(keras.layers.Flatten()(x))
    assert latency_tool.layer_flops(depthwise) == 2 * 3 * 3 * 3 * 2 * 8 * 8
    assert latency_tool.layer_flops(dense) == 2 * 8 * 8 * 6 * 5
    assert latency_tool.layer_flops(keras.layers.ReLU()) == 0


def test_roi_head_flops(latency_tool):
    head = RoIHead(5, head_units=(16, 8), pool_size=7)
    head.build((None, 300, 7, 7, 4))
    per_roi = 2 * (7 * 7 * 4 * 16 + 16 * 8 + 8 * 6 + 8 * 20)
    assert latency_tool.roi_head_flops(head, 300) == 300 * per_roi


@pytest.fixture(scope="module")
def train_tool():
    return _load("train_faster_rcnn_tiny")


def test_random_flip_mirrors_boxes_and_keeps_padding(train_tool):
    import tensorflow as tf

    image = np.zeros([8, 10, 3], np.float32)
    image[2:4, 1:3] = 255.0  # a patch at x 1..3 → mirrored to x 7..9
    gt = {"boxes": np.array([[2, 1, 4, 3], [0, 0, 0, 0]], np.float32), "classes": np.array([1, -1], np.int32)}
    flips = set()
    for seed in range(12):
        tf.random.set_seed(seed)
        out_image, out_gt = train_tool.random_flip(tf.constant(image), gt, width=10)
        out_image, boxes = out_image.numpy(), out_gt["boxes"].numpy()
        np.testing.assert_array_equal(boxes[1], [0, 0, 0, 0])  # padding row untouched
        np.testing.assert_array_equal(out_gt["classes"], gt["classes"])
        y1, x1, y2, x2 = boxes[0].astype(int)
        # The box still frames exactly the bright patch.
        assert out_image[y1:y2, x1:x2].min() == 255.0 and out_image.sum() == 255.0 * 4 * 3
        flips.add(bool(x1 == 7))
    assert flips == {True, False}
