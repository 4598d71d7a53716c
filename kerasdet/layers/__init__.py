"""Reusable detection layers (Keras 3, serializable, builtin-op TFLite)."""

from kerasdet.layers.anchor_generator import AnchorGenerator
from kerasdet.layers.conv_fc import ConvFC
from kerasdet.layers.offset_max_pool import InterleaveOffsets, OffsetMaxPool
from kerasdet.layers.roi_align import RoIAlign
from kerasdet.layers.roi_pool import RoIPool
from kerasdet.layers.rpn_head import RPNHead

__all__ = ["AnchorGenerator", "ConvFC", "InterleaveOffsets", "OffsetMaxPool", "RPNHead", "RoIAlign", "RoIPool"]
