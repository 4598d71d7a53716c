"""Running a per-image function over a batch, the TFLite-friendly way."""

from __future__ import annotations

import tensorflow as tf


def map_images(fn, elems, fn_output_signature):
    """Applies `fn` to each image of a batch and stacks the results.

    A static batch (always the case in TFLite export) is unrolled, so the graph has no
    while loop; an unknown batch falls back to `tf.map_fn`.

    Args:
        fn: takes one image's slices of `elems` as positional arguments and returns a
            tuple of tensors.
        elems: tuple of tensors sharing the leading batch axis.
        fn_output_signature: tuple of `tf.TensorSpec`, one per output of `fn`.

    Returns:
        A tuple of batched tensors.
    """
    batch = elems[0].shape[0]
    if batch is not None:
        parts = [fn(*(e[i] for e in elems)) for i in range(batch)]
        return tuple(tf.stack([p[j] for p in parts]) for j in range(len(fn_output_signature)))
    return tuple(tf.map_fn(lambda args: fn(*args), elems, fn_output_signature=fn_output_signature))
