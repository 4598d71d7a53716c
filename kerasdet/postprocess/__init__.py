"""In-graph post-processing: confidence thresholding, per-class NMS, greedy merge."""

from kerasdet.postprocess.detections import (
    DETECTION_KEYS,
    check_scores_finite,
    detections_spec,
    pad_detections,
)
from kerasdet.postprocess.greedy_merge import GreedyMerge, greedy_merge, match_scores
from kerasdet.postprocess.merge import (
    MERGE_MODES,
    MergeDetections,
    merge_detections,
    one_hot_scores,
)
from kerasdet.postprocess.nms import NonMaxSuppression, non_max_suppression

__all__ = [
    "DETECTION_KEYS",
    "GreedyMerge",
    "MERGE_MODES",
    "MergeDetections",
    "NonMaxSuppression",
    "check_scores_finite",
    "detections_spec",
    "greedy_merge",
    "match_scores",
    "merge_detections",
    "non_max_suppression",
    "one_hot_scores",
    "pad_detections",
]
