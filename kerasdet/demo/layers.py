"""`kerasdet demo --layers`: the foundation layers end to end, and their TFLite export.

The demo assembles a small, untrained two-stage graph from the public layers — backbone
convs → `RPNHead` on `AnchorGenerator` anchors → top-k proposals → `RoIPool` / `RoIAlign` →
`ConvFC` head → per-class NMS and OverFeat greedy merge — runs it on a synthetic image,
converts it to TFLite with builtin ops only and checks that LiteRT returns the same
detections. The weights are random: the detections show the plumbing, not accuracy (the
trained detector is `kerasdet demo` without `--layers`, in `kerasdet.demo.detector`).
"""

from __future__ import annotations

import time

import keras
import numpy as np
import tensorflow as tf

from kerasdet.boxes import BoxCoder, clip_boxes
from kerasdet.export import convert_builtin_only, tflite_op_names
from kerasdet.layers import AnchorGenerator, ConvFC, RoIAlign, RoIPool, RPNHead
from kerasdet.postprocess import GreedyMerge, NonMaxSuppression


class FoundationDemoModel(keras.Model):
    """A tiny two-stage detector graph using every foundation layer (random weights).

    Args:
        image_size: `(H, W)` of the input images.
        num_classes: foreground classes `C`.
        num_proposals: proposals kept per image (top-k by objectness, no RPN NMS).

    Call arguments:
        images: float32 `[B, H, W, 3]`, pixels 0–255.

    Returns:
        dict with `"nms"` and `"merge"` detections dicts (see `kerasdet.postprocess`) and
        `"pooled_max"` / `"pooled_align"`: `[B, num_proposals, 7, 7, C']` RoI features.
    """

    def __init__(self, image_size=(320, 480), num_classes=3, num_proposals=32, **kwargs):
        super().__init__(**kwargs)
        self.image_size = tuple(image_size)
        self.num_classes = num_classes
        self.num_proposals = num_proposals
        self.rescale = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0)
        self.backbone = [
            keras.layers.Conv2D(16 * 2 ** min(i, 2), 3, strides=2, padding="same", activation="relu")
            for i in range(4)
        ]  # stride 16
        self.anchors = AnchorGenerator(sizes=(32, 64, 128), stride=16)
        self.rpn = RPNHead(num_anchors=9, channels=64)
        self.coder = BoxCoder()
        self.roi_pool = RoIPool(pool_size=7, spatial_scale=1 / 16)
        self.roi_align = RoIAlign(pool_size=7, spatial_scale=1 / 16)
        self.fc1 = ConvFC(64, kernel_size=7, activation="relu")
        self.fc2 = ConvFC(64, kernel_size=1, activation="relu")
        self.classifier = ConvFC(num_classes + 1, kernel_size=1)
        self.regressor = ConvFC(4 * num_classes, kernel_size=1)
        self.nms = NonMaxSuppression(iou_threshold=0.5, score_threshold=0.05, max_detections=20)
        self.merge = GreedyMerge(score_threshold=0.05, max_detections=20, max_candidates=num_proposals)

    def call(self, images):
        features = self.rescale(images)
        for conv in self.backbone:
            features = conv(features)
        rpn = self.rpn(features)
        anchors = self.anchors(image_shape=self.image_size)
        proposals = clip_boxes(self.coder.decode(rpn["box_deltas"], anchors), self.image_size)
        _, top = tf.math.top_k(rpn["objectness_logits"], k=self.num_proposals)
        rois = tf.gather(proposals, top, batch_dims=1)  # [B, R, 4]

        pooled = self.roi_pool(features, rois)  # [B, R, 7, 7, C']
        aligned = self.roi_align(features, rois)
        batch = tf.shape(rois)[0]
        flat = tf.reshape(pooled + aligned, [-1, 7, 7, pooled.shape[-1]])
        hidden = self.fc2(self.fc1(flat))  # [B·R, 1, 1, 64]
        probs = tf.nn.softmax(tf.reshape(self.classifier(hidden), [batch, -1, self.num_classes + 1]))
        scores = probs[..., 1:]  # drop the background column
        deltas = tf.reshape(self.regressor(hidden), [batch, -1, self.num_classes, 4])
        boxes = clip_boxes(self.coder.decode(deltas, rois[:, :, None, :]), self.image_size)

        # Greedy merge takes one class per box (OverFeat assigns each location its top class).
        top_class = tf.argmax(scores, axis=-1, output_type=tf.int32)
        top_score = tf.reduce_max(scores, axis=-1)
        top_boxes = tf.gather(boxes, top_class, batch_dims=2)
        return {
            "nms": self.nms(boxes, scores),
            "merge": self.merge(top_boxes, top_score, top_class),
            "pooled_max": pooled,
            "pooled_align": aligned,
        }


def synthetic_image(image_size, seed: int = 0) -> np.ndarray:
    """A `[1, H, W, 3]` float32 image: a textured background with a few coloured boxes."""
    rng = np.random.default_rng(seed)
    height, width = image_size
    image = rng.uniform(60, 120, size=(height, width, 3)).astype(np.float32)
    for _ in range(3):
        h, w = rng.integers(height // 8, height // 3), rng.integers(width // 8, width // 3)
        y, x = rng.integers(0, height - h), rng.integers(0, width - w)
        image[y : y + h, x : x + w] = rng.uniform(0, 255, size=3)
    return image[None]


# Smallest image side the demo accepts: a 4×4 stride-16 grid gives 144 anchors, enough for
# the 32 proposals, and the synthetic image has room for its boxes.
_MIN_IMAGE_SIDE = 64


def run_layers_demo(image_size=(320, 480), output=None, seed: int = 0) -> int:
    """Runs the layers demo; prints a report; returns 0 when TFLite agrees with Keras, else 1."""
    from ai_edge_litert.interpreter import Interpreter

    if len(image_size) != 2 or not all(int(v) == v and v >= _MIN_IMAGE_SIDE for v in image_size):
        raise ValueError(
            f"image size must be two ints (H W) >= {_MIN_IMAGE_SIDE}, got {tuple(image_size)}"
        )
    image_size = tuple(int(v) for v in image_size)
    keras.utils.set_random_seed(seed)
    model = FoundationDemoModel(image_size=image_size)
    image = synthetic_image(image_size, seed)
    start = time.perf_counter()
    outputs = model(image)
    print(f"Keras forward pass on a {image_size[0]}×{image_size[1]} image: "
          f"{(time.perf_counter() - start) * 1000:.0f} ms (first call, includes tracing)")
    print(f"anchors: {int(model.anchors(image_shape=image_size).shape[0])}, "
          f"proposals: {model.num_proposals}, pooled RoI features: {tuple(outputs['pooled_max'].shape)}")
    for name in ("nms", "merge"):
        det = outputs[name]
        n = int(det["num_detections"][0])
        print(f"{name:>5}: {n} detections; top scores {np.round(det['scores'][0, :min(n, 3)].numpy(), 3).tolist()}")

    spec = [tf.TensorSpec([1, *image_size, 3], tf.float32)]
    flat_keys = [(group, key) for group in ("nms", "merge") for key in ("boxes", "scores", "classes", "num_detections")]
    tflite_model = convert_builtin_only(lambda x: [model(x)[g][k] for g, k in flat_keys], spec)
    ops = tflite_op_names(tflite_model)
    print(f"TFLite: {len(tflite_model) / 1e6:.2f} MB, {len(ops)} builtin op types, no custom/Flex op: {ops}")
    if output:
        with open(output, "wb") as f:
            f.write(tflite_model)
        print(f"wrote {output}")

    interpreter = Interpreter(model_content=tflite_model, num_threads=2)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image)
    interpreter.invoke()
    lite = [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]
    # Output order of a converted list follows the list (output_0, output_1, ...).
    agree = True
    for (group, key), value in zip(flat_keys, lite):
        expected = outputs[group][key].numpy()
        if not np.allclose(value, expected, atol=1e-3):
            agree = False
            print(f"MISMATCH {group}/{key}: max |Δ| = {np.max(np.abs(value - expected)):.4g}")
    print("LiteRT matches Keras: " + ("yes" if agree else "NO"))
    return 0 if agree else 1
