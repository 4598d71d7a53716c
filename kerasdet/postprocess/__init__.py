"""In-graph post-processing: confidence thresholding, per-class NMS, greedy merge."""

from kerasdet.postprocess.detections import DETECTION_KEYS, pad_detections
from kerasdet.postprocess.nms import NonMaxSuppression, non_max_suppression

__all__ = ["DETECTION_KEYS", "NonMaxSuppression", "non_max_suppression", "pad_detections"]
