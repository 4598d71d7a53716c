"""Letterboxing in NumPy: fit an image of any size into a model's fixed input.

The convention is the one `kerasdet.data.detection_dataset` trains with (`keep_aspect=True`):
resize keeping the aspect ratio (height / width) so the image fits `(H, W)`, bilinear as
`tf.image.resize` (half-pixel centres, no antialiasing), then pad with zeros at the bottom
and right. The image's origin does not move, so a box maps back to the original image by
dividing by the per-axis resize factors alone. NumPy only: a phone-side runner needs no
TensorFlow.
"""

from __future__ import annotations

import numpy as np


def as_rgb(image) -> np.ndarray:
    """An image as an `[h, w, 3]` array: HxWx3 as is, HxW and HxWx1 grayscale repeated to
    three channels. Values are kept (uint8, or float 0–255).

    Raises:
        ValueError: for another rank or channel count, a bool or non-numeric dtype, or an
            empty image.
    """
    image = np.asarray(image)
    if image.dtype == bool or not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise ValueError(f"image must be uint8 or float (0–255) pixels, got dtype {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3):
        raise ValueError(
            f"image must be [height, width, 3] RGB (or [height, width] / [height, width, 1] "
            f"grayscale), got shape {image.shape}"
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image must have at least one pixel, got shape {image.shape}")
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return image


def _axis_weights(in_size: int, out_size: int):
    # tf.image.resize (TF2, half_pixel_centers): source coordinate (i + 0.5)·in/out − 0.5,
    # neighbours clamped to the image, weight = the fractional part.
    position = (np.arange(out_size, dtype=np.float64) + 0.5) * (in_size / out_size) - 0.5
    floor = np.floor(position)
    fraction = (position - floor).astype(np.float32)
    low = np.clip(floor, 0, in_size - 1).astype(np.int64)
    high = np.clip(floor + 1, 0, in_size - 1).astype(np.int64)
    return low, high, fraction


def resize_bilinear(image: np.ndarray, size) -> np.ndarray:
    """Bilinear resize of `[h, w, C]` to `size = (H, W)`, float32, the values
    `tf.image.resize(image, size, "bilinear")` returns."""
    height, width = (int(v) for v in size)
    image = np.asarray(image, np.float32)
    if image.shape[:2] == (height, width):
        return image
    y0, y1, fy = _axis_weights(image.shape[0], height)
    x0, x1, fx = _axis_weights(image.shape[1], width)
    top = image[y0]
    bottom = image[y1]
    rows = top + (bottom - top) * fy[:, None, None]  # [H, w, C]
    left = rows[:, x0]
    right = rows[:, x1]
    return left + (right - left) * fx[None, :, None]


def letterbox(image: np.ndarray, size):
    """Resizes `image` to fit `size` keeping its aspect ratio and pads bottom / right.

    Args:
        image: `[h, w, C]` pixels.
        size: `(H, W)` of the output.

    Returns:
        `(padded float32 [H, W, C], (sy, sx))`: `sy = h' / h`, `sx = w' / w` with
        `(h', w')` the size of the resized content; a box `y1, x1, y2, x2` of the padded
        image is `y1 / sy, x1 / sx, y2 / sy, x2 / sx` in the original image.
    """
    height, width = (int(v) for v in size)
    in_h, in_w = image.shape[:2]
    scale = min(height / in_h, width / in_w)
    # The same rounding and clamping as kerasdet.data.pipeline._resize_pad_flip.
    new_h = int(np.clip(np.round(in_h * scale), 1, height))
    new_w = int(np.clip(np.round(in_w * scale), 1, width))
    resized = resize_bilinear(image, (new_h, new_w))
    padded = np.zeros((height, width, image.shape[-1]), np.float32)
    padded[:new_h, :new_w] = resized
    return padded, (new_h / in_h, new_w / in_w)
