"""Box math. Canonical boxes are float32 `[..., 4]` `[y1, x1, y2, x2]` in input pixels."""

from kerasdet.boxes.clip import clip_boxes, valid_boxes_mask
from kerasdet.boxes.coder import DEFAULT_SCALE_CLAMP, BoxCoder
from kerasdet.boxes.formats import FORMATS, convert_format
from kerasdet.boxes.iou import box_area, pairwise_iou

__all__ = [
    "DEFAULT_SCALE_CLAMP",
    "FORMATS",
    "BoxCoder",
    "box_area",
    "clip_boxes",
    "convert_format",
    "pairwise_iou",
    "valid_boxes_mask",
]
