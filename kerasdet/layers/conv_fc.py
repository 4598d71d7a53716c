"""A fully connected layer run as a convolution (OverFeat §3.5, the notes' "FC as conv")."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


def _pair(name, value):
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    value = tuple(value)
    if len(value) != 2 or not all(isinstance(v, int) and v > 0 for v in value):
        raise ValueError(f"`{name}` must be a positive int or (height, width), got {value!r}")
    return value


@keras.saving.register_keras_serializable(package="kerasdet")
class ConvFC(keras.layers.Layer):
    """A fully connected layer applied as a convolution, so it slides over larger inputs.

    A `Dense` layer on a flattened `kh × kw × C` window is the same dot product as a
    `kh × kw` convolution with `units` filters and no padding. Run as a convolution, a
    classifier trained on fixed-size crops runs densely on a bigger image in one pass: each
    output location is the classifier applied to one window (a "spatial output"), and the
    overlapping windows share all convolution work. The parameter count does not depend on
    the input size.

    Args:
        units: output channels (the Dense layer's units).
        kernel_size: the window, an int or `(kh, kw)`. `None` (default) takes the spatial
            size of the input the layer is first built on — the whole training window for
            the first FC layer, 1×1 for the FC layers after it.
        activation: activation name or callable, default none.
        use_bias: whether to add a bias (default True).
        kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer: as in
            `keras.layers.Dense`.

    Call arguments:
        inputs: `[B, H, W, C]` with `H ≥ kh`, `W ≥ kw`.

    Returns:
        `[B, H − kh + 1, W − kw + 1, units]`; `[B, 1, 1, units]` on the window size.

    Example:
    >>> dense = keras.layers.Dense(10)
    >>> _ = dense(tf.zeros([1, 5 * 5 * 8]))
    >>> fc = ConvFC.from_dense(dense, window=(5, 5))
    >>> fc(tf.zeros([1, 9, 12, 8])).shape  # a 5×8 grid of windows
    TensorShape([1, 5, 8, 10])
    """

    def __init__(
        self,
        units: int,
        kernel_size=None,
        activation=None,
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(units, int) or isinstance(units, bool) or units <= 0:
            raise ValueError(f"`units` must be a positive int, got {units!r}")
        self.units = units
        self.kernel_size = None if kernel_size is None else _pair("kernel_size", kernel_size)
        self.activation = keras.activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"ConvFC expects inputs [B, H, W, C], got shape {tuple(input_shape)}")
        if input_shape[-1] is None:
            raise ValueError(f"ConvFC needs a known channel count, got input shape {tuple(input_shape)}")
        if self.kernel_size is None:
            if input_shape[1] is None or input_shape[2] is None:
                raise ValueError(
                    "ConvFC(kernel_size=None) takes its window from the input it is built on, "
                    f"which must have static height and width; got input shape {tuple(input_shape)}"
                )
            self.kernel_size = (int(input_shape[1]), int(input_shape[2]))
        self.kernel = self.add_weight(
            name="kernel",
            shape=self.kernel_size + (int(input_shape[-1]), self.units),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
        )
        self.bias = (
            self.add_weight(
                name="bias", shape=(self.units,), initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
            )
            if self.use_bias
            else None
        )

    def _check_window(self, shape):
        height, width = shape[1], shape[2]
        kh, kw = self.kernel_size
        if (height is not None and height < kh) or (width is not None and width < kw):
            raise ValueError(
                f"ConvFC window is {kh}×{kw}; it needs an input at least that large, got "
                f"{height}×{width} (input shape {tuple(shape)})"
            )

    def call(self, inputs):
        self._check_window(inputs.shape)
        kernel = tf.cast(self.kernel, inputs.dtype)
        if tuple(inputs.shape[1:3]) == tuple(self.kernel_size):
            # The input is exactly one window (training on crops, the Faster R-CNN head on
            # pooled RoIs): the same product as a matmul. TensorFlow's CPU gradient of a
            # VALID conv whose kernel covers the whole input is ~25x slower than the matmul's
            # (1.57 s vs 0.06 s for 1024 RoIs of 7x7x96 -> 256), and TFLite runs it as one
            # FULLY_CONNECTED op.
            flat = tf.reshape(inputs, [-1, int(np.prod(kernel.shape[:3]))])
            outputs = tf.matmul(flat, tf.reshape(kernel, [-1, self.units]))
            outputs = tf.reshape(outputs, [-1, 1, 1, self.units])
        else:
            outputs = tf.nn.conv2d(inputs, kernel, strides=1, padding="VALID")
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, tf.cast(self.bias, outputs.dtype))
        return self.activation(outputs)

    def compute_output_shape(self, input_shape):
        if self.kernel_size is None:  # not built yet: the window will be the input's size
            kh, kw = input_shape[1], input_shape[2]
        else:
            self._check_window(input_shape)
            kh, kw = self.kernel_size
        height = None if input_shape[1] is None else input_shape[1] - kh + 1
        width = None if input_shape[2] is None else input_shape[2] - kw + 1
        return (input_shape[0], height, width, self.units)

    def load_dense_weights(self, dense: keras.layers.Dense) -> None:
        """Copies the weights of an equivalent, built `Dense` layer into this layer.

        The Dense layer must have been trained on windows flattened in Keras' `Flatten`
        order (row, column, channel) of an NHWC `[kh, kw, C]` input, so its kernel is
        `[kh·kw·C, units]`.
        """
        if not isinstance(dense, keras.layers.Dense) or not dense.built:
            raise ValueError(f"`dense` must be a built keras.layers.Dense, got {dense!r}")
        kernel = np.asarray(dense.kernel)
        kh, kw = self.kernel_size
        if kernel.shape[1] != self.units or kernel.shape[0] % (kh * kw):
            raise ValueError(
                f"Dense kernel {kernel.shape} does not fit a {kh}×{kw} window with {self.units} "
                f"units: its input size must be a multiple of {kh * kw}"
            )
        channels = kernel.shape[0] // (kh * kw)
        if not self.built:
            self.build((None, kh, kw, channels))
        if tuple(self.kernel.shape) != (kh, kw, channels, self.units):
            raise ValueError(
                f"Dense kernel {kernel.shape} implies {channels} input channels, but this "
                f"ConvFC was built with kernel {tuple(self.kernel.shape)}"
            )
        if self.use_bias != dense.use_bias:
            raise ValueError(f"use_bias differs: ConvFC {self.use_bias}, Dense {dense.use_bias}")
        self.kernel.assign(kernel.reshape(kh, kw, channels, self.units))
        if self.use_bias:
            self.bias.assign(np.asarray(dense.bias))

    @classmethod
    def from_dense(cls, dense: keras.layers.Dense, window=(1, 1), **kwargs) -> ConvFC:
        """Builds a ConvFC equal to `dense` on a `window` of the previous layer's output.

        Args:
            dense: a built `keras.layers.Dense` whose input was a flattened
                `[kh, kw, C]` window (Keras `Flatten` order).
            window: `(kh, kw)`, e.g. `(5, 5)` for OverFeat's first FC layer, `(1, 1)` for
                the later ones.
            **kwargs: other `ConvFC` arguments (e.g. `name`).

        Returns:
            A built `ConvFC` with the Dense layer's weights and activation.
        """
        kwargs.setdefault("activation", dense.activation)
        kwargs.setdefault("use_bias", dense.use_bias)
        layer = cls(dense.units, kernel_size=window, **kwargs)
        layer.load_dense_weights(dense)
        return layer

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "kernel_size": self.kernel_size,
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            }
        )
        return config
