"""OverFeat detection: a multi-scale dense classifier + regressor, merged in the graph."""

from __future__ import annotations

import keras
import tensorflow as tf

from kerasdet.analysis import spatial_geometry
from kerasdet.boxes import clip_boxes
from kerasdet.models.overfeat import _architecture, overfeat_classifier
from kerasdet.models.overfeat_localizer import decode_window_boxes, overfeat_localizer
from kerasdet.postprocess.merge import MERGE_MODES, MergeDetections


@keras.saving.register_keras_serializable(package="kerasdet")
class DenseWindowDecoder(keras.layers.Layer):
    """Turns one pyramid scale's dense maps into scored boxes in original-image pixels.

    Every output location gets its top foreground class (OverFeat assigns each location
    the class with the highest confidence) with that class's softmax probability as its
    score, and the regressor's box for that class, decoded relative to the location's
    window (see `kerasdet.models.overfeat_localizer`) and divided by the scale.

    Args:
        scale: `(sy, sx)`, the factors the image was resized by for this level (a number
            means the same on both axes).
        stride: effective stride of the dense maps, input pixels of the resized image.
        first_center: centre of location (0, 0)'s window, `(y, x)` resized pixels.
        window: training window size `S`.
        image_size: `(H, W)` of the original image, to clip boxes.

    Call arguments:
        logits: `[B, h, w, C + 1]` class logits, background first.
        boxes: `[B, h, w, 4·C]` window-relative boxes.

    Returns:
        `(boxes [B, h·w, 4], scores [B, h·w], classes [B, h·w] int32)`.
    """

    def __init__(self, scale, stride, first_center, window, image_size, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        pair = (scale, scale) if isinstance(scale, (int, float)) else tuple(scale)
        self.scale = tuple(float(v) for v in pair)
        self.stride = float(stride)
        self.first_center = tuple(float(c) for c in first_center)
        self.window = float(window)
        self.image_size = tuple(int(s) for s in image_size)

    def call(self, logits, boxes):
        logits = tf.cast(logits, tf.float32)
        batch = tf.shape(logits)[0]
        height, width = tf.shape(logits)[1], tf.shape(logits)[2]
        num_classes = logits.shape[-1] - 1
        probs = tf.nn.softmax(logits, axis=-1)[..., 1:]  # drop background
        classes = tf.argmax(probs, axis=-1, output_type=tf.int32)  # [B, h, w]
        scores = tf.reduce_max(probs, axis=-1)
        boxes = tf.reshape(tf.cast(boxes, tf.float32), [batch, height, width, num_classes, 4])
        boxes = tf.gather(boxes, classes, batch_dims=3)  # [B, h, w, 4]
        ys = self.first_center[0] + self.stride * tf.cast(tf.range(height), tf.float32)
        xs = self.first_center[1] + self.stride * tf.cast(tf.range(width), tf.float32)
        cy, cx = tf.meshgrid(ys, xs, indexing="ij")
        centers = tf.stack([cy, cx], axis=-1)[None]  # [1, h, w, 2]
        sy, sx = self.scale
        boxes = decode_window_boxes(boxes, centers, self.window) / tf.constant([sy, sx, sy, sx], tf.float32)
        boxes = clip_boxes(boxes, self.image_size)
        return (
            tf.reshape(boxes, [batch, -1, 4]),
            tf.reshape(scores, [batch, -1]),
            tf.reshape(classes, [batch, -1]),
        )

    def compute_output_spec(self, logits, boxes):
        batch, h, w = logits.shape[0], logits.shape[1], logits.shape[2]
        n = None if h is None or w is None else h * w
        return (
            keras.KerasTensor((batch, n, 4), dtype="float32"),
            keras.KerasTensor((batch, n), dtype="float32"),
            keras.KerasTensor((batch, n), dtype="int32"),
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "scale": self.scale,
                "stride": self.stride,
                "first_center": self.first_center,
                "window": self.window,
                "image_size": self.image_size,
            }
        )
        return config


def with_last_pool(classifier: keras.Model, localizer: keras.Model, arch, last_pool: str):
    """A trained classifier and localizer rebuilt with another last pool, same weights, for
    inference (no dropout).

    Pools have no weights, so networks trained with the standard pool run offset pooling
    (§3.3: stride /3) or the stride-2 pool at test time unchanged; `overfeat_detector` places
    the window centres at the new effective stride. Batch norm, if the classifier has it, is
    kept.

    Returns:
        `(classifier, localizer)`: the same objects for `last_pool="standard"`.
    """
    if last_pool == "standard":
        return classifier, localizer
    batch_norm = any(isinstance(layer, keras.layers.BatchNormalization) for layer in classifier.layers)
    variant = overfeat_classifier(arch, num_classes=classifier.output.shape[-1], last_pool=last_pool, dropout=0.0,
                                  batch_norm=batch_norm)
    variant.set_weights(classifier.get_weights())
    variant_localizer = overfeat_localizer(variant, arch, num_classes=localizer.output.shape[-1] // 4)
    variant_localizer.set_weights(localizer.get_weights())
    return variant, variant_localizer


def overfeat_detector(
    classifier: keras.Model,
    localizer: keras.Model,
    arch,
    *,
    image_size,
    scales=(1.0,),
    merge: str = "greedy",
    score_threshold: float = 0.5,
    match_threshold: float = 1.0,
    iou_threshold: float = 0.5,
    max_detections: int = 100,
    max_candidates: int = 2000,
    name=None,
) -> keras.Model:
    """OverFeat's detector as one functional model: image → padded detections.

    The image is resized by each scale (an image pyramid; the paper uses 6 scales), the
    classifier and the regressor run densely at each scale (one pass each, FC layers as
    convolutions), every location gets its top class and box, locations below
    `score_threshold` are dropped, and the survivors of all scales are merged with
    OverFeat's greedy merge (default) or per-class NMS — all inside the graph.
    `"greedy_nms"` runs the greedy merge, then per-class NMS at `iou_threshold` on the
    merged boxes (suppressing the leftover duplicate clusters of one object).

    Args:
        classifier: from `overfeat_classifier` (C + 1 outputs, background = 0).
        localizer: from `overfeat_localizer` on the same classifier (4·C outputs).
        arch: architecture name, for the window size.
        image_size: `(H, W)` of input images (static, so the pyramid is fixed).
        scales: resize factors; each resized image must be at least the window.
        merge: `"greedy"`, `"nms"` or `"greedy_nms"`.
        score_threshold: confidence threshold before merging.
        match_threshold: greedy merge's threshold t.
        iou_threshold: NMS IoU threshold (`"nms"`, `"greedy_nms"`).
        max_detections: rows of the output dict.
        max_candidates: at most this many thresholded boxes (highest scores) enter the merge.

    Raises:
        ValueError: a scale that resizes the image below the window. Calling the model on
            images that are not `[B, H, W, 3]` is Keras's one-line input-spec error.

    Returns:
        A functional model: images float32 `[B, H, W, 3]` (0–255 RGB) → the detections dict
        (`boxes [B, D, 4]`, `scores [B, D]`, `classes [B, D]`, `num_detections [B]`). With
        greedy merge a score is the sum of the merged boxes' confidences.
    """
    spec = _architecture(arch)
    if merge not in MERGE_MODES:
        raise ValueError(f"`merge` must be one of {MERGE_MODES}, got {merge!r}")
    height, width = (int(s) for s in image_size)
    if not scales:
        raise ValueError(f"`scales` must list at least one resize factor, got {scales!r}")
    dense = keras.Model(classifier.input, [classifier.output, localizer.output], name="dense_windows")
    inputs = keras.Input((height, width, 3), name="images")
    candidates = []
    for index, scale in enumerate(scales):
        size = (round(height * scale), round(width * scale))
        if min(size) < spec.window:
            raise ValueError(
                f"scale {scale} makes a {size[0]}×{size[1]} image, smaller than the "
                f"{spec.window}×{spec.window} window; use scales ≥ {spec.window / min(height, width):.3f}"
            )
        geometry = spatial_geometry(classifier, size)
        resized = inputs if size == (height, width) else keras.layers.Resizing(*size, name=f"resize_{index}")(inputs)
        # Detection is inference: pin training=False so the classifier's dropout stays off
        # at every scale (Keras does not propagate the call's mode to every reuse of a
        # nested model reliably).
        logits, boxes = dense(resized, training=False)
        candidates.append(
            DenseWindowDecoder(
                scale=(size[0] / height, size[1] / width),
                stride=geometry.effective_stride[0],
                first_center=geometry.first_center,
                window=spec.window,
                image_size=(height, width),
                name=f"decode_{index}",
            )(logits, boxes)
        )
    if len(candidates) == 1:
        boxes, scores, classes = candidates[0]
    else:
        # float32 layers: under a mixed-precision policy a default Concatenate would cast the
        # decoded boxes and scores to the compute dtype (bfloat16 keeps 8 bits: 0.5 px at 100).
        boxes = keras.layers.Concatenate(axis=1, name="all_boxes", dtype="float32")([c[0] for c in candidates])
        scores = keras.layers.Concatenate(axis=1, name="all_scores", dtype="float32")([c[1] for c in candidates])
        classes = keras.layers.Concatenate(axis=1, name="all_classes", dtype="float32")([c[2] for c in candidates])
    detections = MergeDetections(
        num_classes=classifier.output.shape[-1] - 1, merge=merge, score_threshold=score_threshold,
        match_threshold=match_threshold, iou_threshold=iou_threshold, max_detections=max_detections,
        max_candidates=max_candidates, name="merge",
    )(boxes, scores, classes)
    arch_name = arch if isinstance(arch, str) else "custom"
    model = keras.Model(inputs, detections, name=name or f"overfeat_{arch_name}_detector")
    # A strict input spec, so a wrong input is Keras's one-line "expected shape=(None, H, W,
    # 3), found shape=..." error: the default spec of a functional model squeezes a last
    # axis of 1 and would let a 1-channel image through (broadcast to 3 by normalization).
    model.input_spec = keras.layers.InputSpec(shape=(None, height, width, 3), name="images")
    return model
