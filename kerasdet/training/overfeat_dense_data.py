"""Batches for dense OverFeat training: fixed-size patches of training images rescaled to
pyramid scales, with a target at every output location (`kerasdet.training.overfeat_dense`).

Every sample is a `P × P` patch of one image resized by a random scale `s` (so shapes are
static whatever the scale: one trace, batches mix scales) at a random offset (so every phase
of the stride-24 grid is seen, which the detector's offset pooling also reads). Half of the
patches (`object_prob`) pick an object and a scale at which it is a positive's size, and
place it anywhere in the patch; the rest take a log-uniform scale over `scale_range` and a
uniform offset — the windows the detector sees at each pyramid level, mostly background.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from kerasdet.analysis import spatial_geometry
from kerasdet.training.overfeat_dense import OBJECT_FRACTION, dense_targets

# Value of pixels outside the image (a patch larger than a small-scale image), as in crops.
_PAD_VALUE = 127.0


def resample_patches(images, scales, offsets, patch_size: int):
    """`P × P` patches at `offsets` (y, x; resized pixels) of `images` resized by `scales`.

    Bilinear, half-pixel centres: the same sampling as `tf.image.resize` (and so as the
    detector's `Resizing` layers), without resizing the whole images; pixels outside an
    image are `127`.

    Args:
        images: `[B, H, W, 3]` 0–255 (one size, so one `crop_and_resize` call).
        scales: `[B]` resize factors.
        offsets: `[B, 2]` top-left `(oy, ox)` of each patch in its resized image (may be
            negative).
        patch_size: `P`.

    Returns:
        float32 `[B, P, P, 3]`.
    """
    images = np.asarray(images)
    height, width = images.shape[1:3]
    scales = np.asarray(scales, np.float64)[:, None]
    # Output pixel i (centre at o + i + ½ resized) reads input pixel-index coordinate
    # (o + i + ½) / s − ½; crop_and_resize reads y1·(H − 1) + i·(y2 − y1)·(H − 1)/(P − 1).
    start = (np.asarray(offsets, np.float64) + 0.5) / scales - 0.5
    end = start + (patch_size - 1) / scales
    norm = np.array([height - 1, width - 1], np.float64)
    boxes = np.concatenate([start / norm, end / norm], axis=1).astype(np.float32)
    # crop_and_resize reads uint8 directly (no float copy of the whole images).
    return tf.image.crop_and_resize(
        images, boxes, tf.range(len(boxes)), (patch_size, patch_size),
        extrapolation_value=_PAD_VALUE,
    ).numpy()


class DensePatchSampler:
    """Random dense-training samples from a list of detection examples.

    Args:
        examples: sequence of dicts `{"image" [H, W, 3], "boxes" [N, 4] yxyx, "classes" [N]}`.
        model: the OverFeat classifier (or localizer) to train, for its geometry (output
            size, stride, window centre: `kerasdet.analysis.spatial_geometry`).
        window: its training window side `S`.
        patch_size: `P`; `(P − S)` should be a multiple of the stride (230 → 7×7 locations
            for tiny).
        scale_range: (min, max) resize factor.
        object_prob: fraction of patches centred on an object's scale.
        flip: random horizontal flips.
        seed: sampling seed.
        **target_kwargs: passed to `dense_targets` (e.g. `object_fraction`).

    Example:
    >>> sampler = DensePatchSampler(examples, model=classifier, window=86)
    >>> images, labels, boxes = sampler.sample(32)  # [32, 230, 230, 3], [32, 7, 7], [32, 7, 7, 5]
    """

    def __init__(
        self, examples, *, model, window: int, patch_size: int = 230, scale_range=(0.5, 3.8),
        object_prob: float = 0.5, flip: bool = True, seed: int = 0, **target_kwargs,
    ):
        self.examples = list(examples)
        self.window = int(window)
        self.patch_size = int(patch_size)
        self.scale_range = tuple(float(s) for s in scale_range)
        self.object_prob = float(object_prob)
        self.flip = flip
        self.rng = np.random.default_rng(seed)
        self.target_kwargs = target_kwargs
        geometry = spatial_geometry(model, (self.patch_size, self.patch_size))
        self.output_size = geometry.output_size
        self.stride = geometry.effective_stride
        self.first_center = geometry.first_center
        self.window_center = spatial_geometry(model, (self.window, self.window)).first_center
        self.object_fraction = target_kwargs.get("object_fraction", OBJECT_FRACTION)

    def _placement(self, example):
        """`(scale, offset)` of one patch of `example`."""
        rng, size, lo, hi = self.rng, self.patch_size, *self.scale_range
        boxes = np.asarray(example["boxes"], np.float32).reshape(-1, 4)
        height, width = example["image"].shape[:2]
        if len(boxes) and rng.random() < self.object_prob:
            box = boxes[rng.integers(len(boxes))]
            longer = max(box[2] - box[0], box[3] - box[1])
            scale = float(np.clip(rng.uniform(*self.object_fraction) * self.window / longer, lo, hi))
            # The object's centre anywhere a window centre can be.
            center = (box[:2] + box[2:]) / 2 * scale
            offset = center - rng.uniform(self.window / 2, size - self.window / 2, size=2)
            return scale, offset
        scale = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        extent = np.array([height, width]) * scale - size  # < 0: the image fits in the patch
        return scale, rng.uniform(np.minimum(extent, 0), np.maximum(extent, 0))

    def sample(self, batch_size: int):
        """One batch: `(images float32 [B, P, P, 3], labels int32 [B, h, w],
        box_targets float32 [B, h, w, 5])`."""
        picked = [self.examples[k] for k in self.rng.integers(len(self.examples), size=batch_size)]
        placements = [self._placement(example) for example in picked]
        scales = [scale for scale, _ in placements]
        offsets = [offset for _, offset in placements]
        if len({np.shape(example["image"]) for example in picked}) == 1:
            images = resample_patches(np.stack([e["image"] for e in picked]), scales, offsets, self.patch_size)
        else:
            images = np.concatenate([
                resample_patches(np.asarray(e["image"])[None], [s], [o], self.patch_size)
                for e, s, o in zip(picked, scales, offsets)
            ])
        labels, targets = [], []
        for k, (example, scale, offset) in enumerate(zip(picked, scales, offsets)):
            boxes = np.asarray(example["boxes"], np.float32).reshape(-1, 4) * scale
            boxes -= np.concatenate([offset, offset]).astype(np.float32)
            if self.flip and self.rng.random() < 0.5:
                # Mirroring the patch mirrors its boxes: x ↦ P − x.
                images[k] = images[k, :, ::-1]
                p = self.patch_size
                boxes = np.stack([boxes[:, 0], p - boxes[:, 3], boxes[:, 2], p - boxes[:, 1]], axis=1)
            label, target = dense_targets(
                boxes, example["classes"], output_size=self.output_size, stride=self.stride,
                first_center=self.first_center, window_center=self.window_center, window=self.window,
                **self.target_kwargs,
            )
            labels.append(label)
            targets.append(target)
        return images, np.stack(labels), np.stack(targets)

    def dataset(self, batch_size: int, target: str = "labels") -> tf.data.Dataset:
        """An endless `tf.data.Dataset` of `(images, labels)` (`target="labels"`) or
        `(images, box_targets)` (`"boxes"`) batches, prefetched; use with `steps_per_epoch`."""
        if target not in ("labels", "boxes"):
            raise ValueError(f"`target` must be 'labels' or 'boxes', got {target!r}")
        p, (h, w) = self.patch_size, self.output_size
        y_spec = (
            tf.TensorSpec([batch_size, h, w], tf.int32) if target == "labels"
            else tf.TensorSpec([batch_size, h, w, 5], tf.float32)
        )

        def generate():
            while True:
                images, labels, targets = self.sample(batch_size)
                yield images, labels if target == "labels" else targets

        signature = (tf.TensorSpec([batch_size, p, p, 3], tf.float32), y_spec)
        return tf.data.Dataset.from_generator(generate, output_signature=signature).prefetch(2)
