"""Private helpers shared by `RoIPool` and `RoIAlign`: argument checks, rounding, channel groups."""

from __future__ import annotations

import math
import numbers

import tensorflow as tf


def normalize_pool_size(pool_size, max_value: int | None = None) -> tuple[int, int]:
    """Returns `(ph, pw)` from an int or a pair of ints; raises `ValueError` otherwise."""
    if isinstance(pool_size, numbers.Integral) and not isinstance(pool_size, bool):
        pool_size = (pool_size, pool_size)
    if (
        isinstance(pool_size, (list, tuple))
        and len(pool_size) == 2
        and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in pool_size)
        and all(0 < v <= (max_value or v) for v in pool_size)
    ):
        return int(pool_size[0]), int(pool_size[1])
    bound = f" (at most {max_value})" if max_value else ""
    raise ValueError(
        f"`pool_size` must be a positive int or pair of positive ints{bound}, got {pool_size!r}"
    )


def check_positive_float(value, name: str) -> float:
    """Returns `value` as a float if it is a finite number > 0; raises `ValueError` otherwise."""
    if (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    ):
        return float(value)
    raise ValueError(f"`{name}` must be a finite number > 0, got {value!r}")


def check_roi_inputs(features, rois, layer_name: str):
    """Checks ranks, box width and batch sizes; returns `(features, rois as float32)`.

    Features keep their own (floating) dtype; RoIs are always processed in float32 so
    that rounding / sampling positions do not depend on a mixed-precision policy.
    """
    features = tf.convert_to_tensor(features)
    rois = tf.convert_to_tensor(rois)
    if features.shape.rank != 4:
        raise ValueError(
            f"{layer_name}: features must be rank 4 [B, H, W, C], got shape {features.shape}"
        )
    if not features.dtype.is_floating:
        raise ValueError(
            f"{layer_name}: features must be a float tensor, got dtype {features.dtype.name}"
        )
    if rois.shape.rank != 3 or rois.shape[-1] != 4:
        raise ValueError(f"{layer_name}: rois must have shape [B, N, 4], got shape {rois.shape}")
    if not (rois.dtype.is_floating or rois.dtype.is_integer):
        raise ValueError(f"{layer_name}: rois must be a real tensor, got dtype {rois.dtype.name}")
    batch_f, batch_r = features.shape[0], rois.shape[0]
    if batch_f is not None and batch_r is not None and batch_f != batch_r:
        raise ValueError(
            f"{layer_name}: features and rois must have the same batch size, got "
            f"{batch_f} and {batch_r}"
        )
    return features, tf.cast(rois, tf.float32)


def round_half_away_from_zero(x: tf.Tensor) -> tf.Tensor:
    """C's `round` (ties away from zero), unlike `tf.round`, which rounds ties to even.

    `floor(|x| + 0.5)` would be wrong just below 0.5 (0.49999997 + 0.5 rounds up to 1.0 in
    float32), so the fraction is compared instead: `|x| - floor(|x|)` is exact.
    """
    magnitude = tf.abs(x)
    whole = tf.floor(magnitude)
    rounded = whole + tf.cast(magnitude - whole >= 0.5, x.dtype)
    return tf.where(x < 0, -rounded, rounded)


def static_or_dynamic_shape(x: tf.Tensor) -> list:
    """The shape of `x` as a list: Python ints where known, scalar tensors elsewhere."""
    dynamic = tf.shape(x)
    return [dim if dim is not None else dynamic[i] for i, dim in enumerate(x.shape)]


def channel_groups(channels: int, bytes_per_channel: int, target_bytes: int, max_groups: int):
    """Sizes of channel groups of about `target_bytes` each (multiples of 32 if possible).

    Args:
        channels: number of channels `C`.
        bytes_per_channel: bytes of the per-group working set that one channel costs.
        target_bytes: wanted working set of one group.
        max_groups: upper bound on the number of groups (each adds ops to the graph).

    Returns:
        A list of group sizes summing to `channels`.
    """
    groups = max(1, min(max_groups, math.ceil(bytes_per_channel * channels / target_bytes)))
    size = math.ceil(channels / groups)
    if channels >= 32 * groups:
        size = 32 * math.ceil(size / 32)  # whole cache lines per gathered row
    sizes = [size] * (channels // size)
    if channels % size:
        sizes.append(channels % size)
    return sizes


def one_group_at_a_time(parts, outputs):
    """Yields `parts`, each (in graph mode) only once `outputs[-1]` is computed.

    The caller appends each group's output to `outputs` before asking for the next part.
    This bounds the memory to one group's working set: the graph executor would otherwise
    start every group at once.
    """
    for part in parts:
        if outputs and not tf.executing_eagerly():
            with tf.control_dependencies([tf.nest.flatten(outputs[-1])[0]]):
                part = tf.identity(part)
        yield part
