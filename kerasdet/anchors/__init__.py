"""Anchors learned from a dataset's boxes (YOLOv5's autoanchor) and config helpers.

    wh = kerasdet.data.box_sizes("data/my_coco", "train", image_size=(640, 640))
    result = kerasdet.anchors.autoanchor(wh, anchors=[[10, 13, 16, 30, 33, 23], ...])
    print(result.bpr_before, result.bpr_after)
    kerasdet.anchors.write_anchors_to_config("my_model.yaml", result.anchors)
"""

from kerasdet.anchors.autoanchor import (
    DEFAULT_TARGET_BPR,
    DEFAULT_THRESHOLD,
    AutoAnchorResult,
    anchor_fit,
    autoanchor,
    best_possible_recall,
    flatten_anchors,
    kmeans_anchors,
    ratio_metric,
    split_levels,
)
from kerasdet.anchors.config import (
    read_config_anchors,
    read_config_image_size,
    write_anchors_to_config,
)

__all__ = [
    "DEFAULT_TARGET_BPR",
    "DEFAULT_THRESHOLD",
    "AutoAnchorResult",
    "anchor_fit",
    "autoanchor",
    "best_possible_recall",
    "flatten_anchors",
    "kmeans_anchors",
    "ratio_metric",
    "read_config_anchors",
    "read_config_image_size",
    "split_levels",
    "write_anchors_to_config",
]
