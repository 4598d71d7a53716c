"""Balanced positive / negative mini-batch sampling (Faster R-CNN's 256 anchors, up to 1:1)."""

from __future__ import annotations

import tensorflow as tf


def _check(labels, num_samples, positive_fraction):
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples <= 0:
        raise ValueError(f"`num_samples` must be a positive int, got {num_samples!r}")
    if not 0.0 <= float(positive_fraction) <= 1.0:
        raise ValueError(f"`positive_fraction` must be in [0, 1], got {positive_fraction!r}")
    labels = tf.convert_to_tensor(labels)
    if labels.shape.rank is not None and labels.shape.rank != 2:
        raise ValueError(f"`labels` must have shape [B, A], got {labels.shape}")
    return tf.cast(labels, tf.int32)


def _seed_tensor(seed) -> tf.Tensor:
    """A stateless-RNG seed `[2]` int32 from an int, a pair, or a tensor `[2]`."""
    if seed is None:
        raise ValueError("`seed` is required (an int, a pair of ints or an int tensor [2]), got None")
    if isinstance(seed, int) and not isinstance(seed, bool):
        return tf.constant([seed, 0], tf.int32)
    seed = tf.convert_to_tensor(seed)
    if not seed.dtype.is_integer or (seed.shape.rank is not None and seed.shape != (2,)):
        raise ValueError(f"`seed` must be an int or an int tensor of shape [2], got {seed!r}")
    return tf.cast(seed, tf.int32)


def _replica_row_offset(batch):
    """Rows of the global batch before this replica's shard: `replica_id · batch` inside
    `strategy.run` with several replicas (equal shards, as `fit` makes them), else 0."""
    strategy = tf.distribute.get_strategy()
    context = tf.distribute.get_replica_context()
    if context is None or strategy.num_replicas_in_sync == 1:
        return tf.constant(0, tf.int32)
    return tf.cast(context.replica_id_in_sync_group, tf.int32) * batch


def _draw(labels, num_samples, positive_fraction, seed):
    """Picks the sampled entries: `(positive_picks, negative_picks)` masks `[B, A + S]`.

    `labels` is padded with `num_samples` ignored columns so `top_k` always has enough
    entries, whatever (even dynamic) `A` is.
    """
    max_positives = int(num_samples * positive_fraction)
    batch = tf.shape(labels)[0]
    labels = tf.pad(labels, [[0, 0], [0, num_samples]], constant_values=-1)
    width = tf.shape(labels)[1]
    # Keys for this shard's rows of the global batch: a counter-based (Philox) stream's first
    # rows do not depend on how many rows are drawn, so replica r of a tf.distribute run
    # samples exactly what a single device sampling the whole global batch would.
    offset = _replica_row_offset(batch)
    keys = tf.random.stateless_uniform(tf.stack([offset + batch, width]), seed=_seed_tensor(seed))[offset:]
    positive, negative = labels == 1, labels == 0
    num_positive = tf.minimum(tf.reduce_sum(tf.cast(positive, tf.int32), axis=1), max_positives)
    num_negative = tf.minimum(tf.reduce_sum(tf.cast(negative, tf.int32), axis=1), num_samples - num_positive)

    def pick(candidates, k, count):
        # The `count` candidates with the largest random keys (keys ∈ [0, 1), others −1);
        # top_k indices are distinct, so the count is exact even when keys tie.
        if k == 0:
            return tf.zeros_like(candidates)
        _, index = tf.math.top_k(tf.where(candidates, keys, -1.0), k=k)  # [B, k]
        keep = tf.range(k)[None, :] < count[:, None]
        rows = tf.broadcast_to(tf.range(batch)[:, None], tf.shape(index))
        picked = tf.scatter_nd(
            tf.stack([rows, index], axis=-1), tf.cast(keep, tf.int32), tf.stack([batch, width])
        )
        return picked > 0

    return pick(positive, max_positives, num_positive), pick(negative, num_samples, num_negative)


def sample_balanced(labels, num_samples: int = 256, positive_fraction: float = 0.5, *, seed) -> tf.Tensor:
    """Samples a balanced mini-batch of positives and negatives per image.

    Per image, at most `int(num_samples · positive_fraction)` positives (`labels == 1`) are
    drawn uniformly at random; negatives (`labels == 0`) fill the rest up to `num_samples`
    (fewer if there are not enough). Ignored entries (`-1`) are never sampled. The paper's
    RPN: 256 anchors with up to 1:1 positives:negatives.

    Deterministic given `seed` (stateless RNG): pass a different seed per step (e.g.
    `tf.stack([base_seed, step])`) to draw different anchors each step. Inside a
    `tf.distribute` replica, image `i` of replica `r` (shards of `B` images) draws what row
    `r·B + i` of the global batch would, so replicas sample independently and exactly as one
    device training on the whole global batch.

    Args:
        labels: int `[B, A]` in {1, 0, -1}, e.g. from `Matcher`.
        num_samples: int, default 256, samples per image.
        positive_fraction: float in [0, 1], default 0.5, the cap on positives as a
            fraction of `num_samples`.
        seed: int, pair of ints, or int tensor `[2]` (keyword-only, required).

    Returns:
        bool `[B, A]`, True on sampled entries.

    Example:
    >>> labels = tf.constant([[1, 1, 1, 0, 0, 0, 0, -1]])
    >>> mask = sample_balanced(labels, num_samples=4, positive_fraction=0.5, seed=0)
    >>> int(tf.reduce_sum(tf.cast(mask, tf.int32)))
    4
    """
    labels = _check(labels, num_samples, positive_fraction)
    positives, negatives = _draw(labels, num_samples, positive_fraction, seed)
    return (positives | negatives)[:, : tf.shape(labels)[1]]


def sample_balanced_indices(labels, num_samples: int = 256, positive_fraction: float = 0.5, *, seed):
    """Like `sample_balanced`, but returns the sampled indices in a fixed-size list.

    Args: as `sample_balanced`.

    Returns:
        `(indices, valid)`: int32 `[B, num_samples]` indices into `A` — sampled positives
        first, then sampled negatives, each in ascending index order — and bool
        `[B, num_samples]`, False on padding slots (when fewer than `num_samples` entries
        could be sampled); padding slots hold index 0.
    """
    labels = _check(labels, num_samples, positive_fraction)
    positives, negatives = _draw(labels, num_samples, positive_fraction, seed)
    # Priority 2 for positives, 1 for negatives, 0 otherwise; top_k breaks ties by the
    # lower index, so the order is deterministic.
    priority = 2 * tf.cast(positives, tf.int32) + tf.cast(negatives, tf.int32)
    top, indices = tf.math.top_k(priority, k=num_samples)
    valid = top > 0
    return tf.where(valid, indices, 0), valid
