"""OverFeat network definitions (Sermanet et al., 2014, Tables 1 and 3), as data.

Each architecture lists its feature layers (1–5 in the paper), the last pooling size, the
classifier's FC widths and the training window. The first FC layer's kernel is the
feature map left by the last pool on the training window (5×5 accurate, 6×6 fast), so
with `ConvFC` the classifier slides over any larger image.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Conv:
    filters: int
    kernel: int
    stride: int = 1
    padding: str = "valid"  # "same" is the paper's zero padding of 1 for 3×3 convs

    def effective_padding(self, conv_padding=None) -> str:
        """This conv's padding when "same" convs are overridden by `conv_padding`."""
        return self.padding if conv_padding is None or self.padding == "valid" else conv_padding


@dataclasses.dataclass(frozen=True)
class Pool:
    size: int  # window = stride (non-overlapping), as in the paper


@dataclasses.dataclass(frozen=True)
class Architecture:
    """An OverFeat network.

    Attributes:
        window: training input size (square).
        features: conv / pool layers before the last pool.
        last_pool: size of the last (non-overlapping) max pool — the one offset pooling
            and the stride-2 alternative replace.
        fc_units: widths of the hidden FC layers; a last FC of `num_classes` follows.
        regressor_units: widths of the localization head's hidden FC layers (the paper's
            4096 → 1024); a last FC of 4·C follows.
        description: one line for `kerasdet` listings.
    """

    window: int
    features: tuple
    last_pool: int
    fc_units: tuple
    regressor_units: tuple = (4096, 1024)
    description: str = ""

    def fc_window(self, conv_padding=None) -> int:
        """Spatial size reaching the first FC layer on the training window (with the
        "same" convs' padding overridden by `conv_padding`, as `overfeat_features` does)."""
        size = self.window
        for layer in self.features:
            if isinstance(layer, Conv):
                if layer.effective_padding(conv_padding) == "valid":
                    size = (size - layer.kernel) // layer.stride + 1
            else:
                size //= layer.size
        return size // self.last_pool


ARCHITECTURES = {
    "accurate": Architecture(
        window=221,
        features=(
            Conv(96, 7, 2), Pool(3),
            Conv(256, 7), Pool(2),
            Conv(512, 3, padding="same"), Conv(512, 3, padding="same"),
            Conv(1024, 3, padding="same"), Conv(1024, 3, padding="same"),
        ),
        last_pool=3,
        fc_units=(4096, 4096),
        description="OverFeat accurate: 221×221 window, effective stride 36",
    ),
    "fast": Architecture(
        window=231,
        features=(
            Conv(96, 11, 4), Pool(2),
            Conv(256, 5), Pool(2),
            Conv(512, 3, padding="same"), Conv(1024, 3, padding="same"), Conv(1024, 3, padding="same"),
        ),
        last_pool=2,
        fc_units=(3072, 4096),
        description="OverFeat fast: 231×231 window, effective stride 32",
    ),
    # Same structure at a CPU-trainable scale: 86×86 window, 3×3 first FC, stride 24.
    "tiny": Architecture(
        window=86,
        features=(
            Conv(24, 5, 2), Pool(2),
            Conv(48, 3), Pool(2),
            Conv(64, 3, padding="same"), Conv(64, 3, padding="same"),
        ),
        last_pool=3,
        fc_units=(128, 128),
        regressor_units=(128, 64),
        description="OverFeat tiny: 86×86 window, effective stride 24, trains on a CPU",
    ),
}
