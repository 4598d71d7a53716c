"""Zoo configurations: the YAML schema, its validation, and the registry of shipped files.

A configuration is one YAML file (see `configs/` beside this module, or any user file with
the same keys)::

    name: faster_rcnn_tiny          # optional in user files (default: the file's stem)
    family: faster_rcnn             # or overfeat
    description: one line
    reference: the paper            # optional
    model: {...}                    # the family's model parameters (FASTER_RCNN_MODEL, ...)
    train: {...}                    # `kerasdet train` recipe parameters (optional)
    weights:                        # optional: named, hashed weights files
      shapes:
        file: faster_rcnn_tiny_shapes.weights.h5   # bundled (or `url:` for the registry)
        sha256: <64 hex digits>
        classes: [circle, square, triangle, ellipse, rectangle]
        metrics: {AP50: 0.93}
        command: kerasdet train faster_rcnn_tiny --minutes 10

Every key is checked: an unknown key, a value of the wrong type or out of range, or an
anchor list of odd length is a `ValueError` of one line that names the file, the key, the
value and what was expected (with a close match for a misspelt key).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import os
import pathlib
import re

import yaml

from kerasdet.models.backbones import BACKBONES
from kerasdet.models.overfeat import LAST_POOL_MODES
from kerasdet.models.overfeat_architectures import ARCHITECTURES
from kerasdet.postprocess.merge import MERGE_MODES
from kerasdet.training.overfeat_dense_recipe import dense_recipe_violations

# The configurations shipped inside the package (tests may point this elsewhere).
CONFIG_DIR = pathlib.Path(__file__).resolve().parent / "configs"

FAMILIES = ("faster_rcnn", "overfeat")
WEIGHTS_SUFFIXES = (".weights.h5", ".keras")
_REQUIRED = object()
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def suggestion(value, valid) -> str:
    """`" Did you mean 'x'?"` for the closest of `valid` to `value`, or `""`."""
    matches = difflib.get_close_matches(str(value), [str(v) for v in valid], n=1, cutoff=0.6)
    return f" Did you mean {matches[0]!r}?" if matches else ""


def unknown_error(what: str, value, valid, where: str = "") -> ValueError:
    """A one-line error for a name that is not one of `valid`, with a close match."""
    prefix = f"{where}: " if where else ""
    listed = ", ".join(repr(v) for v in valid) or "(none)"
    return ValueError(f"{prefix}unknown {what} {value!r}.{suggestion(value, valid)} Valid: {listed}")


# --- field checks -------------------------------------------------------------------------


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _hint(value) -> str:
    # PyYAML (YAML 1.1) reads `1e-3` as a string: say how to write it as a number.
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return ""
        return " (YAML reads numbers like 1e-3 as text: write 1.0e-3)"
    return ""


def _fail(where, key, expected, value):
    return ValueError(f"{where}: `{key}` must be {expected}, got {value!r}{_hint(value)}")


@dataclasses.dataclass(frozen=True)
class Field:
    """One key of a schema.

    Attributes:
        kind: `"int"`, `"number"`, `"str"`, `"bool"`, `"choice"`, `"size"` (a positive
            `[height, width]`), `"int_list"`, `"number_list"`, `"str_list"`,
            `"anchors"`, `"mapping"` (checked by `schema`) or `"metrics"` (name → number).
        default: value when the key is absent (`_REQUIRED`: the key must be given).
        minimum, maximum: inclusive bounds of numbers (list entries included).
        exclusive_maximum: the upper bound is excluded.
        choices: valid values of a `"choice"`.
        nullable: `null` is allowed.
        schema: sub-schema of a `"mapping"`.
        doc: one line for `kerasdet zoo info`.
    """

    kind: str
    default: object = _REQUIRED
    minimum: float | None = None
    maximum: float | None = None
    exclusive_maximum: bool = False
    choices: tuple = ()
    nullable: bool = False
    schema: dict | None = None
    doc: str = ""

    def bounds(self) -> str:
        parts = []
        if self.minimum is not None:
            parts.append(f">= {self.minimum:g}")
        if self.maximum is not None:
            parts.append(f"{'<' if self.exclusive_maximum else '<='} {self.maximum:g}")
        return " and ".join(parts)

    def in_bounds(self, v) -> bool:
        if self.minimum is not None and v < self.minimum:
            return False
        if self.maximum is not None and (v >= self.maximum if self.exclusive_maximum else v > self.maximum):
            return False
        return True

    def check(self, value, where: str, key: str):
        """Returns the normalized value or raises a one-line `ValueError`."""
        if value is None:
            if self.nullable:
                return None
            raise _fail(where, key, f"{self.describe()} (not null)", value)
        kind = self.kind
        bounds = self.bounds()
        if kind in ("int", "number"):
            ok = _is_int(value) if kind == "int" else _is_number(value)
            if not ok or not self.in_bounds(value):
                raise _fail(where, key, self.describe(), value)
            return int(value) if kind == "int" else float(value)
        if kind == "str":
            if not isinstance(value, str) or not value:
                raise _fail(where, key, "a non-empty string", value)
            return value
        if kind == "bool":
            if not isinstance(value, bool):
                raise _fail(where, key, "true or false", value)
            return value
        if kind == "choice":
            if value not in self.choices:
                raise ValueError(
                    f"{where}: `{key}` must be one of {list(self.choices)}, got {value!r}."
                    f"{suggestion(value, self.choices)}"
                )
            return value
        if kind == "size":
            if (
                not isinstance(value, (list, tuple)) or len(value) != 2
                or not all(_is_int(v) and v > 0 for v in value)
            ):
                raise _fail(where, key, "[height, width], two positive integers", value)
            return [int(v) for v in value]
        if kind in ("int_list", "number_list", "str_list"):
            item_ok = {"int_list": _is_int, "number_list": _is_number, "str_list": lambda v: isinstance(v, str) and v}[kind]
            noun = {"int_list": "integers", "number_list": "numbers", "str_list": "strings"}[kind]
            if (
                not isinstance(value, (list, tuple)) or not value
                or not all(item_ok(v) for v in value)
                or (kind != "str_list" and not all(self.in_bounds(v) for v in value))
            ):
                raise _fail(where, key, f"a non-empty list of {noun}{' ' + bounds if bounds else ''}", value)
            if kind == "int_list":
                return [int(v) for v in value]
            return [float(v) for v in value] if kind == "number_list" else list(value)
        if kind == "mapping":
            return check_mapping(value, self.schema, where, key)
        if kind == "metrics":
            if not isinstance(value, dict) or not all(isinstance(k, str) and _is_number(v) for k, v in value.items()):
                raise _fail(where, key, "a mapping of metric names to numbers, e.g. {AP50: 0.9}", value)
            return {k: float(v) for k, v in value.items()}
        if kind == "anchors":
            return check_anchors(value, where, key)
        raise AssertionError(f"unknown field kind {kind!r}")  # a bug in a schema, not user input

    def describe(self) -> str:
        bounds = self.bounds()
        base = {
            "int": "an integer", "number": "a number", "str": "a string", "bool": "true or false",
            "choice": f"one of {list(self.choices)}", "size": "[height, width]",
            "int_list": "a list of integers", "number_list": "a list of numbers",
            "str_list": "a list of strings", "mapping": "a mapping", "metrics": "a mapping of numbers",
            "anchors": "anchors",
        }[self.kind]
        return f"{base} {bounds}" if bounds and self.kind in ("int", "number") else base


def check_mapping(value, schema: dict, where: str, key: str = "") -> dict:
    """Checks a mapping against `schema`; fills defaults; returns a new dict."""
    label = f"`{key}`" if key else "the file"
    if not isinstance(value, dict):
        raise ValueError(f"{where}: {label} must be a mapping of keys to values, got {value!r}")
    for name in value:
        if name not in schema:
            full = f"{key}.{name}" if key else str(name)
            raise ValueError(
                f"{where}: unknown key `{full}`.{suggestion(name, schema)} "
                f"Valid keys{' of `' + key + '`' if key else ''}: {', '.join(schema)}"
            )
    out = {}
    for name, field in schema.items():
        full = f"{key}.{name}" if key else name
        if name in value:
            out[name] = field.check(value[name], where, full)
        elif field.default is _REQUIRED:
            raise ValueError(f"{where}: missing required key `{full}` ({field.describe()})")
        elif field.kind == "mapping" and field.default is not None:
            out[name] = check_mapping(field.default, field.schema, where, full)
        else:
            out[name] = copy.deepcopy(field.default)
    return out


def check_anchors(value, where: str, key: str) -> dict:
    """Normalizes `anchors` to `{"stride", "sizes", "aspect_ratios"}` or `{"stride", "wh"}`.

    Accepted forms: a mapping with `stride` (default: the backbone's, filled in by the
    configuration's consistency check) and either `sizes` +
    `aspect_ratios` (aspect ratio = height / width) or `wh`; or, as in YOLOv5 configs, a
    bare list with one `[w, h, w, h, ...]` list per feature level.
    """
    if isinstance(value, (list, tuple)):
        value = {"wh": list(value)}
    if not isinstance(value, dict):
        raise _fail(where, key, "a mapping {stride, sizes, aspect_ratios} or {stride, wh}, "
                    "or a YOLO-style list of [w, h, ...] lists per level", value)
    schema = {
        "stride": Field("int", 16, minimum=1),
        "sizes": Field("number_list", None, minimum=1e-6, nullable=True),
        "aspect_ratios": Field("number_list", None, minimum=1e-6, nullable=True),
    }
    valid = (*schema, "wh")
    for name in value:
        if name not in valid:
            raise ValueError(
                f"{where}: unknown key `{key}.{name}`.{suggestion(name, valid)} "
                f"Valid keys of `{key}`: {', '.join(valid)}"
            )
    stride = value.get("stride")
    if stride is not None:
        stride = schema["stride"].check(stride, where, f"{key}.stride")
    wh = value.get("wh")
    if wh is not None:
        if value.get("sizes") is not None or value.get("aspect_ratios") is not None:
            raise ValueError(
                f"{where}: `{key}` takes either `wh` (explicit [w, h, ...] per level) or "
                f"`sizes` + `aspect_ratios`, not both; got {value!r}"
            )
        if not isinstance(wh, (list, tuple)) or not wh:
            raise _fail(where, f"{key}.wh", "a list with one [w, h, w, h, ...] list per level", wh)
        levels = []
        for level, pairs in enumerate(wh):
            name = f"{key}.wh[{level}]"
            if not isinstance(pairs, (list, tuple)) or not pairs or not all(_is_number(v) for v in pairs):
                raise _fail(where, name, "a flat list of numbers [w, h, w, h, ...]", pairs)
            if len(pairs) % 2:
                raise ValueError(
                    f"{where}: `{name}` must list (w, h) pairs, got an odd-length list of "
                    f"{len(pairs)} numbers: {list(pairs)}"
                )
            if not all(v > 0 for v in pairs):
                raise _fail(where, name, "positive widths and heights", pairs)
            levels.append([float(v) for v in pairs])
        return {"stride": stride, "wh": levels}
    sizes = schema["sizes"].check(value.get("sizes"), where, f"{key}.sizes")
    ratios = schema["aspect_ratios"].check(value.get("aspect_ratios"), where, f"{key}.aspect_ratios")
    if sizes is None:
        raise ValueError(f"{where}: `{key}` needs `sizes` (and `aspect_ratios`) or `wh`, got {value!r}")
    return {"stride": stride, "sizes": sizes, "aspect_ratios": ratios or [0.5, 1.0, 2.0]}


# --- schemas --------------------------------------------------------------------------------

PROPOSALS = {
    "pre_nms_top_k_train": Field("int", 12000, minimum=1, doc="boxes entering NMS in training"),
    "pre_nms_top_k_test": Field("int", 6000, minimum=1, doc="boxes entering NMS at inference"),
    "post_nms_top_k_train": Field("int", 2000, minimum=1, doc="proposals kept in training"),
    "post_nms_top_k_test": Field("int", 300, minimum=1, doc="proposals kept at inference"),
    "nms_iou": Field("number", 0.7, minimum=0.0, maximum=1.0, exclusive_maximum=True, doc="RPN NMS IoU"),
    "min_size": Field("number", 1.0, minimum=0.0, doc="minimum proposal side in pixels"),
}

FASTER_RCNN_MODEL = {
    "num_classes": Field("int", 20, minimum=1, doc="foreground classes without weights"),
    "backbone": Field("choice", "tiny", choices=BACKBONES, doc="feature extractor"),
    "backbone_stride": Field("choice", 16, choices=(8, 16), doc="feature stride (8: tiny backbone only)"),
    "backbone_batch_norm": Field("bool", False, doc="tiny backbone: batch norm after every conv"),
    "train_backbone_batch_norm": Field("bool", False, doc="batch norm in training mode during fit (from scratch)"),
    "image_size": Field("size", [512, 512], doc="static input [height, width]"),
    "anchors": Field("anchors", None, nullable=True, doc="sizes × aspect ratios, or [w, h, ...] per level"),
    "rpn_channels": Field("int", None, minimum=1, nullable=True, doc="RPN 3×3 conv width (default min(512, C))"),
    "rpn_separable": Field("bool", False, doc="RPN conv depthwise-separable (ThunderNet)"),
    "rpn_kernel_size": Field("int", 3, minimum=1, doc="RPN conv kernel size (odd)"),
    "proposals": Field("mapping", {}, schema=PROPOSALS, doc="RPN proposal layer"),
    "roi_pool": Field("choice", "roi_pool", choices=("roi_pool", "roi_align"), doc="RoI pooling"),
    "pool_size": Field("int", 7, minimum=1, doc="RoI pooling grid"),
    "sampling_ratio": Field("int", 2, minimum=1, doc="RoIAlign bilinear samples per bin and axis"),
    "head_units": Field("int_list", [1024, 1024], minimum=1, doc="Fast R-CNN FC widths"),
    "score_threshold": Field("number", 0.05, minimum=0.0, maximum=1.0, doc="detection score threshold"),
    "nms_iou": Field("number", 0.5, minimum=0.0, maximum=1.0, doc="per-class NMS IoU"),
    "max_detections": Field("int", 100, minimum=1, doc="detections per image"),
    "rpn_batch_size": Field("int", 256, minimum=1, doc="anchors sampled per image"),
    "rpn_positive_fraction": Field("number", 0.5, minimum=0.0, maximum=1.0),
    "rpn_positive_iou": Field("number", 0.7, minimum=0.0, maximum=1.0, doc="RPN positive anchor IoU"),
    "rpn_negative_iou": Field("number", 0.3, minimum=0.0, maximum=1.0, doc="RPN negative anchor IoU"),
    "rpn_best_anchors_per_gt": Field("int", 1, minimum=1,
                                     doc="each box's best anchors made RPN positives (at IoU >= the negative one)"),
    "rcnn_batch_size": Field("int", 512, minimum=1, doc="RoIs sampled per image"),
    "rcnn_positive_fraction": Field("number", 0.25, minimum=0.0, maximum=1.0),
    "rpn_ignore_cross_boundary": Field("bool", True, doc="leave border-crossing anchors out of the RPN loss"),
    "seed": Field("int", 0, minimum=0, doc="sampler seed"),
}

OVERFEAT_MODEL = {
    "num_classes": Field("int", 200, minimum=1, doc="foreground classes without weights"),
    "arch": Field("choice", "accurate", choices=tuple(ARCHITECTURES), doc="network"),
    "image_size": Field("size", [461, 569], doc="static input [height, width]"),
    "scales": Field("number_list", [1.0], minimum=1e-3, doc="image pyramid resize factors"),
    "last_pool": Field("choice", "standard", choices=LAST_POOL_MODES, doc="last pooling"),
    "dropout": Field("number", 0.5, minimum=0.0, maximum=1.0, exclusive_maximum=True),
    "batch_norm": Field("bool", False, doc="batch norm after every conv of layers 1-5 (not the paper's)"),
    "regressor_units": Field("int_list", None, minimum=1, nullable=True, doc="regressor FC widths"),
    "merge": Field("choice", "greedy", choices=MERGE_MODES, doc="greedy merge, NMS, or greedy merge then NMS"),
    "score_threshold": Field("number", 0.5, minimum=0.0, maximum=1.0),
    "match_threshold": Field("number", 1.0, minimum=0.0, doc="greedy merge threshold t"),
    "iou_threshold": Field("number", 0.5, minimum=0.0, maximum=1.0, exclusive_maximum=True,
                           doc="NMS IoU (merge: nms, greedy_nms)"),
    "max_detections": Field("int", 100, minimum=1),
    "max_candidates": Field("int", 2000, minimum=1),
}

_COMMON_TRAIN = {
    "dataset": Field("str", "shapes", doc="`kerasdet train --data` default"),
    "train_images": Field("int", None, minimum=1, nullable=True, doc="default: the whole split"),
    "val_images": Field("int", 300, minimum=0, doc="validation images evaluated after training"),
    "seed": Field("int", 0, minimum=0),
}

FASTER_RCNN_TRAIN = {
    **_COMMON_TRAIN,
    "batch_size": Field("int", 8, minimum=1),
    "epochs": Field("int", 100, minimum=1),
    "minutes": Field("number", None, minimum=0.0, nullable=True, doc="wall-clock training budget"),
    "optimizer": Field("choice", "adam", choices=("adam", "sgd")),
    "learning_rate": Field("number", 1e-3, minimum=0.0),
    "schedule": Field("choice", "constant", choices=("constant", "cosine"),
                      doc="learning rate: constant, or cosine decay over the `minutes` budget"),
    "warmup_steps": Field("int", 100, minimum=1, doc="linear warm-up of the cosine schedule"),
    "momentum": Field("number", 0.9, minimum=0.0, maximum=1.0, doc="SGD momentum"),
    "clipnorm": Field("number", None, minimum=0.0, nullable=True),
}

OVERFEAT_RECIPES = ("crops", "dense")
# OverFeat's `kerasdet train` recipes: `crops` (the paper's: classifier, then box regressor,
# each on window crops, by epochs) and `dense` (`kerasdet.training.overfeat_dense_recipe`:
# optional crop pre-training, then both on whole-image patches with a target at every
# window, by minutes or steps). Each recipe reads its own keys below and ignores the
# other's; the dense defaults are tools/train_overfeat_tiny.py's flag defaults.
OVERFEAT_TRAIN = {
    **_COMMON_TRAIN,
    "recipe": Field("choice", "crops", choices=OVERFEAT_RECIPES,
                    doc="crops (window crops, by epochs) or dense (whole-image patches, by minutes or steps)"),
    "batch_size": Field("int", 128, minimum=1, doc="crops per batch (crops), patches per batch (dense)"),
    "learning_rate": Field("number", 2e-3, minimum=0.0, doc="both stages (crops), the dense classifier (dense)"),
    "classifier_epochs": Field("int", 12, minimum=1, doc="crops: classifier epochs"),
    "localizer_epochs": Field("int", 8, minimum=1, doc="crops: box regressor epochs"),
    "crops_per_object": Field("int", 3, minimum=0, doc="crops"),
    "backgrounds": Field("int", 3, minimum=0, doc="crops"),
    "shifted_negatives": Field("int", 1, minimum=0, doc="crops"),
    "small_object_negatives": Field("int", 0, minimum=0, doc="crops"),
    "localizer_crops_per_object": Field("int", 1, minimum=1, doc="crops"),
    "crop_epochs": Field("int", 0, minimum=0, doc="dense: epochs of crop pre-training (0: none)"),
    "crop_images": Field("int", 600, minimum=1, doc="dense: images cut into pre-training crops"),
    "minutes": Field("number", None, minimum=0.0, nullable=True,
                     doc="dense: total budget, split between the dense stages (see kerasdet train --help)"),
    "classifier_minutes": Field("number", 9.0, minimum=0.0, nullable=True, doc="dense: classifier wall-clock budget"),
    "classifier_steps": Field("int", None, minimum=1, nullable=True, doc="dense: classifier steps (with minutes: the first)"),
    "localizer_minutes": Field("number", 3.0, minimum=0.0, nullable=True, doc="dense: box regressor wall-clock budget"),
    "localizer_steps": Field("int", None, minimum=1, nullable=True, doc="dense: box regressor steps"),
    "patch_size": Field("int", 230, minimum=1, doc="dense: patch side; window + a multiple of the stride"),
    "scale_range": Field("number_list", [0.5, 3.8], minimum=0.0, doc="dense: [min, max] patch resize factor"),
    "object_prob": Field("number", 0.5, minimum=0.0, maximum=1.0, doc="dense: classifier patches placed on an object"),
    "foreground_weight": Field("number", 3.0, minimum=0.0, doc="dense: loss weight of object windows"),
    "center_tolerance": Field("number", 0.15, minimum=0.0, doc="dense: positive within this x window of a centre"),
    "ignore_center": Field("number", 0.3, minimum=0.0, doc="dense: no loss up to this x window (>= center_tolerance)"),
    "localizer_lr": Field("number", 2e-3, minimum=0.0, doc="dense: box regressor learning rate"),
    "localizer_object_prob": Field("number", 0.9, minimum=0.0, maximum=1.0, doc="dense: regressor patches on an object"),
    "regression_center": Field("number", 0.3, minimum=0.0, doc="dense: box targets within this x window of a centre"),
    "regression_fraction": Field("number_list", [0.35, 1.2], minimum=0.0,
                                 doc="dense: [min, max] object size / window with box targets"),
}
# The `train` keys `kerasdet.training.overfeat_dense_recipe.fit_dense_recipe` takes, by name.
OVERFEAT_DENSE_KEYS = (
    "crop_epochs", "crop_images", "minutes", "classifier_minutes", "classifier_steps", "localizer_minutes",
    "localizer_steps", "batch_size", "patch_size", "scale_range", "object_prob", "foreground_weight",
    "learning_rate", "center_tolerance", "ignore_center", "localizer_lr", "localizer_object_prob",
    "regression_center", "regression_fraction", "seed",
)

WEIGHTS_ENTRY = {
    "file": Field("str", None, nullable=True, doc="bundled file (relative to the weights dir)"),
    "url": Field("str", None, nullable=True, doc="registry URL, downloaded once into $KERASDET_HOME"),
    "sha256": Field("str", _REQUIRED, doc="SHA-256 of the file, 64 hex digits"),
    "classes": Field("str_list", _REQUIRED, doc="class names, in class-id order"),
    "metrics": Field("metrics", {}, doc="what the weights scored"),
    "dataset": Field("str", None, nullable=True),
    "command": Field("str", None, nullable=True, doc="the command that produced the file"),
    "description": Field("str", None, nullable=True),
}

MODEL_SCHEMAS = {"faster_rcnn": FASTER_RCNN_MODEL, "overfeat": OVERFEAT_MODEL}
TRAIN_SCHEMAS = {"faster_rcnn": FASTER_RCNN_TRAIN, "overfeat": OVERFEAT_TRAIN}
TOP_LEVEL = ("name", "family", "description", "reference", "model", "train", "weights")


@dataclasses.dataclass(frozen=True)
class WeightsEntry:
    """One named weights file of a configuration.

    Attributes:
        name: the entry's key (e.g. `"shapes"`).
        file: bundled file name, relative to the bundled weights directory (shipped
            configs) or to the YAML file's directory (user configs); or None.
        url: registry URL (downloaded into `$KERASDET_HOME/weights`); or None.
        sha256: the file's SHA-256, checked before anything is loaded.
        classes: class names in class-id order (`num_classes = len(classes)`).
        metrics: what the weights scored, e.g. `{"AP50": 0.93}`.
        dataset, command, description: provenance.
    """

    name: str
    sha256: str
    classes: tuple
    file: str | None = None
    url: str | None = None
    metrics: dict = dataclasses.field(default_factory=dict)
    dataset: str | None = None
    command: str | None = None
    description: str | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict:
        out = {k: getattr(self, k) for k in ("file", "url", "sha256")}
        out["classes"] = list(self.classes)
        for key in ("metrics", "dataset", "command", "description"):
            value = getattr(self, key)
            if value:
                out[key] = value
        return {k: v for k, v in out.items() if v is not None}


def _check_weights(value, where) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(where, "weights", "a mapping of weights names to {file|url, sha256, classes, ...}", value)
    entries = {}
    for name, entry in value.items():
        key = f"weights.{name}"
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name == "imagenet":
            raise ValueError(
                f"{where}: weights name {name!r} must be letters, digits, '_', '-' or '.' "
                "(and not 'imagenet', which means backbone ImageNet weights)"
            )
        checked = check_mapping(entry, WEIGHTS_ENTRY, where, key)
        if (checked["file"] is None) == (checked["url"] is None):
            raise ValueError(f"{where}: `{key}` must have exactly one of `file` (bundled) or `url`, got {entry!r}")
        location = checked["file"] or checked["url"]
        if not location.endswith(WEIGHTS_SUFFIXES):
            raise _fail(where, f"{key}.{'file' if checked['file'] else 'url'}",
                        f"a file name ending in {' or '.join(WEIGHTS_SUFFIXES)}", location)
        if checked["file"] and (os.path.isabs(checked["file"]) or ".." in pathlib.PurePath(checked["file"]).parts):
            raise _fail(where, f"{key}.file", "a file name relative to the weights directory", checked["file"])
        if not _SHA256.match(checked["sha256"]):
            raise _fail(where, f"{key}.sha256", "64 lowercase hex digits (sha256sum's output)", checked["sha256"])
        entries[name] = WeightsEntry(name=name, **{**checked, "classes": tuple(checked["classes"])})
    return entries


@dataclasses.dataclass(frozen=True)
class ZooConfig:
    """A validated configuration.

    Attributes:
        name: configuration name.
        family: `"faster_rcnn"` or `"overfeat"`.
        description, reference: text for listings.
        model: the model parameters, every key of the family's schema filled in.
        train: the training recipe parameters, every key filled in.
        weights: `{name: WeightsEntry}`.
        path: the YAML file.
        bundled: shipped with kerasdet (its weights files live in the bundled directory).
    """

    name: str
    family: str
    description: str
    reference: str | None
    model: dict
    train: dict
    weights: dict
    path: str
    bundled: bool

    def with_model(self, overrides: dict, where: str = "override") -> ZooConfig:
        """A copy with model parameters replaced (each checked like the YAML key)."""
        schema = MODEL_SCHEMAS[self.family]
        for key in overrides:
            if key not in schema:
                raise unknown_error(f"{self.family} model parameter", key, list(schema), where)
        merged = dict(self.model)
        for key, value in overrides.items():
            # A nested mapping (`proposals`) is updated key by key, not replaced.
            nested = schema[key].kind == "mapping" and isinstance(value, dict)
            merged[key] = {**self.model[key], **value} if nested else value
        config = dataclasses.replace(self, model=check_mapping(merged, schema, where))
        _check_consistency(config, where)
        return config

    def with_train(self, overrides: dict, where: str = "override") -> ZooConfig:
        schema = TRAIN_SCHEMAS[self.family]
        for key in overrides:
            if key not in schema:
                raise unknown_error(f"{self.family} train parameter", key, list(schema), where)
        config = dataclasses.replace(self, train=check_mapping({**self.train, **overrides}, schema, where))
        _check_consistency(config, where)
        return config

    def with_weights(self, entries: dict) -> ZooConfig:
        return dataclasses.replace(self, weights=dict(entries))

    def to_dict(self) -> dict:
        """The configuration as YAML-ready data (anchors in their normalized form)."""
        out = {"name": self.name, "family": self.family, "description": self.description}
        if self.reference:
            out["reference"] = self.reference
        out["model"] = copy.deepcopy(self.model)
        out["train"] = copy.deepcopy(self.train)
        if self.weights:
            out["weights"] = {name: entry.to_dict() for name, entry in self.weights.items()}
        return out

    def dump(self, path) -> None:
        """Writes the configuration to a YAML file that `load_config` reads back."""
        with open(path, "w") as f:
            yaml.safe_dump(self.to_dict(), f, sort_keys=False, default_flow_style=None, width=1000)


def parse_config(data, *, path, bundled: bool = False) -> ZooConfig:
    """Validates YAML data (a dict) read from `path` into a `ZooConfig`."""
    where = os.path.basename(str(path))
    if not isinstance(data, dict):
        raise ValueError(f"{where}: a configuration must be a YAML mapping of keys, got {type(data).__name__}")
    for key in data:
        if key not in TOP_LEVEL:
            raise ValueError(f"{where}: unknown key `{key}`.{suggestion(key, TOP_LEVEL)} Valid keys: {', '.join(TOP_LEVEL)}")
    stem = where.rsplit(".", 1)[0]
    name = Field("str", stem).check(data.get("name", stem), where, "name")
    family = Field("choice", choices=FAMILIES).check(data.get("family"), where, "family")
    description = Field("str").check(data.get("description", name), where, "description")
    reference = Field("str", nullable=True).check(data.get("reference"), where, "reference")
    model = check_mapping(data.get("model") or {}, MODEL_SCHEMAS[family], where, "model")
    train = check_mapping(data.get("train") or {}, TRAIN_SCHEMAS[family], where, "train")
    weights = _check_weights(data.get("weights"), where)
    config = ZooConfig(name, family, description, reference, model, train, weights, str(path), bundled)
    _check_consistency(config, where)
    return config


def _check_consistency(config: ZooConfig, where: str) -> None:
    model = config.model
    if config.family == "faster_rcnn":
        anchors = model["anchors"]
        if anchors is not None:
            if anchors["stride"] is None:  # not written: the backbone's
                anchors["stride"] = model["backbone_stride"]
            if anchors["stride"] != model["backbone_stride"]:
                raise _fail(where, "model.anchors.stride",
                            f"the backbone's feature stride, `model.backbone_stride` = {model['backbone_stride']}",
                            anchors["stride"])
            if "wh" in anchors and len(anchors["wh"]) != 1:
                raise _fail(where, "model.anchors.wh", "one level (Faster R-CNN has one feature map)", anchors["wh"])
        if config.train["schedule"] == "cosine" and not config.train["minutes"]:
            raise _fail(where, "train.schedule", "'constant' without a `train.minutes` budget (cosine decays over it)",
                        "cosine")
        if model["rpn_negative_iou"] > model["rpn_positive_iou"]:
            raise _fail(where, "model.rpn_negative_iou",
                        f"at most `model.rpn_positive_iou` = {model['rpn_positive_iou']}", model["rpn_negative_iou"])
    else:
        window = ARCHITECTURES[model["arch"]].window
        _check_overfeat_train(config.train, model["arch"], where)
        for scale in model["scales"]:
            size = [round(s * scale) for s in model["image_size"]]
            if min(size) < window:
                raise ValueError(
                    f"{where}: `model.scales` entry {scale:g} resizes the {model['image_size']} input "
                    f"to {size}, smaller than the {window}×{window} window of arch "
                    f"{model['arch']!r}; expected scales >= {window / min(model['image_size']):.3f}"
                )


def _check_overfeat_train(train: dict, arch: str, where: str) -> None:
    if train["recipe"] == "crops":
        if train["minutes"] is not None:
            raise _fail(where, "train.minutes", "null with `train.recipe: crops` (it trains by epochs; "
                        "`train.recipe: dense` trains by minutes)", train["minutes"])
        return
    # The rules are the library's (fit_dense_recipe checks the same ones); only the wording is the config's.
    problems = dense_recipe_violations(train, arch=arch, prefix="train.", none="null")
    if problems:
        key, expected, value = problems[0]
        raise _fail(where, f"train.{key}", expected, value)


def load_config(path, *, bundled: bool = False) -> ZooConfig:
    """Reads and validates one YAML configuration file."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"configuration file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{path.name}: not valid YAML: {' '.join(str(error).split())}") from None
    return parse_config(data, path=path, bundled=bundled)


def config_names() -> list[str]:
    """Names of the shipped configurations, sorted."""
    return sorted(p.name[: -len(".yaml")] for p in pathlib.Path(CONFIG_DIR).glob("*.yaml"))


def is_config_path(name) -> bool:
    text = os.fspath(name)
    return text.endswith((".yaml", ".yml")) or os.sep in text


def get_config(name) -> ZooConfig:
    """A shipped configuration by name, or any YAML file by path.

    Raises:
        ValueError: for an unknown name (listing the valid names, with a close match) or an
            invalid file. FileNotFoundError: for a path that does not exist.
    """
    if isinstance(name, ZooConfig):
        return name
    if not isinstance(name, (str, os.PathLike)):
        raise ValueError(f"a zoo name must be a string or a YAML path, got {name!r}")
    if is_config_path(name):
        return load_config(name)
    names = config_names()
    if name not in names:
        raise unknown_error("zoo model", name, names)
    return load_config(pathlib.Path(CONFIG_DIR) / f"{name}.yaml", bundled=True)
