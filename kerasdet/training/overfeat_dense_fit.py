"""Dense (fully convolutional) training of OverFeat's classifier and localizer with
`model.fit` on whole rescaled images, a target at every output location.

    sampler = DensePatchSampler(train_examples, model=classifier, window=86)
    fit_dense_classifier(classifier, sampler.dataset(32), steps=...)
    localizer = overfeat_localizer(classifier, "tiny", num_classes=C)
    fit_dense_localizer(localizer, sampler.dataset(32, target="boxes"), steps=...)

The models are the crop-trained ones, unchanged: on a `P × P` patch the classifier outputs
`[B, h, w, C + 1]` and the localizer `[B, h, w, 4·C]`, the crops' outputs at every window.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from kerasdet.models.overfeat_localizer import LocalizationLoss, feature_layers
from kerasdet.training.budget import CosineOverBudget, TimeBudget


@keras.saving.register_keras_serializable(package="kerasdet")
class DenseClassificationLoss(keras.losses.Loss):
    """Softmax cross-entropy at every output location, ignoring label −1.

    `y_true` is int `[B, h, w]` (0 = background, k + 1 = class k, −1 = no loss); `y_pred`
    the logits `[B, h, w, C + 1]`. A location weighs `foreground_weight` when its label is
    a class, 1 when background and 0 when ignored; the loss is the weighted mean over the
    locations (so its scale does not depend on how many are ignored). Background windows
    outnumber objects' windows ~50 to 1 on a whole image: `foreground_weight` > 1 keeps
    the rare positives from being drowned.
    """

    def __init__(self, foreground_weight: float = 1.0, name="dense_classification", **kwargs):
        super().__init__(name=name, **kwargs)
        self.foreground_weight = float(foreground_weight)

    def call(self, y_true, y_pred):
        labels = tf.cast(y_true, tf.int32)
        logits = tf.cast(y_pred, tf.float32)
        weights = tf.where(labels > 0, self.foreground_weight, tf.cast(labels == 0, tf.float32))
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.maximum(labels, 0), logits=logits)
        # Keras averages what this returns over all B·h·w locations; rescale so that equals
        # the weighted mean over the included ones (max(·, 1e-6): a batch with none → 0).
        count = tf.cast(tf.size(labels), tf.float32)
        return weights * ce * count / tf.maximum(tf.reduce_sum(weights), 1e-6)

    def get_config(self):
        return {**super().get_config(), "foreground_weight": self.foreground_weight}


@keras.saving.register_keras_serializable(package="kerasdet")
class DenseLocalizationLoss(LocalizationLoss):
    """`LocalizationLoss` at every output location: `y_true` `[B, h, w, 5]` (4 targets and
    the class, −1 = no box target), `y_pred` `[B, h, w, 4·C]`; the mean over the
    locations with a target of the squared error of their class's box."""

    def __init__(self, name="dense_localization_l2", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        # Each location is one of the crop loss's windows.
        channels = tf.shape(y_pred)[-1]
        return super().call(tf.reshape(y_true, [-1, 5]), tf.reshape(y_pred, [-1, channels]))


def _compile_and_fit(model, loss, dataset, steps, epochs, learning_rate, minutes, verbose, callbacks):
    callbacks = list(callbacks or [])
    if minutes is None:
        rate = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=max(steps * epochs, 1))
    else:
        # Steps that fit the budget are unknown: stop on the clock, decay over the clock.
        budget = TimeBudget(60.0 * minutes)
        callbacks = [budget, CosineOverBudget(budget, learning_rate), *callbacks]
        rate = learning_rate
    # jit_compile=False: XLA on the CPU made these conv training steps 2× slower (3.4 s
    # against 1.7 s for 32 patches of 230² on one core) than TensorFlow's own kernels.
    model.compile(optimizer=keras.optimizers.Adam(rate), loss=loss, jit_compile=False)
    return model.fit(dataset, steps_per_epoch=steps, epochs=epochs, verbose=verbose, callbacks=callbacks)


def fit_dense_classifier(
    classifier: keras.Model, dataset, *, steps: int, epochs: int = 1, learning_rate=1e-3,
    foreground_weight: float = 3.0, minutes=None, verbose=2, callbacks=None,
):
    """Trains the classifier on whole-image patches, every output location a window.

    Args:
        classifier: from `overfeat_classifier` with `C + 1` outputs (possibly crop-trained
            already).
        dataset: yields `(images [B, P, P, 3], labels int32 [B, h, w])`
            (`DensePatchSampler.dataset`).
        steps: batches per epoch; the learning rate decays (cosine) over `steps · epochs`.
        foreground_weight: see `DenseClassificationLoss`.
        minutes: optional wall-clock budget: training stops after it (or after
            `steps · epochs`) and the learning rate decays over the clock instead.

    Returns:
        The Keras `History`.
    """
    return _compile_and_fit(
        classifier, DenseClassificationLoss(foreground_weight), dataset, steps, epochs, learning_rate,
        minutes, verbose, callbacks,
    )


def fit_dense_localizer(
    localizer: keras.Model, dataset, *, steps: int, epochs: int = 1, learning_rate=1e-3, minutes=None,
    verbose=2, callbacks=None,
):
    """Trains the box regressor densely with layers 1–5 frozen (L2 loss on the locations
    whose window overlaps a box enough; the others are ignored).

    Args:
        localizer: from `overfeat_localizer`.
        dataset: yields `(images [B, P, P, 3], box_targets [B, h, w, 5])`
            (`DensePatchSampler.dataset(..., target="boxes")`).
        steps: batches per epoch; cosine decay over `steps · epochs`.
        minutes: optional wall-clock budget, as in `fit_dense_classifier`.

    Returns:
        The Keras `History`.
    """
    for layer in feature_layers(localizer):
        layer.trainable = False
    return _compile_and_fit(
        localizer, DenseLocalizationLoss(), dataset, steps, epochs, learning_rate, minutes, verbose, callbacks,
    )
