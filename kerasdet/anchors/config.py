"""Reading and writing the anchors of a model YAML config.

Two layouts are understood:

* the kerasdet zoo layout (`kerasdet/zoo`): anchors under `model.anchors`, either
  `{stride, sizes, aspect_ratios}` (aspect ratio = height / width), `{stride, wh}` with one
  `[w, h, w, h, ...]` list per level, or a bare YOLO-style list of such lists; the input
  size under `model.image_size`;
* a plain YOLOv5-style mapping: `anchors` (a list of `[w, h, ...]` per level) and
  `image_size` at the top level.

A file with a `model` mapping uses the first, any other the second. Writing re-dumps the
whole mapping with PyYAML (needs `pyyaml`, a kerasdet dependency): keys keep their order,
comments are not preserved.
"""

from __future__ import annotations

import math
import os

import numpy as np
import yaml


def _load_mapping(path):
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"config {path} does not exist") from None
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML: {' '.join(str(error).split())}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a YAML mapping at the top level, got a {type(data).__name__}")
    return data


def _section(data):
    """The mapping that holds `anchors` / `image_size`, and its dotted prefix."""
    if isinstance(data.get("model"), dict):
        return data["model"], "model."
    return data, ""


def _levels_from(value, path, key):
    """Any accepted anchors value -> per-level `[[w, h, ...], ...]` (None if absent)."""
    if value is None:
        return None
    if isinstance(value, dict):
        if value.get("wh") is not None:
            value = value["wh"]
        elif value.get("sizes") is not None:
            sizes = value["sizes"]
            ratios = value.get("aspect_ratios") or [0.5, 1.0, 2.0]
            # As AnchorGenerator: size S and ratio r (height / width) give w = S/√r, h = S·√r,
            # listed ratio-major.
            return [
                [v for r in ratios for s in sizes for v in (s / math.sqrt(r), s * math.sqrt(r))]
            ]
        else:
            raise ValueError(
                f"{path}: `{key}` must have `wh` or `sizes` (+ `aspect_ratios`), got {value!r}"
            )
    if not isinstance(value, list) or not value or not all(isinstance(level, list) for level in value):
        raise ValueError(
            f"{path}: `{key}` must be a list of levels [[w, h, w, h, ...], ...], got {value!r}"
        )
    return [[float(v) for v in level] for level in value]


def read_config_anchors(path):
    """A config's anchors as `(w, h)` lists per level, `[[w, h, ...], ...]`, or `None`.

    Sizes × aspect ratios are expanded to their `(w, h)` shapes (one level), as
    `AnchorGenerator` builds them.
    """
    section, prefix = _section(_load_mapping(path))
    return _levels_from(section.get("anchors"), os.fspath(path), f"{prefix}anchors")


def read_config_image_size(path):
    """A config's `image_size: [height, width]` (`model.image_size` in zoo files), or `None`."""
    section, prefix = _section(_load_mapping(path))
    size = section.get("image_size")
    if size is None:
        return None
    if not (
        isinstance(size, list)
        and len(size) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
    ):
        raise ValueError(f"{os.fspath(path)}: `{prefix}image_size` must be [height, width], got {size!r}")
    return tuple(size)


def _plain(value):
    """NumPy numbers and arrays to plain Python, so `yaml.safe_dump` accepts them."""
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_anchors_to_config(path, anchors, *, output=None) -> dict:
    """Sets the anchors of a YAML config to explicit `(w, h)` shapes per level.

    In a zoo config (a `model` mapping) `model.anchors` becomes `{stride, wh}`, keeping its
    `stride` (sizes and aspect ratios, which `wh` replaces, are dropped; a bare list stays
    a bare list). In any other mapping the top-level `anchors` is set. A missing file is
    created holding only `anchors`.

    Args:
        path: the YAML config to update.
        anchors: per level `[[w, h, w, h, ...], ...]` (e.g. `AutoAnchorResult.anchors`).
        output: where to write; default `path`.

    Returns:
        The written mapping.
    """
    path = os.fspath(path)
    data = _load_mapping(path) if os.path.exists(path) else {}
    levels = _plain(anchors)
    if not isinstance(levels, list) or not levels or not all(
        isinstance(level, list) and level and len(level) % 2 == 0 for level in levels
    ):
        raise ValueError(f"`anchors` must be levels [[w, h, w, h, ...], ...], got {anchors!r}")
    levels = [[float(v) for v in level] for level in levels]
    section, _ = _section(data)
    current = section.get("anchors")
    if isinstance(current, dict):
        new = {"stride": current["stride"]} if "stride" in current else {}
        new["wh"] = levels
        section["anchors"] = new
    else:
        section["anchors"] = levels
    output = path if output is None else os.fspath(output)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "w", encoding="utf-8") as f:
        # Flow style for the innermost lists: one `[w, h, ...]` line per level, as YOLOv5.
        yaml.safe_dump(data, f, sort_keys=False, default_flow_style=None)
    return data
