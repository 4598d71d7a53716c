"""Plain-loop NumPy references for RoI pooling, written from the spec (torchvision's CPU
kernels, float32 arithmetic), independently of the TensorFlow layers.

Boxes are `[y1, x1, y2, x2]` in image pixels, features `[B, H, W, C]`.
"""

from __future__ import annotations

import math

import numpy as np

f32 = np.float32


def c_round(value) -> int:
    """C `round`: half away from zero (exact: a float32 plus 0.5 is exact in float64)."""
    value = float(value)
    return int(math.copysign(math.floor(abs(value) + 0.5), value))


def _pool_bins(start: int, end: int, bins: int, size: int):
    """`(lo, hi)` of each bin along one axis, clipped to [0, size)."""
    roi_len = max(end - start + 1, 1)
    bin_size = f32(roi_len) / f32(bins)
    out = []
    for i in range(bins):
        lo = int(np.floor(f32(i) * bin_size)) + start
        hi = int(np.ceil(f32(i + 1) * bin_size)) + start
        out.append((min(max(lo, 0), size), min(max(hi, 0), size)))
    return out


def roi_pool_reference(features, rois, pool_size, spatial_scale, with_argmax=False):
    """Returns `[B, N, ph, pw, C]` (and the argmax `(h, w)` per output when asked)."""
    features = np.asarray(features)
    rois = np.asarray(rois, np.float32)
    ph, pw = (pool_size, pool_size) if isinstance(pool_size, int) else pool_size
    batch, height, width, channels = features.shape
    out = np.zeros((batch, rois.shape[1], ph, pw, channels), features.dtype)
    argmax = np.full(out.shape + (2,), -1, np.int64)
    scale = f32(spatial_scale)
    for b in range(batch):
        for n in range(rois.shape[1]):
            y1, x1, y2, x2 = (c_round(f32(v) * scale) for v in rois[b, n])
            row_bins = _pool_bins(y1, y2, ph, height)
            col_bins = _pool_bins(x1, x2, pw, width)
            for i, (h0, h1) in enumerate(row_bins):
                for j, (w0, w1) in enumerate(col_bins):
                    if h1 <= h0 or w1 <= w0:
                        continue
                    # Scan the bin row by row, all channels at once; strict '>' keeps the
                    # first maximum, like torchvision's argmax.
                    best = np.full(channels, -np.inf)
                    where = np.full((channels, 2), -1)
                    for h in range(h0, h1):
                        for w in range(w0, w1):
                            better = features[b, h, w] > best
                            best = np.where(better, features[b, h, w], best)
                            where[better] = (h, w)
                    out[b, n, i, j] = best
                    argmax[b, n, i, j] = where
    return (out, argmax) if with_argmax else out


def roi_pool_reference_grad(features, rois, pool_size, spatial_scale, upstream):
    """d(sum(upstream * roi_pool(features)))/d features: upstream summed at the argmaxes."""
    _, argmax = roi_pool_reference(features, rois, pool_size, spatial_scale, with_argmax=True)
    grad = np.zeros(np.shape(features), np.float64)
    for index in np.ndindex(argmax.shape[:-1]):
        h, w = argmax[index]
        if h >= 0:
            b, c = index[0], index[-1]
            grad[b, h, w, c] += upstream[index]
    return grad


def _bilinear(feature, height, width, y, x):
    """torchvision's `bilinear_interpolate` on one `[H, W, C]` map (float32 steps)."""
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return np.zeros(feature.shape[-1], np.float32)
    y = max(y, f32(0))
    x = max(x, f32(0))
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_high = y_low = height - 1
        y = f32(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_high = x_low = width - 1
        x = f32(x_low)
    else:
        x_high = x_low + 1
    ly, lx = f32(y - y_low), f32(x - x_low)
    hy, hx = f32(1) - ly, f32(1) - lx
    return (
        hy * hx * feature[y_low, x_low]
        + hy * lx * feature[y_low, x_high]
        + ly * hx * feature[y_high, x_low]
        + ly * lx * feature[y_high, x_high]
    )


def roi_align_reference(features, rois, pool_size, spatial_scale, sampling_ratio, aligned):
    """torchvision `roi_align` with a fixed `sampling_ratio > 0`; returns `[B, N, ph, pw, C]`."""
    features = np.asarray(features, np.float32)
    rois = np.asarray(rois, np.float32)
    ph, pw = (pool_size, pool_size) if isinstance(pool_size, int) else pool_size
    batch, height, width, channels = features.shape
    out = np.zeros((batch, rois.shape[1], ph, pw, channels), np.float32)
    scale = f32(spatial_scale)
    offset = f32(0.5) if aligned else f32(0)
    grid = sampling_ratio
    for b in range(batch):
        for n in range(rois.shape[1]):
            y1, x1, y2, x2 = (f32(v) * scale - offset for v in rois[b, n])
            roi_h, roi_w = f32(y2 - y1), f32(x2 - x1)
            if not aligned:
                roi_h, roi_w = max(roi_h, f32(1)), max(roi_w, f32(1))
            bin_h, bin_w = roi_h / f32(ph), roi_w / f32(pw)
            for i in range(ph):
                for j in range(pw):
                    total = np.zeros(channels, np.float32)
                    for iy in range(grid):
                        y = y1 + f32(i) * bin_h + f32(iy + 0.5) * bin_h / f32(grid)
                        for ix in range(grid):
                            x = x1 + f32(j) * bin_w + f32(ix + 0.5) * bin_w / f32(grid)
                            total += _bilinear(features[b], height, width, f32(y), f32(x))
                    out[b, n, i, j] = total / f32(grid * grid)
    return out


def random_rois(rng, batch: int, num: int, image_h: float, image_w: float):
    """`[batch, num, 4]` float32 yxyx RoIs of every kind a pooling layer must handle:
    tiny to 2.5x the image, partly or fully outside, non-integer, a few degenerate
    (zero height or width) and a few inverted (y2 < y1)."""
    size = np.array([image_h, image_w])
    center = rng.uniform(-0.3, 1.3, (batch, num, 2)) * size
    extent = np.exp(rng.uniform(np.log(0.3), np.log(2.5), (batch, num, 2))) * size
    extent = np.where(
        rng.uniform(size=(batch, num, 2)) < 0.3, rng.uniform(0.1, 3.0, extent.shape), extent
    )
    extent[rng.uniform(size=(batch, num)) < 0.1] = 0.0
    inverted = rng.uniform(size=(batch, num, 1)) < 0.05
    extent = np.where(inverted, -extent, extent)
    low, high = center - extent / 2, center + extent / 2
    return np.concatenate([low, high], axis=-1).astype(np.float32)
