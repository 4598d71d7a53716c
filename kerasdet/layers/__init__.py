"""Reusable detection layers (Keras 3, serializable, builtin-op TFLite)."""

from kerasdet.layers.anchor_generator import AnchorGenerator
from kerasdet.layers.conv_fc import ConvFC
from kerasdet.layers.rpn_head import RPNHead

__all__ = ["AnchorGenerator", "ConvFC", "RPNHead"]
