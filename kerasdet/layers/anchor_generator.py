"""Anchor boxes for one or more feature levels."""

from __future__ import annotations

import math

import keras
import tensorflow as tf

_DEFAULT_SIZES = (128.0, 256.0, 512.0)
_DEFAULT_ASPECT_RATIOS = (0.5, 1.0, 2.0)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _explicit_pairs(level: int, values) -> list[tuple[float, float]]:
    """Parses one level of YOLO-style anchors: `[w, h, w, h, ...]` or `[(w, h), ...]`."""
    if all(_is_number(v) for v in values):
        if len(values) == 0 or len(values) % 2:
            raise ValueError(
                f"`anchors` level {level} must list (width, height) pairs, got an odd-length "
                f"list of {len(values)} numbers: {list(values)}"
            )
        pairs = [(values[i], values[i + 1]) for i in range(0, len(values), 2)]
    else:
        pairs = [tuple(v) for v in values]
        if not pairs or any(len(p) != 2 or not all(_is_number(x) for x in p) for p in pairs):
            raise ValueError(
                f"`anchors` level {level} must be [w, h, w, h, ...] or [(w, h), ...], got {values!r}"
            )
    for w, h in pairs:
        if not (w > 0 and h > 0):
            raise ValueError(f"`anchors` level {level} has a non-positive (w, h) = ({w}, {h})")
    return [(float(w), float(h)) for w, h in pairs]


@keras.saving.register_keras_serializable(package="kerasdet")
class AnchorGenerator(keras.layers.Layer):
    """Anchor boxes for one or more feature levels, as yxyx pixels.

    Each level has a stride `s` and `k` anchor shapes. Its feature map covers the image with
    `ceil(H / s) × ceil(W / s)` locations; location (i, j) is centred at
    `((i + 0.5)·s, (j + 0.5)·s)` and carries the `k` shapes. Anchors are ordered
    location-major — row, then column, then shape — so an RPN output `[B, h, w, k·4]`
    reshaped to `[B, h·w·k, 4]` lines up with them. Levels are concatenated in order.

    Shapes come either from sizes × aspect ratios (Faster R-CNN) or from explicit
    `(width, height)` pairs per level (YOLOv5 configs). An anchor of size `S` and aspect
    ratio `r` (**aspect ratio = height / width**) has `h = S·√r`, `w = S/√r` (area `S²`);
    shapes are listed aspect-ratio-major: for each ratio, every size.

    Args:
        sizes: anchor sizes (square roots of areas) in pixels. One level: a flat sequence,
            default `(128, 256, 512)`. Several levels: one sequence per level.
        aspect_ratios: height / width ratios, default `(0.5, 1.0, 2.0)`; shared by all
            levels, or one sequence per level.
        stride: feature stride in pixels, an int (one level, default 16) or one int per
            level.
        anchors: explicit shapes instead of sizes × ratios, one entry per level, each
            `[w, h, w, h, ...]` or `[(w, h), ...]`, e.g. YOLOv5's
            `[[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119]]` with `stride=(8, 16)`.
            Cannot be combined with `sizes` / `aspect_ratios`.

    Call arguments:
        image_shape: `(height, width)` of the input image, Python ints or an int tensor
            `[2]` (may be dynamic).
        feature_shapes: optional `[(h, w), ...]` per level to use instead of
            `ceil(H / s), ceil(W / s)`, for backbones whose maps are sized otherwise.

    Returns:
        float32 tensor `[A, 4]`, yxyx pixels, `A = Σ_levels h·w·k`.

    Example:
    >>> gen = AnchorGenerator()  # 3 sizes × 3 ratios, stride 16
    >>> gen(image_shape=(600, 1000)).shape  # 38 · 63 · 9
    TensorShape([21546, 4])
    """

    def __init__(self, sizes=None, aspect_ratios=None, stride=16, anchors=None, **kwargs):
        kwargs.setdefault("dtype", "float32")  # box math stays float32 under mixed precision
        super().__init__(**kwargs)
        strides = [stride] if _is_number(stride) else list(stride)
        if not strides or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in strides):
            raise ValueError(f"`stride` must be a positive int or a sequence of them, got {stride!r}")
        num_levels = len(strides)

        if anchors is not None:
            if sizes is not None or aspect_ratios is not None:
                raise ValueError(
                    "Give either explicit `anchors` or `sizes`/`aspect_ratios`, not both; got "
                    f"anchors={anchors!r}, sizes={sizes!r}, aspect_ratios={aspect_ratios!r}"
                )
            if len(anchors) != num_levels:
                raise ValueError(
                    f"`anchors` has {len(anchors)} levels but `stride` has {num_levels}: {strides}"
                )
            shapes = [_explicit_pairs(level, values) for level, values in enumerate(anchors)]
            self._config = {"anchors": [[list(p) for p in level] for level in shapes]}
        else:
            sizes_per_level = self._per_level("sizes", _DEFAULT_SIZES if sizes is None else sizes, num_levels)
            ratios_per_level = self._per_level(
                "aspect_ratios", _DEFAULT_ASPECT_RATIOS if aspect_ratios is None else aspect_ratios, num_levels
            )
            shapes = []
            for level_sizes, level_ratios in zip(sizes_per_level, ratios_per_level):
                # (width, height) per shape, aspect-ratio-major.
                shapes.append(
                    [(s / math.sqrt(r), s * math.sqrt(r)) for r in level_ratios for s in level_sizes]
                )
            self._config = {
                "sizes": sizes_per_level[0] if num_levels == 1 else sizes_per_level,
                "aspect_ratios": ratios_per_level[0] if num_levels == 1 else ratios_per_level,
            }
        self.strides = strides
        self.shapes = shapes  # per level: [(w, h), ...]

    @staticmethod
    def _per_level(name, values, num_levels):
        values = list(values)
        if values and all(_is_number(v) for v in values):
            levels = [values] * num_levels
        else:
            levels = [list(v) for v in values]
            if len(levels) != num_levels:
                raise ValueError(
                    f"`{name}` must be one flat sequence or one sequence per level ({num_levels}), "
                    f"got {len(levels)} entries: {values!r}"
                )
        for level in levels:
            if not level or not all(_is_number(v) and v > 0 for v in level):
                raise ValueError(f"`{name}` must hold positive numbers, got {level!r}")
        return [[float(v) for v in level] for level in levels]

    @property
    def num_levels(self) -> int:
        return len(self.strides)

    @property
    def anchors_per_location(self) -> list[int]:
        """`k` for each level."""
        return [len(level) for level in self.shapes]

    def feature_shapes(self, image_shape):
        """`(ceil(H / s), ceil(W / s))` per level; ints when `image_shape` is static."""
        static = tf.get_static_value(tf.convert_to_tensor(image_shape))
        if static is not None:
            height, width = (int(v) for v in static)
            return [(-(-height // s), -(-width // s)) for s in self.strides]
        image_shape = tf.cast(image_shape, tf.int32)
        return [((image_shape[0] + s - 1) // s, (image_shape[1] + s - 1) // s) for s in self.strides]

    def call(self, image_shape, feature_shapes=None):
        image_shape = tf.convert_to_tensor(image_shape)
        static = tf.get_static_value(image_shape)
        if static is not None and (image_shape.shape != (2,) or min(static) <= 0):
            raise ValueError(f"`image_shape` must be a positive (height, width), got {static!r}")
        if feature_shapes is None:
            feature_shapes = self.feature_shapes(image_shape)
        elif len(feature_shapes) != self.num_levels:
            raise ValueError(
                f"`feature_shapes` must have one (h, w) per level ({self.num_levels}), got {feature_shapes!r}"
            )
        per_level = []
        for stride, shapes, (height, width) in zip(self.strides, self.shapes, feature_shapes):
            ys = (tf.cast(tf.range(height), tf.float32) + 0.5) * stride
            xs = (tf.cast(tf.range(width), tf.float32) + 0.5) * stride
            cy, cx = tf.meshgrid(ys, xs, indexing="ij")  # [h, w]
            centers = tf.stack([cy, cx, cy, cx], axis=-1)[:, :, None, :]  # [h, w, 1, 4]
            half = tf.constant([[-h / 2, -w / 2, h / 2, w / 2] for w, h in shapes], tf.float32)
            per_level.append(tf.reshape(centers + half, [-1, 4]))  # row, column, shape
        return per_level[0] if len(per_level) == 1 else tf.concat(per_level, axis=0)

    def compute_output_spec(self, image_shape=None, feature_shapes=None):
        return keras.KerasTensor((None, 4), dtype="float32")

    def get_config(self):
        config = super().get_config()
        stride = self.strides[0] if self.num_levels == 1 else list(self.strides)
        config.update({"stride": stride, **self._config})
        return config
