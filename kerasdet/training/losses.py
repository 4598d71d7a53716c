"""Faster R-CNN's multi-task losses: RPN (objectness + box) and Fast R-CNN (class + box).

All math runs in float32 (predictions are cast, so mixed precision is fine). Masks are
applied with `tf.where`, not multiplication, so an unselected entry can never turn the sum
into NaN (0 · inf).
"""

from __future__ import annotations

import tensorflow as tf

RPN_BETA = 1.0 / 9.0  # torchvision's / Detectron's RPN smooth-L1 transition point


def smooth_l1(x, beta: float = 1.0) -> tf.Tensor:
    """Elementwise smooth L1 (Huber / β): `0.5·x²/β` if `|x| < β`, else `|x| − 0.5·β`.

    `beta = 0` is plain L1. Written as `0.5·q²/β + (|x| − q)` with `q = min(|x|, β)`, which
    is finite with finite gradients for any finite `x`.
    """
    beta = float(beta)
    if beta < 0.0:
        raise ValueError(f"`beta` must be ≥ 0, got {beta}")
    absolute = tf.abs(tf.cast(x, tf.float32))
    if beta == 0.0:
        return absolute
    quadratic = tf.minimum(absolute, beta)
    return 0.5 * tf.square(quadratic) / beta + (absolute - quadratic)


def _normalizer(weights):
    # Clamped ≥ 1 so a batch with nothing sampled (no anchors / RoIs) has a finite loss 0.
    return tf.maximum(tf.reduce_sum(weights), 1.0)


def _masked_sum(values, weights):
    return tf.reduce_sum(tf.where(weights > 0.0, values * weights, 0.0))


def _check_rank(name, tensor, ranks, what):
    if tensor.shape.rank is not None and tensor.shape.rank not in ranks:
        raise ValueError(f"`{name}` must have shape {what}, got {tensor.shape}")


def rpn_losses(targets, objectness_logits, box_deltas, *, beta: float = RPN_BETA):
    """RPN loss (Faster R-CNN eq. 1): log loss over sampled anchors + smooth L1 on positives.

    Both terms are divided by the number of sampled anchors in the batch (clamped ≥ 1), as
    torchvision does (the paper's λ = 10 with N_reg ≈ 2400 gives about the same balance).

    Args:
        targets: dict from `rpn_targets` (`objectness`, `objectness_weights`,
            `box_targets`, `box_weights`).
        objectness_logits: `[B, A]` sigmoid logits, or `[B, A, 2]` softmax logits ordered
            `[background, object]` (`RPNHead(objectness="softmax")`).
        box_deltas: `[B, A, 4]` predicted `[dy, dx, dh, dw]`.
        beta: float ≥ 0, default 1/9, the smooth-L1 transition point.

    Returns:
        `(objectness_loss, box_loss)`, float32 scalars.

    Example:
    >>> t = {"objectness": [[1., 0.]], "objectness_weights": [[1., 1.]],
    ...      "box_targets": tf.zeros([1, 2, 4]), "box_weights": [[1., 0.]]}
    >>> cls, box = rpn_losses(t, tf.zeros([1, 2]), tf.zeros([1, 2, 4]))
    >>> round(float(cls), 4), float(box)  # log 2, 0
    (0.6931, 0.0)
    """
    logits = tf.cast(tf.convert_to_tensor(objectness_logits), tf.float32)
    deltas = tf.cast(tf.convert_to_tensor(box_deltas), tf.float32)
    _check_rank("objectness_logits", logits, (2, 3), "[B, A] or [B, A, 2]")
    if logits.shape.rank == 3 and logits.shape[-1] not in (2, None):
        raise ValueError(f"softmax `objectness_logits` must have shape [B, A, 2], got {logits.shape}")
    _check_rank("box_deltas", deltas, (3,), "[B, A, 4]")
    objectness = tf.cast(targets["objectness"], tf.float32)
    objectness_weights = tf.cast(targets["objectness_weights"], tf.float32)
    box_targets = tf.cast(targets["box_targets"], tf.float32)
    box_weights = tf.cast(targets["box_weights"], tf.float32)

    if logits.shape.rank == 2:
        log_loss = tf.nn.sigmoid_cross_entropy_with_logits(labels=objectness, logits=logits)
    else:
        log_loss = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.cast(objectness > 0.5, tf.int32), logits=logits
        )
    box_loss = tf.reduce_sum(smooth_l1(deltas - box_targets, beta), axis=-1)
    normalizer = _normalizer(objectness_weights)
    return (
        _masked_sum(log_loss, objectness_weights) / normalizer,
        _masked_sum(box_loss, box_weights) / normalizer,
    )


def rcnn_losses(class_targets, box_targets, box_weights, valid, class_logits, box_deltas, *, beta: float = 1.0):
    """Fast R-CNN loss: softmax cross-entropy over valid RoIs + smooth L1 on foreground.

    The box term uses only the deltas predicted for each RoI's ground-truth class. Both
    terms are divided by the number of valid RoIs in the batch (clamped ≥ 1), as
    torchvision does.

    Args:
        class_targets: int `[B, S]`, 0 = background, k + 1 = class k (from `rcnn_targets`).
        box_targets: float `[B, S, 4]` encoded deltas.
        box_weights: float `[B, S]`, 1 on foreground.
        valid: bool or float `[B, S]`, False / 0 on padding slots.
        class_logits: `[B, S, C + 1]`, column 0 = background.
        box_deltas: `[B, S, C, 4]` class-specific deltas (`[B, S, 4·C]` is reshaped), or
            `[B, S, 1, 4]` / `[B, S, 4]` class-agnostic.
        beta: float ≥ 0, default 1.0, the smooth-L1 transition point.

    Returns:
        `(class_loss, box_loss)`, float32 scalars.

    Example:
    >>> cls, box = rcnn_losses([[2, 0]], tf.zeros([1, 2, 4]), [[1., 0.]], [[True, True]],
    ...                        tf.zeros([1, 2, 3]), tf.fill([1, 2, 2, 4], 0.5))
    >>> round(float(cls), 4), float(box)  # log 3; 4 · 0.5 · 0.5² / 2 RoIs
    (1.0986, 0.25)
    """
    logits = tf.cast(tf.convert_to_tensor(class_logits), tf.float32)
    deltas = tf.cast(tf.convert_to_tensor(box_deltas), tf.float32)
    _check_rank("class_logits", logits, (3,), "[B, S, C + 1]")
    _check_rank("box_deltas", deltas, (3, 4), "[B, S, C, 4]")
    if deltas.shape.rank == 3:
        if deltas.shape[-1] is not None and deltas.shape[-1] % 4:
            raise ValueError(f"`box_deltas` [B, S, 4·C] needs a last dim divisible by 4, got {deltas.shape}")
        deltas = tf.reshape(deltas, tf.concat([tf.shape(deltas)[:2], [-1, 4]], axis=0))
    num_classes = None if logits.shape[-1] is None else logits.shape[-1] - 1
    if deltas.shape[2] is not None and num_classes is not None and deltas.shape[2] not in (1, num_classes):
        raise ValueError(
            f"`box_deltas` must have C = {num_classes} classes (or 1, class-agnostic) to match "
            f"`class_logits` {logits.shape}, got {deltas.shape}"
        )
    valid = tf.cast(valid, tf.float32)
    # Padding slots may carry any class id (e.g. −1): replace it so the CE op never sees it.
    class_targets = tf.where(valid > 0.0, tf.cast(class_targets, tf.int32), 0)
    box_targets = tf.cast(box_targets, tf.float32)
    box_weights = tf.cast(box_weights, tf.float32) * valid

    class_loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=class_targets, logits=logits)
    # Deltas of the gt class (k + 1 → column k); background rows pick column 0, unweighted.
    column = tf.maximum(class_targets - 1, 0)
    column = tf.minimum(column, tf.shape(deltas)[2] - 1)  # class-agnostic: always column 0
    chosen = tf.gather(deltas, column, batch_dims=2)  # [B, S, 4]
    box_loss = tf.reduce_sum(smooth_l1(chosen - box_targets, beta), axis=-1)
    normalizer = _normalizer(valid)
    return _masked_sum(class_loss, valid) / normalizer, _masked_sum(box_loss, box_weights) / normalizer
