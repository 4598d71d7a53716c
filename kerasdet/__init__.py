"""kerasdet: object detectors as native Keras 3 models.

Public API:
    kerasdet.boxes        box formats, IoU, BoxCoder, clipping
    kerasdet.layers       AnchorGenerator, RPNHead, RoIPool, RoIAlign, ConvFC, OffsetMaxPool
    kerasdet.postprocess  per-class NMS and OverFeat's greedy merge, inside the graph
    kerasdet.models       OverFeat classifier / localizer / detector
    kerasdet.data         COCO-json / VOC / TFDS / built-in synthetic data, augmentation, tf.data pipelines
    kerasdet.anchors      autoanchor: anchors learned from a dataset's boxes
    kerasdet.metrics      COCO evaluation (pycocotools) and a Keras callback
    kerasdet.analysis     receptive field, effective stride, spatial output, FLOPs
    kerasdet.export       SavedModel and builtin-op TFLite export
    kerasdet.lite         run exported .tflite detectors (LiteRT), letterboxing
    kerasdet.zoo          named configurations (YAML), load(), load_parts(), list(), info(), weights
    kerasdet.visualize    draw detections, image grids, PNG files
"""

from kerasdet import (
    _backend,  # noqa: F401  (selects and checks the TF backend first)
    analysis,
    anchors,
    boxes,
    data,
    export,
    layers,
    lite,
    metrics,
    models,
    postprocess,
    visualize,
    zoo,
)

__version__ = "0.1.0"

__all__ = [
    "analysis", "anchors", "boxes", "data", "export", "layers", "lite", "metrics", "models", "postprocess", "visualize", "zoo",
    "__version__",
]
