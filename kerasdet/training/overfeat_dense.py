"""Per-location targets for training an OverFeat model densely on a whole (rescaled) image.

The dense pass of an OverFeat classifier computes the outputs of every `S × S` crop at
the effective stride (the notes' central claim, `kerasdet.analysis`), so one image with a
target at every output location trains all those crops at once — including every
off-centre, wrong-scale window the detector will see, which is the paper's bootstrapping of
hard negatives (§4) done exhaustively.

Output location `(i, j)` looks at the window of side `S` whose top-left corner is
`first_center + stride · (i, j) − window_center` (input pixels), where `window_center` is
the model's output centre on an `S × S` input: that window is exactly the crop
`kerasdet.data.crops` would cut for this location. Targets follow the crop rules:

* **class** (`[h, w]` int32): `k + 1` when a box of class `k` is "the window's object" —
  its longer side is a fraction `object_fraction` of `S` and its centre is within
  `center_tolerance · S` of the window's centre on both axes (crops jitter the window by
  ±0.12 S; 0.15 S makes the nearest location of a stride-24 grid always positive). `−1`
  (no loss) in the ambiguous band around that: longer side within `ignore_fraction` and
  centre within `ignore_center · S`. `0` (background) everywhere else, so windows that
  graze an object or see it at the wrong scale are trained as negatives.
* **box** (`[h, w, 5]` float32): the localizer's window-relative target
  `t = (yxyx − [cy, cx, cy, cx]) / S` with `(cy, cx) = first_center + stride · (i, j)`
  (`kerasdet.models.overfeat_localizer`), and the class id; class `−1` (ignored) where no
  box overlaps the window enough. "Overlap" is, by default, the paper's "overlap with the
  input field of view" (§4): the fraction of the box inside the window, at least
  `min_overlap`. The notes say IoU instead (`overlap="iou"`); with IoU ≥ 0.5 a square
  filling 70 % of the window side (IoU 0.49) — a typical positive — would get no
  regression target, although it is exactly where the detector decodes boxes.
"""

from __future__ import annotations

import numpy as np

OVERLAP_MODES = ("coverage", "iou")
# Default (min, max) of a positive's longer box side / window side: the crops' range.
OBJECT_FRACTION = (0.45, 0.95)


def window_origins(output_size, stride, first_center, window_center):
    """Top-left corners `[h, w, 2]` (y, x) of every output location's window, input pixels.

    Args:
        output_size: `(h, w)` of the dense map.
        stride: effective stride `(sy, sx)` or a number.
        first_center: `(y, x)` centre of location (0, 0) on this input
            (`spatial_geometry(model, size).first_center`).
        window_center: `(y, x)` centre of the single output on an `S × S` input
            (`spatial_geometry(model, (S, S)).first_center`).
    """
    sy, sx = (stride, stride) if np.isscalar(stride) else stride
    ys = first_center[0] - window_center[0] + sy * np.arange(output_size[0], dtype=np.float32)
    xs = first_center[1] - window_center[1] + sx * np.arange(output_size[1], dtype=np.float32)
    oy, ox = np.meshgrid(ys, xs, indexing="ij")
    return np.stack([oy, ox], axis=-1).astype(np.float32)


def dense_targets(
    boxes,
    classes,
    *,
    output_size,
    stride,
    first_center,
    window_center,
    window: int,
    object_fraction=OBJECT_FRACTION,
    center_tolerance: float = 0.15,
    ignore_fraction=(0.35, 1.2),
    ignore_center: float = 0.3,
    min_overlap: float = 0.5,
    regression_fraction=(0.3, 1.3),
    regression_center=None,
    overlap: str = "coverage",
):
    """Class and box targets at every output location of one (rescaled) image.

    Args:
        boxes: `[N, 4]` yxyx pixels of the image the model sees (after resizing).
        classes: `[N]` 0-based class ids.
        output_size, stride, first_center, window_center: the dense map's geometry (see
            `window_origins`).
        window: training window side `S`.
        object_fraction: (min, max) of the box's longer side / `S` for a positive.
        center_tolerance: max |box centre − window centre| per axis, as a fraction of `S`,
            for a positive.
        ignore_fraction, ignore_center: the same bounds, looser, for the ignored band.
        min_overlap: minimum overlap of the box with the window for a box target.
        regression_fraction: (min, max) of the box's longer side / `S` for a box target
            (a box far smaller than the window is another scale's job).
        regression_center: optional max |box centre − window centre| per axis (fraction
            of `S`) for a box target, to train the regressor only on windows near the
            ones the detector decodes; `None`: no bound.
        overlap: `"coverage"` (fraction of the box inside the window) or `"iou"`.

    Returns:
        `(labels int32 [h, w], box_targets float32 [h, w, 5])`; see the module doc.
    """
    if overlap not in OVERLAP_MODES:
        raise ValueError(f"`overlap` must be one of {OVERLAP_MODES}, got {overlap!r}")
    h, w = (int(s) for s in output_size)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    classes = np.asarray(classes, np.int64).reshape(-1)
    labels = np.zeros([h, w], np.int32)
    box_targets = np.zeros([h, w, 5], np.float32)
    box_targets[..., 4] = -1.0
    if len(boxes) == 0 or h * w == 0:
        return labels, box_targets
    origins = window_origins((h, w), stride, first_center, window_center)[:, :, None]  # [h, w, 1, 2]
    size = float(window)
    # Every (location, box) pair at once: [h, w, N].
    box_center = (boxes[:, :2] + boxes[:, 2:]) / 2
    offset = np.abs(box_center - (origins + size / 2)).max(axis=-1) / size
    fraction = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) / size
    top_left = np.maximum(boxes[:, :2], origins)
    bottom_right = np.minimum(boxes[:, 2:], origins + size)
    inter = np.clip(bottom_right - top_left, 0, None).prod(axis=-1)
    area = np.prod(boxes[:, 2:] - boxes[:, :2], axis=-1)
    if overlap == "coverage":
        overlaps = inter / np.maximum(area, 1e-6)
    else:
        overlaps = inter / (area + size * size - inter)

    def within(bounds):
        return (fraction >= bounds[0]) & (fraction <= bounds[1])

    positive = within(object_fraction) & (offset <= center_tolerance)
    ambiguous = within(ignore_fraction) & (offset <= ignore_center)
    # Among a location's matching boxes, the best-centred one is its object.
    far = np.float32(np.inf)
    best = np.argmin(np.where(positive, offset, far), axis=-1)  # [h, w]
    has_positive = positive.any(axis=-1)
    labels[has_positive] = classes[best[has_positive]] + 1
    labels[~has_positive & ambiguous.any(axis=-1)] = -1

    regress = within(regression_fraction) & (overlaps >= min_overlap)
    if regression_center is not None:
        regress &= offset <= regression_center
    # A positive location regresses its own object (the class the detector will pick);
    # other locations the best-centred qualifying box.
    target_box = np.where(has_positive, best, np.argmin(np.where(regress, offset, far), axis=-1))
    has_box = has_positive | regress.any(axis=-1)
    # The regressor's reference point is the location's output centre, not the window's
    # geometric centre (they differ when the network's padding shifts it: 41 vs 43 for tiny).
    centers = origins[:, :, 0] + np.array(window_center, np.float32)
    chosen = boxes[target_box]  # [h, w, 4]
    box_targets[..., :4] = (chosen - np.concatenate([centers, centers], axis=-1)) / size
    box_targets[..., 4] = np.where(has_box, classes[target_box], -1).astype(np.float32)
    box_targets[~has_box, :4] = 0.0
    return labels, box_targets
