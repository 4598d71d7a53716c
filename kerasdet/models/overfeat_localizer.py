"""OverFeat localization: a class-specific box regressor on the frozen feature extractor.

Box parameterization. Output location `(i, j)` of a dense map looks at a window of the
training size `S` (221 for accurate) centred at
`c(i, j) = first_center + stride · (i, j)` (input pixels; `kerasdet.analysis`). For class
`k` the regressor predicts the four box edges relative to that window:

    t = ([y1, x1, y2, x2] − [cy, cx, cy, cx]) / S

so a box equal to the window is `[-0.5, -0.5, 0.5, 0.5]` and the targets do not depend on
the image scale. Training uses windows (crops) whose IoU with the object's box is at least
0.5, as in the paper (§4: "we do not train on bounding boxes with less than 50% overlap
with the input field of view"); the others carry class −1 and are ignored by the loss.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from kerasdet.layers.conv_fc import ConvFC
from kerasdet.layers.offset_max_pool import InterleaveOffsets
from kerasdet.models.overfeat import _architecture

_LAST_POOL_NAMES = ("last_pool", "offset_pool")


def encode_window_boxes(boxes, window_center, window_size):
    """yxyx boxes → window-relative regression targets `[..., 4]` (see module doc)."""
    center = tf.cast(window_center, tf.float32)
    center = tf.concat([center, center], axis=-1)
    return (tf.cast(boxes, tf.float32) - center) / float(window_size)


def decode_window_boxes(targets, window_center, window_size):
    """Window-relative regression outputs `[..., 4]` → yxyx boxes in input pixels."""
    center = tf.cast(window_center, tf.float32)
    center = tf.concat([center, center], axis=-1)
    return tf.cast(targets, tf.float32) * float(window_size) + center


def _pooled_output(classifier: keras.Model):
    for name in _LAST_POOL_NAMES:
        try:
            return classifier.get_layer(name)
        except ValueError:
            continue
    raise ValueError(
        f"model {classifier.name!r} has no layer named one of {_LAST_POOL_NAMES}; build it with "
        "kerasdet.models.overfeat_classifier"
    )


def overfeat_localizer(classifier: keras.Model, arch, num_classes: int, *, units=None, name=None) -> keras.Model:
    """Builds the localization network sharing the classifier's layers 1–5.

    Args:
        classifier: a model from `overfeat_classifier` (its feature layers are shared,
            so training this model with them frozen leaves the classifier intact).
        arch: the classifier's architecture name (`"accurate"`, `"fast"`, `"tiny"`).
        num_classes: foreground classes `C` (no background: the box of class k is only
            used where the classifier says k).
        units: hidden FC widths, default the architecture's `regressor_units`
            (4096 → 1024 for the paper's models).

    Returns:
        A functional model: images `[B, H, W, 3]` → `[B, h, w, 4·C]`, channels
        `4k … 4k+3` holding class k's window-relative `[y1, x1, y2, x2]`.
    """
    spec = _architecture(arch)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"`num_classes` must be a positive int, got {num_classes!r}")
    pool = _pooled_output(classifier)
    first_fc = classifier.get_layer("fc1")
    units = tuple(units or spec.regressor_units)
    x = pool.output
    for i, width in enumerate(units):
        kernel = first_fc.kernel_size if i == 0 else 1
        x = ConvFC(width, kernel_size=kernel, activation="relu", name=f"reg_fc{i + 1}")(x)
    x = ConvFC(4 * num_classes, kernel_size=1, name="reg_boxes")(x)
    if pool.name == "offset_pool":
        x = InterleaveOffsets(pool.pool_size, name="reg_interleave")(x)
    return keras.Model(classifier.input, x, name=name or f"{classifier.name}_localizer")


def feature_layers(model: keras.Model):
    """The layers 1–5 of an OverFeat model that hold weights (convolutions, and batch
    normalization if any), to freeze for localization. A frozen batch-norm layer also runs
    in inference mode: its statistics stay the classifier's."""
    return [layer for layer in model.layers
            if isinstance(layer, (keras.layers.Conv2D, keras.layers.BatchNormalization))]


@keras.saving.register_keras_serializable(package="kerasdet")
class LocalizationLoss(keras.losses.Loss):
    """L2 loss of the regressor output of each window's ground-truth class.

    `y_true` is `[B, 5]`: the 4 window-relative targets and the class id (as a float;
    −1 = window excluded because its IoU with the box is below 0.5). `y_pred` is the
    localizer output on the window, `[B, 1, 1, 4·C]` or `[B, 4·C]`. The loss is the sum of
    squared errors over the 4 coordinates, averaged over the included windows.
    """

    def __init__(self, name="localization_l2", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        y_true = tf.cast(y_true, tf.float32)
        y_pred = tf.reshape(tf.cast(y_pred, tf.float32), [tf.shape(y_pred)[0], -1, 4])
        classes = tf.cast(y_true[:, 4], tf.int32)
        valid = classes >= 0
        predicted = tf.gather(y_pred, tf.maximum(classes, 0), batch_dims=1)  # [B, 4]
        error = tf.reduce_sum(tf.square(predicted - y_true[:, :4]), axis=-1)
        count = tf.reduce_sum(tf.cast(valid, tf.float32))
        per_window = tf.where(valid, error, 0.0)
        # Scale so Keras' mean over the batch equals the mean over included windows;
        # max(count, 1) keeps a batch without any included window finite (loss 0).
        batch = tf.cast(tf.shape(y_true)[0], tf.float32)
        return per_window * batch / tf.maximum(count, 1.0)
