"""RPN proposals: decode, clip, drop tiny boxes, pre-NMS top-k, NMS, post-NMS top-k."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from kerasdet.boxes import BoxCoder, clip_boxes, valid_boxes_mask
from kerasdet.postprocess.nms import nms_indices
from kerasdet.postprocess.per_image import map_images


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"`{name}` must be a positive int, got {value!r}")
    return int(value)


@keras.saving.register_keras_serializable(package="kerasdet")
class ProposalLayer(keras.layers.Layer):
    """Turns RPN outputs into a fixed number of proposals per image (Faster R-CNN §3.1).

    Per image: box deltas are decoded on the anchors (`BoxCoder` weights `(1, 1, 1, 1)`),
    clipped to the image, boxes not taller and wider than `min_size` pixels are dropped, the
    `pre_nms_top_k` highest objectness boxes enter class-agnostic NMS at `nms_iou`
    (`NonMaxSuppressionV5`, a TFLite builtin), and the first `post_nms_top_k` survivors are
    kept. The train / test sizes are selected by the `training` call argument.

    Args:
        pre_nms_top_k_train, pre_nms_top_k_test: boxes entering NMS (capped at the number
            of anchors).
        nms_iou: IoU above which a lower-scoring box is suppressed, in [0, 1).
        post_nms_top_k_train, post_nms_top_k_test: `K`, the static number of output rows.
        min_size: minimum height and width in pixels (strictly greater is kept).

    Call arguments:
        objectness_logits: `[B, A]` sigmoid logits, or `[B, A, 2]` softmax logits
            `[background, object]`.
        box_deltas: `[B, A, 4]` `[dy, dx, dh, dw]`.
        anchors: `[A, 4]` yxyx pixels (same order as the RPN outputs).
        image_shape: `(height, width)` of the input image (Python ints or a tensor `[2]`).
        training: selects the train sizes when True.

    Returns:
        dict of
        - `"boxes"`: float32 `[B, K, 4]` yxyx pixels inside the image, sorted by objectness
          (descending), padding rows zeros;
        - `"scores"`: float32 `[B, K]` objectness probabilities, 0 on padding;
        - `"valid"`: bool `[B, K]`, False on padding rows;
        - `"num_proposals"`: int32 `[B]`.
    """

    def __init__(
        self,
        pre_nms_top_k_train: int = 12000,
        pre_nms_top_k_test: int = 6000,
        nms_iou: float = 0.7,
        post_nms_top_k_train: int = 2000,
        post_nms_top_k_test: int = 300,
        min_size: float = 1.0,
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.pre_nms_top_k_train = _positive_int("pre_nms_top_k_train", pre_nms_top_k_train)
        self.pre_nms_top_k_test = _positive_int("pre_nms_top_k_test", pre_nms_top_k_test)
        self.post_nms_top_k_train = _positive_int("post_nms_top_k_train", post_nms_top_k_train)
        self.post_nms_top_k_test = _positive_int("post_nms_top_k_test", post_nms_top_k_test)
        if not 0.0 <= float(nms_iou) < 1.0:
            raise ValueError(f"`nms_iou` must be in [0, 1), got {nms_iou!r}")
        if not float(min_size) >= 0.0:
            raise ValueError(f"`min_size` must be ≥ 0, got {min_size!r}")
        self.nms_iou = float(nms_iou)
        self.min_size = float(min_size)
        self.coder = BoxCoder()

    def sizes(self, training=None):
        """`(pre_nms_top_k, post_nms_top_k)` for the mode."""
        if training:
            return self.pre_nms_top_k_train, self.post_nms_top_k_train
        return self.pre_nms_top_k_test, self.post_nms_top_k_test

    def _one_image(self, boxes, scores, pre_k, post_k):
        k = tf.minimum(tf.shape(scores)[0], pre_k)
        # top_k is stable: ties keep anchor order.
        top_scores, order = tf.math.top_k(scores, k=k)
        top_boxes = tf.gather(boxes, order)
        selected, num = nms_indices(
            top_boxes, top_scores, max_output_size=post_k, iou_threshold=self.nms_iou,
            # Dropped boxes score −inf; every finite logit is above float32.min.
            score_threshold=float(np.finfo(np.float32).min),
        )
        valid = tf.range(post_k) < num
        out_boxes = tf.where(valid[:, None], tf.gather(top_boxes, selected), 0.0)
        out_scores = tf.where(valid, tf.sigmoid(tf.gather(top_scores, selected)), 0.0)
        return out_boxes, out_scores, valid, tf.cast(num, tf.int32)

    def call(self, objectness_logits, box_deltas, anchors, image_shape, training=None):
        pre_k, post_k = self.sizes(training)
        logits = tf.cast(objectness_logits, tf.float32)
        if logits.shape.rank == 3:  # softmax [background, object] → an equivalent sigmoid logit
            logits = logits[..., 1] - logits[..., 0]
        anchors = tf.cast(anchors, tf.float32)
        boxes = clip_boxes(self.coder.decode(box_deltas, anchors[None]), image_shape)  # [B, A, 4]
        keep = valid_boxes_mask(boxes, self.min_size) & tf.math.is_finite(logits)
        scores = tf.where(keep, logits, -np.inf)
        boxes = tf.stop_gradient(boxes)  # proposals are constants for the second stage
        scores = tf.stop_gradient(scores)

        out = map_images(
            lambda b, sc: self._one_image(b, sc, pre_k, post_k),
            (boxes, scores),
            (
                tf.TensorSpec([post_k, 4], tf.float32),
                tf.TensorSpec([post_k], tf.float32),
                tf.TensorSpec([post_k], tf.bool),
                tf.TensorSpec([], tf.int32),
            ),
        )
        return {"boxes": out[0], "scores": out[1], "valid": out[2], "num_proposals": out[3]}

    def compute_output_spec(self, objectness_logits, box_deltas, anchors, image_shape=None, training=None):
        batch = objectness_logits.shape[0]
        _, k = self.sizes(training)
        return {
            "boxes": keras.KerasTensor((batch, k, 4), dtype="float32"),
            "scores": keras.KerasTensor((batch, k), dtype="float32"),
            "valid": keras.KerasTensor((batch, k), dtype="bool"),
            "num_proposals": keras.KerasTensor((batch,), dtype="int32"),
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "pre_nms_top_k_train": self.pre_nms_top_k_train,
                "pre_nms_top_k_test": self.pre_nms_top_k_test,
                "nms_iou": self.nms_iou,
                "post_nms_top_k_train": self.post_nms_top_k_train,
                "post_nms_top_k_test": self.post_nms_top_k_test,
                "min_size": self.min_size,
            }
        )
        return config
