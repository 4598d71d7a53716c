"""RoIAlign (Mask R-CNN; `torchvision.ops.roi_align`) from TFLite builtin ops.

Every bin averages `sampling_ratio**2` bilinear samples; every sample is the weighted sum of
its four neighbouring pixels, read with `gather` (`tf.image.crop_and_resize` is not a TFLite
builtin). The weights are separable: a sample at `(y, x)` weighs pixel `(r, c)` by
`wy[r] * wx[c]`, so they are computed per sample row and per sample column and only
multiplied out at the end. Channels are processed in groups (one after the other in graph
mode) so that each gathered block stays around `_GROUP_GATHER_BYTES`.
"""

from __future__ import annotations

import numbers

import keras
import numpy as np
import tensorflow as tf

from kerasdet.layers._roi_utils import (
    channel_groups,
    check_positive_float,
    check_roi_inputs,
    normalize_pool_size,
    one_group_at_a_time,
    static_or_dynamic_shape,
)

# Target bytes of one gathered block `[B*N*ph*pw, channels in the group]`.
_GROUP_GATHER_BYTES = 8 * 2**20
# Upper bound on the number of channel groups (each one adds ops to the graph).
_MAX_CHANNEL_GROUPS = 16


def _check_sampling_ratio(sampling_ratio) -> int:
    if isinstance(sampling_ratio, numbers.Integral) and not isinstance(sampling_ratio, bool):
        if sampling_ratio > 0:
            return int(sampling_ratio)
        raise ValueError(
            f"`sampling_ratio` must be a positive int, got {sampling_ratio}; torchvision's "
            "adaptive sampling (<= 0) depends on the RoI size and is not supported"
        )
    raise ValueError(f"`sampling_ratio` must be a positive int, got {sampling_ratio!r}")


def _axis_samples(start, end, num_bins: int, grid: int, size, aligned: bool):
    """Bilinear taps of the sample positions along one axis.

    Args:
        start, end: float32 `[B, N]` RoI edges in feature-map pixels (already shifted by
            -0.5 when `aligned`).
        num_bins, grid: bins per RoI and samples per bin along this axis.
        size: feature-map size along this axis (int or scalar tensor).

    Returns:
        `(low, high, w_low, w_high)`, each `[B, N, num_bins * grid]` (bin-major): the two
        pixel indices around each sample and their weights (0 for samples off the map).
    """
    extent = end - start
    if not aligned:
        extent = tf.maximum(extent, 1.0)  # torchvision forces legacy RoIs to be >= 1 px
    bin_size = extent[..., None] / float(num_bins)
    bins = np.repeat(np.arange(num_bins, dtype=np.float32), grid)
    steps = np.tile(np.arange(grid, dtype=np.float32) + 0.5, num_bins)
    # Same evaluation order as torchvision: start + i * bin + (iy + 0.5) * bin / grid.
    pos = (
        start[..., None]
        + tf.constant(bins) * bin_size
        + tf.constant(steps) * bin_size / float(grid)
    )
    size_f = tf.cast(size, tf.float32)
    # Samples more than one pixel off the map contribute nothing (torchvision's rule).
    inside = tf.cast((pos >= -1.0) & (pos <= size_f), tf.float32)
    pos = tf.maximum(pos, 0.0)
    at_edge = pos >= size_f - 1.0  # the last row/column is not interpolated further
    # Clamped before the cast so off-map samples cannot overflow int32.
    low = tf.cast(tf.floor(tf.minimum(pos, size_f - 1.0)), tf.int32)
    high = tf.where(at_edge, low, low + 1)
    frac = tf.where(at_edge, 0.0, pos - tf.cast(low, tf.float32))
    return low, high, (1.0 - frac) * inside, frac * inside


def roi_align(
    features, rois, pool_size=7, spatial_scale=1.0 / 16, sampling_ratio=2, aligned=True
) -> tf.Tensor:
    """Functional form of `RoIAlign` (same arguments, same result)."""
    ph, pw = normalize_pool_size(pool_size)
    spatial_scale = check_positive_float(spatial_scale, "spatial_scale")
    grid = _check_sampling_ratio(sampling_ratio)
    features, rois = check_roi_inputs(features, rois, "RoIAlign")
    batch, height, width, channels = static_or_dynamic_shape(features)
    num_rois = tf.shape(rois)[1]
    dtype = features.dtype

    offset = 0.5 if aligned else 0.0
    y1, x1, y2, x2 = tf.unstack(rois * spatial_scale - offset, axis=-1)
    row_lo, row_hi, wy_lo, wy_hi = _axis_samples(y1, y2, ph, grid, height, aligned)
    col_lo, col_hi, wx_lo, wx_hi = _axis_samples(x1, x2, pw, grid, width, aligned)

    # Flat pixel index (b * H + r) * W + c of each tap, per sample row / sample column.
    image = tf.range(batch, dtype=tf.int32)[:, None, None] * height
    rows = [(image + row_lo) * width, (image + row_hi) * width]
    row_weights = [wy_lo, wy_hi]
    cols, col_weights = [col_lo, col_hi], [wx_lo, wx_hi]

    def per_sample_slot(t, axis_bins):
        # [B, N, bins * grid] -> [grid, B, N, bins]: the sample slot within the bin first.
        t = tf.reshape(t, tf.stack([batch, num_rois, axis_bins, grid]))
        return tf.transpose(t, [3, 0, 1, 2])

    rows = [per_sample_slot(t, ph) for t in rows]
    row_weights = [per_sample_slot(t, ph) for t in row_weights]
    cols = [per_sample_slot(t, pw) for t in cols]
    col_weights = [per_sample_slot(t, pw) for t in col_weights]

    # The 4 * grid**2 taps of every bin: indices and weights [X] with X = B*N*ph*pw; the
    # weight includes the 1 / grid**2 of the average.
    taps = []
    scale = 1.0 / (grid * grid)
    for iy in range(grid):
        for ix in range(grid):
            for r, wr in zip(rows, row_weights, strict=True):
                for c, wc in zip(cols, col_weights, strict=True):
                    index = r[iy][..., :, None] + c[ix][..., None, :]
                    weight = wr[iy][..., :, None] * wc[ix][..., None, :] * scale
                    taps.append(
                        (tf.reshape(index, [-1]), tf.cast(tf.reshape(weight, [-1, 1]), dtype))
                    )

    flat = tf.reshape(features, [-1, channels])
    # Group sizes need N at trace time; when it is unknown, assume 300 proposals.
    rows_per_call = (features.shape[0] or 1) * (rois.shape[1] or 300) * ph * pw
    if isinstance(channels, int) and channels:
        sizes = channel_groups(
            channels, rows_per_call * dtype.size, _GROUP_GATHER_BYTES, _MAX_CHANNEL_GROUPS
        )
    else:
        sizes = [channels]
    parts = tf.split(flat, sizes, axis=1) if len(sizes) > 1 else [flat]
    outputs = []
    for part in one_group_at_a_time(parts, outputs):
        total = None
        for index, weight in taps:
            term = tf.gather(part, index) * weight
            total = term if total is None else total + term
        outputs.append(total)
    pooled = tf.concat(outputs, axis=1) if len(outputs) > 1 else outputs[0]
    return tf.reshape(pooled, tf.stack([batch, num_rois, ph, pw, channels]))


@keras.saving.register_keras_serializable(package="kerasdet")
class RoIAlign(keras.layers.Layer):
    """RoIAlign of Mask R-CNN, with the semantics of `torchvision.ops.roi_align`.

    Each RoI is scaled by `spatial_scale` (and shifted by -0.5 pixel when `aligned`, so that
    pixel centres sit at integer + 0.5) and split into `ph x pw` bins; each bin is the mean of
    `sampling_ratio x sampling_ratio` regularly spaced bilinear samples. Samples more than one
    pixel off the feature map contribute 0; samples within one pixel of the edge read the
    clamped edge. Built from TFLite builtin ops only (gathers and arithmetic).

    Args:
        pool_size: int or `(ph, pw)`, the output bins per RoI.
        spatial_scale: feature-map pixels per input-image pixel (1/16 for a stride-16 map).
        sampling_ratio: samples per bin along each axis, a positive int (torchvision's
            adaptive `<= 0` depends on the RoI size and is not supported).
        aligned: `True` for the half-pixel-corrected RoIAlign (Detectron2 default),
            `False` for the original (each RoI then spans at least one pixel).
        **kwargs: standard `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        features: float tensor `[B, H, W, C]`.
        rois: tensor `[B, N, 4]`, `[y1, x1, y2, x2]` in input-image pixels; processed in
            float32 whatever the layer's dtype policy.

    Returns:
        Tensor `[B, N, ph, pw, C]` of the dtype of `features`.

    Example:
    >>> features = np.arange(16, dtype="float32").reshape(1, 4, 4, 1)
    >>> rois = np.array([[[0, 0, 4, 4]]], "float32")
    >>> RoIAlign(pool_size=2, spatial_scale=1.0, sampling_ratio=1)(features, rois)[..., 0].numpy()
    array([[[[ 2.5,  4.5],
             [10.5, 12.5]]]], dtype=float32)
    """

    def __init__(
        self, pool_size=7, spatial_scale=1.0 / 16, sampling_ratio=2, aligned=True, **kwargs
    ):
        # No input autocast: features keep their dtype and RoIs stay float32 (in float16 a
        # 1000-pixel coordinate is only known to 0.5 px).
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.pool_size = normalize_pool_size(pool_size)
        self.spatial_scale = check_positive_float(spatial_scale, "spatial_scale")
        self.sampling_ratio = _check_sampling_ratio(sampling_ratio)
        if not isinstance(aligned, (bool, np.bool_)):
            raise ValueError(f"`aligned` must be a bool, got {aligned!r}")
        self.aligned = bool(aligned)

    def call(self, features, rois):
        return roi_align(
            features, rois, self.pool_size, self.spatial_scale, self.sampling_ratio, self.aligned
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "pool_size": self.pool_size,
                "spatial_scale": self.spatial_scale,
                "sampling_ratio": self.sampling_ratio,
                "aligned": self.aligned,
            }
        )
        return config
