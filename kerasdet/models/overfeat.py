"""OverFeat classifier as a dense sliding window (FC layers are convolutions)."""

from __future__ import annotations

import keras

from kerasdet.layers.conv_fc import ConvFC
from kerasdet.layers.offset_max_pool import InterleaveOffsets, OffsetMaxPool
from kerasdet.models.overfeat_architectures import ARCHITECTURES, Architecture, Conv

# ImageNet channel statistics (RGB, 0–255): the model owns its input normalization, so
# exported files take raw pixels.
_MEAN = (123.675, 116.28, 103.53)
_STD = (58.395, 57.12, 57.375)

LAST_POOL_MODES = ("standard", "offset", "stride2")


def _architecture(arch) -> Architecture:
    if isinstance(arch, Architecture):
        return arch
    if arch not in ARCHITECTURES:
        raise ValueError(f"Unknown OverFeat architecture {arch!r}; expected one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch]


def input_normalization(name: str = "normalize") -> keras.layers.Layer:
    """Per-channel ImageNet standardization of 0–255 RGB pixels (a weight-free layer)."""
    return keras.layers.Rescaling(
        scale=[1.0 / s for s in _STD], offset=[-m / s for m, s in zip(_MEAN, _STD)], name=name
    )


def overfeat_features(
    arch="accurate", *, input_shape=(None, None, 3), conv_padding=None, batch_norm: bool = False, name=None
) -> keras.Model:
    """OverFeat layers 1–5 without the last pool: the shared feature extractor.

    Args:
        arch: `"accurate"`, `"fast"`, `"tiny"` or an `Architecture`.
        input_shape: `(H, W, 3)`; `None` sizes accept any image at least the window size.
        conv_padding: override the padding of every "same" conv (e.g. `"valid"` for a
            padding-free variant whose dense output equals crops exactly).
        batch_norm: batch normalization between every conv and its ReLU (not in the
            paper, which predates it): a network trained from scratch in minutes learns
            far faster with it. In inference it is a per-channel affine map, so the dense
            output still equals the crops'.

    Returns:
        A functional model `[B, H, W, 3]` (0–255 RGB) → `[B, h, w, C5]`, the map the last
        pool reads.
    """
    spec = _architecture(arch)
    inputs = keras.Input(shape=input_shape, name="images")
    x = input_normalization()(inputs)
    conv_index = pool_index = 0
    for layer in spec.features:
        if isinstance(layer, Conv):
            conv_index += 1
            x = keras.layers.Conv2D(
                layer.filters, layer.kernel, strides=layer.stride, padding=layer.effective_padding(conv_padding),
                activation=None if batch_norm else "relu", use_bias=not batch_norm, name=f"conv{conv_index}",
            )(x)
            if batch_norm:
                x = keras.layers.BatchNormalization(name=f"conv{conv_index}_bn")(x)
                x = keras.layers.ReLU(name=f"conv{conv_index}_relu")(x)
        else:
            pool_index += 1
            x = keras.layers.MaxPooling2D(layer.size, name=f"pool{pool_index}")(x)
    return keras.Model(inputs, x, name=name or f"overfeat_{arch if isinstance(arch, str) else 'custom'}_features")


def overfeat_classifier(
    arch="accurate",
    num_classes: int = 1000,
    *,
    last_pool: str = "standard",
    input_shape=(None, None, 3),
    dropout: float = 0.5,
    conv_padding=None,
    batch_norm: bool = False,
    name=None,
) -> keras.Model:
    """OverFeat's classifier; run on an image larger than its window it is a dense sliding
    window that outputs class logits at every location ("spatial output").

    Args:
        arch: `"accurate"` (221 window, stride 36), `"fast"` (231, stride 32), `"tiny"`
            (86, stride 24) or an `Architecture`.
        num_classes: outputs of the last FC layer (e.g. 1000 for ImageNet, or C + 1 with
            background for detection, as in the notes).
        last_pool: `"standard"` (the paper's non-overlapping pool), `"offset"` (offset
            max pooling at all k² offsets, a k× denser output per axis; stride 36 → 12) or
            `"stride2"` (the notes' alternative: the last pool with stride 2, accurate
            221 → 3×3, stride 24).
        input_shape: `(H, W, 3)`, default any size.
        dropout: rate after the two hidden FC layers (training only).
        conv_padding, batch_norm: see `overfeat_features`.

    Returns:
        A functional model: images float32 `[B, H, W, 3]`, 0–255 RGB → logits
        `[B, h, w, num_classes]`; `h = w = 1` on the training window with the standard
        pool. The parameter count does not depend on the input size.

    Example:
    >>> model = overfeat_classifier("tiny", num_classes=4)
    >>> model(np.zeros([1, 86, 86, 3], "float32")).shape
    TensorShape([1, 1, 1, 4])
    """
    spec = _architecture(arch)
    if last_pool not in LAST_POOL_MODES:
        raise ValueError(f"`last_pool` must be one of {LAST_POOL_MODES}, got {last_pool!r}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"`num_classes` must be a positive int, got {num_classes!r}")
    features = overfeat_features(spec, input_shape=input_shape, conv_padding=conv_padding, batch_norm=batch_norm)
    inputs = features.input
    x = features.output
    k = spec.last_pool
    # The FC window is what the standard pool leaves on the training window; the stride-2
    # variant pools the same map more densely, so its first FC keeps that kernel too.
    fc_window = spec.fc_window(conv_padding)
    if last_pool == "offset":
        x = OffsetMaxPool(k, name="offset_pool")(x)
    elif last_pool == "stride2":
        x = keras.layers.MaxPooling2D(k, strides=2, name="last_pool")(x)
    else:
        x = keras.layers.MaxPooling2D(k, name="last_pool")(x)
    for i, units in enumerate(spec.fc_units):
        x = ConvFC(units, kernel_size=fc_window if i == 0 else 1, activation="relu", name=f"fc{i + 1}")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"fc{i + 1}_dropout")(x)
    x = ConvFC(num_classes, kernel_size=1, name="logits")(x)
    if last_pool == "offset":
        x = InterleaveOffsets(k, name="interleave")(x)
    arch_name = arch if isinstance(arch, str) else "custom"
    return keras.Model(inputs, x, name=name or f"overfeat_{arch_name}")

