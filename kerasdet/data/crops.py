"""Fixed-size window crops from a detection dataset, for OverFeat's classifier and
localizer (the notes' workflow: train on crops, then run densely on whole images).

Each object yields crops whose window is jittered around it so that the object spans a
fraction `object_fraction` of the window side; background crops are windows that hold no
significant part of any object. Every crop carries:

* a class label (0 = background, k + 1 = foreground class k), for the classifier;
* a localization target `[t_y1, t_x1, t_y2, t_x2, class]` (window-relative box, see
  `kerasdet.models.overfeat_localizer`; class −1 when the window's IoU with the box is
  below `min_iou` or the crop is background, so the regression loss ignores it).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def _iou_with_window(boxes, window):
    """IoU of yxyx boxes [N, 4] with one yxyx window [4]."""
    top = np.maximum(boxes[:, 0], window[0])
    left = np.maximum(boxes[:, 1], window[1])
    bottom = np.minimum(boxes[:, 2], window[2])
    right = np.minimum(boxes[:, 3], window[3])
    inter = np.clip(bottom - top, 0, None) * np.clip(right - left, 0, None)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    window_area = (window[2] - window[0]) * (window[3] - window[1])
    return inter / (area + window_area - inter), inter / np.maximum(area, 1e-6)


def window_crops(
    image,
    boxes,
    classes,
    *,
    window: int,
    window_center,
    rng,
    crops_per_object: int = 2,
    backgrounds: int = 2,
    shifted_negatives: int = 0,
    small_object_negatives: int = 0,
    small_fraction=(0.12, 0.28),
    object_fraction=(0.45, 0.95),
    jitter: float = 0.12,
    min_iou: float = 0.5,
    background_max_overlap: float = 0.2,
):
    """Cuts labelled `window × window` crops out of one image.

    Args:
        image: `[H, W, 3]` uint8 or float (0–255).
        boxes: `[N, 4]` yxyx pixels; classes: `[N]` 0-based ids.
        window: output crop size `S` (the model's training window).
        window_center: `(y, x)`, the centre of the model's output window on an `S × S`
            input (`spatial_geometry(model, (S, S)).first_center`), so targets match what
            the dense detector decodes.
        rng: `np.random.Generator`.
        crops_per_object: crops per object.
        backgrounds: background crops attempted per image.
        shifted_negatives: per object, background crops of the object's scale moved off
            it (IoU < `background_max_overlap` with every object), so the classifier
            learns that a window grazing an object is not a detection.
        small_object_negatives: per object, background crops centred on it where it spans
            only `small_fraction` of the window side: at that pyramid scale the object is
            too small to report (a larger scale will), which keeps each scale's detections
            to objects of its size.
        object_fraction: range of (object's longer side) / (window side).
        jitter: window centre shift, as a fraction of the window side.
        min_iou: minimum IoU of the object box with the window for a regression target.
        background_max_overlap: a background window may cover at most this fraction of
            any object's area.

    Returns:
        `(crops float32 [K, S, S, 3], labels int32 [K], targets float32 [K, 5])`.
    """
    image = np.asarray(image)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    classes = np.asarray(classes, np.int64).reshape(-1)
    height, width = image.shape[:2]
    windows, labels, targets = [], [], []
    for box, cls in zip(boxes, classes):
        h, w = box[2] - box[0], box[3] - box[1]
        for _ in range(crops_per_object):
            side = max(h, w) / rng.uniform(*object_fraction)
            cy = (box[0] + box[2]) / 2 + rng.uniform(-jitter, jitter) * side
            cx = (box[1] + box[3]) / 2 + rng.uniform(-jitter, jitter) * side
            win = np.array([cy - side / 2, cx - side / 2, cy + side / 2, cx + side / 2], np.float32)
            iou, _ = _iou_with_window(box[None], win)
            # Box in the crop's S×S pixels, relative to the model's window centre.
            scale = window / side
            in_crop = (box - np.array([win[0], win[1], win[0], win[1]])) * scale
            center = np.array([window_center[0], window_center[1]] * 2, np.float32)
            target = (in_crop - center) / window
            windows.append(win)
            labels.append(int(cls) + 1)
            targets.append(np.append(target, float(cls) if iou[0] >= min_iou else -1.0))
    for box in boxes:
        for _ in range(small_object_negatives):
            side = max(box[2] - box[0], box[3] - box[1]) / rng.uniform(*small_fraction)
            cy = (box[0] + box[2]) / 2 + rng.uniform(-jitter, jitter) * side
            cx = (box[1] + box[3]) / 2 + rng.uniform(-jitter, jitter) * side
            win = np.array([cy - side / 2, cx - side / 2, cy + side / 2, cx + side / 2], np.float32)
            # Only when no other object fills this bigger window at a detectable size.
            sides = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) / side
            _, covered = _iou_with_window(boxes, win)
            if not np.any((covered > 0.5) & (sides > small_fraction[1])):
                windows.append(win)
                labels.append(0)
                targets.append(np.array([0, 0, 0, 0, -1], np.float32))
        for _ in range(shifted_negatives):
            side = max(box[2] - box[0], box[3] - box[1]) / rng.uniform(*object_fraction)
            angle = rng.uniform(0, 2 * np.pi)
            distance = rng.uniform(0.6, 1.0) * side
            cy = (box[0] + box[2]) / 2 + distance * np.sin(angle)
            cx = (box[1] + box[3]) / 2 + distance * np.cos(angle)
            win = np.array([cy - side / 2, cx - side / 2, cy + side / 2, cx + side / 2], np.float32)
            if _iou_with_window(boxes, win)[0].max() < background_max_overlap:
                windows.append(win)
                labels.append(0)
                targets.append(np.array([0, 0, 0, 0, -1], np.float32))
    for _ in range(backgrounds):
        for _attempt in range(20):
            side = rng.uniform(window * 0.5, max(window * 0.5, min(height, width)))
            y0 = rng.uniform(0, max(height - side, 0))
            x0 = rng.uniform(0, max(width - side, 0))
            win = np.array([y0, x0, y0 + side, x0 + side], np.float32)
            if len(boxes) == 0 or _iou_with_window(boxes, win)[1].max() <= background_max_overlap:
                windows.append(win)
                labels.append(0)
                targets.append(np.array([0, 0, 0, 0, -1], np.float32))
                break
    if not windows:
        empty = np.zeros([0, window, window, 3], np.float32)
        return empty, np.zeros([0], np.int32), np.zeros([0, 5], np.float32)
    normalized = np.stack(windows) / np.array([height, width, height, width], np.float32)
    # Windows may extend past the image; crop_and_resize fills outside with a mid grey.
    crops = tf.image.crop_and_resize(
        tf.cast(image[None], tf.float32), normalized, tf.zeros(len(windows), tf.int32),
        (window, window), extrapolation_value=127.0,
    ).numpy()
    return crops, np.asarray(labels, np.int32), np.stack(targets).astype(np.float32)


def crop_dataset(examples, *, window: int, window_center, seed: int = 0, **kwargs):
    """Crops from an iterable of examples `{"image", "boxes", "classes"}` (yxyx pixels).

    Args:
        examples: iterable of dicts as `kerasdet.data.shapes.generate_example` returns.
        window, window_center, **kwargs: see `window_crops`.
        seed: crop sampling seed (deterministic).

    Returns:
        `(crops float32 [K, S, S, 3], labels int32 [K], targets float32 [K, 5])`
        concatenated over the examples.
    """
    rng = np.random.default_rng(seed)
    parts = [
        window_crops(ex["image"], ex["boxes"], ex["classes"], window=window, window_center=window_center, rng=rng, **kwargs)
        for ex in examples
    ]
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))
