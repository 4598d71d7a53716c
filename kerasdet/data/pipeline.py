"""`tf.data` pipelines from the TFDS detection schema to model inputs.

TFDS detection datasets (`voc/2007`, `coco/2017`, `kerasdet_shapes`) yield examples with
`image` uint8 `[h, w, 3]`, `objects/bbox` float `[n, 4]` normalized `[ymin, xmin, ymax, xmax]`
and `objects/label` int `[n]`. `detection_dataset` turns them into what kerasdet models
train on::

    images float32 [B, H, W, 3] (0-255, RGB),
    {"boxes": float32 [B, M, 4] yxyx pixels of the resized image,
     "classes": int32 [B, M], -1 on padding rows}

Other keys of the examples (`image/filename`, `objects/is_crowd`, ...) are ignored.
"""

from __future__ import annotations

import os

import tensorflow as tf
import tensorflow_datasets as tfds

from kerasdet.boxes.formats import convert_format
from kerasdet.data import augment as augment_lib
from kerasdet.data.augment import Augmentation

DEFAULT_SHUFFLE_BUFFER = 1024


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}")


def _check_image_size(image_size):
    if (
        not isinstance(image_size, (tuple, list))
        or len(image_size) != 2
        or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in image_size)
    ):
        raise ValueError(
            f"`image_size` must be a pair of positive integers (height, width), got {image_size!r}"
        )
    return int(image_size[0]), int(image_size[1])


def _check_schema(element_spec):
    if not isinstance(element_spec, dict) or "image" not in element_spec:
        raise ValueError(
            "`ds` must yield TFDS detection examples, dicts with 'image' and "
            f"'objects' {{'bbox', 'label'}}, got element_spec {element_spec!r}"
        )
    objects = element_spec.get("objects")
    if not isinstance(objects, dict) or not {"bbox", "label"} <= set(objects):
        raise ValueError(
            "`ds` examples must have 'objects' with 'bbox' (normalized [ymin, xmin, ymax, "
            f"xmax]) and 'label', got objects spec {objects!r}"
        )
    rank = element_spec["image"].shape.rank
    channels = element_spec["image"].shape[-1] if rank else None
    if rank != 3 or channels not in (1, 3, None):
        raise ValueError(
            f"`ds` 'image' must be [height, width, 3] (or 1 channel), got {element_spec['image'].shape}"
        )


def _prepare(example, seed, *, image_size, max_boxes, keep_aspect, augment):
    """One TFDS example -> (image [H, W, 3] float32, {"boxes": [M, 4], "classes": [M]}).

    `seed` is this example's int64 seed when augmenting (`augment` an `Augmentation`), else
    `None`.
    """
    height, width = image_size
    image = example["image"]
    if image.shape[-1] == 1:
        image = tf.image.grayscale_to_rgb(image)
    image = tf.ensure_shape(image, [None, None, 3])
    bbox = tf.cast(example["objects"]["bbox"], tf.float32)
    label = tf.cast(example["objects"]["label"], tf.int32)
    num = tf.shape(label)[0]
    checks = [
        tf.debugging.Assert(
            tf.equal(tf.shape(bbox)[0], num),
            [
                "kerasdet.data: objects/bbox and objects/label differ in length:",
                tf.shape(bbox)[0],
                num,
            ],
        ),
        tf.debugging.Assert(
            num <= max_boxes,
            [
                "kerasdet.data: an example has",
                num,
                "objects, more than max_boxes =",
                max_boxes,
                "; pass a larger max_boxes (objects are never dropped silently)",
            ],
        ),
    ]
    with tf.control_dependencies(checks):
        num = tf.identity(num)
    augmenting = seed is not None

    in_hw = tf.cast(tf.shape(image)[:2], tf.float32)
    if augmenting and augment.crop_prob > 0:
        pixels = convert_format(bbox, "rel_yxyx", "yxyx", image_shape=in_hw)
        image, pixels = augment_lib.random_crop(image, pixels, seed, augment)
        in_hw = tf.cast(tf.shape(image)[:2], tf.float32)
        bbox = pixels / tf.concat([in_hw, in_hw], 0)

    factor = augment_lib.scale_factor(seed, augment) if augmenting else None
    if keep_aspect:
        scale = tf.minimum(height / in_hw[0], width / in_hw[1])
        if factor is None:
            new_h = tf.clip_by_value(tf.cast(tf.round(in_hw[0] * scale), tf.int32), 1, height)
            new_w = tf.clip_by_value(tf.cast(tf.round(in_hw[1] * scale), tf.int32), 1, width)
        else:
            new_h = tf.maximum(tf.cast(tf.round(in_hw[0] * scale * factor), tf.int32), 1)
            new_w = tf.maximum(tf.cast(tf.round(in_hw[1] * scale * factor), tf.int32), 1)
    elif factor is None:
        new_h, new_w = tf.constant(height), tf.constant(width)
    else:
        new_h = tf.maximum(tf.cast(tf.round(height * factor), tf.int32), 1)
        new_w = tf.maximum(tf.cast(tf.round(width * factor), tf.int32), 1)
    image = tf.image.resize(image, tf.stack([new_h, new_w]), method="bilinear")
    # Normalized boxes times the size of the resized content = pixels of the output image
    # (the padding is at the bottom / right, so it does not move them).
    boxes = convert_format(bbox, "rel_yxyx", "yxyx", image_shape=tf.stack([new_h, new_w]))
    raw_area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])

    if augmenting and augment.scale_range[1] > 1.0:
        # Scaled past the output: keep a random output-sized window of it.
        excess = tf.maximum(tf.stack([new_h - height, new_w - width]), 0)
        offset = augment_lib.scale_offset(seed, excess)
        new_h, new_w = tf.minimum(new_h, height), tf.minimum(new_w, width)
        image = tf.slice(image, tf.concat([offset, [0]], 0), tf.stack([new_h, new_w, -1]))
        shift = tf.cast(offset, tf.float32)
        boxes = boxes - tf.concat([shift, shift], 0)

    if augmenting and augment.flip_prob > 0:
        flip = augment_lib.flip_decision(seed, augment)
        new_w_f = tf.cast(new_w, tf.float32)
        y1, x1, y2, x2 = tf.unstack(boxes, num=4, axis=-1)
        flipped_boxes = tf.stack([y1, new_w_f - x2, y2, new_w_f - x1], axis=-1)
        image = tf.cond(flip, lambda: tf.image.flip_left_right(image), lambda: image)
        boxes = tf.cond(flip, lambda: flipped_boxes, lambda: boxes)

    if augmenting and augment.colour:
        image = augment_lib.colour_jitter(image, seed, augment)

    if augmenting and augment.cuts_boxes:
        content = tf.cast(tf.stack([new_h, new_w]), tf.float32)
        boxes, keep = augment_lib.clip_and_drop(boxes, raw_area, content, augment)
        boxes = tf.boolean_mask(boxes, keep)
        label = tf.boolean_mask(label, keep)
        num = tf.shape(label)[0]

    image = tf.image.pad_to_bounding_box(image, 0, 0, height, width)
    image = tf.ensure_shape(image, [height, width, 3])
    pad = max_boxes - num
    boxes = tf.ensure_shape(tf.pad(boxes, [[0, pad], [0, 0]]), [max_boxes, 4])
    classes = tf.ensure_shape(tf.pad(label, [[0, pad]], constant_values=-1), [max_boxes])
    return image, {"boxes": boxes, "classes": classes}


def detection_dataset(
    ds: tf.data.Dataset,
    *,
    image_size,
    batch_size: int,
    max_boxes: int = 100,
    shuffle: bool | int = False,
    seed: int | None = None,
    keep_aspect: bool = True,
    training: bool = False,
    flip_prob: float | None = None,
    drop_remainder: bool | None = None,
    augment: Augmentation | None = None,
) -> tf.data.Dataset:
    """Maps a TFDS detection dataset to batched `(images, ground_truth)` for kerasdet models.

    Each image is resized to fit `image_size` keeping its aspect ratio (height / width) and
    padded with zeros at the bottom and right (or, with `keep_aspect=False`, stretched to
    `image_size`); its boxes are converted from TFDS normalized `[ymin, xmin, ymax, xmax]` to
    `yxyx` pixels of the output image. Objects are padded to `max_boxes` rows with class -1
    (boxes 0). With `training=True` images are augmented: by default flipped left-right with
    probability `flip_prob`, boxes along with them; pass an `Augmentation` as `augment` for
    random crops, scale jitter and colour jitter (boxes follow the pixels; boxes the crops
    cut away are dropped, see `kerasdet.data.augment`).

    Args:
        ds: a `tf.data.Dataset` of TFDS detection examples (`image` `[h, w, 3]`,
            `objects/bbox` `[n, 4]` normalized, `objects/label` `[n]`), unbatched, e.g.
            `tfds.load("voc/2007", split="train")`.
        image_size: `(height, width)` of the output images.
        batch_size: images per batch.
        max_boxes: rows of the padded ground truth `M`. An example with more objects stops
            iteration with `tf.errors.InvalidArgumentError` ("an example has N objects, more
            than max_boxes = M") — objects are never dropped silently. COCO has up to 93
            objects per image, VOC 42.
        shuffle: `False`, `True` (buffer of 1024 examples) or a buffer size; reshuffled every
            epoch.
        seed: makes shuffling and augmentation deterministic (the same sequence for the same
            seed; different draws in each epoch). `None`: random.
        keep_aspect: keep the aspect ratio and pad (default) or stretch to `image_size`.
        training: enables augmentation (by default only the random horizontal flip).
        flip_prob: probability of a flip when `training` and no `augment` is given;
            default 0.5. Give the flip probability inside `augment` instead when using one.
        drop_remainder: drop the last incomplete batch, giving a static batch dimension;
            default: `training`.
        augment: a `kerasdet.data.Augmentation` applied when `training` (requires
            `training=True`); default `Augmentation(flip_prob=flip_prob)`.

    Returns:
        A prefetched `tf.data.Dataset` of `(images float32 [B, H, W, 3] 0-255,
        {"boxes": float32 [B, M, 4], "classes": int32 [B, M]})`.
    """
    if not isinstance(ds, tf.data.Dataset):
        raise ValueError(f"`ds` must be a tf.data.Dataset, got {type(ds).__name__}")
    image_size = _check_image_size(image_size)
    _check_positive_int("batch_size", batch_size)
    _check_positive_int("max_boxes", max_boxes)
    if augment is not None:
        if not isinstance(augment, Augmentation):
            raise ValueError(
                f"`augment` must be a kerasdet.data.Augmentation, got {type(augment).__name__}"
            )
        if not training:
            raise ValueError("`augment` is applied only when training; pass training=True too")
        if flip_prob is not None:
            raise ValueError(
                f"Give the flip probability in `augment` (Augmentation(flip_prob=...)), not "
                f"also `flip_prob`={flip_prob!r}"
            )
    else:
        flip_prob = 0.5 if flip_prob is None else flip_prob
        if isinstance(flip_prob, bool) or not isinstance(flip_prob, (int, float)) or not 0.0 <= flip_prob <= 1.0:
            raise ValueError(f"`flip_prob` must be in [0, 1], got {flip_prob!r}")
        augment = Augmentation(flip_prob=float(flip_prob))
    if shuffle is True:
        buffer = DEFAULT_SHUFFLE_BUFFER
    elif shuffle is False or shuffle is None:
        buffer = 0
    else:
        _check_positive_int("shuffle", shuffle)
        buffer = shuffle
    _check_schema(ds.element_spec)
    if drop_remainder is None:
        drop_remainder = bool(training)

    if buffer:
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    kwargs = dict(
        image_size=image_size, max_boxes=max_boxes, keep_aspect=keep_aspect, augment=augment
    )
    if training and not augment.is_identity:
        # One random int64 per example from a seeded stream (a new stream every epoch) seeds
        # stateless draws, so augmentation is reproducible and independent of parallelism.
        randoms = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip(ds, randoms)

        def prepare(example, r):
            return _prepare(example, r, **kwargs)
    else:

        def prepare(example):
            return _prepare(example, None, **kwargs)

    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    return ds.prefetch(tf.data.AUTOTUNE)


def default_data_dir() -> str | None:
    """Where `load_shapes` builds datasets: `$KERASDET_HOME/tensorflow_datasets` if
    `KERASDET_HOME` is set, else `None` (TFDS's default: `$TFDS_DATA_DIR` or
    `~/tensorflow_datasets`)."""
    home = os.environ.get("KERASDET_HOME")
    return os.path.join(home, "tensorflow_datasets") if home else None


def load_shapes(
    split: str = "train",
    *,
    config: str = "default",
    image_size=None,
    batch_size: int = 8,
    data_dir: str | None = None,
    max_boxes: int | None = None,
    shuffle: bool | int | None = None,
    seed: int | None = 0,
    training: bool | None = None,
    **kwargs,
) -> tf.data.Dataset:
    """Builds `kerasdet_shapes/<config>` if needed (locally, no network) and returns
    `detection_dataset` over one split.

    Args:
        split: `"train"`, `"validation"`, or a TFDS slice such as `"train[:100]"`.
        config: `"default"` (256x256), `"small"` (128x128) or `"tiny"` (64x64).
        image_size: output `(height, width)`; default: the config's image size.
        batch_size: images per batch.
        data_dir: where the TFDS files go; default `default_data_dir()`.
        max_boxes: padded objects per image; default: the config's `max_objects`.
        shuffle: default: `training`.
        seed: seed of shuffling and flips.
        training: flip augmentation (and shuffling, dropping the last partial batch);
            default: `split` starts with `"train"`.
        **kwargs: passed to `detection_dataset` (`keep_aspect`, `flip_prob`,
            `drop_remainder`).
    """
    from kerasdet.data.shapes import KerasdetShapes  # registers the builder

    configs = {c.name: c for c in KerasdetShapes.BUILDER_CONFIGS}
    if config not in configs:
        raise ValueError(f"`config` must be one of {sorted(configs)}, got {config!r}")
    cfg = configs[config]
    builder = KerasdetShapes(config=config, data_dir=data_dir or default_data_dir())
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False)
    )
    if training is None:
        training = split.startswith("train")
    if shuffle is None:
        shuffle = training
    ds = builder.as_dataset(split=split, shuffle_files=False)
    return detection_dataset(
        ds,
        image_size=image_size or (cfg.height, cfg.width),
        batch_size=batch_size,
        max_boxes=max_boxes or cfg.max_objects,
        shuffle=shuffle,
        seed=seed,
        training=training,
        **kwargs,
    )
