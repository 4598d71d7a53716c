"""`kerasdet.zoo.load`, `load_parts`, `list`, `info` (re-exported by the package)."""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from kerasdet.zoo.builders import (
    CLASS_LAYERS,
    OverFeatParts,
    build_faster_rcnn,
    build_overfeat,
    class_count_layer,
    classes_from_bias_shape,
)
from kerasdet.zoo.config import ZooConfig, config_names, get_config
from kerasdet.zoo.weights import (
    LoadReport,
    ResolvedWeights,
    bundled_dir,
    load_weights_by_name,
    resolve_weights,
    stored_shape,
)

_BACKBONE_WEIGHTS = (None, "imagenet")


@dataclasses.dataclass
class Loaded:
    """Everything `_load` resolved: the config (overrides applied), the model or parts,
    the weights used, the class count and names, and what the weights load did."""

    config: ZooConfig
    model: object  # FasterRCNN, or the OverFeat detector
    parts: OverFeatParts | None
    weights: ResolvedWeights
    num_classes: int
    class_names: tuple | None
    report: LoadReport | None


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
    return int(value)


def _image_size_of(input_shape):
    shape = tuple(input_shape) if isinstance(input_shape, (list, tuple)) else None
    if (
        shape is None or len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] != 3)
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in shape[:2])
    ):
        raise ValueError(f"`input_shape` must be (height, width, 3) with positive ints, got {input_shape!r}")
    return [int(shape[0]), int(shape[1])]


def _load(name, *, num_classes=None, weights=None, backbone_weights=None, input_shape=None, **overrides) -> Loaded:
    config = get_config(name)
    if input_shape is not None:
        size = _image_size_of(input_shape)
        if "image_size" in overrides and list(overrides["image_size"]) != size:
            raise ValueError(
                f"`input_shape` {tuple(input_shape)} and `image_size` {overrides['image_size']} disagree; give one"
            )
        overrides["image_size"] = size
    if overrides:
        config = config.with_model(overrides, where=f"{config.name} override")

    resolved = resolve_weights(config, weights)
    if backbone_weights not in _BACKBONE_WEIGHTS:
        raise ValueError(f"`backbone_weights` must be None or 'imagenet', got {backbone_weights!r}")
    if resolved.imagenet:
        backbone_weights = "imagenet"
    if backbone_weights is not None and resolved.path is not None:
        raise ValueError(
            "`backbone_weights='imagenet'` is for `weights=None` only: detection weights "
            f"({weights!r}) already hold the backbone"
        )
    if backbone_weights is not None and config.family != "faster_rcnn":
        raise ValueError(
            f"{config.name!r} is an OverFeat configuration: keras.applications has no ImageNet "
            "weights for OverFeat networks; expected backbone_weights=None"
        )

    explicit = num_classes is not None
    if explicit:
        num_classes = _positive_int("num_classes", num_classes)
    elif resolved.entry is not None:
        num_classes = resolved.entry.num_classes
    elif resolved.path is not None:
        shape = stored_shape(resolved.path, class_count_layer(config.family))
        num_classes = classes_from_bias_shape(shape) if shape else config.model["num_classes"]
    else:
        num_classes = config.model["num_classes"]

    if config.family == "faster_rcnn":
        parts = None
        model = build_faster_rcnn(config, num_classes, backbone_weights=backbone_weights)
    else:
        parts = build_overfeat(config, num_classes)
        model = parts.detector

    report = None
    if resolved.path is not None:
        report = load_weights_by_name(
            model, resolved.path, class_layers=CLASS_LAYERS[config.family], allow_class_mismatch=explicit
        )
    names = None
    if resolved.entry is not None and resolved.entry.num_classes == num_classes:
        names = tuple(resolved.entry.classes)
    return Loaded(config, model, parts, resolved, num_classes, names, report)


def load(name, *, num_classes=None, weights=None, backbone_weights=None, input_shape=None, **overrides):
    """A ready Keras detector from the zoo.

    Faster R-CNN configurations return a `kerasdet.models.FasterRCNN`: `compile` + `fit`
    fine-tune it. OverFeat configurations return the OverFeat detector (one functional
    model: image pyramid, dense classifier and regressor, greedy merge); OverFeat trains in
    stages, so to fine-tune it use `load_parts`, whose classifier and localizer share their
    layers with the detector.

    Args:
        name: a zoo name (`kerasdet.zoo.list()`) or the path of a YAML configuration.
        num_classes: foreground classes. Default: the weights' (a weights entry's
            `classes`, or what a weights file holds), else the configuration's. When it
            differs from the weights', only the class-dependent layers (Faster R-CNN's
            class logits and box deltas; OverFeat's logits and box regressor output) are
            new; every other weight is loaded.
        weights: `None` (random init), the name of an entry of the configuration's
            `weights` (bundled or registry file, SHA-256 checked), a `.weights.h5` /
            `.keras` path, or `"imagenet"` (same as `backbone_weights="imagenet"`).
        backbone_weights: `None` or `"imagenet"` (Faster R-CNN with a `keras.applications`
            backbone; downloads once, so it needs network access).
        input_shape: `(height, width, 3)`, the static input size (same as the
            `image_size` override).
        **overrides: model parameters of the configuration's `model:` section, e.g.
            `image_size=(320, 320)`, `score_threshold=0.3`, `anchors={"sizes": [...]}`,
            `scales=[1.0, 1.5]` (checked like the YAML keys).

    Returns:
        A `keras.Model` whose call returns the detections dict (`boxes [B, D, 4]` yxyx
        pixels of the input, `scores`, `classes`, `num_detections`).

    Raises:
        ValueError: an unknown name, override key or weights name (the error lists the
            valid ones, with a close match), or a bad value. `kerasdet.zoo.WeightsError`
            (a `ValueError`): a SHA-256 mismatch, a failed download, or weights that do
            not fit. FileNotFoundError: a missing weights or YAML file.

    Example:
    >>> model = kerasdet.zoo.load("faster_rcnn_tiny", image_size=(128, 128))
    >>> model(np.zeros([1, 128, 128, 3], "float32"))["boxes"].shape
    TensorShape([1, 100, 4])
    """
    return _load(
        name, num_classes=num_classes, weights=weights, backbone_weights=backbone_weights,
        input_shape=input_shape, **overrides,
    ).model


def load_parts(name, *, num_classes=None, weights=None, input_shape=None, **overrides) -> OverFeatParts:
    """OverFeat's classifier, localizer and detector, sharing layers, for staged training.

    Same arguments as `load` (no backbone weights: OverFeat has no ImageNet weights in
    `keras.applications`). Save the trained result with `parts.save_weights(path)`, and
    load it back with `load(name, weights=path)`.

    Example::

        parts = kerasdet.zoo.load_parts("overfeat_tiny", weights="shapes", num_classes=3)
        fit_classifier(parts.classifier, crops, labels)          # kerasdet.training.overfeat
        fit_localizer(parts.localizer, crops, targets, window_center_x=...)
        parts.detector.predict(images)                            # uses the trained layers
    """
    loaded = _load(name, num_classes=num_classes, weights=weights, input_shape=input_shape, **overrides)
    if loaded.parts is None:
        raise ValueError(
            f"load_parts is for OverFeat configurations; {loaded.config.name!r} is "
            f"{loaded.config.family!r}: use kerasdet.zoo.load"
        )
    return loaded.parts


def list_models() -> list:
    """Names of the shipped configurations (`kerasdet.zoo.list()`)."""
    return config_names()


def info(name, *, count_params: bool = False) -> dict:
    """What a zoo configuration is: description, parameters, weights with their classes and
    metrics.

    Args:
        name: a zoo name or a YAML path.
        count_params: also build the model (random init) and report `num_params`.

    Returns:
        A dict: `name`, `family`, `description`, `reference`, `config` (the YAML path),
        `model` (every model parameter), `train` (the training recipe), `weights`
        (`{name: {classes, num_classes, metrics, sha256, source, available, command, ...}}`)
        and, with `count_params`, `num_params`.
    """
    config = get_config(name)
    weights = {}
    for entry_name, entry in config.weights.items():
        record = entry.to_dict()
        record["num_classes"] = entry.num_classes
        if entry.file:
            path = bundled_dir(config) / entry.file
            record["source"] = str(path)
            record["available"] = path.is_file()
        else:
            record["source"] = entry.url
            record["available"] = None  # known once downloaded
        weights[entry_name] = record
    out = {
        "name": config.name,
        "family": config.family,
        "description": config.description,
        "reference": config.reference,
        "config": os.fspath(config.path),
        "model": config.model,
        "train": config.train,
        "weights": weights,
    }
    if count_params:
        out["num_params"] = int(load(config).count_params())
    return out
