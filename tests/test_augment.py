"""Box-aware augmentation: boxes stay on the pixels they describe through crop, scale, flip."""

import numpy as np
import pytest
import tensorflow as tf

from kerasdet.data import Augmentation, detection_dataset
from kerasdet.data.augment import clip_and_drop

SIGNATURE = {
    "image": tf.TensorSpec([None, None, 3], tf.uint8),
    "objects": {
        "bbox": tf.TensorSpec([None, 4], tf.float32),
        "label": tf.TensorSpec([None], tf.int64),
    },
}
# Class c is painted in COLOURS[c] on a black background.
COLOURS = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)])


def painted(h, w, boxes):
    """An image with filled, non-overlapping boxes (pixel edges y1, x1, y2, x2), class = k."""
    image = np.zeros((h, w, 3), np.uint8)
    for k, (y1, x1, y2, x2) in enumerate(boxes):
        image[y1:y2, x1:x2] = COLOURS[k]
    rel = np.asarray(boxes, np.float32).reshape(-1, 4) / [h, w, h, w]
    return image, rel, np.arange(len(boxes))


def dataset(examples):
    def gen():
        for image, rel, label in examples:
            yield {"image": image, "objects": {"bbox": rel.astype(np.float32), "label": label.astype(np.int64)}}

    return tf.data.Dataset.from_generator(gen, output_signature=SIGNATURE)


def colour_box(image, colour):
    """Tight box of the pixels closer to `colour` than to black (half intensity), or None."""
    on = np.asarray(colour) > 0
    mask = np.all(image[..., on] > 127, axis=-1) & np.all(image[..., ~on] < 128, axis=-1)
    if not mask.any():
        return None, 0
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return np.array([rows[0], cols[0], rows[-1] + 1, cols[-1] + 1], float), int(mask.sum())


EXAMPLES = [
    painted(90, 120, [(10, 10, 40, 50), (50, 70, 85, 115), (5, 80, 30, 110)]),
    painted(120, 60, [(0, 0, 30, 30), (60, 20, 118, 58)]),
    painted(64, 64, [(20, 20, 44, 44)]),
    painted(70, 100, []),  # no objects: crops and flips still work
]


@pytest.mark.parametrize(
    "aug",
    [
        Augmentation(scale_range=(0.5, 1.8), crop_prob=0.8, crop_area_range=(0.2, 1.0)),
        Augmentation(scale_range=(0.8, 1.5), crop_prob=1.0, crop_mode="keep", flip_prob=0.5),
        Augmentation(scale_range=(1.5, 2.5), flip_prob=1.0, min_visible=0.3, min_box_size=3),
    ],
    ids=["clip-crop-scale", "keep-crop", "zoom-in-min-visible"],
)
def test_boxes_stay_on_their_pixels(aug):
    ds = detection_dataset(
        dataset(EXAMPLES * 6), image_size=(96, 96), batch_size=4, training=True, seed=7, augment=aug
    )
    dropped = kept = 0
    for images, gt in ds:
        for image, boxes, classes in zip(images.numpy(), gt["boxes"].numpy(), gt["classes"].numpy(), strict=True):
            present = set()
            for box, c in zip(boxes, classes, strict=True):
                if c < 0:
                    assert np.all(box == 0)
                    continue
                present.add(int(c))
                found, _ = colour_box(image, COLOURS[c])
                assert found is not None, (box, c)
                # Bilinear resampling blurs edges by up to a pixel.
                np.testing.assert_allclose(found, box, atol=1.5)
                assert box[2] - box[0] >= 1 and box[3] - box[1] >= 1
                if aug.crop_mode == "keep":
                    assert np.all(box >= 0) and box[2] <= 96 and box[3] <= 96
            for c in set(range(3)) - present:
                found, _ = colour_box(image, COLOURS[c])
                if found is None:
                    continue
                dropped += 1
                # Only a box the crops cut can be dropped: what is left of it is at an edge
                # (with a zoom-in of at least 1.5 the content fills the 96x96 image).
                if aug.scale_range[0] >= 1.5:
                    assert found[0] == 0 or found[1] == 0 or found[2] == 96 or found[3] == 96
                if aug.min_visible == 0:
                    # Dropped only as a sliver thinner than min_box_size (up to resampling).
                    assert min(found[2] - found[0], found[3] - found[1]) <= aug.min_box_size + 1.5
            kept += len(present)
    assert kept > 0
    if aug.crop_mode == "keep":
        assert dropped == 0
    if aug.min_visible > 0:
        assert dropped > 0  # the case exercises dropping


def test_keep_crop_never_loses_a_box():
    aug = Augmentation(flip_prob=0.0, crop_prob=1.0, crop_mode="keep")
    ds = detection_dataset(dataset(EXAMPLES * 5), image_size=(96, 96), batch_size=4, training=True, seed=0, augment=aug)
    counts = [int((gt["classes"].numpy() >= 0).sum()) for _, gt in ds]
    assert sum(counts) == 5 * 6


def test_colour_jitter_changes_pixels_not_boxes():
    base = detection_dataset(dataset(EXAMPLES), image_size=(64, 64), batch_size=4)
    aug = Augmentation(flip_prob=0.0, brightness=0.2, contrast=0.3, saturation=0.3, hue=0.1)
    jittered = detection_dataset(
        dataset(EXAMPLES), image_size=(64, 64), batch_size=4, training=True, seed=1, augment=aug
    )
    (x0, y0), (x1, y1) = next(iter(base)), next(iter(jittered))
    np.testing.assert_array_equal(y0["boxes"], y1["boxes"])
    np.testing.assert_array_equal(y0["classes"], y1["classes"])
    assert not np.allclose(x0, x1)
    assert x1.numpy().min() >= 0 and x1.numpy().max() <= 255
    # Padding (bottom of the 120x60 -> 64x32 image) stays zero: jitter runs before padding.
    assert np.all(x1.numpy()[1, :, 32:] == 0)


def test_default_augmentation_is_the_old_flip():
    kwargs = dict(image_size=(48, 48), batch_size=4, training=True, seed=3)
    a = list(detection_dataset(dataset(EXAMPLES * 2), **kwargs))
    b = list(detection_dataset(dataset(EXAMPLES * 2), augment=Augmentation(), **kwargs))
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya["boxes"], yb["boxes"])


def test_same_seed_same_batches():
    aug = Augmentation(scale_range=(0.6, 1.6), crop_prob=0.5, brightness=0.1, hue=0.05)

    def run(seed):
        ds = detection_dataset(
            dataset(EXAMPLES * 3), image_size=(40, 40), batch_size=3, shuffle=True, seed=seed,
            training=True, augment=aug,
        )
        return [(x.numpy(), y["boxes"].numpy(), y["classes"].numpy()) for x, y in ds]

    a, b, c = run(11), run(11), run(12)
    for batch_a, batch_b in zip(a, b, strict=True):
        for u, v in zip(batch_a, batch_b, strict=True):
            np.testing.assert_array_equal(u, v)
    assert any(not np.array_equal(u[0], w[0]) for u, w in zip(a, c, strict=True))


def test_clip_and_drop_matches_numpy():
    rng = np.random.default_rng(0)
    lo = rng.uniform(-30, 80, size=(200, 2))
    boxes = np.concatenate([lo, lo + rng.uniform(0.5, 40, size=(200, 2))], 1).astype(np.float32)
    content = np.array([60.0, 70.0], np.float32)
    aug = Augmentation(min_visible=0.25, min_box_size=2.0)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    clipped, keep = clip_and_drop(tf.constant(boxes), tf.constant(area), tf.constant(content), aug)
    want = np.clip(boxes, 0, np.tile(content, 2))
    h, w = want[:, 2] - want[:, 0], want[:, 3] - want[:, 1]
    was_cut = np.any(want != boxes, axis=1)
    want_keep = (h > 0) & (w > 0) & ~(was_cut & ((h < 2) | (w < 2) | (h * w < 0.25 * area)))
    np.testing.assert_allclose(clipped, want)
    np.testing.assert_array_equal(keep, want_keep)
    # An uncut box is kept however small it is.
    tiny = tf.constant([[10.0, 10.0, 10.5, 10.5]])
    assert clip_and_drop(tiny, tf.constant([0.25]), tf.constant(content), aug)[1].numpy().tolist() == [True]


def test_bad_arguments():
    with pytest.raises(ValueError, match="scale_range"):
        Augmentation(scale_range=(1.5, 1.0))
    with pytest.raises(ValueError, match="crop_mode"):
        Augmentation(crop_mode="shrink")
    with pytest.raises(ValueError, match="hue"):
        Augmentation(hue=0.7)
    with pytest.raises(ValueError, match="crop_area_range"):
        Augmentation(crop_area_range=(0.0, 1.0))
    ds = dataset(EXAMPLES)
    with pytest.raises(ValueError, match="training=True"):
        detection_dataset(ds, image_size=(8, 8), batch_size=1, augment=Augmentation())
    with pytest.raises(ValueError, match="flip_prob"):
        detection_dataset(ds, image_size=(8, 8), batch_size=1, training=True, flip_prob=0.3, augment=Augmentation())
    with pytest.raises(ValueError, match="Augmentation"):
        detection_dataset(ds, image_size=(8, 8), batch_size=1, training=True, augment={"flip_prob": 1})
