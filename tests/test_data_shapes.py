"""The synthetic `kerasdet_shapes` dataset: drawing, determinism, TFDS builder (offline)."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from kerasdet.data import CLASS_NAMES, KerasdetShapes, drawing, generate_example, make_example


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tfds")


def test_same_index_same_example_and_different_index_differs():
    a, b = make_example("train", 7), make_example("train", 7)
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["boxes"], b["boxes"])
    np.testing.assert_array_equal(a["classes"], b["classes"])
    c = make_example("train", 8)
    assert not np.array_equal(a["image"], c["image"])
    d = make_example("validation", 7)
    assert not np.array_equal(a["image"], d["image"])
    # generate_example is a pure function of its rng.
    e = generate_example(np.random.default_rng(3), 64, 80, min_size=8, max_size=40)
    f = generate_example(np.random.default_rng(3), 64, 80, min_size=8, max_size=40)
    np.testing.assert_array_equal(e["image"], f["image"])
    np.testing.assert_array_equal(e["boxes"], f["boxes"])


def test_output_types_and_ranges():
    ex = make_example("train", 1)
    assert ex["image"].dtype == np.uint8 and ex["image"].shape == (256, 256, 3)
    assert ex["boxes"].dtype == np.float32 and ex["boxes"].shape == (len(ex["classes"]), 4)
    assert ex["classes"].dtype == np.int32
    for seed in range(20):
        ex = generate_example(seed, 128, 96, min_size=10, max_size=50)
        boxes = ex["boxes"]
        assert (
            np.all(boxes[:, :2] >= 0) and np.all(boxes[:, 2] <= 128) and np.all(boxes[:, 3] <= 96)
        )
        sides = np.concatenate([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]])
        assert np.all(sides >= 10 - 1) and np.all(sides <= 50)
        assert len(ex["classes"]) <= 6


@pytest.mark.parametrize("seed", range(6))
def test_boxes_are_tight_around_the_painted_colour(seed):
    """Plain background, no noise, non-overlapping shapes: each shape's colour mask has the
    box of the example (the box is in pixel edges: rows r0..r1 -> [r0, r1 + 1])."""
    ex = generate_example(
        seed,
        96,
        112,
        classes=range(len(CLASS_NAMES)),
        min_size=8,
        max_size=40,
        background="plain",
        noise=0.0,
        min_visible=1.0,
        return_masks=True,
    )
    image = ex["image"].astype(int)
    assert len(ex["classes"]) >= 3
    for box, mask in zip(ex["boxes"], ex["masks"], strict=True):
        np.testing.assert_array_equal(drawing.tight_box(mask), box)
        colour = image[tuple(np.argwhere(mask)[0])]
        colour_mask = np.all(image == colour, axis=-1)
        np.testing.assert_allclose(drawing.tight_box(colour_mask), box, atol=1)


def test_shape_geometry_per_class():
    for seed in range(30):
        ex = generate_example(seed, 128, 128, min_size=10, max_size=60)
        for box, cls in zip(ex["boxes"], ex["classes"], strict=True):
            h, w = box[2] - box[0], box[3] - box[1]
            kind = CLASS_NAMES[cls]
            if kind in ("square", "circle"):
                assert abs(h - w) <= 1
            if kind in ("rectangle", "ellipse"):
                assert max(h / w, w / h) >= 1.4  # aspect ratio = height / width, elongated


def test_overlaps_keep_half_of_each_shape_visible():
    for seed in range(30):
        ex = generate_example(
            seed, 96, 96, num_objects=6, min_size=16, max_size=60, return_masks=True
        )
        masks = ex["masks"]
        for i, mask in enumerate(masks):
            covered = np.any(masks[i + 1 :], axis=0) if i + 1 < len(masks) else np.zeros_like(mask)
            assert (mask & ~covered).sum() >= 0.5 * mask.sum()


def test_some_images_are_empty():
    counts = [len(make_example("train", i, "tiny")["classes"]) for i in range(32)]
    counts += [
        len(generate_example(s, 32, 32, min_size=8, max_size=16)["classes"]) for s in range(200)
    ]
    assert 0 in counts
    empty = counts.count(0) / len(counts)
    assert 0.01 < empty < 0.12
    assert max(counts) >= 4


def test_bad_arguments_raise_one_line_value_errors():
    with pytest.raises(ValueError, match="max_size"):
        generate_example(0, 32, 32, max_size=64)
    with pytest.raises(ValueError, match="classes"):
        generate_example(0, 64, 64, min_size=8, max_size=32, classes=[7])
    with pytest.raises(ValueError, match="background"):
        generate_example(0, 64, 64, min_size=8, max_size=32, background="wood")
    with pytest.raises(ValueError, match="config"):
        make_example("train", 0, "huge")
    with pytest.raises(ValueError, match="split"):
        make_example("test", 0)


def test_builder_configs():
    configs = {c.name: c for c in KerasdetShapes.BUILDER_CONFIGS}
    assert (configs["default"].height, configs["default"].width) == (256, 256)
    assert (configs["small"].height, configs["small"].width) == (128, 128)
    assert configs["default"].train_size == 2000 and configs["default"].validation_size == 300


def test_tfds_load_offline_both_splits(tiny_dir, no_network):
    builder = tfds.builder("kerasdet_shapes/tiny", data_dir=tiny_dir)
    assert builder.info.features["objects"]["label"].names == list(CLASS_NAMES)
    for split, size in (("train", 32), ("validation", 8)):
        ds = tfds.load("kerasdet_shapes/tiny", split=split, data_dir=tiny_dir)
        examples = list(ds.as_numpy_iterator())
        assert len(examples) == size
        ids = sorted(int(ex["image/id"]) for ex in examples)
        assert ids == list(range(size))
        for ex in examples[:4]:
            want = make_example(split, int(ex["image/id"]), "tiny")
            assert ex["image"].shape == (64, 64, 3) and ex["image"].dtype == np.uint8
            np.testing.assert_array_equal(ex["image"], want["image"])  # png: lossless
            np.testing.assert_allclose(ex["objects"]["bbox"] * 64.0, want["boxes"], atol=1e-4)
            np.testing.assert_array_equal(ex["objects"]["label"], want["classes"])
            assert ex["image/filename"].decode().startswith(split)
