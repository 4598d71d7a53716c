"""Receptive field, effective stride and spatial output size of a convolutional model.

The notes' receptive-field section: each element of a network's spatial output sees a
`receptive_field` window of the input; moving one step in the output moves that window by
the `effective_stride`; a bigger input gives a bigger `output_size` ("spatial output").
"""

from __future__ import annotations

import dataclasses
import math

import keras

from kerasdet.layers.conv_fc import ConvFC
from kerasdet.layers.offset_max_pool import InterleaveOffsets, OffsetMaxPool

# Layers that do not change the spatial geometry.
_PASSTHROUGH = (
    keras.layers.InputLayer,
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.Dropout,
    keras.layers.Rescaling,
    keras.layers.Normalization,
    keras.layers.BatchNormalization,
    keras.layers.Softmax,
)


@dataclasses.dataclass(frozen=True)
class SpatialGeometry:
    """Geometry of a model's spatial output for one input size (all `(height, width)`).

    Attributes:
        input_size: the input size analysed.
        output_size: spatial output size.
        receptive_field: input pixels one output element depends on (before clipping to
            the image; padding can make it exceed the input).
        effective_stride: input pixels between neighbouring output elements.
        first_center: input coordinate of the centre of output element (0, 0)'s field.
    """

    input_size: tuple[int, int]
    output_size: tuple[int, int]
    receptive_field: tuple[int, int]
    effective_stride: tuple[float, float]
    first_center: tuple[float, float]


def _pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _axis_step(state, kernel, stride, padding, dilation=1):
    size, field, jump, center = state
    k = (kernel - 1) * dilation + 1
    if padding == "same":
        out = math.ceil(size / stride)
        pad_before = max((out - 1) * stride + k - size, 0) // 2
    elif padding == "valid":
        out = (size - k) // stride + 1
        pad_before = 0
    else:
        raise ValueError(f"unsupported padding {padding!r}")
    return (out, field + (k - 1) * jump, jump * stride, center + ((k - 1) / 2 - pad_before) * jump)


def _walk(model: keras.Model, input_size):
    """Yields `(layer, states, copies)` after each geometry-changing layer, where `states`
    is `(size, field, jump, center)` per axis and `copies` counts the maps the layer runs on
    (k² after an `OffsetMaxPool`)."""
    states = [(int(s), 1, 1.0, 0.0) for s in input_size]  # centre of pixel 0 is 0.0
    offset_k = None
    copies = 1
    for layer in model.layers:
        if isinstance(layer, _PASSTHROUGH) or isinstance(layer, keras.layers.Flatten):
            continue
        if isinstance(layer, keras.layers.ZeroPadding2D):
            (top, bottom), (left, right) = layer.padding
            states = [
                (size + a + b, field, jump, center - a * jump)
                for (size, field, jump, center), (a, b) in zip(states, ((top, bottom), (left, right)))
            ]
        elif isinstance(layer, keras.layers.Conv2D):
            params = zip(_pair(layer.kernel_size), _pair(layer.strides), _pair(layer.dilation_rate))
            states = [_axis_step(s, k, st, layer.padding, d) for s, (k, st, d) in zip(states, params)]
        elif isinstance(layer, (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)):
            params = zip(_pair(layer.pool_size), _pair(layer.strides))
            states = [_axis_step(s, k, st, layer.padding) for s, (k, st) in zip(states, params)]
        elif isinstance(layer, ConvFC):
            states = [_axis_step(s, k, 1, "valid") for s, k in zip(states, layer.kernel_size)]
        elif isinstance(layer, OffsetMaxPool):
            k = layer.pool_size
            # Every offset keeps floor(L / k) windows (see OffsetMaxPool).
            states = [(size // k, field + (k - 1) * jump, jump * k, center + (k - 1) / 2 * jump)
                      for size, field, jump, center in states]
            offset_k = k
            copies *= k * k
        elif isinstance(layer, InterleaveOffsets):
            if offset_k is None:
                raise ValueError(f"layer {layer.name!r}: InterleaveOffsets without an OffsetMaxPool before it")
            k = layer.pool_size
            states = [(size * k, field, jump / k, center) for size, field, jump, center in states]
            copies //= k * k
        else:
            raise ValueError(
                f"spatial_geometry does not know the geometry of layer {layer.name!r} "
                f"({type(layer).__name__})"
            )
        if any(size < 1 for size, *_ in states):
            raise ValueError(
                f"input {tuple(input_size)} is too small: layer {layer.name!r} would output "
                f"{tuple(s[0] for s in states)}"
            )
        yield layer, states, copies


def spatial_geometry(model: keras.Model, input_size) -> SpatialGeometry:
    """Walks a chain-structured model layer by layer and reports its spatial geometry.

    Understands `Conv2D`, `MaxPooling2D`, `AveragePooling2D`, `ZeroPadding2D`, `ConvFC`,
    `OffsetMaxPool` / `InterleaveOffsets`, and geometry-free layers (activations, dropout,
    rescaling, normalization). Layers are taken in `model.layers` order.

    Args:
        model: a Keras model whose layers form one chain (e.g. an OverFeat classifier).
        input_size: `(height, width)` of the input image.

    Returns:
        A `SpatialGeometry`.

    Raises:
        ValueError: for a layer whose geometry is unknown, or an input too small for the
            model (the error names the layer).
    """
    states = [(int(s), 1, 1.0, 0.0) for s in input_size]
    for _layer, after, _copies in _walk(model, input_size):
        states = after

    def tidy(value):  # 36.0 → 36, keep 12.5 as is
        return int(value) if float(value).is_integer() else value

    return SpatialGeometry(
        input_size=tuple(int(s) for s in input_size),
        output_size=tuple(s[0] for s in states),
        receptive_field=tuple(tidy(s[1]) for s in states),
        effective_stride=tuple(tidy(s[2]) for s in states),
        first_center=tuple(float(s[3]) for s in states),
    )


def count_flops(model: keras.Model, input_size) -> int:
    """Floating-point operations (2 per multiply-add) of the convolutions and `ConvFC`
    layers of a chain model on one `(height, width)` image; pooling and activations are
    not counted (they are a rounding error next to the convolutions)."""
    total = 0
    for layer, states, copies in _walk(model, input_size):
        if isinstance(layer, (keras.layers.Conv2D, ConvFC)):
            kh, kw, cin, cout = (int(d) for d in layer.kernel.shape)
            total += 2 * kh * kw * cin * cout * states[0][0] * states[1][0] * copies
    return total
