"""Box-aware augmentation for `detection_dataset`: crop, scale jitter, flip, colour jitter.

Every random draw is a stateless op seeded by one int64 per example (see
`detection_dataset`), so a seeded pipeline gives the same batches in every run, whatever the
parallelism. Boxes move with the pixels: a box is transformed with the same affine map as
the image (crop offset, resize scale, flip), then clipped once to the final image content.
A box the crops cut is dropped when nothing of it is left, when its clipped side is shorter
than `min_box_size` output pixels, or when less than `min_visible` of its area remains. A
box the crops did not cut is never dropped.

Order for one example: random crop of the original image -> resize to fit `image_size`
(times a random scale; a larger image is then randomly cropped to `image_size`) -> flip
left-right within the content -> colour jitter of the content -> zero padding.

Example:
>>> aug = Augmentation(scale_range=(0.75, 1.25), crop_prob=0.5, brightness=0.1)
>>> # detection_dataset(ds, image_size=(512, 512), batch_size=8, training=True, augment=aug)
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

CROP_MODES = ("clip", "keep")

# Seed slots: one stateless stream per random decision. Slot 0 is the flip, as before
# augmentation had more than a flip, so seeded flip-only pipelines keep their flips.
_FLIP, _CROP_APPLY, _CROP_WINDOW, _SCALE, _SCALE_OFFSET = 0, 1, 2, 3, 4
_BRIGHTNESS, _CONTRAST, _SATURATION, _HUE = 5, 6, 7, 8


def _check_range(name, value, lo, hi):
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a pair (min, max), got {value!r}") from None
    if not (lo <= a <= b <= hi):
        raise ValueError(f"`{name}` must satisfy {lo} <= min <= max <= {hi}, got {value!r}")
    return a, b


def _check_unit(name, value, hi=1.0):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= hi:
        raise ValueError(f"`{name}` must be a number in [0, {hi}], got {value!r}")
    return float(value)


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Random box-aware augmentation applied by `detection_dataset(..., training=True)`.

    The default is a horizontal flip with probability 0.5 and nothing else (what
    `training=True` did before this class existed).

    Args:
        flip_prob: probability of a left-right flip.
        scale_range: `(min, max)` scale jitter: the image is resized to fit `image_size`
            times a factor drawn uniformly from this range. Below 1 the image is smaller
            (more padding); above 1 it is larger and a random `image_size` window of it is
            kept. `(1, 1)`: no jitter.
        crop_prob: probability of a random crop of the original image (before resizing).
        crop_mode: `"clip"`: the window is drawn with `crop_area_range`,
            `crop_aspect_range` and `crop_min_object_covered`
            (`tf.image.stateless_sample_distorted_bounding_box`), boxes it cuts are clipped;
            `"keep"`: the window is drawn to contain every box whole (its left edge uniform
            between the image's left edge and the boxes' leftmost edge, and so on), so no
            box is cut; an image without boxes gets a `"clip"` window.
        crop_area_range: fraction of the image area the window covers (`"clip"` mode).
        crop_aspect_range: window aspect ratio range, **height / width** (`"clip"` mode).
        crop_min_object_covered: the window covers at least this fraction of some box
            (`"clip"` mode; with no boxes, of the whole image).
        min_visible: a cut box is dropped when less than this fraction of its area is left.
        min_box_size: a cut box is dropped when its clipped height or width is below this
            many output pixels.
        brightness: maximum brightness change, as a fraction of the 0-255 range.
        contrast: contrast factor drawn from `[1 - contrast, 1 + contrast]`.
        saturation: saturation factor drawn from `[1 - saturation, 1 + saturation]`.
        hue: maximum hue change, in turns (`<= 0.5`).
    """

    flip_prob: float = 0.5
    scale_range: tuple = (1.0, 1.0)
    crop_prob: float = 0.0
    crop_mode: str = "clip"
    crop_area_range: tuple = (0.3, 1.0)
    crop_aspect_range: tuple = (0.5, 2.0)
    crop_min_object_covered: float = 0.5
    min_visible: float = 0.0
    min_box_size: float = 1.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0

    def __post_init__(self):
        _check_unit("flip_prob", self.flip_prob)
        lo, hi = _check_range("scale_range", self.scale_range, 0.0, float("inf"))
        if lo <= 0:
            raise ValueError(f"`scale_range` must be positive factors, got {self.scale_range!r}")
        object.__setattr__(self, "scale_range", (lo, hi))
        _check_unit("crop_prob", self.crop_prob)
        if self.crop_mode not in CROP_MODES:
            raise ValueError(f"`crop_mode` must be one of {CROP_MODES}, got {self.crop_mode!r}")
        area = _check_range("crop_area_range", self.crop_area_range, 0.0, 1.0)
        if area[0] <= 0:
            raise ValueError(f"`crop_area_range` must be in (0, 1], got {self.crop_area_range!r}")
        object.__setattr__(self, "crop_area_range", area)
        aspect = _check_range("crop_aspect_range", self.crop_aspect_range, 0.0, float("inf"))
        if aspect[0] <= 0:
            raise ValueError(
                f"`crop_aspect_range` (height / width) must be positive, got {self.crop_aspect_range!r}"
            )
        object.__setattr__(self, "crop_aspect_range", aspect)
        _check_unit("crop_min_object_covered", self.crop_min_object_covered)
        _check_unit("min_visible", self.min_visible)
        if isinstance(self.min_box_size, bool) or not isinstance(self.min_box_size, (int, float)) or self.min_box_size < 0:
            raise ValueError(f"`min_box_size` must be a number >= 0 pixels, got {self.min_box_size!r}")
        _check_unit("brightness", self.brightness)
        _check_unit("contrast", self.contrast)
        _check_unit("saturation", self.saturation)
        _check_unit("hue", self.hue, 0.5)

    @property
    def cuts_boxes(self) -> bool:
        """Whether boxes can be cut (a crop, or a scale jitter above 1)."""
        return self.crop_prob > 0 or self.scale_range[1] > 1.0

    @property
    def is_identity(self) -> bool:
        """Whether this changes nothing (no flip, crop, scale or colour jitter)."""
        return self.flip_prob == 0 and not self.cuts_boxes and self.scale_range[0] == 1.0 and not self.colour

    @property
    def colour(self) -> bool:
        return any(v > 0 for v in (self.brightness, self.contrast, self.saturation, self.hue))


def _seed(seed, slot):
    return tf.stack([seed, tf.constant(slot, tf.int64)])


def _uniform(seed, slot, lo=0.0, hi=1.0):
    return tf.random.stateless_uniform([], seed=_seed(seed, slot), minval=lo, maxval=hi)


def flip_decision(seed, aug: Augmentation):
    return _uniform(seed, _FLIP) < aug.flip_prob


def _keep_window(boxes, in_hw, seed):
    """A random window `(y0, x0, h, w)` in pixels that contains every box whole."""
    union = tf.concat(
        [tf.reduce_min(boxes[:, :2], axis=0), tf.reduce_max(boxes[:, 2:], axis=0)], axis=0
    )
    union = tf.clip_by_value(union, 0.0, tf.concat([in_hw, in_hw], 0))
    u = tf.random.stateless_uniform([4], seed=_seed(seed, _CROP_WINDOW))
    top_left = tf.floor(u[:2] * union[:2])
    bottom_right = tf.math.ceil(union[2:] + u[2:] * (in_hw - union[2:]))
    begin = tf.cast(top_left, tf.int32)
    size = tf.maximum(tf.cast(bottom_right - top_left, tf.int32), 1)
    return begin, size


def random_crop(image, boxes, seed, aug: Augmentation):
    """Crops the original image at random (with probability `crop_prob`).

    Args:
        image: `[h, w, 3]` image.
        boxes: float32 `[n, 4]` yxyx pixels of `image`.
        seed: int64 scalar, this example's seed.
        aug: the `Augmentation`.

    Returns:
        `(image [h', w', 3], boxes [n, 4])`: boxes are shifted into the window, not clipped
        (clipping and dropping happen once, at the end).
    """
    in_shape = tf.shape(image)
    in_hw = tf.cast(in_shape[:2], tf.float32)
    rel = boxes / tf.concat([in_hw, in_hw], 0)
    lo, hi = aug.crop_aspect_range
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        in_shape,
        # Boxes outside [0, 1] are rejected by the op; only the window depends on them.
        tf.clip_by_value(rel, 0.0, 1.0)[tf.newaxis],
        seed=_seed(seed, _CROP_WINDOW),
        min_object_covered=aug.crop_min_object_covered,
        aspect_ratio_range=(1.0 / hi, 1.0 / lo),  # the op's ratio is width / height
        area_range=aug.crop_area_range,
        max_attempts=100,
        use_image_if_no_bounding_boxes=True,
    )
    begin, size = begin[:2], size[:2]
    if aug.crop_mode == "keep":
        begin, size = tf.cond(
            tf.shape(boxes)[0] > 0,
            lambda: _keep_window(boxes, in_hw, seed),
            lambda: (begin, size),
        )
    apply = _uniform(seed, _CROP_APPLY) < aug.crop_prob
    begin = tf.where(apply, begin, tf.zeros_like(begin))
    size = tf.where(apply, size, in_shape[:2])
    image = tf.slice(image, tf.concat([begin, [0]], 0), tf.concat([size, [-1]], 0))
    offset = tf.cast(begin, tf.float32)
    return image, boxes - tf.concat([offset, offset], 0)


def scale_factor(seed, aug: Augmentation):
    lo, hi = aug.scale_range
    if lo == hi:
        return tf.constant(lo, tf.float32)
    return _uniform(seed, _SCALE, lo, hi)


def scale_offset(seed, excess):
    """Random integer offsets in `[0, excess]` per axis (`excess` int32 `[2]`, >= 0)."""
    u = tf.random.stateless_uniform([2], seed=_seed(seed, _SCALE_OFFSET))
    return tf.cast(tf.floor(u * tf.cast(excess + 1, tf.float32)), tf.int32)


def colour_jitter(image, seed, aug: Augmentation):
    """Random brightness, contrast, saturation and hue of a float `[h, w, 3]` 0-255 image."""
    x = image / 255.0  # tf.image's colour ops work on [0, 1]
    if aug.brightness:
        x = tf.image.stateless_random_brightness(x, aug.brightness, _seed(seed, _BRIGHTNESS))
    if aug.contrast:
        x = tf.image.stateless_random_contrast(
            x, 1.0 - aug.contrast, 1.0 + aug.contrast, _seed(seed, _CONTRAST)
        )
    if aug.saturation:
        x = tf.image.stateless_random_saturation(
            x, 1.0 - aug.saturation, 1.0 + aug.saturation, _seed(seed, _SATURATION)
        )
    if aug.hue:
        x = tf.image.stateless_random_hue(x, aug.hue, _seed(seed, _HUE))
    return tf.clip_by_value(x, 0.0, 1.0) * 255.0


def clip_and_drop(boxes, raw_area, content_hw, aug: Augmentation):
    """Clips boxes to the content; mask of those to keep.

    Args:
        boxes: float32 `[n, 4]` yxyx output pixels, possibly outside the content.
        raw_area: float32 `[n]`, each box's area before any cut, in output pixels².
        content_hw: float32 `[2]`, the image content's size in output pixels.
        aug: the `Augmentation`.

    Returns:
        `(clipped boxes [n, 4], keep bool [n])`.
    """
    limit = tf.concat([content_hw, content_hw], 0)
    clipped = tf.clip_by_value(boxes, 0.0, limit)
    height = clipped[:, 2] - clipped[:, 0]
    width = clipped[:, 3] - clipped[:, 1]
    cut = tf.reduce_any(tf.not_equal(clipped, boxes), axis=1)
    visible = height * width / tf.maximum(raw_area, 1e-12)  # guard: zero-area raw boxes
    too_small = (height < aug.min_box_size) | (width < aug.min_box_size) | (visible < aug.min_visible)
    vanished = (height <= 0) | (width <= 0)
    keep = ~vanished & ~(cut & too_small)
    return clipped, keep
