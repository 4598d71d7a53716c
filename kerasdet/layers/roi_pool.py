"""RoI max pooling (Fast R-CNN; `torchvision.ops.roi_pool`), exact, from TFLite builtins.

The max over a bin `[a, b) x [c, d)` of the feature map is read from a 2-D sparse table
(range-maximum query): level `(k, l)` holds, at every pixel `(h, w)`, the max over the
`2**k x 2**l` block whose top-left corner is `(h, w)`. A bin with `b - a = L_r` rows and
`d - c = L_c` columns is covered exactly by the four level-`(floor(log2 L_r),
floor(log2 L_c))` blocks anchored at its corners, so every bin costs four gathers whatever
its size. The table is built with shifted `maximum`s and read with `gather`; both are
TFLite builtins (`tf.image.crop_and_resize` is not).

Cost and memory. The table has `(floor(log2 H) + 1) * (floor(log2 W) + 1)` levels, each
(nearly) the size of the feature map: 36 for a 38x63 map. Channels are processed in groups
so that one group's table stays around `_GROUP_TABLE_BYTES` (at most `_MAX_CHANNEL_GROUPS`
groups); in graph mode the groups run one after the other, so only one group's table is
alive at a time. When `H` or `W` is unknown at trace time, the table is built in a
`tf.while_loop` up to the levels the RoIs actually need (TensorFlow only: TFLite conversion
wants static spatial dimensions).
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from kerasdet.layers._roi_utils import (
    channel_groups,
    check_positive_float,
    check_roi_inputs,
    normalize_pool_size,
    one_group_at_a_time,
    round_half_away_from_zero,
    static_or_dynamic_shape,
)

# Target bytes of one channel group's sparse table: large enough that groups stay few,
# small enough to be recycled by malloc (glibc maps blocks over 32 MiB afresh on every
# call, and page faults then cost more than the max ops).
_GROUP_TABLE_BYTES = 24 * 2**20
# Upper bound on the number of channel groups (each one adds ops to the graph).
_MAX_CHANNEL_GROUPS = 16
# Comparisons used to take floor(log2 L) when the map size is unknown: covers any int32 L.
_DYNAMIC_MAX_LEVEL = 30
# Rounded RoI edges are clipped to +-2**22 feature-map pixels so that the int32 bin
# arithmetic cannot overflow; every real feature map is far smaller.
_COORD_LIMIT = float(2**22)
# Largest bins per axis the exact int32 emulation of float32 bin edges supports.
_MAX_POOL_SIZE = 128


def _level_and_span(length, max_level: int):
    """`floor(log2 length)` and `2**` that, for int32 `length >= 1`, capped at `max_level`.

    Counted with integer comparisons: a float `log2` can round an exact power of two down.
    """
    if max_level == 0:
        zeros = tf.zeros_like(length)
        return zeros, zeros + 1
    powers = np.array([2**t for t in range(1, max_level + 1)], np.int32)
    reached = tf.cast(length[..., None] >= tf.constant(powers), tf.int32)
    level = tf.reduce_sum(reached, axis=-1)
    span = 1 + tf.reduce_sum(reached * tf.constant(powers // 2), axis=-1)
    return level, span


def _pow2(exponent):
    """`2**exponent` for an int32 tensor with entries in [0, 30] (a table lookup)."""
    return tf.gather(tf.constant([2**u for u in range(31)], tf.int32), exponent)


def _float32_bin_edges(roi_len, num_bins: int):
    """torchvision's float32 bin edges, emulated exactly with int32 arithmetic.

    torchvision computes `floor(i * bin)` and `ceil(i * bin)` with `bin = float(L) / p` and
    the product in float32; the rounding of `bin` and of the product makes an edge differ by
    one pixel from the exact `i * L / p` for some `(L, p, i)` (e.g. 57 / 7 * 7 = 57.000004).
    Graph optimizers (Grappler, the TFLite converter) turn `x / p` into `x * (1 / p)`, which
    rounds differently, so float ops cannot reproduce those edges reliably; this integer
    version does, on every backend. Valid for `1 <= L <= 2**23 + 1` and `p <= 128`.

    Args:
        roi_len: int32 `[...]`, the RoI length `L >= 1` in feature-map pixels.
        num_bins: `p`.

    Returns:
        `(floors, ceils)`, int32 `[..., p + 1]`: `floor` / `ceil` of
        `fl32(i * fl32(L / p))` for `i = 0..p`.
    """
    p = num_bins
    length = roi_len[..., None]
    # t = floor(log2(L / p)): the largest t with L >= p * 2**t, counted by comparisons.
    t_min = -math.ceil(math.log2(p))
    thresholds = [p * 2**u if u >= 0 else -(-p // 2 ** (-u)) for u in range(t_min + 1, 24)]
    t = t_min + tf.reduce_sum(tf.cast(length >= tf.constant(thresholds, tf.int32), tf.int32), -1)
    # fl32(L / p) = q * 2**-s with a 24-bit significand q: round L * 2**s / p to nearest even.
    s = 23 - t
    numerator = roi_len * _pow2(s)  # < 2 * p * 2**23 <= 2**31
    q = numerator // p
    twice_rem = 2 * (numerator - q * p)
    q += tf.cast((twice_rem > p) | ((twice_rem == p) & (q % 2 == 1)), tf.int32)
    carry = q >= 2**24  # rounding up carried into a 25th bit: renormalize
    q = tf.where(carry, q // 2, q)
    s -= tf.cast(carry, tf.int32)
    # fl32(i * q * 2**-s): round the exact product (< 2**31) to 24 significant bits.
    product = tf.constant(np.arange(p + 1, dtype=np.int32)) * q[..., None]
    e = tf.reduce_sum(
        tf.cast(
            product[..., None] >= tf.constant([2**u for u in range(24, 31)], tf.int32), tf.int32
        ),
        -1,
    )
    unit = _pow2(e)
    mantissa = product // unit
    twice_rem = 2 * (product - mantissa * unit)
    mantissa += tf.cast((twice_rem > unit) | ((twice_rem == unit) & (mantissa % 2 == 1)), tf.int32)
    # value = mantissa * 2**-(s - e); floor / ceil by an exact power-of-two division.
    k = s[..., None] - e
    scaled = mantissa * _pow2(tf.maximum(-k, 0))  # only when the value is an integer <= L
    divisor = _pow2(tf.maximum(k, 0))
    return scaled // divisor, -((-scaled) // divisor)


def _axis_bins(start, end, num_bins: int, size, max_level: int):
    """Bins of each RoI along one axis, as sparse-table reads.

    Args:
        start, end: int32 `[B, N]` rounded RoI edges in feature-map pixels (end inclusive).
        num_bins: bins along this axis.
        size: feature-map size along this axis (int or scalar tensor).
        max_level: largest sparse-table level this axis can need.

    Returns:
        `first, last, level, span, empty`, each `[B, N, num_bins]`: the bin is
        `[first, last + span)`, covered by the blocks of `span = 2**level` pixels starting
        at `first` and at `last`; `empty` marks bins with nothing left after clipping.
    """
    roi_len = tf.maximum(end - start + 1, 1)  # a degenerate RoI still covers one pixel
    floors, ceils = _float32_bin_edges(roi_len, num_bins)
    lo = tf.clip_by_value(start[..., None] + floors[..., :-1], 0, size)
    hi = tf.clip_by_value(start[..., None] + ceils[..., 1:], 0, size)
    length = hi - lo
    empty = length <= 0
    # Empty bins read a valid 1-pixel block (their value is replaced by 0 anyway).
    safe_length = tf.maximum(length, 1)
    level, span = _level_and_span(safe_length, max_level)
    first = tf.minimum(lo, size - 1)
    last = tf.minimum(lo + safe_length - span, size - 1)
    return first, last, level, span, empty


def _table_indices(rows, cols, empty, batch, height, width, num_col_levels, pow2_col_levels):
    """Flat table indices `[B*N*ph*pw]` of the four blocks covering each bin.

    The table is a zero row followed by the levels `(k, l)` in k-major order; level
    `(k, l)` keeps the first `M - (2**k - 1) * W - (2**l - 1)` positions (`M = B*H*W`) of the
    flattened map, the only ones whose block stays inside the map (see `_build_table`).
    Empty bins point at the zero row.
    """
    first_r, last_r, level_r, span_r = (t[..., :, None] for t in rows)
    first_c, last_c, level_c, span_c = (t[..., None, :] for t in cols)
    m = batch * height * width
    nl = num_col_levels
    # Start of level (k, l): (k * nl + l) * M minus what the previous levels dropped.
    row_offset = (
        level_r * nl * m
        - width * nl * (span_r - 1 - level_r)
        - level_r * (pow2_col_levels - 1 - nl)
    )
    col_offset = level_c * m - (span_c - 1 - level_c) - level_c * (span_r - 1) * width
    offset = row_offset + col_offset + 1  # + 1 skips the zero row
    image = tf.range(batch, dtype=tf.int32)[:, None, None, None] * height
    corners = []
    for r in (first_r, last_r):
        row_start = (image + r) * width
        for c in (first_c, last_c):
            index = tf.where(empty, 0, offset + row_start + c)
            corners.append(tf.reshape(index, [-1]))
    return corners


def _build_table(flat, num_row_levels: int, num_col_levels: int, width: int, positions=None):
    """Sparse table of `flat` `[M, G]` (a flattened `[B, H, W, G]` map), static sizes.

    A shift by `s` columns is a shift by `s` rows of `flat`, and by `s` image rows a shift by
    `s * W`; positions whose block would run past the right or bottom edge then mix in
    neighbouring pixels, but they are never read, and the tail that would run past the end
    of `flat` is dropped. Returns `[1 + sum of level lengths, G]`, zero row first.

    With `positions` (int32 `[M, G]`, the flat pixel index of every entry), also returns
    the table of argmax positions, ties going to the smallest position (torchvision's
    first maximum in row-major order): `(values, argmax)`, the argmax zero row being `M`.
    """
    if positions is None:
        combine = tf.maximum
        segments = [tf.zeros_like(flat[:1])]
    else:

        def combine(a, b):
            # b comes after a in the flattened map: on ties keep a.
            return tf.maximum(a[0], b[0]), tf.where(b[0] > a[0], b[1], a[1])

        # The zero row's argmax is M, past every pixel: its gradient is dropped.
        no_pixel = tf.fill(tf.shape(positions[:1]), tf.shape(positions)[0])
        segments = [(tf.zeros_like(flat[:1]), no_pixel)]
        flat = (flat, positions)
    row_level = flat
    for k in range(num_row_levels):
        if k:
            shift = 2 ** (k - 1) * width
            row_level = combine(*_shifted_pair(row_level, shift))
        level = row_level
        segments.append(level)
        for col in range(1, num_col_levels):
            level = combine(*_shifted_pair(level, 2 ** (col - 1)))
            segments.append(level)
    if positions is None:
        return tf.concat(segments, axis=0)
    return tuple(tf.concat(parts, axis=0) for parts in zip(*segments, strict=True))


def _shifted_pair(x, shift: int):
    """`(x[:-shift], x[shift:])` for a tensor or a tuple of tensors."""
    return (
        tf.nest.map_structure(lambda t: t[:-shift], x),
        tf.nest.map_structure(lambda t: t[shift:], x),
    )


def _build_table_dynamic(flat, num_row_levels, num_col_levels, width):
    """`_build_table` for a map size unknown at trace time; level counts are tensors."""
    channels = flat.shape[-1]
    segments = tf.TensorArray(
        flat.dtype,
        size=1 + num_row_levels * num_col_levels,
        infer_shape=False,
        element_shape=tf.TensorShape([None, channels]),
    )
    segments = segments.write(0, tf.zeros_like(flat[:1]))
    spec = tf.TensorShape([None, channels])

    def shift_max(x, shift):
        # shift == 0 (level 0) gives max(x, x) == x.
        length = tf.shape(x)[0] - shift
        return tf.maximum(x[:length], x[shift : shift + length])

    def row_step(k, row_shift, row_level, segments):
        row_level = shift_max(row_level, row_shift)
        segments = segments.write(1 + k * num_col_levels, row_level)

        def col_step(col, col_shift, level, segments):
            level = shift_max(level, col_shift)
            return (
                col + 1,
                col_shift * 2,
                level,
                segments.write(1 + k * num_col_levels + col, level),
            )

        _, _, _, segments = tf.while_loop(
            lambda col, *_: col < num_col_levels,
            col_step,
            (tf.constant(1), tf.constant(1), row_level, segments),
            shape_invariants=(tf.TensorShape([]), tf.TensorShape([]), spec, None),
        )
        next_shift = tf.maximum(row_shift * 2, width)
        return k + 1, next_shift, row_level, segments

    _, _, _, segments = tf.while_loop(
        lambda k, *_: k < num_row_levels,
        row_step,
        (tf.constant(0), tf.constant(0), flat, segments),
        shape_invariants=(tf.TensorShape([]), tf.TensorShape([]), spec, None),
    )
    return segments.concat()


@tf.custom_gradient
def _dense_gradient(table):
    """Identity whose gradient is dense.

    The gathers hand back `IndexedSlices`; left sparse, the `concat` gradient would filter
    them once per table level (thousands of ops to build, slow to run). One scatter-add into
    a dense table gradient is cheaper.
    """
    return tf.identity(table), lambda grad: tf.convert_to_tensor(grad)


def _pool_static(
    flat, rows, cols, empty, batch, height, width, num_row_levels, num_col_levels, static_batch
):
    """Pools every bin, one channel group at a time; returns `[B*N*ph*pw, C]`.

    The group sizes assume the static batch size, or 1 when it is unknown at trace time.
    The gradient is a scatter-add of the upstream gradient at each bin's argmax (found
    again on the backward pass with a table of argmax positions), rather than the
    autodiff of the table build, which is about 3x slower and much larger to trace.
    """
    indices = _table_indices(
        rows, cols, empty, batch, height, width, num_col_levels, 2**num_col_levels
    )
    channels = flat.shape[-1]
    bytes_per_channel = (
        num_row_levels * num_col_levels * (static_batch or 1) * height * width * flat.dtype.size
    )
    sizes = (
        channel_groups(channels, bytes_per_channel, _GROUP_TABLE_BYTES, _MAX_CHANNEL_GROUPS)
        if channels
        else [channels]
    )
    levels = (num_row_levels, num_col_levels, width)

    def split(x):
        return tf.split(x, sizes, axis=1) if len(sizes) > 1 else [x]

    def join(parts):
        return tf.concat(parts, axis=1) if len(parts) > 1 else parts[0]

    @tf.custom_gradient
    def pool(flat):
        outputs = []
        for part in one_group_at_a_time(split(flat), outputs):
            table = _build_table(part, *levels)
            g = [tf.gather(table, index) for index in indices]
            outputs.append(tf.maximum(tf.maximum(g[0], g[1]), tf.maximum(g[2], g[3])))

        def grad(upstream):
            num_pixels = tf.shape(flat)[0]
            no_pixel = tf.reshape(tf.where(empty, num_pixels, 0), [-1, 1])  # empty bins: dropped
            grads = []
            for part, part_upstream in zip(
                one_group_at_a_time(split(flat), grads), split(upstream), strict=True
            ):
                group = tf.shape(part)[1]
                positions = tf.broadcast_to(tf.range(num_pixels)[:, None], tf.shape(part))
                values, argmax = _build_table(part, *levels, positions=positions)
                best_value, best_pixel = (
                    tf.gather(values, indices[0]),
                    tf.gather(argmax, indices[0]),
                )
                for index in indices[1:]:
                    value, pixel = tf.gather(values, index), tf.gather(argmax, index)
                    # Blocks overlap: on ties the smallest position wins, as inside blocks.
                    better = (value > best_value) | ((value == best_value) & (pixel < best_pixel))
                    best_value = tf.where(better, value, best_value)
                    best_pixel = tf.where(better, pixel, best_pixel)
                best_pixel = tf.maximum(best_pixel, no_pixel)
                segment = best_pixel * group + tf.range(group)[None, :]
                # bincount is a plain loop, ~4x faster than unsorted_segment_sum here; it
                # takes float32 / float64 weights only.
                sum_dtype = tf.float64 if part.dtype == tf.float64 else tf.float32
                summed = tf.math.bincount(
                    tf.reshape(segment, [-1]),
                    weights=tf.cast(tf.reshape(part_upstream, [-1]), sum_dtype),
                    minlength=(num_pixels + 1) * group,
                    maxlength=(num_pixels + 1) * group,
                )
                grads.append(tf.cast(tf.reshape(summed, [-1, group])[:-1], part.dtype))
            return join(grads)

        return join(outputs), grad

    return pool(flat)


def roi_pool(features, rois, pool_size=7, spatial_scale=1.0 / 16) -> tf.Tensor:
    """Functional form of `RoIPool` (same arguments, same result)."""
    ph, pw = normalize_pool_size(pool_size, _MAX_POOL_SIZE)
    spatial_scale = check_positive_float(spatial_scale, "spatial_scale")
    features, rois = check_roi_inputs(features, rois, "RoIPool")
    batch, height, width, channels = static_or_dynamic_shape(features)
    static_batch = features.shape[0]
    num_rois = tf.shape(rois)[1]
    dynamic_map = not (isinstance(height, int) and isinstance(width, int))

    edges = round_half_away_from_zero(rois * spatial_scale)
    edges = tf.cast(tf.clip_by_value(edges, -_COORD_LIMIT, _COORD_LIMIT), tf.int32)
    y1, x1, y2, x2 = tf.unstack(edges, axis=-1)
    if not dynamic_map and height * width == 0:
        return tf.zeros(
            tf.stack([batch, num_rois, ph, pw, channels]), features.dtype
        )  # all bins empty
    max_level_h = _DYNAMIC_MAX_LEVEL if dynamic_map else height.bit_length() - 1
    max_level_w = _DYNAMIC_MAX_LEVEL if dynamic_map else width.bit_length() - 1
    first_r, last_r, level_r, span_r, empty_r = _axis_bins(y1, y2, ph, height, max_level_h)
    first_c, last_c, level_c, span_c, empty_c = _axis_bins(x1, x2, pw, width, max_level_w)
    rows = (first_r, last_r, level_r, span_r)
    cols = (first_c, last_c, level_c, span_c)
    empty = empty_r[..., :, None] | empty_c[..., None, :]
    flat = tf.reshape(features, [-1, channels])

    if dynamic_map:
        # Only the levels some bin needs; `2**num_col_levels` is twice the largest span.
        num_row_levels = _max0(level_r) + 1
        num_col_levels = _max0(level_c) + 1
        pow2_col_levels = 2 * tf.maximum(_max0(span_c), 1)
        indices = _table_indices(
            rows, cols, empty, batch, height, width, num_col_levels, pow2_col_levels
        )
        table = _dense_gradient(_build_table_dynamic(flat, num_row_levels, num_col_levels, width))
        g = [tf.gather(table, index) for index in indices]
        pooled = tf.maximum(tf.maximum(g[0], g[1]), tf.maximum(g[2], g[3]))
    else:
        # Static map: every level, so that the graph has no control flow (a TFLite `IF`
        # would keep its branches off the XNNPACK delegate, about 2x slower).
        pooled = _pool_static(
            flat,
            rows,
            cols,
            empty,
            batch,
            height,
            width,
            max_level_h + 1,
            max_level_w + 1,
            static_batch,
        )
    return tf.reshape(pooled, tf.stack([batch, num_rois, ph, pw, channels]))


def _max0(x):
    """Max of a non-negative int tensor, 0 when it is empty (no RoIs)."""
    return tf.reduce_max(tf.concat([tf.zeros([1], x.dtype), tf.reshape(x, [-1])], axis=0))


@keras.saving.register_keras_serializable(package="kerasdet")
class RoIPool(keras.layers.Layer):
    """RoI max pooling of Fast R-CNN, with the exact semantics of `torchvision.ops.roi_pool`.

    Each RoI is scaled by `spatial_scale` to feature-map pixels, its edges are rounded half
    away from zero (C `round`), and it is split into `ph x pw` bins of float size
    `roi_h / ph` (with `roi_h = max(y2' - y1' + 1, 1)`); bin `i` covers rows
    `[y1' + floor(i * bin_h), y1' + ceil((i + 1) * bin_h))` clipped to the map (columns
    alike). The output is the max over each bin, 0 for a bin that is empty after clipping.
    Gradients flow to the max positions. Built from TFLite builtin ops only (gathers and
    maxima over a sparse table, see the module docstring), so it exports to TFLite without
    Flex or custom ops.

    Args:
        pool_size: int or `(ph, pw)`, the output bins per RoI.
        spatial_scale: feature-map pixels per input-image pixel (1/16 for a stride-16 map).
        **kwargs: standard `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        features: float tensor `[B, H, W, C]`. `H` and `W` may be unknown at trace time
            (a `tf.while_loop` path: TensorFlow only, TFLite export needs them static).
        rois: tensor `[B, N, 4]`, `[y1, x1, y2, x2]` in input-image pixels; processed in
            float32 whatever the layer's dtype policy.

    Returns:
        Tensor `[B, N, ph, pw, C]` of the dtype of `features`.

    Example:
    >>> features = np.arange(16, dtype="float32").reshape(1, 4, 4, 1)
    >>> rois = np.array([[[0, 0, 3, 3], [1, 0, 1, 3]]], "float32")
    >>> RoIPool(pool_size=2, spatial_scale=1.0)(features, rois)[..., 0].numpy()
    array([[[[ 5.,  7.],
             [13., 15.]],
    <BLANKLINE>
            [[ 5.,  7.],
             [ 5.,  7.]]]], dtype=float32)
    """

    def __init__(self, pool_size=7, spatial_scale=1.0 / 16, **kwargs):
        # No input autocast: features keep their dtype and RoIs stay float32 (in float16 a
        # 1000-pixel coordinate is only known to 0.5 px, which changes the rounding).
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.pool_size = normalize_pool_size(pool_size, _MAX_POOL_SIZE)
        self.spatial_scale = check_positive_float(spatial_scale, "spatial_scale")

    def call(self, features, rois):
        return roi_pool(features, rois, self.pool_size, self.spatial_scale)

    def get_config(self):
        config = super().get_config()
        config.update({"pool_size": self.pool_size, "spatial_scale": self.spatial_scale})
        return config
