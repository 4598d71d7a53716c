"""`kerasdet.export.export`: one call from a Keras detector to a SavedModel or a TFLite file.

Both formats take **uint8 `[B, H, W, 3]` RGB images** (what a camera or an image decoder
gives; the cast to the model's float32 0–255 input is part of the exported graph) and
return the detections dict of the model: `boxes [B, N, 4]` (y1, x1, y2, x2 pixels of the
input), `scores [B, N]`, `classes [B, N] int32`, `num_detections [B] int32`. Post-processing
(NMS, greedy merge) is inside the model, so it is exported with it.

Files are written atomically: the export goes to a temporary file (directory) beside `path`
and is moved into place only when complete, so a failed conversion leaves nothing at `path`
(and an earlier export there untouched).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from kerasdet.export.tflite import convert_saved_model_builtin_only
from kerasdet.lite.letterbox import as_rgb, letterbox
from kerasdet.lite.metadata import FORMAT_VERSION, add_tflite_metadata, read_tflite_metadata

FORMATS = ("saved_model", "tflite")
QUANTIZATIONS = (None, "float16", "dynamic_int8", "int8")
DETECTION_KEYS = ("boxes", "scores", "classes", "num_detections")
# Calibration images for int8: TFLite's guide asks for ~100–500; 100 keeps export quick.
MAX_CALIBRATION_IMAGES = 100
SAVED_MODEL_METADATA = os.path.join("assets.extra", "kerasdet.json")
_INPUT_NAME = "images"


def export(
    model: keras.Model,
    path,
    format: str = "saved_model",
    *,
    input_size=None,
    quantization: str | None = None,
    representative_data=None,
    class_names=None,
) -> str:
    """Exports a kerasdet detector (any Keras model returning the detections dict).

    Formats:

    - `"saved_model"`: a directory whose `serving_default` signature takes
      `images: uint8 [None, H, W, 3]` and returns `boxes`, `scores`, `classes`,
      `num_detections`. It loads with `tf.saved_model.load` alone (no kerasdet import).
      `H, W` are the model's static input size (`None` if the model takes any size and
      `input_size` is not given).
    - `"tflite"`: a flatbuffer with builtin ops only (runs on the pip `ai-edge-litert`
      interpreter, no Flex delegate), signature `serving_default` with
      `images: uint8 [1, H, W, 3]`. The size is fixed: the model's static input size or
      `input_size`. Run it with `kerasdet.lite.TFLiteDetector`, which letterboxes images
      of any size.

    Both carry kerasdet metadata (`class_names`, `input_size`, `input_dtype`,
    `quantization`; see `read_metadata`): inside the `.tflite` file, or in
    `assets.extra/kerasdet.json` of the SavedModel.

    Quantization (TFLite only):

    - `None`: float32.
    - `"float16"`: float16 weights (half the size; computed in float32 on CPU).
    - `"dynamic_int8"`: int8 weights, activations quantized on the fly where a kernel
      supports it; no calibration data.
    - `"int8"`: int8 weights and activations of the layers that carry weights
      (backbone, heads), calibrated on `representative_data`; the box arithmetic of
      weight-free layers (anchors, decoding, RoI coordinates, NMS, merge) stays float, as
      do the input and outputs.

    Args:
        model: a `keras.Model` taking float32 `[B, H, W, 3]` 0–255 RGB images and
            returning the detections dict (e.g. `FasterRCNN`, `overfeat_detector`).
        path: output directory (`"saved_model"`) or file (`"tflite"`). An existing
            export there is replaced.
        format: `"saved_model"` or `"tflite"`.
        input_size: `(H, W)`; required for TFLite when the model's input size is dynamic,
            and must equal the model's static size otherwise.
        quantization: `None`, `"float16"`, `"dynamic_int8"` or `"int8"`.
        representative_data: for `"int8"`: an iterable or `tf.data.Dataset` of images
            (`[H, W, 3]` or batches `[B, H, W, 3]`, uint8 or float 0–255), of
            `(images, ground_truth)` pairs, or of TFDS examples (`{"image": ...}`). The
            first 100 images are used, letterboxed to the input size.
        class_names: names of the classes, indexed by class id; default: the model's
            `class_names` attribute if it has one.

    Returns:
        `path`, as a string.

    Raises:
        ValueError: an unknown format or quantization, a bad `input_size`, `"int8"`
            without `representative_data`, a model that does not return the
            detections dict; `kerasdet.export.BuiltinOpsError` (a `ValueError`) if the
            graph needs a non-builtin TFLite op.

    Example:

    ```python
    model = kerasdet.models.FasterRCNN(5, image_size=(320, 320))
    kerasdet.export.export(model, "detector.tflite", "tflite", quantization="float16",
                           class_names=["circle", "square", "triangle", "ellipse", "rectangle"])
    detector = kerasdet.lite.TFLiteDetector("detector.tflite")
    detector.detect(image)  # any size, uint8 RGB
    ```
    """
    if format not in FORMATS:
        raise ValueError(f"`format` must be one of {FORMATS}, got {format!r}")
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"`quantization` must be one of {QUANTIZATIONS}, got {quantization!r}")
    if format == "saved_model" and quantization is not None:
        raise ValueError(f"`quantization` applies to format='tflite' only, got {quantization!r} with format='saved_model'")
    if quantization == "int8" and representative_data is None:
        raise ValueError(
            "quantization='int8' calibrates activations on `representative_data` "
            "(images or (images, ground_truth) batches); got representative_data=None"
        )
    if representative_data is not None and quantization != "int8":
        raise ValueError(f"`representative_data` is used with quantization='int8' only, got quantization={quantization!r}")
    if not isinstance(model, keras.Model):
        raise ValueError(f"`model` must be a keras.Model, got {type(model).__name__}")
    size = _input_size(model, input_size, fixed=format == "tflite")
    names = _class_names(model, class_names)
    path = os.fspath(path)
    _check_destination(path, format)  # before the (slow) conversion
    info = {
        "format_version": FORMAT_VERSION,
        "class_names": names,
        "input_size": list(size),
        "input_dtype": "uint8",
        "quantization": quantization or "float32",
    }
    if format == "saved_model":
        _write_saved_model(model, path, size, batch=None, info=info)
    else:
        _export_tflite(model, path, size, quantization, representative_data, info)
    return path


def read_metadata(path) -> dict | None:
    """kerasdet's metadata of an export (`class_names`, `input_size`, `input_dtype`,
    `quantization`): from a `.tflite` file or a SavedModel directory; `None` if absent."""
    path = os.fspath(path)
    if os.path.isdir(path):
        file = os.path.join(path, SAVED_MODEL_METADATA)
        if not os.path.exists(file):
            return None
        with open(file, encoding="utf-8") as f:
            return json.load(f)
    return read_tflite_metadata(path)


# --- arguments -------------------------------------------------------------------------


def _input_size(model, input_size, *, fixed: bool):
    shape = tuple(model.inputs[0].shape) if getattr(model, "inputs", None) else (None, None, None, None)
    if len(shape) != 4 or shape[-1] not in (3, None):
        raise ValueError(f"the model's input must be images [batch, height, width, 3], got shape {shape}")
    static = shape[1:3]
    if input_size is not None:
        if (
            not isinstance(input_size, (tuple, list))
            or len(input_size) != 2
            or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in input_size)
        ):
            raise ValueError(f"`input_size` must be a pair of positive ints (height, width), got {input_size!r}")
        input_size = (int(input_size[0]), int(input_size[1]))
        for given, own in zip(input_size, static):
            if own is not None and given != own:
                raise ValueError(
                    f"`input_size` {input_size} differs from the model's static input size "
                    f"{tuple(static)}; build the model at that size instead"
                )
        return input_size
    if fixed and (static[0] is None or static[1] is None):
        raise ValueError(
            f"TFLite needs a fixed input size but the model's input is {tuple(static)}; "
            "pass `input_size=(height, width)`"
        )
    return tuple(static)


def _class_names(model, class_names):
    if class_names is None:
        class_names = getattr(model, "class_names", None)
    if class_names is None:
        return None
    if isinstance(class_names, str) or not all(isinstance(n, str) for n in class_names) or not len(class_names):
        raise ValueError(f"`class_names` must be a non-empty list of strings, got {class_names!r}")
    num_classes = getattr(model, "num_classes", None)
    if isinstance(num_classes, int) and len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} `class_names` for a model of {num_classes} classes: {list(class_names)}")
    return [str(n) for n in class_names]


# --- the exported function ---------------------------------------------------------------


def _serving_function(model):
    def serve(images):
        outputs = model(tf.cast(images, tf.float32), training=False)
        if not isinstance(outputs, dict) or not set(DETECTION_KEYS) <= set(outputs):
            keys = sorted(outputs) if isinstance(outputs, dict) else type(outputs).__name__
            raise ValueError(f"the model must return the detections dict with keys {DETECTION_KEYS}, got {keys}")
        return {
            "boxes": tf.cast(outputs["boxes"], tf.float32),
            "scores": tf.cast(outputs["scores"], tf.float32),
            "classes": tf.cast(outputs["classes"], tf.int32),
            "num_detections": tf.cast(outputs["num_detections"], tf.int32),
        }

    return serve


def _save(model, directory, size, batch):
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serving_default",
        _serving_function(model),
        input_signature=[tf.TensorSpec([batch, *size, 3], tf.uint8, name=_INPUT_NAME)],
    )
    archive.write_out(directory, verbose=False)


def _check_destination(path, format):
    if format == "tflite" and os.path.isdir(path):
        raise FileExistsError(f"{path!r} is a directory; expected a .tflite file path")
    if format == "saved_model" and os.path.exists(path) and not _is_replaceable_dir(path):
        raise FileExistsError(f"{path!r} exists and is not a SavedModel directory; not overwriting it")


def _write_saved_model(model, path, size, *, batch, info):
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(path)}.tmp-")
    try:
        _save(model, staging, size, batch)
        os.makedirs(os.path.join(staging, "assets.extra"), exist_ok=True)
        with open(os.path.join(staging, SAVED_MODEL_METADATA), "w", encoding="utf-8") as f:
            json.dump(info, f, indent=1, sort_keys=True)
        _replace_dir(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _is_replaceable_dir(path):
    if not os.path.isdir(path):
        return False
    return not os.listdir(path) or os.path.exists(os.path.join(path, "saved_model.pb"))


def _replace_dir(source, target):
    # Directories cannot be swapped in one rename: move the old one aside first, so at
    # every moment `target` is either the complete old or the complete new export.
    old = None
    if os.path.exists(target):
        old = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(target)), prefix=f".{os.path.basename(target)}.old-")
        os.rmdir(old)
        os.rename(target, old)
    os.rename(source, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _export_tflite(model, path, size, quantization, representative_data, info):
    options = {}
    if quantization == "float16":
        options = dict(optimizations=[tf.lite.Optimize.DEFAULT], supported_types=[tf.float16])
    elif quantization == "dynamic_int8":
        options = dict(optimizations=[tf.lite.Optimize.DEFAULT])
    elif quantization == "int8":
        options = dict(
            optimizations=[tf.lite.Optimize.DEFAULT],
            representative_dataset=_representative_dataset(representative_data, size),
            quantized_scopes=_quantized_scopes(model),
        )
    # Converted from a SavedModel rather than a concrete function: the file keeps the named
    # `serving_default` signature, and int8 calibration can read the model's variables
    # (which a concrete function does not carry, TensorFlow issue 62664).
    with tempfile.TemporaryDirectory() as directory:
        _save(model, directory, size, batch=1)
        flatbuffer = convert_saved_model_builtin_only(directory, **options)
    _write_file(path, add_tflite_metadata(flatbuffer, info))


def _quantized_scopes(model):
    """Top-level layers that carry weights: the convolutions / FC layers worth int8.
    Weight-free layers hold the box arithmetic and stay float."""
    scopes = [layer.name for layer in model.layers if layer.weights]
    return scopes or None


def _write_file(path, data: bytes):
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    fd, staging = tempfile.mkstemp(dir=parent, prefix=f".{os.path.basename(path)}.tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(staging, path)
    except BaseException:
        if os.path.exists(staging):
            os.remove(staging)
        raise


# --- calibration data ----------------------------------------------------------------------


def _images_of(data):
    """Yields single `[h, w, C]` images from the forms `representative_data` accepts."""
    if isinstance(data, tf.data.Dataset):
        data = data.as_numpy_iterator()
    elif isinstance(data, (np.ndarray, tf.Tensor)):
        data = np.asarray(data)
        data = data[None] if data.ndim in (2, 3) else data  # one image
    for element in data:
        if isinstance(element, dict):
            if "image" not in element and "images" not in element:
                raise ValueError(f"`representative_data` dict elements need an 'image' key, got keys {sorted(element)}")
            element = element["image"] if "image" in element else element["images"]
        elif isinstance(element, (tuple, list)):
            element = element[0]  # (images, ground_truth)
        array = np.asarray(element)
        if array.ndim == 4:
            yield from array
        else:
            yield array


def _representative_dataset(data, size):
    images = []
    for image in _images_of(data):
        try:
            image = as_rgb(image)
        except ValueError as error:
            raise ValueError(f"`representative_data`: {error}") from None
        padded, _ = letterbox(image, size)
        images.append(np.clip(np.round(padded), 0, 255).astype(np.uint8)[None])
        if len(images) == MAX_CALIBRATION_IMAGES:
            break
    if not images:
        raise ValueError("`representative_data` yielded no images")

    def generate():
        for image in images:
            yield {_INPUT_NAME: image}

    return generate
