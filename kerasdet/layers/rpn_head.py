"""Region Proposal Network head (Faster R-CNN §3.1)."""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="kerasdet")
class RPNHead(keras.layers.Layer):
    """RPN head: a 3×3 conv + ReLU, then 1×1 convs for objectness and box deltas.

    With `separable=True` the 3×3 conv becomes a depthwise `kernel_size`×`kernel_size` conv
    followed by a 1×1 conv of `channels` (ThunderNet's compressed RPN: a 5×5 depthwise conv
    and a 1×1 conv). On a 1024-channel ResNet-50 C4 map this cuts the RPN's FLOPs by about
    9×: the paper's 3×3 conv, 1024 → 512, is 15 % of that detector's FLOPs.

    The same weights slide over every location (and every level, if several feature maps
    are given). Outputs are flattened location-major — row, column, anchor — in the order
    `AnchorGenerator` produces anchors, so `outputs[..., a, :]` belongs to `anchors[a]`.

    Args:
        num_anchors: anchors per location `k` (default 9 = 3 sizes × 3 ratios).
        channels: width of the 3×3 conv (default 512, the paper's for VGG16).
        separable: a depthwise-separable conv instead of the dense 3×3 conv (default False).
        kernel_size: spatial size of that conv (default 3; ThunderNet uses 5 when separable).
        objectness: `"sigmoid"` (default, `k` logits of "object") or `"softmax"` (`2k`
            logits as in the paper and the notes, `[background, object]` per anchor).
        kernel_initializer: initializer of the three convs (of the 1×1 part when separable); default normal(σ=0.01), the
            paper's.

    Call arguments:
        features: `[B, H, W, C]`, or a list of such maps (one per level; levels are
            concatenated in order).

    Returns:
        dict with
        - `"objectness_logits"`: `[B, H·W·k]` (sigmoid) or `[B, H·W·k, 2]` (softmax);
        - `"box_deltas"`: `[B, H·W·k, 4]` as `[dy, dx, dh, dw]` (see `kerasdet.boxes.BoxCoder`).

    Example:
    >>> head = RPNHead(num_anchors=9, channels=256)
    >>> out = head(tf.zeros([2, 38, 63, 512]))
    >>> out["objectness_logits"].shape, out["box_deltas"].shape
    (TensorShape([2, 21546]), TensorShape([2, 21546, 4]))
    """

    def __init__(
        self,
        num_anchors: int = 9,
        channels: int = 512,
        objectness: str = "sigmoid",
        kernel_initializer=None,
        separable: bool = False,
        kernel_size: int = 3,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(num_anchors, int) or num_anchors <= 0:
            raise ValueError(f"`num_anchors` must be a positive int, got {num_anchors!r}")
        if not isinstance(channels, int) or channels <= 0:
            raise ValueError(f"`channels` must be a positive int, got {channels!r}")
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size <= 0 or kernel_size % 2 == 0:
            raise ValueError(f"`kernel_size` must be a positive odd int, got {kernel_size!r}")
        if not isinstance(separable, bool):
            raise ValueError(f"`separable` must be a bool, got {separable!r}")
        if objectness not in ("sigmoid", "softmax"):
            raise ValueError(f"`objectness` must be 'sigmoid' or 'softmax', got {objectness!r}")
        self.num_anchors = num_anchors
        self.channels = channels
        self.objectness = objectness
        self.separable = separable
        self.kernel_size = kernel_size
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer or keras.initializers.RandomNormal(stddev=0.01)
        )
        common = {"kernel_initializer": self.kernel_initializer, "dtype": self.dtype_policy}
        if separable:
            self.conv = keras.layers.SeparableConv2D(
                channels, kernel_size, padding="same", activation="relu", name="conv",
                # Variance-preserving depthwise weights (σ = 1/k for a fan-in of k²). The paper's
                # σ = 0.01 suits a dense conv with a fan-in of 9·C; Keras' fan-in rules count C
                # for a depthwise kernel too. Either would start the hidden map ~50× smaller.
                depthwise_initializer=keras.initializers.RandomNormal(stddev=1.0 / kernel_size),
                pointwise_initializer=self.kernel_initializer,
                dtype=self.dtype_policy,
            )
        else:
            self.conv = keras.layers.Conv2D(
                channels, kernel_size, padding="same", activation="relu", name="conv", **common
            )
        logits = num_anchors * (2 if objectness == "softmax" else 1)
        self.objectness_conv = keras.layers.Conv2D(logits, 1, name="objectness", **common)
        self.delta_conv = keras.layers.Conv2D(num_anchors * 4, 1, name="deltas", **common)

    def build(self, input_shape):
        shape = input_shape[0] if isinstance(input_shape, (list, tuple)) and isinstance(
            input_shape[0], (list, tuple)
        ) else input_shape
        if len(shape) != 4:
            raise ValueError(f"RPNHead expects features [B, H, W, C], got shape {tuple(shape)}")
        self.conv.build(shape)
        hidden = tuple(shape[:3]) + (self.channels,)
        self.objectness_conv.build(hidden)
        self.delta_conv.build(hidden)

    def _one_level(self, features):
        hidden = self.conv(features)
        batch = tf.shape(features)[0]
        logits = self.objectness_conv(hidden)
        # Channels are anchor-major (anchor a owns channels a·d ... a·d + d - 1), so a plain
        # reshape gives the row, column, anchor order of AnchorGenerator.
        if self.objectness == "softmax":
            logits = tf.reshape(logits, [batch, -1, 2])
        else:
            logits = tf.reshape(logits, [batch, -1])
        deltas = tf.reshape(self.delta_conv(hidden), [batch, -1, 4])
        return logits, deltas

    def call(self, features):
        levels = features if isinstance(features, (list, tuple)) else [features]
        outputs = [self._one_level(level) for level in levels]
        if len(outputs) == 1:
            logits, deltas = outputs[0]
        else:
            logits = tf.concat([o[0] for o in outputs], axis=1)
            deltas = tf.concat([o[1] for o in outputs], axis=1)
        return {"objectness_logits": logits, "box_deltas": deltas}

    def compute_output_spec(self, features):
        levels = features if isinstance(features, (list, tuple)) else [features]
        batch = levels[0].shape[0]
        total = 0
        for level in levels:
            if level.shape[1] is None or level.shape[2] is None:
                total = None
                break
            total += level.shape[1] * level.shape[2] * self.num_anchors
        logit_shape = (batch, total, 2) if self.objectness == "softmax" else (batch, total)
        dtype = self.compute_dtype
        return {
            "objectness_logits": keras.KerasTensor(logit_shape, dtype=dtype),
            "box_deltas": keras.KerasTensor((batch, total, 4), dtype=dtype),
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_anchors": self.num_anchors,
                "channels": self.channels,
                "objectness": self.objectness,
                "separable": self.separable,
                "kernel_size": self.kernel_size,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            }
        )
        return config
