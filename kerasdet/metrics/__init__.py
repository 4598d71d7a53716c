"""Detection metrics: COCO AP through pycocotools, and a Keras callback that logs it."""

from kerasdet.metrics.callback import COCOMetricCallback
from kerasdet.metrics.coco import STAT_NAMES, COCOEvaluator, coco_evaluate, evaluate_model

__all__ = ["STAT_NAMES", "COCOEvaluator", "COCOMetricCallback", "coco_evaluate", "evaluate_model"]
