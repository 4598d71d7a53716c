"""Running exported detectors with LiteRT (`ai-edge-litert`), NumPy only.

`TFLiteDetector` runs a `.tflite` file written by `kerasdet.export.export` on images of any
size (letterboxed to the file's input, boxes mapped back to the image); `letterbox` is the
resize-and-pad convention kerasdet models train with.
"""

from kerasdet.lite.detector import TFLiteDetector
from kerasdet.lite.letterbox import as_rgb, letterbox, resize_bilinear
from kerasdet.lite.metadata import add_tflite_metadata, read_tflite_metadata

__all__ = [
    "TFLiteDetector",
    "add_tflite_metadata",
    "as_rgb",
    "letterbox",
    "read_tflite_metadata",
    "resize_bilinear",
]
