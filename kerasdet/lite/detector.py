"""`TFLiteDetector`: run an exported `.tflite` detector on images of any size with LiteRT."""

from __future__ import annotations

import os

import numpy as np

from kerasdet.lite.letterbox import as_rgb, letterbox
from kerasdet.lite.metadata import read_tflite_metadata

_SIGNATURE = "serving_default"
_OUTPUTS = ("boxes", "scores", "classes", "num_detections")


class TFLiteDetector:
    """A `.tflite` detector written by `kerasdet.export.export(..., format="tflite")`, run
    with the `ai-edge-litert` interpreter.

    `detect` letterboxes an image of any size into the file's fixed input (resize keeping
    the aspect ratio, pad bottom / right: the convention kerasdet models train with), runs
    it, and maps the boxes back to the original image's pixels.

    Args:
        path: the `.tflite` file. It must have a `serving_default` signature with one
            `[1, H, W, 3]` image input (uint8 or float32) and the outputs `boxes`,
            `scores`, `classes`, `num_detections`.
        num_threads: CPU threads of the interpreter (settable later; the interpreter is
            rebuilt).

    Attributes:
        input_size: `(H, W)` of the model input.
        class_names: tuple of class names from the file's kerasdet metadata, or `None`.
        metadata: the file's kerasdet metadata dict, or `None`.

    Example:

    ```python
    detector = TFLiteDetector("detector.tflite", num_threads=2)
    result = detector.detect(image)          # uint8 [h, w, 3] RGB, any h, w
    result["boxes"]                          # float32 [n, 4] y1, x1, y2, x2 in image pixels
    ```
    """

    def __init__(self, path, *, num_threads: int = 2):
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"no TFLite file at {self.path!r}")
        self.metadata = read_tflite_metadata(self.path)
        names = (self.metadata or {}).get("class_names")
        self.class_names = tuple(names) if names else None
        self._num_threads = None
        self.num_threads = num_threads

    @property
    def num_threads(self) -> int:
        return self._num_threads

    @num_threads.setter
    def num_threads(self, value: int):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"`num_threads` must be a positive int, got {value!r}")
        self._num_threads = int(value)
        self._load()

    def _load(self):
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=self.path, num_threads=self._num_threads)
        signatures = interpreter.get_signature_list()
        if _SIGNATURE not in signatures:
            raise ValueError(
                f"{self.path!r} has no {_SIGNATURE!r} signature (signatures: {sorted(signatures)}); "
                "export it with kerasdet.export.export(..., format='tflite')"
            )
        inputs, outputs = signatures[_SIGNATURE]["inputs"], signatures[_SIGNATURE]["outputs"]
        missing = sorted(set(_OUTPUTS) - set(outputs))
        if len(inputs) != 1 or missing:
            raise ValueError(
                f"{self.path!r} must take one image input and return {_OUTPUTS}; "
                f"it takes {inputs} and returns {sorted(outputs)}"
            )
        runner = interpreter.get_signature_runner(_SIGNATURE)
        detail = runner.get_input_details()[inputs[0]]
        shape = tuple(int(v) for v in detail["shape"])
        if len(shape) != 4 or shape[0] != 1 or shape[-1] != 3:
            raise ValueError(f"{self.path!r} input must be [1, H, W, 3], got {list(shape)}")
        self._interpreter = interpreter  # the runner needs it alive
        self._runner = runner
        self._input_name = inputs[0]
        self._input_dtype = np.dtype(detail["dtype"])
        self.input_size = shape[1:3]

    def detect(self, image) -> dict:
        """Detects objects in one image.

        Args:
            image: `[h, w, 3]` RGB (or `[h, w]` / `[h, w, 1]` grayscale), uint8 or float
                0–255, any size.

        Returns:
            dict of NumPy arrays with one row per detection (`n = num_detections`):
            `"boxes"` float32 `[n, 4]` (y1, x1, y2, x2 pixels of `image`, clipped to it),
            `"scores"` float32 `[n]`, `"classes"` int32 `[n]`, and, when the file names
            its classes, `"class_names"`: a list of `n` strings.

        Raises:
            ValueError: for an image of another rank or channel count.
        """
        rgb = as_rgb(image)
        height, width = rgb.shape[:2]
        padded, (sy, sx) = letterbox(rgb, self.input_size)
        if self._input_dtype == np.uint8:
            padded = np.clip(np.round(padded), 0, 255).astype(np.uint8)
        else:
            padded = padded.astype(self._input_dtype)
        out = self._runner(**{self._input_name: padded[None]})
        n = int(np.asarray(out["num_detections"]).reshape(-1)[0])
        boxes = np.asarray(out["boxes"], np.float32)[0, :n] / np.array([sy, sx, sy, sx], np.float32)
        limits = np.array([height, width, height, width], np.float32)
        result = {
            "boxes": np.clip(boxes, 0.0, limits).astype(np.float32),
            "scores": np.asarray(out["scores"], np.float32)[0, :n],
            "classes": np.asarray(out["classes"]).astype(np.int32)[0, :n],
        }
        if self.class_names is not None:
            result["class_names"] = [
                self.class_names[c] if 0 <= c < len(self.class_names) else str(c) for c in result["classes"]
            ]
        return result

    def detect_batch(self, images) -> list[dict]:
        """`detect` on each image of a list (or of a `[B, h, w, 3]` array); the file runs
        one image at a time."""
        return [self.detect(image) for image in images]

    def __repr__(self):
        return (
            f"TFLiteDetector({self.path!r}, input_size={self.input_size}, "
            f"num_threads={self._num_threads}, classes={len(self.class_names) if self.class_names else None})"
        )
