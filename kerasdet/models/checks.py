"""Checks of what enters a detector: one-line errors that name the bad value and what was
expected.

Static properties — rank, channel count, spatial size, dtype, the structure and shapes of
the ground truth — are known in Python whenever a model is called, fitted, evaluated or
predicts (for `tf.function` steps: while the step is traced), so they are checked there and
fail with a `ValueError` before any graph runs::

    faster_rcnn_tiny: `images` must be [batch, 64, 64, 3] (RGB, 0-255), got shape
    (2, 64, 64, 4): 4 channels (RGBA?); drop the alpha channel, e.g. images[..., :3]

Values — non-finite boxes, `x2 < x1` or `y2 < y1`, class ids outside `-1 .. C - 1` — are
data. Numpy arrays and eager tensors are checked in Python (a `ValueError` naming the image,
the row and the value). Inside a `tf.function` (`fit` on a `tf.data.Dataset`) the same
conditions become `tf.debugging.Assert` ops whose message starts with `"kerasdet:"`; a bad
batch then stops the step with `tf.errors.InvalidArgumentError`, whose long graph report
`assertion_message` reduces to that one line again (the `kerasdet` commands do this).

Valid, if unusual, and accepted: images without objects (every row class `-1`), a batch in
which every image is empty, boxes partly outside the image (the model clips them), and
zero-size boxes — including boxes entirely outside the image, which clipping makes
zero-size — which target assignment ignores. Padding rows (class `-1`) may hold any finite
box.

Images may have any real dtype (`float32` is the convention; `uint8` and other integer or
float types are cast); `bool`, complex and string images are errors.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np
import tensorflow as tf

BOXES_KEY, CLASSES_KEY = "boxes", "classes"

# How to get from a common wrong channel count to RGB.
_CHANNEL_HINTS = {
    1: "grayscale; repeat it to RGB, e.g. np.repeat(images, 3, axis=-1)",
    2: "grayscale + alpha?; keep the first channel repeated to RGB",
    4: "RGBA?; drop the alpha channel, e.g. images[..., :3]",
}
_ASSERTION = re.compile(r"assertion failed: (\[kerasdet.*)")


def _prefix(where: str) -> str:
    return f"{where}: " if where else ""


def _shape_of(x):
    """The static shape of an array, tensor or KerasTensor as a tuple (None entries for
    unknown sizes), or None when even the rank is unknown."""
    shape = x.shape
    if isinstance(shape, tf.TensorShape):
        return None if shape.rank is None else tuple(shape.as_list())
    return tuple(None if d is None else int(d) for d in shape)


def _dtype_of(x) -> tf.DType | None:
    try:
        return tf.as_dtype(x.dtype)
    except TypeError:  # numpy object / unicode arrays have no TF dtype
        return None


def _dtype_name(x) -> str:
    dtype = _dtype_of(x)
    return dtype.name if dtype is not None else str(x.dtype)


def _is_real(dtype) -> bool:
    return dtype is not None and (dtype.is_floating or dtype.is_integer) and not dtype.is_quantized


def _as_checkable(value):
    """Arrays and tensors as they are; lists and tuples of numbers as numpy arrays; None for
    anything else (left to Keras)."""
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return value
    if isinstance(value, (list, tuple)):
        try:
            return np.asarray(value)
        except ValueError:  # ragged nested lists
            return None
    return None


def is_concrete(value) -> bool:
    """True for values that exist now (numpy arrays, eager tensors), False for symbolic
    tensors of a graph being traced and for KerasTensors."""
    if isinstance(value, np.ndarray):
        return True
    return tf.is_tensor(value) and not tf.is_symbolic_tensor(value) and hasattr(value, "numpy")


def check_images(images, image_size=None, *, where: str = "", name: str = "images"):
    """Checks the static properties of a batch of images; returns `images` unchanged.

    Args:
        images: an array or tensor expected to be `[batch, H, W, 3]`, 0–255 RGB. A mapping
            `{"images": x}` (how Keras names a functional model's input) is looked into;
            other objects are returned unchecked, for Keras to judge.
        image_size: the model's static `(H, W)`, or None for any size.
        where: what is checked (a model's name), to start the message.
        name: how the message calls the images.

    Raises:
        ValueError: one line naming the bad rank, channel count, size or dtype and what was
            expected.
    """
    if isinstance(images, Mapping) and "images" in images:
        check_images(images["images"], image_size, where=where, name=name)
        return images
    x = _as_checkable(images)
    if x is None:
        return images
    shape = _shape_of(x)
    if shape is None:
        return images
    height, width = image_size if image_size is not None else ("H", "W")
    expected = f"[batch, {height}, {width}, 3] (RGB, 0-255)"
    start = f"{_prefix(where)}`{name}` must be {expected}, got"
    dtype = _dtype_of(x)
    if not _is_real(dtype):
        raise ValueError(f"{start} dtype {_dtype_name(x)}; expected float32 pixel values (uint8 is cast too)")
    if len(shape) != 4:
        hint = (
            "a single image; add the batch axis, e.g. images[None]"
            if len(shape) == 3 and shape[-1] in (1, 3, 4)
            else f"rank {len(shape)}"
        )
        raise ValueError(f"{start} shape {shape}: {hint}")
    batch, h, w, channels = shape
    if channels is not None and channels != 3:
        hint = _CHANNEL_HINTS.get(channels, "expected 3 RGB channels")
        raise ValueError(f"{start} shape {shape}: {channels} channel{'s' * (channels != 1)} ({hint})")
    if batch == 0:
        raise ValueError(f"{start} shape {shape}: a batch of 0 images")
    if h == 0 or w == 0:
        raise ValueError(f"{start} shape {shape}: {h}×{w} images have no pixels")
    if image_size is not None and (h not in (None, height) or w not in (None, width)):
        raise ValueError(
            f"{start} shape {shape}: {h}×{w} images, but the model's static image_size is "
            f"{height}×{width}; resize or letterbox them (kerasdet.data.detection_dataset does) "
            f"or build the model with image_size=({h}, {w})"
        )
    return images


# --- ground truth ----------------------------------------------------------------------------


def _check_ground_truth_structure(ground_truth, where: str, batch=None):
    """Static checks; returns `(boxes, classes)` as given."""
    start = _prefix(where)
    if not isinstance(ground_truth, Mapping):
        raise ValueError(
            f"{start}ground truth must be a dict {{'boxes': [batch, M, 4] yxyx pixels, 'classes': "
            f"[batch, M] class ids, -1 padding}}, got {type(ground_truth).__name__}"
        )
    missing = [key for key in (BOXES_KEY, CLASSES_KEY) if key not in ground_truth]
    if missing:
        raise ValueError(
            f"{start}ground truth is missing {missing}: expected keys 'boxes' ([batch, M, 4] yxyx "
            f"pixels) and 'classes' ([batch, M], -1 padding), got keys {sorted(map(str, ground_truth))}"
        )
    boxes, classes = _as_checkable(ground_truth[BOXES_KEY]), _as_checkable(ground_truth[CLASSES_KEY])
    if boxes is None or classes is None:
        bad = BOXES_KEY if boxes is None else CLASSES_KEY
        raise ValueError(
            f"{start}ground_truth['{bad}'] must be an array or tensor, got {type(ground_truth[bad]).__name__}"
        )
    box_shape, class_shape = _shape_of(boxes), _shape_of(classes)
    if not _is_real(_dtype_of(boxes)):
        raise ValueError(f"{start}ground_truth['boxes'] must hold numbers (float32 pixels), got dtype {_dtype_name(boxes)}")
    if not _is_real(_dtype_of(classes)):
        raise ValueError(f"{start}ground_truth['classes'] must hold integer class ids, got dtype {_dtype_name(classes)}")
    if box_shape is not None and (len(box_shape) != 3 or box_shape[-1] not in (None, 4)):
        hint = "; boxes are [y1, x1, y2, x2]" if len(box_shape) == 3 else (
            "; a single image's boxes? add the batch axis" if len(box_shape) == 2 else "")
        raise ValueError(
            f"{start}ground_truth['boxes'] must be [batch, M, 4] yxyx pixels, got shape {box_shape}{hint}"
        )
    if class_shape is not None and len(class_shape) != 2:
        raise ValueError(f"{start}ground_truth['classes'] must be [batch, M] class ids, got shape {class_shape}")
    if box_shape is not None and class_shape is not None:
        for axis, what in ((0, "batch size"), (1, "row count M")):
            a, b = box_shape[axis], class_shape[axis]
            if a is not None and b is not None and a != b:
                raise ValueError(
                    f"{start}ground_truth['boxes'] {box_shape} and ['classes'] {class_shape} differ in "
                    f"{what} ({a} vs {b}); expected [batch, M, 4] and [batch, M]"
                )
    if batch is not None and box_shape is not None and box_shape[0] not in (None, batch):
        raise ValueError(
            f"{start}ground truth is for {box_shape[0]} images but the batch has {batch} images"
        )
    return boxes, classes


def _static_batch(images):
    x = _as_checkable(images) if images is not None else None
    shape = _shape_of(x) if x is not None else None
    return shape[0] if shape else None


def _first(mask):
    """`((image, row), "(n such rows)")` of the first True entry of a `[B, M]` mask."""
    index = np.argwhere(mask)[0]
    count = int(mask.sum())
    return tuple(int(i) for i in index), f"({count} such row{'s' * (count != 1)})"


def _fmt_box(box) -> str:
    return "[" + ", ".join(f"{float(v):g}" for v in box) + "]"


def _check_values_numpy(boxes, classes, num_classes, where):
    boxes = np.asarray(boxes, np.float64)
    classes = np.asarray(classes, np.float64)
    start = _prefix(where)
    finite = np.isfinite(boxes).all(axis=-1)
    if not finite.all():
        (i, j), count = _first(~finite)
        raise ValueError(
            f"{start}ground_truth['boxes'][{i}, {j}] = {_fmt_box(boxes[i, j])} is not finite "
            f"{count}; expected [y1, x1, y2, x2] pixel coordinates"
        )
    bad_class = (classes < -1) | (classes >= num_classes) | (classes != np.floor(classes))
    if bad_class.any():
        (i, j), count = _first(bad_class)
        raise ValueError(
            f"{start}ground_truth['classes'][{i}, {j}] = {classes[i, j]:g} is not a class id of this "
            f"{num_classes}-class model {count}; expected 0..{num_classes - 1}, or -1 for "
            "a padding row"
        )
    inverted = (classes >= 0) & ((boxes[..., 2] < boxes[..., 0]) | (boxes[..., 3] < boxes[..., 1]))
    if inverted.any():
        (i, j), count = _first(inverted)
        y1, x1, y2, x2 = boxes[i, j]
        which = f"x2 < x1 ({x2:g} < {x1:g})" if x2 < x1 else f"y2 < y1 ({y2:g} < {y1:g})"
        raise ValueError(
            f"{start}ground_truth['boxes'][{i}, {j}] = {_fmt_box(boxes[i, j])} has {which} "
            f"{count}; expected [y1, x1, y2, x2] with y1 <= y2 and x1 <= x2 "
            "(xyxy or xywh boxes? see kerasdet.boxes.convert_format)"
        )


def _graph_asserts(boxes, classes, num_classes, where):
    """`tf.debugging.Assert` ops for the value checks of `_check_values_numpy`."""
    start = f"kerasdet: {_prefix(where)}"
    finite = tf.reduce_all(tf.math.is_finite(boxes), axis=-1)
    classes_f = tf.cast(classes, tf.float32)
    bad_class = (classes_f < -1.0) | (classes_f >= float(num_classes)) | (classes_f != tf.floor(classes_f))
    objects = classes_f >= 0.0
    inverted = objects & ((boxes[..., 2] < boxes[..., 0]) | (boxes[..., 3] < boxes[..., 1]))

    def where_first(bad):
        return tf.where(bad)[:1]

    return [
        tf.debugging.Assert(
            tf.reduce_all(finite),
            [f"{start}ground_truth['boxes'] holds NaN or inf at [image, row]", where_first(~finite),
             "box", tf.gather_nd(boxes, where_first(~finite)),
             "; expected [y1, x1, y2, x2] pixel coordinates"],
            summarize=8,
        ),
        tf.debugging.Assert(
            tf.logical_not(tf.reduce_any(bad_class)),
            [f"{start}ground_truth['classes'] holds a class id outside -1..{num_classes - 1} at [image, row]",
             where_first(bad_class), "value", tf.gather_nd(classes_f, where_first(bad_class)),
             f"; expected 0..{num_classes - 1} for this {num_classes}-class model, or -1 for a padding row"],
            summarize=8,
        ),
        tf.debugging.Assert(
            tf.logical_not(tf.reduce_any(inverted)),
            [f"{start}ground_truth['boxes'] has x2 < x1 or y2 < y1 at [image, row]", where_first(inverted),
             "box", tf.gather_nd(boxes, where_first(inverted)),
             "; expected [y1, x1, y2, x2] with y1 <= y2 and x1 <= x2"],
            summarize=8,
        ),
    ]


def check_ground_truth(ground_truth, num_classes: int, *, where: str = "", images=None):
    """Checks ground truth and returns it as `(boxes float32 [B, M, 4], classes int32 [B, M])`.

    Static structure (a dict with `boxes` `[B, M, 4]` and `classes` `[B, M]`, consistent
    sizes, numeric dtypes) is always checked in Python. Values (finite boxes, `y1 <= y2` and
    `x1 <= x2` on object rows, class ids in `-1 .. num_classes - 1`) are checked in Python
    for numpy arrays and eager tensors; for symbolic tensors the returned tensors depend on
    `tf.debugging.Assert` ops with a `"kerasdet:"` message (see `assertion_message`).

    Args:
        ground_truth: `{"boxes", "classes"}` as the kerasdet convention says.
        num_classes: the model's foreground classes `C`.
        where: the model's name, to start messages.
        images: the batch of images, whose static batch size (if known) the ground truth
            must match.

    Raises:
        ValueError: one line naming the key, the position and the value, and what was
            expected.
    """
    boxes, classes = _check_ground_truth_structure(ground_truth, where, _static_batch(images))
    if is_concrete(boxes) and is_concrete(classes):
        boxes_np = boxes.numpy() if tf.is_tensor(boxes) else np.asarray(boxes)
        classes_np = classes.numpy() if tf.is_tensor(classes) else np.asarray(classes)
        _check_values_numpy(boxes_np, classes_np, num_classes, where)
        return tf.cast(boxes, tf.float32), tf.cast(classes, tf.int32)
    boxes = tf.cast(boxes, tf.float32)
    asserts = _graph_asserts(boxes, classes, num_classes, where)
    with tf.control_dependencies(asserts):
        return tf.identity(boxes), tf.cast(classes, tf.int32)


def check_arrays(model, x, y=None, validation_data=None) -> None:
    """Python pre-checks of in-memory data given to `fit` / `evaluate` / `predict` of a
    model with `image_size` and `num_classes`: images statically, ground truth fully (its
    values included), so a bad array fails before Keras builds or runs a graph. Datasets
    and generators are left to the checks inside the traced step."""
    image_size = getattr(model, "image_size", None)
    for images, truth in ((x, y), tuple(validation_data or (None, None))[:2]):
        if images is None or _as_checkable(images) is None:
            continue
        check_images(images, image_size, where=model.name)
        if isinstance(truth, Mapping):
            boxes, classes = _check_ground_truth_structure(truth, model.name, _static_batch(images))
            _check_values_numpy(np.asarray(boxes), np.asarray(classes), model.num_classes, model.name)


def assertion_message(error) -> str | None:
    """The one-line `"kerasdet: ..."` message of a failed kerasdet graph assertion inside
    a `tf.errors.InvalidArgumentError` (whose text also holds the graph's trace), or None
    if the error did not come from such an assertion."""
    match = _ASSERTION.search(str(error))
    if match is None:
        return None
    # `tf.debugging.Assert` prints each data item in brackets: "[text] [[0 2]] [text]".
    parts, depth, current = [], 0, ""
    for char in match.group(1):
        if char == "[":
            depth += 1
            if depth == 1:
                current = ""
                continue
        elif char == "]":
            depth -= 1
            if depth == 0:
                parts.append(current)
                continue
        if depth >= 1:
            current += char
    text = " ".join(p.strip() for p in parts if p.strip())
    # TF escapes quotes inside printed strings.
    text = re.sub(r" ;", ";", text).replace("\\'", "'").replace('\\"', '"')
    return text[len("kerasdet: "):] if text.startswith("kerasdet: ") else text
