"""Compressing a trained Faster R-CNN head by truncated SVD (Fast R-CNN §3.1).

Girshick, "Fast R-CNN" (ICCV 2015), §3.1 "Truncated SVD for faster detection": an FC layer
`y = W x + b` with `W` of `u × v` is approximated by `W ≈ U_t Σ_t V_tᵀ` (the top `t`
singular values) and run as two FC layers without a non-linearity between them:
`Σ_t V_tᵀ` (`t × v`, no bias), then `U_t` (`u × t`, the original bias). Parameters drop
from `u·v` to `t·(u + v)`; the paper compresses VGG16's fc6 (25088 × 4096 → t = 1024) and
fc7 (4096 × 4096 → t = 256) for ~30 % less detection time at 0.3 mAP.

In Keras' layout a ConvFC kernel `[kh, kw, C, u]` is `Wᵀ` reshaped: `x @ K` with `x` the
flattened `kh·kw·C = v` window (row, column, channel order, as `ConvFC` flattens it).
"""

from __future__ import annotations

import warnings

import numpy as np

from kerasdet.models.faster_rcnn import FasterRCNN


def svd_factorize(kernel, rank: int):
    """Splits a ConvFC / Dense kernel into the two kernels of its rank-`rank` truncated SVD.

    Args:
        kernel: `[kh, kw, C, u]` (a ConvFC kernel) or `[v, u]` (a Dense kernel), with
            `v = kh·kw·C` inputs and `u` units.
        rank: `t`, `1 ≤ t ≤ min(v, u)`; `t = min(v, u)` is exact.

    Returns:
        `(first, second, singular_values)`: `first` is `[kh, kw, C, t]` (or `[v, t]`),
        the kernel `V_t Σ_t` of the first layer (no bias); `second` is `[1, 1, t, u]` (or
        `[t, u]`), the kernel `U_tᵀ` of the second layer (which takes the original bias);
        `singular_values` is all `min(v, u)` of them, descending, float64. The discarded
        part has Frobenius norm `‖K − first·second‖_F = sqrt(Σ_{i>t} σ_i²)` (Eckart–Young:
        the best rank-`t` approximation).
    """
    kernel = np.asarray(kernel)
    if kernel.ndim not in (2, 4):
        raise ValueError(f"`kernel` must be [kh, kw, C, units] or [inputs, units], got shape {kernel.shape}")
    units = kernel.shape[-1]
    matrix = kernel.reshape(-1, units).astype(np.float64)  # float64: exact at full rank
    inputs = matrix.shape[0]
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 1 <= rank <= min(inputs, units):
        raise ValueError(f"`rank` must be an int in [1, min({inputs}, {units})], got {rank!r}")
    left, singular, right_t = np.linalg.svd(matrix, full_matrices=False)
    first = (left[:, :rank] * singular[:rank]).astype(kernel.dtype)
    second = right_t[:rank].astype(kernel.dtype)
    if kernel.ndim == 4:
        first = first.reshape(*kernel.shape[:3], rank)
        second = second.reshape(1, 1, rank, units)
    return first, second, singular


def _requested_ranks(rank, head_units):
    """`rank` (an int for the first FC layer, or one int / None per FC layer) as a tuple."""
    if isinstance(rank, (int, np.integer)) and not isinstance(rank, bool):
        return (int(rank),) + (None,) * (len(head_units) - 1)
    if isinstance(rank, (list, tuple)) and len(rank) == len(head_units):
        return tuple(rank)
    raise ValueError(
        f"`rank` must be an int (the first FC layer) or a list of {len(head_units)} ints / None "
        f"(one per FC layer of head_units {tuple(head_units)}), got {rank!r}"
    )


def truncate_head_svd(model: FasterRCNN, rank) -> FasterRCNN:
    """A copy of a trained `FasterRCNN` whose RoI-head FC layer(s) are truncated SVDs.

    Fast R-CNN §3.1 (Girshick, ICCV 2015): each chosen FC layer with kernel `W`
    (`v = kh·kw·C` inputs × `u` units; e.g. 7·7·1024 = 50176 × 1024 for a ResNet-50
    head) becomes two layers: `fc{i}_svd_v` with kernel `V_t Σ_t` (`[kh, kw, C, t]`, no
    bias, no activation) and `fc{i}_svd_u` with kernel `U_tᵀ` (`[1, 1, t, u]`, the
    original bias and ReLU). That is `t·(v + u) + u` parameters instead of `v·u + u`,
    e.g. 13.1 M instead of 51.4 M for the ResNet-50 head's first layer at `t = 256`.

    The new model has the same configuration plus `head_ranks`, and the same weights for
    every other layer (backbone, RPN, the other FC layers, class and box layers). It is
    not compiled: compile it to fine-tune (the paper does not; its mAP cost is small).
    Layers already factorized in `model` and not named in `rank` stay as they are; a
    factorized layer named in `rank` is re-truncated from its product `V_t Σ_t U_tᵀ`.

    Args:
        model: a built `FasterRCNN` (e.g. from `kerasdet.zoo.load` or after `fit`).
        rank: an int `t` (compress the first FC layer, which holds nearly all of the
            head's weights), or one entry per FC layer, an int or `None` (keep). Each
            rank must satisfy `1 ≤ t < min(v, u)`; it saves parameters (and time) only
            when `t < v·u / (v + u)` (a warning says otherwise).

    Returns:
        A new `FasterRCNN` with `head_ranks` set; `model` is unchanged.

    Raises:
        ValueError: `model` is not a FasterRCNN, or a rank is not a positive int below
            `min(v, u)`.

    Example:
    >>> model = kerasdet.zoo.load("faster_rcnn_tiny", weights="shapes")
    >>> small = truncate_head_svd(model, 64)            # fc1: 7·7·96 × 256 → rank 64
    >>> small.head_ranks
    (64, None)
    """
    if not isinstance(model, FasterRCNN):
        raise ValueError(f"`model` must be a kerasdet.models.FasterRCNN, got {type(model).__name__}")
    head = model.roi_head
    requested = _requested_ranks(rank, head.head_units)
    pairs = head.fc_layers()
    factors = {}
    for i, (t, (first, second)) in enumerate(zip(requested, pairs)):
        if t is None:
            continue
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or t <= 0:
            raise ValueError(f"rank of FC layer {i + 1} must be a positive int, got {t!r}")
        kernel = first.kernel.numpy()
        if second is not None:  # already factorized: re-truncate the product
            product = kernel.reshape(-1, first.units) @ second.kernel.numpy().reshape(first.units, -1)
            kernel = product.reshape(*kernel.shape[:3], -1)
        inputs, units = int(np.prod(kernel.shape[:3])), kernel.shape[-1]
        if t >= min(inputs, units):
            raise ValueError(
                f"rank of FC layer {i + 1} must be below min(inputs, units) = min({inputs}, {units}), got {t}"
            )
        if t * (inputs + units) >= inputs * units:
            warnings.warn(
                f"rank {t} of FC layer {i + 1} ({inputs} × {units}) saves no parameters: "
                f"the factorized layer needs t·(v + u) = {t * (inputs + units)} ≥ v·u = {inputs * units}; "
                f"use t < {inputs * units // (inputs + units)}",
                stacklevel=2,
            )
        bias = (second if second is not None else first).bias.numpy()
        factors[i] = (*svd_factorize(kernel, int(t))[:2], bias)

    ranks = tuple(int(t) if t is not None else old for t, old in zip(requested, head.head_ranks))
    config = model.get_config()
    config["head_ranks"] = list(ranks)
    compressed = FasterRCNN.from_config(config)

    # Every layer but the RoI head: same configuration, so the same variables in order.
    for layer in model.layers:
        if layer is not head and layer.weights:
            compressed.get_layer(layer.name).set_weights(layer.get_weights())
    new_head = compressed.roi_head
    for i, ((old_first, old_second), (new_first, new_second)) in enumerate(zip(pairs, new_head.fc_layers())):
        if i in factors:
            first_kernel, second_kernel, bias = factors[i]
            new_first.set_weights([first_kernel])
            new_second.set_weights([second_kernel, bias])
        else:
            new_first.set_weights(old_first.get_weights())
            if new_second is not None:
                new_second.set_weights(old_second.get_weights())
    new_head.cls.set_weights(head.cls.get_weights())
    new_head.box.set_weights(head.box.get_weights())
    return compressed
