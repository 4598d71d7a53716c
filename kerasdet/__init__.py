"""kerasdet: object detectors as native Keras 3 models.

Public API:
    kerasdet.boxes        box formats, IoU, BoxCoder, clipping
    kerasdet.layers       AnchorGenerator, RPNHead, RoIPool, RoIAlign, ConvFC
    kerasdet.postprocess  NMS and OverFeat's greedy merge, inside the graph
    kerasdet.export       TFLite conversion with builtin ops only
"""

from kerasdet import _backend  # noqa: F401  (selects and checks the TF backend first)
from kerasdet import boxes, export, layers, postprocess

__version__ = "0.1.0"

__all__ = ["boxes", "export", "layers", "postprocess", "__version__"]
