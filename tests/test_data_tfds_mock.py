"""TFDS `voc/2007`, `voc/2012`, `coco/2017` through `load_detection_data`, offline.

`tfds.testing.mock_data` works for these builders without the network: with
`policy=MockPolicy.USE_CODE` the features come from the builder code (no metadata files are
needed). Its default random examples give `bbox`, `label` and the flags unrelated lengths,
which no real example has, so the main tests pass an `as_dataset_fn` that writes consistent
examples through the builder's own features (encoded, so `SkipDecoding` works as for real).
"""

import functools

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from kerasdet.data import COCO_CLASSES, VOC_CLASSES, box_sizes, load_detection_data
from kerasdet.data.sources import _drop_flagged

USE_CODE = tfds.testing.MockPolicy.USE_CODE


# Every test here runs offline (fixture in conftest.py).
pytestmark = pytest.mark.usefixtures("no_network")


def raw_examples(n, seed, num_classes):
    """(image, rel boxes [k, 4], labels [k], flags [k]) with k in 0..4."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        h, w = (int(v) for v in rng.integers(24, 80, size=2))
        k = int(rng.integers(0, 5))
        lo = rng.uniform(0, 0.6, size=(k, 2))
        hi = lo + rng.uniform(0.05, 0.4, size=(k, 2))
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        out.append((image, np.concatenate([lo, hi], 1), rng.integers(0, num_classes, k), rng.random(k) < 0.3))
    return out


def voc_example(image, bbox, label, difficult):
    objects = [
        {"label": int(c), "bbox": b.astype(np.float64), "pose": 0, "is_truncated": False, "is_difficult": bool(d)}
        for b, c, d in zip(bbox, label, difficult, strict=True)
    ]
    return {
        "image": image,
        "image/filename": "x.jpg",
        "objects": objects,
        "labels": sorted({int(c) for c in label}),
        "labels_no_difficult": sorted({int(c) for c, d in zip(label, difficult, strict=True) if not d}),
    }


def coco_example(image, bbox, label, crowd):
    objects = [
        {"id": j, "area": 1, "label": int(c), "bbox": b.astype(np.float64), "is_crowd": bool(d)}
        for j, (b, c, d) in enumerate(zip(bbox, label, crowd, strict=True))
    ]
    return {"image": image, "image/filename": "x.jpg", "image/id": 1, "objects": objects}


def consistent_mock(raw, to_example):
    """An `as_dataset_fn` yielding `raw` examples encoded with the builder's features."""

    def as_dataset(self, split, decoders=None, read_config=None, **kwargs):
        features = self.info.features
        encoded = [features.encode_example(to_example(*ex)) for ex in raw]
        specs = features.get_serialized_info()
        signature = tf.nest.map_structure(lambda t: tf.TensorSpec(t.shape, t.dtype), specs)
        ds = tf.data.Dataset.from_generator(lambda: iter(encoded), output_signature=signature)
        return ds.map(functools.partial(features.decode_example, decoders=decoders))

    return tfds.testing.mock_data(policy=USE_CODE, as_dataset_fn=as_dataset)


def expected(raw, flag_kept, image_size):
    """NumPy reference: boxes in pixels of the keep-aspect resized image, flagged ones out."""
    out = []
    for image, bbox, label, flag in raw:
        h, w = image.shape[:2]
        s = min(image_size[0] / h, image_size[1] / w)
        nh, nw = round(h * s), round(w * s)
        keep = np.ones(len(label), bool) if flag_kept else ~flag
        out.append((bbox[keep] * [nh, nw, nh, nw], label[keep]))
    return out


@pytest.mark.parametrize("name", ["voc/2007", "voc/2012"])
def test_voc_drops_difficult_objects(name):
    raw = raw_examples(6, seed=1, num_classes=20)
    with consistent_mock(raw, voc_example):
        ds, names = load_detection_data(name, "validation", image_size=(64, 64), batch_size=3, max_boxes=5)
        batches = list(ds)
    assert names == list(VOC_CLASSES)
    want = expected(raw, False, (64, 64))
    got = [(b, c) for _, gt in batches for b, c in zip(gt["boxes"].numpy(), gt["classes"].numpy(), strict=True)]
    assert len(got) == 6 and sum(f.sum() for *_, f in raw) > 0  # some objects are difficult
    for (boxes, classes), (want_boxes, want_labels) in zip(got, want, strict=True):
        n = len(want_labels)
        np.testing.assert_allclose(boxes[:n], want_boxes, atol=1e-3)
        np.testing.assert_array_equal(classes[:n], want_labels)
        assert np.all(classes[n:] == -1)


def test_voc_keep_difficult_and_training_pipeline():
    raw = raw_examples(8, seed=2, num_classes=20)
    with consistent_mock(raw, voc_example):
        ds, _ = load_detection_data(
            "voc/2007", "validation", image_size=(64, 64), batch_size=8, max_boxes=5, keep_difficult=True
        )
        (_, gt), = list(ds)
        train, _ = load_detection_data("voc/2007", "train", image_size=(48, 48), batch_size=4, seed=0)
        batches = list(train)
    assert int((gt["classes"].numpy() >= 0).sum()) == sum(len(lbl) for _, _, lbl, _ in raw)
    assert len(batches) == 2 and batches[0][0].shape == (4, 48, 48, 3)


def test_coco_2017_drops_crowd_and_names_classes():
    raw = raw_examples(5, seed=3, num_classes=80)
    with consistent_mock(raw, coco_example):
        ds, names = load_detection_data("coco/2017", "validation", image_size=(32, 48), batch_size=5, max_boxes=4)
        (_, gt), = list(ds)
        sizes = box_sizes("coco/2017", "validation", image_size=(32, 48))
    assert names == list(COCO_CLASSES) and len(names) == 80
    want = expected(raw, False, (32, 48))
    for boxes, classes, (want_boxes, want_labels) in zip(gt["boxes"].numpy(), gt["classes"].numpy(), want, strict=True):
        n = len(want_labels)
        np.testing.assert_allclose(boxes[:n], want_boxes, atol=1e-3)
        np.testing.assert_array_equal(classes[:n], want_labels)
    # Box sizes from the PNG headers (no decoding), as the pipeline resizes them.
    ref = np.concatenate([b for b, _ in want])
    np.testing.assert_allclose(sizes, np.stack([ref[:, 3] - ref[:, 1], ref[:, 2] - ref[:, 0]], 1), atol=1e-3)


def test_plain_random_mock_data_is_rejected_with_a_clear_error():
    """The default mock examples have inconsistent lengths. `load_detection_data` reads images
    undecoded (`SkipDecoding`), for which the mock encodes its examples and TFDS itself
    refuses them; decoded, the crowd filter names the inconsistency."""
    with tfds.testing.mock_data(num_examples=2, policy=USE_CODE):
        ds, _ = load_detection_data("coco/2017", "train", image_size=(32, 32), batch_size=2)
        with pytest.raises(tf.errors.InvalidArgumentError, match="should be the same"):
            list(ds)
        decoded = tfds.load("coco/2017", split="train")
    with pytest.raises(tf.errors.InvalidArgumentError, match="is_crowd and objects/label differ in length"):
        list(_drop_flagged(decoded, keep_crowd=False, keep_difficult=False))


def test_unknown_sources_and_misplaced_options(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither an existing file or folder nor a TFDS"):
        load_detection_data(str(tmp_path / "no" / "such.json"), image_size=(8, 8))
    with pytest.raises(ValueError, match=r"\['on_error'\] apply to COCO / VOC folders"):
        load_detection_data("voc/2007", image_size=(8, 8), on_error="skip")


def test_shapes_source_matches_load_shapes(tmp_path):
    from kerasdet.data import CLASS_NAMES, load_shapes

    data_dir = str(tmp_path / "tfds")
    ds, names = load_detection_data("shapes/tiny", "validation", batch_size=8, data_dir=data_dir)
    assert names == list(CLASS_NAMES)
    (images, gt), = list(ds)
    (ref_images, ref_gt), = list(load_shapes("validation", config="tiny", batch_size=8, data_dir=data_dir))
    np.testing.assert_array_equal(images, ref_images)
    np.testing.assert_array_equal(gt["boxes"], ref_gt["boxes"])
    sizes = box_sizes("shapes/tiny", "validation", data_dir=data_dir)
    boxes = ref_gt["boxes"].numpy()[ref_gt["classes"].numpy() >= 0]
    np.testing.assert_allclose(sizes, np.stack([boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]], 1), atol=1e-3)
