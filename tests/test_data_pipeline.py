"""tf.data pipeline from the TFDS detection schema: resize/pad, boxes, flips, padding."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from kerasdet.data import detection_dataset, load_shapes, make_example
from kerasdet.data.pipeline import default_data_dir

SIGNATURE = {
    "image": tf.TensorSpec([None, None, 3], tf.uint8),
    "image/filename": tf.TensorSpec([], tf.string),
    "objects": {
        "bbox": tf.TensorSpec([None, 4], tf.float32),
        "label": tf.TensorSpec([None], tf.int64),
    },
}


def tfds_like(examples):
    """A hand-built dataset with the TFDS detection schema (`voc/2007`, `coco/2017`)."""

    def gen():
        for image, bbox, label in examples:
            yield {
                "image": np.asarray(image, np.uint8),
                "image/filename": "x.jpg",
                "objects": {
                    "bbox": np.asarray(bbox, np.float32).reshape(-1, 4),
                    "label": np.asarray(label, np.int64),
                },
            }

    return tf.data.Dataset.from_generator(gen, output_signature=SIGNATURE)


def random_examples(n, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        h, w = rng.integers(20, 120, size=2)
        k = rng.integers(0, 4)
        lo = rng.uniform(0, 0.5, size=(k, 2))
        hi = lo + rng.uniform(0.05, 0.5, size=(k, 2))
        out.append(
            (
                rng.integers(0, 256, (h, w, 3)),
                np.concatenate([lo, hi], 1)[:, [0, 1, 2, 3]],
                rng.integers(0, 20, k),
            )
        )
    return out


@pytest.mark.parametrize("keep_aspect", [True, False])
def test_resize_pad_and_boxes_match_numpy(keep_aspect):
    examples = [
        (np.full((100, 50, 3), 200), [[0.1, 0.2, 0.5, 0.9], [0.0, 0.0, 1.0, 1.0]], [3, 0]),
        (np.full((40, 120, 3), 100), [[0.25, 0.5, 0.75, 1.0]], [7]),
    ]
    height, width = 64, 80
    ds = detection_dataset(
        tfds_like(examples),
        image_size=(height, width),
        batch_size=2,
        max_boxes=3,
        keep_aspect=keep_aspect,
    )
    images, gt = next(iter(ds))
    images, boxes, classes = images.numpy(), gt["boxes"].numpy(), gt["classes"].numpy()
    assert images.dtype == np.float32 and images.shape == (2, height, width, 3)
    for i, (image, bbox, label) in enumerate(examples):
        h, w = image.shape[:2]
        if keep_aspect:
            scale = min(height / h, width / w)
            nh, nw = round(h * scale), round(w * scale)
        else:
            nh, nw = height, width
        want = np.asarray(bbox) * [nh, nw, nh, nw]
        n = len(label)
        np.testing.assert_allclose(boxes[i, :n], want, rtol=1e-6, atol=1e-4)
        np.testing.assert_array_equal(classes[i, :n], label)
        np.testing.assert_array_equal(classes[i, n:], -1)
        np.testing.assert_array_equal(boxes[i, n:], 0.0)
        np.testing.assert_allclose(images[i, :nh, :nw], image[0, 0, 0], atol=1e-3)
        assert np.all(images[i, nh:] == 0) and np.all(images[i, :, nw:] == 0)
    if keep_aspect:  # (100, 50) -> scale 0.64 -> (64, 32); (40, 120) -> scale 2/3 -> (27, 80)
        np.testing.assert_allclose(boxes[0, 0], [6.4, 6.4, 32.0, 28.8], rtol=1e-6)


def box_image(h, w, box):
    """Black image with a white filled box (pixel edges y1, x1, y2, x2)."""
    image = np.zeros((h, w, 3), np.uint8)
    y1, x1, y2, x2 = box
    image[y1:y2, x1:x2] = 255
    return image, [[y1 / h, x1 / w, y2 / h, x2 / w]], [1]


def white_box(image):
    mask = image[..., 0] > 127
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return [rows[0], cols[0], rows[-1] + 1, cols[-1] + 1]


def test_flip_keeps_boxes_on_the_content():
    # 60x90 content in an 80x90 output: no resampling, padding at the bottom.
    examples = [box_image(60, 90, (10, 5, 30, 25)), box_image(60, 90, (40, 50, 55, 88))] * 8
    ds = detection_dataset(
        tfds_like(examples),
        image_size=(80, 90),
        batch_size=4,
        max_boxes=2,
        training=True,
        seed=1,
    )
    flipped = 0
    for images, gt in ds:
        for image, box in zip(images.numpy(), gt["boxes"].numpy()[:, 0], strict=True):
            np.testing.assert_allclose(white_box(image), box, atol=1e-4)
            flipped += box[1] in (90 - 25, 90 - 88)
    assert 0 < flipped < 16  # flip_prob 0.5: some flipped, some not
    always = detection_dataset(
        tfds_like(examples[:1]),
        image_size=(80, 90),
        batch_size=1,
        max_boxes=2,
        training=True,
        flip_prob=1.0,
    )
    images, gt = next(iter(always))
    np.testing.assert_allclose(gt["boxes"][0, 0], [10, 65, 30, 85])
    assert white_box(images[0].numpy()) == [10, 65, 30, 85]


def test_flip_with_aspect_padding_flips_inside_the_content():
    # A 40x40 image into 80x120: scale 2 -> content 80x80 at the left, padding on the right.
    image, bbox, label = box_image(40, 40, (5, 0, 15, 10))
    ds = detection_dataset(
        tfds_like([(image, bbox, label)]),
        image_size=(80, 120),
        batch_size=1,
        max_boxes=1,
        training=True,
        flip_prob=1.0,
    )
    images, gt = next(iter(ds))
    # Flipped inside the 80 content columns, not inside the padded 120.
    np.testing.assert_allclose(gt["boxes"][0, 0], [10, 60, 30, 80])
    assert np.all(images[0, :, 80:].numpy() == 0)


def test_static_shapes_and_padding_rows():
    ds = detection_dataset(
        tfds_like(random_examples(10)),
        image_size=(48, 64),
        batch_size=4,
        max_boxes=5,
        training=True,
        seed=0,
    )
    images_spec, gt_spec = ds.element_spec
    assert images_spec.shape.as_list() == [4, 48, 64, 3]  # drop_remainder defaults to training
    assert gt_spec["boxes"].shape.as_list() == [4, 5, 4] and gt_spec["boxes"].dtype == tf.float32
    assert gt_spec["classes"].shape.as_list() == [4, 5] and gt_spec["classes"].dtype == tf.int32
    batches = list(ds)
    assert len(batches) == 2
    ds = detection_dataset(tfds_like(random_examples(10)), image_size=(48, 64), batch_size=4)
    assert ds.element_spec[0].shape.as_list() == [None, 48, 64, 3]
    sizes = [int(x.shape[0]) for x, _ in ds]
    assert sizes == [4, 4, 2]
    for _, gt in ds:
        classes, boxes = gt["classes"].numpy(), gt["boxes"].numpy()
        assert np.all(boxes[classes == -1] == 0)
        # -1 rows are a suffix: no real object after a padding row
        assert np.all(np.diff((classes == -1).astype(int), axis=1) >= 0)


def test_deterministic_with_seed():
    def run(seed):
        ds = detection_dataset(
            tfds_like(random_examples(12)),
            image_size=(32, 32),
            batch_size=3,
            max_boxes=4,
            shuffle=True,
            seed=seed,
            training=True,
        )
        return [(x.numpy(), y["boxes"].numpy()) for x, y in ds]

    a, b, c = run(5), run(5), run(6)
    for (xa, ba), (xb, bb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ba, bb)
    assert any(not np.array_equal(xa, xc) for (xa, _), (xc, _) in zip(a, c, strict=True))


def test_too_many_boxes_is_an_error_not_a_silent_drop():
    examples = [(np.zeros((10, 10, 3)), [[0, 0, 0.5, 0.5]] * 3, [1, 2, 3])]
    ds = detection_dataset(tfds_like(examples), image_size=(10, 10), batch_size=1, max_boxes=2)
    with pytest.raises(tf.errors.InvalidArgumentError, match="more than max_boxes"):
        next(iter(ds))


def test_bad_arguments_raise_value_errors():
    ds = tfds_like(random_examples(1))
    with pytest.raises(ValueError, match="image_size"):
        detection_dataset(ds, image_size=(0, 10), batch_size=1)
    with pytest.raises(ValueError, match="batch_size"):
        detection_dataset(ds, image_size=(10, 10), batch_size=0)
    with pytest.raises(ValueError, match="tf.data.Dataset"):
        detection_dataset([1, 2], image_size=(10, 10), batch_size=1)
    no_objects = tf.data.Dataset.from_tensors({"image": tf.zeros([4, 4, 3], tf.uint8)})
    with pytest.raises(ValueError, match="objects"):
        detection_dataset(no_objects, image_size=(10, 10), batch_size=1)
    with pytest.raises(ValueError, match="config"):
        load_shapes("train", config="huge")


def test_mock_voc_2007(no_network):
    """`tfds.testing.mock_data` works offline for voc/2007 (features come from the builder
    code). Its random examples have unrelated lengths for `bbox` and `label` and unordered
    coordinates, so the pipeline rejects them as they are; made consistent they go through."""
    with tfds.testing.mock_data(num_examples=4):
        ds = tfds.load("voc/2007", split="train")
    raw = detection_dataset(ds, image_size=(64, 64), batch_size=2, max_boxes=100)
    with pytest.raises(tf.errors.InvalidArgumentError, match="differ in length"):
        for _ in raw:
            pass

    def consistent(ex):
        n = tf.minimum(tf.shape(ex["objects"]["bbox"])[0], tf.shape(ex["objects"]["label"])[0])
        b = ex["objects"]["bbox"][:n]
        lo, hi = tf.minimum(b[:, :2], b[:, 2:]), tf.maximum(b[:, :2], b[:, 2:])
        objects = dict(ex["objects"], bbox=tf.concat([lo, hi], 1), label=ex["objects"]["label"][:n])
        return dict(ex, objects=objects)

    voc = detection_dataset(ds.map(consistent), image_size=(64, 64), batch_size=2, max_boxes=100)
    batches = list(voc)
    assert len(batches) == 2
    for images, gt in batches:
        assert images.shape == (2, 64, 64, 3)
        classes = gt["classes"].numpy()
        assert np.all((classes >= -1) & (classes < 20))
        boxes = gt["boxes"].numpy()[classes >= 0]
        assert np.all(boxes >= 0) and np.all(boxes <= 64)


def test_load_shapes_tiny(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("KERASDET_HOME", str(tmp_path))
    assert default_data_dir() == str(tmp_path / "tensorflow_datasets")
    val = load_shapes("validation", config="tiny", batch_size=4)
    assert (tmp_path / "tensorflow_datasets" / "kerasdet_shapes" / "tiny").is_dir()
    images, gt = next(iter(val))
    assert images.shape == (4, 64, 64, 3) and gt["boxes"].shape == (4, 4, 4)
    # Same pixels as make_example (png, same size: no resampling), boxes in pixels.
    all_boxes = {
        tuple(np.round(make_example("validation", i, "tiny")["boxes"].ravel(), 3)) for i in range(8)
    }
    for boxes, classes in zip(gt["boxes"].numpy(), gt["classes"].numpy(), strict=True):
        assert tuple(np.round(boxes[classes >= 0].ravel(), 3)) in all_boxes
    train = load_shapes("train", config="tiny", image_size=(48, 48), batch_size=8)
    assert train.element_spec[0].shape.as_list() == [8, 48, 48, 3]
    assert len(list(train)) == 4
