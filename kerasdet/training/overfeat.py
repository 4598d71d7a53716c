"""OverFeat's three stages as Keras code: classifier on crops → localizer on frozen
features → dense multi-scale detector (the notes' workflow).

    classifier = overfeat_classifier("tiny", num_classes=C + 1)
    fit_classifier(classifier, crops, labels, epochs=...)
    localizer = overfeat_localizer(classifier, "tiny", num_classes=C)
    fit_localizer(localizer, crops, targets, epochs=...)
    detector = overfeat_detector(classifier, localizer, "tiny", image_size=(H, W), scales=...)
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from kerasdet.models.overfeat_localizer import LocalizationLoss, feature_layers


def _flip_crops(crops, labels_or_targets, flip_targets: bool, shift: float = 0.0):
    """Horizontal flip of a batch of crops (and of window-relative x targets)."""
    flip = tf.random.uniform([tf.shape(crops)[0]]) < 0.5
    flipped = tf.where(flip[:, None, None, None], crops[:, :, ::-1], crops)
    if not flip_targets:
        return flipped, labels_or_targets
    t = labels_or_targets
    # Pixel x ↦ S − x. With t = (x − c) / S for the window centre c (not always S / 2:
    # the network's geometry decides), the mirrored target is (S − 2c) / S − t, and x1/x2
    # swap roles.
    mirrored = tf.stack([t[:, 0], shift - t[:, 3], t[:, 2], shift - t[:, 1], t[:, 4]], axis=1)
    return flipped, tf.where(flip[:, None], mirrored, t)


def _dataset(crops, y, batch_size, seed, augment, flip_targets, shift=0.0):
    ds = tf.data.Dataset.from_tensor_slices((crops, y)).shuffle(len(crops), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if augment:
        ds = ds.map(lambda x, t: _flip_crops(x, t, flip_targets, shift), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def fit_classifier(
    classifier: keras.Model, crops, labels, *, epochs=10, batch_size=128, learning_rate=2e-3,
    validation=None, seed=0, verbose=2, callbacks=None, jit_compile="auto",
):
    """Stage 1: trains the classifier on `S × S` crops with softmax cross-entropy.

    Args:
        classifier: from `overfeat_classifier` with `C + 1` outputs (0 = background).
        crops: float32 `[K, S, S, 3]` (0–255); labels: int32 `[K]`.
        validation: optional `(crops, labels)`.
        jit_compile: passed to `compile` (XLA on a CPU can be slower than TensorFlow's
            own conv kernels; see `kerasdet.training.overfeat_dense_fit`).

    Returns:
        The Keras `History`.
    """
    labels = np.asarray(labels, np.int32).reshape(-1, 1, 1)
    steps = epochs * int(np.ceil(len(crops) / batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=max(steps, 1))
    classifier.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )
    val = None
    if validation is not None:
        val = (validation[0], np.asarray(validation[1], np.int32).reshape(-1, 1, 1))
    return classifier.fit(
        _dataset(crops, labels, batch_size, seed, augment=True, flip_targets=False),
        epochs=epochs, validation_data=val, verbose=verbose, callbacks=callbacks,
    )


def fit_localizer(
    localizer: keras.Model, crops, targets, *, window_center_x: float, epochs=10, batch_size=128,
    learning_rate=2e-3, seed=0, verbose=2, callbacks=None,
):
    """Stage 2: trains the box regressor with layers 1–5 frozen (L2 loss; windows with
    IoU < 0.5 carry class −1 and are ignored).

    Args:
        localizer: from `overfeat_localizer`.
        crops: float32 `[K, S, S, 3]`; targets: float32 `[K, 5]` (see
            `kerasdet.data.crops`).
        window_center_x: x of the model's window centre on an `S × S` input
            (`spatial_geometry(...).first_center[1]`), to mirror targets when flipping.

    Returns:
        The Keras `History`.
    """
    for layer in feature_layers(localizer):
        layer.trainable = False
    steps = epochs * int(np.ceil(len(crops) / batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=max(steps, 1))
    localizer.compile(optimizer=keras.optimizers.Adam(schedule), loss=LocalizationLoss())
    return localizer.fit(
        _dataset(
            crops, np.asarray(targets, np.float32), batch_size, seed, augment=True, flip_targets=True,
            shift=(crops.shape[2] - 2.0 * window_center_x) / crops.shape[2],
        ),
        epochs=epochs, verbose=verbose, callbacks=callbacks,
    )
