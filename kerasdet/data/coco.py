"""COCO-json detection datasets: read them into TFDS-schema examples, and write them.

A COCO annotation file has `images` (`id`, `file_name`, `width`, `height`), `annotations`
(`id`, `image_id`, `category_id`, `bbox` as `[x, y, width, height]` pixels, `iscrowd`) and
`categories` (`id`, `name`) with arbitrary ids. `read_coco` maps the category ids, sorted,
to 0-based classes (`class_names[c]` is the name of class `c`), converts boxes to `yxyx`
pixels and checks everything (see `kerasdet.data.records` for `on_error` and
`check_images`). Boxes are taken as TFDS's `coco` builder takes them: `[x, y, w, h]` ->
`[y, x, y + h, x + w]`, no half-pixel shift.

`iscrowd` annotations (a region of many objects) are not training targets: they are left
out by default and counted in `DetectionRecords.ignored["crowd"]`; `keep_crowd=True` keeps
them with `objects/is_crowd` set (for evaluation).

`write_coco_json` writes any `DetectionRecords` (e.g. a VOC folder) as a COCO ground-truth
file, so `pycocotools` can evaluate against it.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from kerasdet.data.records import (
    DataError,
    DetectionRecords,
    ImageEntry,
    Problems,
    check_choice,
    finish_records,
)

DEFAULT_BOX_TOLERANCE = 1.0


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _load_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"COCO annotation file {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise DataError(
            f"{path}: expected a JSON object with 'images', 'annotations' and 'categories', "
            f"got a {type(data).__name__}"
        )
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            got = "nothing" if key not in data else f"a {type(data[key]).__name__}"
            raise DataError(f"{path}: expected a list under {key!r} (COCO format), got {got}")
    return data


def _categories(path, categories):
    ids, names = [], {}
    for i, cat in enumerate(categories):
        if not isinstance(cat, dict) or not isinstance(cat.get("id"), int) or "name" not in cat:
            raise DataError(
                f"{path}: categories[{i}] must be an object with an integer 'id' and a 'name', "
                f"got {cat!r}"
            )
        if cat["id"] in names:
            raise DataError(f"{path}: category id {cat['id']} appears twice in 'categories'")
        ids.append(cat["id"])
        names[cat["id"]] = str(cat["name"])
    if not ids:
        raise DataError(f"{path}: 'categories' is empty; expected at least one category")
    ids.sort()
    return {cid: c for c, cid in enumerate(ids)}, [names[cid] for cid in ids]


def read_coco(
    annotation_file,
    image_dir=None,
    *,
    on_error: str = "raise",
    keep_crowd: bool = False,
    check_images: str = "decode",
    box_tolerance: float = DEFAULT_BOX_TOLERANCE,
) -> DetectionRecords:
    """Reads and validates a COCO-json detection dataset.

    Args:
        annotation_file: path of the COCO json file.
        image_dir: folder the images' `file_name`s are relative to; default: the folder of
            `annotation_file`.
        on_error: `"raise"` (default) stops at the first bad entry with a one-line
            `DataError` naming the file and the entry; `"skip"` leaves out every image with a
            problem and warns with the count (`DataWarning`). Bad entries: a missing, empty
            or corrupt image, a bbox that is not 4 numbers or has width or height <= 0, a box
            outside the image (by more than `box_tolerance`), an unknown category id or
            image id, an image whose size disagrees with the annotation.
        keep_crowd: keep `iscrowd` annotations (flagged in `objects/is_crowd`); by default
            they are left out of training and counted in `ignored["crowd"]`.
        check_images: `"decode"` (default: decode every image once at load time) or
            `"header"` (read only file headers); see `kerasdet.data.records`.
        box_tolerance: boxes may extend this many pixels past the image border (COCO has
            such rounding) and are clipped; farther out is an error.

    Returns:
        `DetectionRecords`, images sorted by id; `class_names` in category-id order.
    """
    check_choice("on_error", on_error, ("raise", "skip"))
    path = os.fspath(annotation_file)
    data = _load_json(path)
    source = path
    image_dir = os.path.dirname(os.path.abspath(path)) if image_dir is None else os.fspath(image_dir)
    cat_index, class_names = _categories(path, data["categories"])
    problems = Problems(path, on_error)

    entries, by_id = [], {}
    for i, image in enumerate(data["images"]):
        if (
            not isinstance(image, dict)
            or not isinstance(image.get("id"), int)
            or not isinstance(image.get("file_name"), str)
        ):
            raise DataError(
                f"{path}: images[{i}] must be an object with an integer 'id' and a "
                f"'file_name', got {image!r}"
            )
        if image["id"] in by_id:
            raise DataError(f"{path}: image id {image['id']} appears twice in 'images'")
        size = None
        h, w = image.get("height"), image.get("width")
        if h is not None or w is not None:
            if not (isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0):
                raise DataError(
                    f"{path}: image id {image['id']} {image['file_name']!r}: width and height "
                    f"must be positive integers, got width={w!r}, height={h!r}"
                )
            size = (h, w)
        by_id[image["id"]] = image
        entries.append(
            ImageEntry(
                path=os.path.normpath(os.path.join(image_dir, image["file_name"])),
                filename=image["file_name"],
                image_id=image["id"],
                name=f"{source}: image id {image['id']} {image['file_name']!r}",
                size=size,
            )
        )
    order = sorted(range(len(entries)), key=lambda k: entries[k].image_id)
    entries = [entries[k] for k in order]
    position = {entry.image_id: k for k, entry in enumerate(entries)}

    ignored = {"crowd": 0}
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            raise DataError(f"{path}: annotations[{i}] must be an object, got {ann!r}")
        ann_name = f"annotation id {ann['id']}" if "id" in ann else f"annotations[{i}]"
        image_id = ann.get("image_id")
        if image_id not in position:
            # An annotation of no image cannot be attached anywhere: a problem of its own.
            problems.add(
                f"{source}: {ann_name}: image_id {image_id!r} is not in 'images'", None
            )
            continue
        k = position[image_id]
        entry = entries[k]
        where = f"{entry.name}: {ann_name}"
        bbox = ann.get("bbox")
        if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(map(_is_number, bbox))):
            problems.add(f"{where}: bbox must be 4 finite numbers [x, y, width, height], got {bbox!r}", k)
            continue
        x, y, bw, bh = (float(v) for v in bbox)
        if bw <= 0 or bh <= 0:
            side = "width" if bw <= 0 else "height"
            problems.add(
                f"{where}: bbox [{x:g}, {y:g}, {bw:g}, {bh:g}] has {side} "
                f"{bw if bw <= 0 else bh:g}; expected [x, y, width, height] with width > 0 "
                "and height > 0",
                k,
            )
            continue
        category = ann.get("category_id")
        if category not in cat_index:
            problems.add(
                f"{where}: category_id {category!r} is not in 'categories' "
                f"(ids {sorted(cat_index)[:10]}{'...' if len(cat_index) > 10 else ''})",
                k,
            )
            continue
        crowd = bool(ann.get("iscrowd", 0))
        if crowd and not keep_crowd:
            ignored["crowd"] += 1
            continue
        entry.boxes.append([y, x, y + bh, x + bw])
        entry.labels.append(cat_index[category])
        entry.object_names.append(ann_name)
        if keep_crowd:
            entry.flags.setdefault("is_crowd", []).append(crowd)
    if keep_crowd:
        for entry in entries:
            entry.flags.setdefault("is_crowd", [])
    return finish_records(
        entries,
        problems,
        class_names=class_names,
        check_images=check_images,
        box_tolerance=box_tolerance,
        ignored=ignored,
    )


def write_coco_json(records: DetectionRecords, path, *, image_root=None) -> dict:
    """Writes `records` as a COCO ground-truth json (boxes `[x, y, w, h]` pixels).

    Categories get ids `1..C` in class order (class `c` -> id `c + 1`); image ids are the
    records' `image_ids`; `file_name` is each image's path relative to `image_root`
    (default: the json's folder), so `read_coco(path)` reads the same dataset back.
    `is_crowd` flags, when present, become `iscrowd`.

    Args:
        records: a `DetectionRecords` (from `read_coco`, `read_voc`, ...).
        path: the json file to write.
        image_root: folder `file_name`s are relative to.

    Returns:
        The written dict.
    """
    path = os.fspath(path)
    root = os.path.dirname(os.path.abspath(path)) if image_root is None else os.fspath(image_root)
    images, annotations = [], []
    crowd = records.flags.get("is_crowd")
    for i in range(len(records)):
        height, width = (int(v) for v in records.image_sizes[i])
        image_id = int(records.image_ids[i])
        images.append(
            {
                "id": image_id,
                "file_name": os.path.relpath(os.path.abspath(records.image_paths[i]), root),
                "width": width,
                "height": height,
            }
        )
        boxes = np.asarray(records.boxes[i], np.float64).reshape(-1, 4)
        for j, (y1, x1, y2, x2) in enumerate(boxes):
            w, h = x2 - x1, y2 - y1
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(records.labels[i][j]) + 1,
                    "bbox": [round(float(v), 4) for v in (x1, y1, w, h)],
                    "area": round(float(w * h), 4),
                    "iscrowd": int(bool(crowd[i][j])) if crowd is not None else 0,
                }
            )
    data = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c + 1, "name": n} for c, n in enumerate(records.class_names)],
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)
    return data
