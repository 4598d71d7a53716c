"""Box format conversions, at the package's edges only.

Inside kerasdet every box is `float32 [..., 4]` as `[y1, x1, y2, x2]` in absolute pixels of
the model's input image ("yxyx", the order `tf.image` uses). Data comes in other formats:

| name            | layout                              | who uses it               |
|-----------------|-------------------------------------|---------------------------|
| `"yxyx"`        | `[y1, x1, y2, x2]` pixels           | kerasdet, `tf.image`      |
| `"xyxy"`        | `[x1, y1, x2, y2]` pixels           | torchvision, Pascal VOC   |
| `"xywh"`        | `[x, y, width, height]` pixels      | COCO json                 |
| `"center_xywh"` | `[x_center, y_center, width, height]` pixels | YOLO, anchors    |
| `"rel_yxyx"`    | `[ymin, xmin, ymax, xmax]` in [0, 1] | TFDS `objects/bbox`      |

Convert with `convert_format(boxes, source=..., target=..., image_shape=(H, W))`;
`image_shape` is needed only when one side is `"rel_yxyx"`.
"""

from __future__ import annotations

import tensorflow as tf

FORMATS = ("yxyx", "xyxy", "xywh", "center_xywh", "rel_yxyx")


def _check_format(name: str, value: str) -> None:
    if value not in FORMATS:
        raise ValueError(f"`{name}` must be one of {FORMATS}, got {value!r}")


def _image_hw(image_shape, dtype):
    if image_shape is None:
        raise ValueError(
            "`image_shape=(height, width)` is required to convert from or to 'rel_yxyx', got None"
        )
    shape = tf.cast(tf.convert_to_tensor(image_shape), dtype)
    return shape[..., 0:1], shape[..., 1:2]


def _to_yxyx(boxes, source, image_shape):
    a, b, c, d = tf.unstack(boxes, axis=-1)
    if source == "yxyx":
        return boxes
    if source == "xyxy":
        return tf.stack([b, a, d, c], axis=-1)
    if source == "xywh":
        return tf.stack([b, a, b + d, a + c], axis=-1)
    if source == "center_xywh":
        return tf.stack([b - d / 2.0, a - c / 2.0, b + d / 2.0, a + c / 2.0], axis=-1)
    height, width = _image_hw(image_shape, boxes.dtype)
    return boxes * tf.concat([height, width, height, width], axis=-1)


def _from_yxyx(boxes, target, image_shape):
    y1, x1, y2, x2 = tf.unstack(boxes, axis=-1)
    if target == "yxyx":
        return boxes
    if target == "xyxy":
        return tf.stack([x1, y1, x2, y2], axis=-1)
    if target == "xywh":
        return tf.stack([x1, y1, x2 - x1, y2 - y1], axis=-1)
    if target == "center_xywh":
        return tf.stack([(x1 + x2) / 2.0, (y1 + y2) / 2.0, x2 - x1, y2 - y1], axis=-1)
    height, width = _image_hw(image_shape, boxes.dtype)
    return boxes / tf.concat([height, width, height, width], axis=-1)


def convert_format(boxes, source: str, target: str, image_shape=None) -> tf.Tensor:
    """Converts boxes between formats (see the module docstring for the table).

    Args:
        boxes: float tensor `[..., 4]` in the `source` format.
        source: format of `boxes`, one of `"yxyx"`, `"xyxy"`, `"xywh"`, `"center_xywh"`,
            `"rel_yxyx"`.
        target: the wanted format, same choices.
        image_shape: `(height, width)` of the image, a tuple or a tensor `[2]` (or
            `[..., 1, 2]`-broadcastable per image); only needed for `"rel_yxyx"`.

    Returns:
        float32 tensor `[..., 4]` in the `target` format (box math runs in float32 even
        under mixed precision).

    Example:
    >>> convert_format([[10., 20., 30., 40.]], source="xywh", target="yxyx").numpy()
    array([[20., 10., 60., 40.]], dtype=float32)
    """
    _check_format("source", source)
    _check_format("target", target)
    boxes = tf.cast(tf.convert_to_tensor(boxes), tf.float32)
    if boxes.shape.rank is not None and (boxes.shape.rank == 0 or boxes.shape[-1] not in (4, None)):
        raise ValueError(f"`boxes` must have shape [..., 4], got {boxes.shape}")
    return _from_yxyx(_to_yxyx(boxes, source, image_shape), target, image_shape)
