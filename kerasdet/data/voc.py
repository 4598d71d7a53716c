"""Pascal VOC-layout detection folders: `Annotations/*.xml`, `JPEGImages/`, `ImageSets/Main/`.

`read_voc(root, split)` reads the image ids of `ImageSets/Main/<split>.txt` (or, with
`split=None`, every `Annotations/*.xml`), parses each xml file and checks it (see
`kerasdet.data.records` for `on_error` and `check_images`). Boxes are taken as TFDS's `voc`
builder takes them, `xmin..xmax` as pixel edges with no 1-pixel shift, so a folder read here
and `tfds.load("voc/2007")` give the same normalized boxes.

Objects marked `<difficult>1</difficult>` are left out by default (the VOC convention: they
neither count as positives nor as misses) and counted in `ignored["difficult"]`;
`keep_difficult=True` keeps them with `objects/is_difficult` set.

Class names: the 20 VOC classes (TFDS's order) when every object name is one of them,
otherwise the sorted names found in all of `Annotations/`, so train and validation splits of
one folder agree; or pass `class_names` explicitly (any other name is then an error).
"""

from __future__ import annotations

import glob
import math
import os
import xml.etree.ElementTree as ET

from kerasdet.data.records import (
    DataError,
    DetectionRecords,
    ImageEntry,
    Problems,
    check_choice,
    finish_records,
)

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
DEFAULT_BOX_TOLERANCE = 1.0


def is_voc_folder(path) -> bool:
    return os.path.isdir(os.path.join(os.fspath(path), "Annotations"))


def _text(element, tag):
    child = element.find(tag)
    return None if child is None or child.text is None else child.text.strip()


def _number(element, tag):
    text = _text(element, tag)
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None, text
    return (value if math.isfinite(value) else None), text


def _split_ids(root, split):
    if split is None:
        files = sorted(glob.glob(os.path.join(root, "Annotations", "*.xml")))
        return [os.path.splitext(os.path.basename(f))[0] for f in files]
    list_file = os.path.join(root, "ImageSets", "Main", f"{split}.txt")
    if not os.path.isfile(list_file):
        found = sorted(
            os.path.splitext(os.path.basename(f))[0]
            for f in glob.glob(os.path.join(root, "ImageSets", "Main", "*.txt"))
            if "_" not in os.path.basename(f)  # class files are <class>_<split>.txt
        )
        raise FileNotFoundError(
            f"VOC split file {list_file} does not exist; splits found: {found or 'none'} "
            "(or pass split=None to read every Annotations/*.xml)"
        )
    with open(list_file, encoding="utf-8") as f:
        # A line is "<id>" (or "<id> <flag>" in per-class files): the id is the first word.
        return [line.split()[0] for line in f if line.strip()]


def _image_path(root, image_id, filename):
    folder = os.path.join(root, "JPEGImages")
    candidates = ([filename] if filename else []) + [image_id + ext for ext in IMAGE_EXTENSIONS]
    for name in candidates:
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    return os.path.join(folder, filename or image_id + ".jpg")


def _parse(xml_path):
    """-> (root element, None) or (None, reason)."""
    try:
        return ET.parse(xml_path).getroot(), None
    except FileNotFoundError:
        return None, "annotation file does not exist"
    except ET.ParseError as error:
        return None, f"not valid XML: {error}"


def _all_names(root):
    names = set()
    for xml_path in glob.glob(os.path.join(root, "Annotations", "*.xml")):
        tree, _ = _parse(xml_path)
        if tree is not None:
            names.update(_text(obj, "name") for obj in tree.findall("object"))
    names.discard(None)
    return names


def read_voc(
    root,
    split: str | None = "trainval",
    *,
    class_names=None,
    keep_difficult: bool = False,
    on_error: str = "raise",
    check_images: str = "decode",
    box_tolerance: float = DEFAULT_BOX_TOLERANCE,
) -> DetectionRecords:
    """Reads and validates a VOC-layout detection folder.

    Args:
        root: folder with `Annotations/`, `JPEGImages/` and `ImageSets/Main/` (e.g.
            `VOCdevkit/VOC2007`).
        split: name of the `ImageSets/Main/<split>.txt` id list (`"train"`, `"val"`,
            `"trainval"`, `"test"`), or `None` for every xml file in `Annotations/`.
        class_names: the classes, in class-id order; default: VOC's 20 classes if every
            name is a VOC class, else the sorted object names of all of `Annotations/`.
        keep_difficult: keep `difficult` objects (flagged in `objects/is_difficult`); by
            default they are left out and counted in `ignored["difficult"]`.
        on_error: `"raise"` (default) or `"skip"`, see `kerasdet.data.records`. Bad entries:
            unreadable xml, a missing or corrupt image, a `bndbox` with missing or
            non-numeric coordinates or `xmax <= xmin` / `ymax <= ymin`, a box outside the
            image, an object name not in `class_names`, a `<size>` that disagrees with the
            image.
        check_images: `"decode"` (default) or `"header"`.
        box_tolerance: boxes may extend this many pixels past the image (clipped).

    Returns:
        `DetectionRecords` in the order of the split file; `image_ids` are `1..N`.
    """
    check_choice("on_error", on_error, ("raise", "skip"))
    root = os.fspath(root)
    if not is_voc_folder(root):
        raise FileNotFoundError(
            f"{root} is not a VOC folder: expected {os.path.join(root, 'Annotations')}/ "
            "with one xml file per image"
        )
    ids = _split_ids(root, split)
    problems = Problems(root, on_error)

    trees = []
    for k, image_id in enumerate(ids):
        xml_path = os.path.join(root, "Annotations", f"{image_id}.xml")
        tree, reason = _parse(xml_path)
        if tree is None:
            problems.add(f"{xml_path}: {reason}", k)
        trees.append(tree)
    if class_names is None:
        used = {_text(obj, "name") for t in trees if t is not None for obj in t.findall("object")}
        used.discard(None)
        class_names = list(VOC_CLASSES) if used <= set(VOC_CLASSES) else sorted(_all_names(root))
    class_names = [str(c) for c in class_names]
    if len(set(class_names)) != len(class_names) or not class_names:
        raise ValueError(f"`class_names` must be distinct and non-empty, got {class_names}")
    class_index = {name: c for c, name in enumerate(class_names)}

    entries, ignored = [], {"difficult": 0}
    for k, (image_id, tree) in enumerate(zip(ids, trees)):
        xml_name = os.path.join(root, "Annotations", f"{image_id}.xml")
        filename = _text(tree, "filename") if tree is not None else None
        entry = ImageEntry(
            path=_image_path(root, image_id, filename),
            filename=image_id,
            image_id=k + 1,
            name=xml_name,
        )
        entries.append(entry)
        if tree is None:
            continue
        size = tree.find("size")
        if size is not None:
            w, _ = _number(size, "width")
            h, _ = _number(size, "height")
            # VOC-format tools sometimes write 0 for an unknown size: then the image says.
            if w and h and w > 0 and h > 0:
                entry.size = (int(h), int(w))
        for j, obj in enumerate(tree.findall("object")):
            name = _text(obj, "name")
            where = f"{xml_name}: object {j} ({name!r})"
            box = obj.find("bndbox")
            if box is None:
                problems.add(f"{where}: no <bndbox>", k)
                continue
            coords = {tag: _number(box, tag) for tag in ("xmin", "ymin", "xmax", "ymax")}
            bad = {tag: text for tag, (value, text) in coords.items() if value is None}
            if bad:
                problems.add(f"{where}: <bndbox> needs numeric xmin, ymin, xmax, ymax, got {bad}", k)
                continue
            x1, y1, x2, y2 = (coords[t][0] for t in ("xmin", "ymin", "xmax", "ymax"))
            if x2 <= x1 or y2 <= y1:
                side = "width" if x2 <= x1 else "height"
                problems.add(
                    f"{where}: box xmin={x1:g} ymin={y1:g} xmax={x2:g} ymax={y2:g} has {side} "
                    f"{(x2 - x1) if x2 <= x1 else (y2 - y1):g}; expected xmax > xmin and ymax > ymin",
                    k,
                )
                continue
            if name not in class_index:
                problems.add(
                    f"{where}: object name {name!r} is not one of the {len(class_names)} "
                    f"classes {class_names[:20]}{'...' if len(class_names) > 20 else ''}",
                    k,
                )
                continue
            difficult = _text(obj, "difficult") == "1"
            if difficult and not keep_difficult:
                ignored["difficult"] += 1
                continue
            entry.boxes.append([y1, x1, y2, x2])
            entry.labels.append(class_index[name])
            entry.object_names.append(f"object {j} ({name!r})")
            if keep_difficult:
                entry.flags.setdefault("is_difficult", []).append(difficult)
        if keep_difficult:
            entry.flags.setdefault("is_difficult", [])
    if not entries:
        raise DataError(f"{root}: split {split!r} lists no images")
    return finish_records(
        entries,
        problems,
        class_names=class_names,
        check_images=check_images,
        box_tolerance=box_tolerance,
        ignored=ignored,
    )
