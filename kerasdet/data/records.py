"""Annotations read in Python, validated, and turned into TFDS-schema `tf.data` examples.

The COCO-json and VOC-xml readers (`kerasdet.data.coco`, `kerasdet.data.voc`) parse their
files into a `DetectionRecords`: one row per image with its path, size and boxes (`yxyx`
pixels of the original image). Annotations are static, so every check runs once in Python at
load time and a problem is reported as one line naming the file and the entry:

    instances.json: annotation id 7 (image id 3 'b.png'): bbox [10, 5, 0, 4] has width 0;
    expected [x, y, width, height] with width > 0 and height > 0

`on_error="raise"` (default) stops at the first problem (the message also counts the others);
`on_error="skip"` leaves out every image with a problem, warns with a `DataWarning` that gives
the count and the first problem, and keeps the full list in `DetectionRecords.skipped`.
Nothing is dropped silently: objects left out by policy (COCO `iscrowd`, VOC `difficult`)
are counted in `DetectionRecords.ignored`.

Images are checked at load time too (`check_images`):

* `"decode"` (default) decodes every image once, in parallel through `tf.data`, so missing,
  empty, corrupt or truncated files and sizes that disagree with the annotation are all
  reported with the file's name before training starts. It costs one decode per image
  (a few ms for a 640x480 JPEG; about 3 minutes for COCO train2017 on 2 cores).
* `"header"` reads only each file's header (PNG, JPEG, GIF, BMP; other formats are decoded):
  missing, empty and non-image files and size mismatches are caught, but compressed data
  that is corrupt past the header is found only when training reaches it, as TensorFlow's
  `InvalidArgumentError` ("Invalid JPEG data"), which does not name the file.

`DetectionRecords.to_dataset()` yields the TFDS detection schema that `voc/2007` and
`coco/2017` use, so `detection_dataset` serves all sources the same way::

    {"image": uint8 [h, w, 3], "image/filename": string, "image/id": int64,
     "objects": {"bbox": float32 [n, 4] normalized [ymin, xmin, ymax, xmax],
                 "label": int64 [n], "is_crowd" / "is_difficult": bool [n] (if kept)}}
"""

from __future__ import annotations

import dataclasses
import os
import struct
import warnings

import numpy as np
import tensorflow as tf

ON_ERROR = ("raise", "skip")
CHECK_IMAGES = ("decode", "header")


class DataError(ValueError):
    """Bad data in a dataset; the message is one line naming the file and the entry."""


class DataWarning(UserWarning):
    """Images left out of a dataset with `on_error="skip"` (the message gives the count)."""


def check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}, got {value!r}")


@dataclasses.dataclass
class DetectionRecords:
    """A detection dataset's annotations, one row per image, validated.

    Attributes:
        image_paths: path of each image file.
        image_sizes: int64 `[N, 2]`, `(height, width)` of each image in pixels.
        boxes: per image, float32 `[n_i, 4]` `yxyx` pixels of the original image.
        labels: per image, int64 `[n_i]` 0-based class ids (indices into `class_names`).
        class_names: name of each class id.
        image_ids: per image, an int64 id (COCO's `id`; VOC: the row index).
        filenames: per image, the name the annotation gives (COCO `file_name`, VOC image id).
        flags: optional per-object bool arrays by name (`"is_crowd"`, `"is_difficult"`),
            present when such objects are kept.
        source: the annotation file or folder, for messages.
        skipped: one line per image left out with `on_error="skip"`.
        ignored: objects left out by policy, e.g. `{"crowd": 12}` or `{"difficult": 30}`.
    """

    image_paths: list
    image_sizes: np.ndarray
    boxes: list
    labels: list
    class_names: list
    image_ids: list
    filenames: list
    flags: dict = dataclasses.field(default_factory=dict)
    source: str = ""
    skipped: list = dataclasses.field(default_factory=list)
    ignored: dict = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.image_paths)

    @property
    def num_objects(self) -> int:
        return int(sum(len(b) for b in self.boxes))

    @property
    def max_objects(self) -> int:
        """Most objects in one image (0 for an empty dataset)."""
        return max((len(b) for b in self.boxes), default=0)

    def box_sizes(self, image_size=None, keep_aspect: bool = True) -> np.ndarray:
        """Widths and heights of all boxes, optionally as the pipeline resizes them.

        Args:
            image_size: `(height, width)` of the model input; `None` keeps original pixels.
            keep_aspect: as `detection_dataset`: scale each image by
                `min(H / h, W / w)` (default) or stretch it to `image_size`.

        Returns:
            float32 `[num_objects, 2]`, `(width, height)` in pixels.
        """
        sizes = []
        for (h, w), boxes in zip(self.image_sizes, self.boxes):
            wh = np.stack([boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]], axis=1)
            if image_size is not None:
                sy, sx = image_size[0] / h, image_size[1] / w
                if keep_aspect:
                    sy = sx = min(sy, sx)
                wh = wh * np.array([sx, sy])
            sizes.append(wh)
        return np.concatenate(sizes, axis=0).astype(np.float32) if sizes else np.zeros([0, 2], np.float32)

    def to_dataset(self, *, shuffle: bool = False, seed: int | None = None) -> tf.data.Dataset:
        """The images as TFDS detection examples (decoded lazily, in parallel).

        Args:
            shuffle: shuffle the images (all of them, before decoding, so memory stays
                small), reshuffled every epoch.
            seed: seed of the shuffle.

        Returns:
            An unbatched `tf.data.Dataset` of `{"image" uint8 [h, w, 3], "image/filename",
            "image/id", "objects": {"bbox" float32 [n, 4] normalized yxyx, "label" int64
            [n], flags...}}`.
        """
        lengths = np.asarray([len(b) for b in self.boxes], np.int64)
        sizes = np.asarray(self.image_sizes, np.float32).reshape(-1, 2)
        rel = [
            (b / np.array([h, w, h, w], np.float32)).astype(np.float32)
            for b, (h, w) in zip(self.boxes, sizes)
        ]

        def ragged(parts, dtype, inner):
            flat = np.concatenate(parts) if parts else np.zeros([0, *inner], dtype)
            return tf.RaggedTensor.from_row_lengths(flat.astype(dtype).reshape(-1, *inner), lengths)

        objects = {"bbox": ragged(rel, np.float32, [4]), "label": ragged(self.labels, np.int64, [])}
        for name, values in self.flags.items():
            objects[name] = ragged(values, np.bool_, [])
        slices = {
            "path": tf.constant(list(self.image_paths), tf.string),
            "size": tf.constant(np.asarray(self.image_sizes, np.int32).reshape(-1, 2)),
            "image/filename": tf.constant([str(f) for f in self.filenames], tf.string),
            "image/id": tf.constant(np.asarray(self.image_ids, np.int64).reshape(-1)),
            "objects": objects,
        }
        ds = tf.data.Dataset.from_tensor_slices(slices)
        if shuffle and len(self):
            ds = ds.shuffle(len(self), seed=seed, reshuffle_each_iteration=True)

        def decode(item):
            image = tf.io.decode_image(
                tf.io.read_file(item["path"]), channels=3, expand_animations=False
            )
            # The boxes were normalized by the size checked at load time; a file replaced
            # since then must not silently shift them.
            check = tf.debugging.Assert(
                tf.reduce_all(tf.equal(tf.shape(image)[:2], item["size"])),
                [
                    "kerasdet.data: image",
                    item["path"],
                    "has size",
                    tf.shape(image)[:2],
                    "but was",
                    item["size"],
                    "when the dataset was loaded",
                ],
            )
            with tf.control_dependencies([check]):
                image = tf.identity(image)
            return {
                "image": tf.ensure_shape(image, [None, None, 3]),
                "image/filename": item["image/filename"],
                "image/id": item["image/id"],
                "objects": item["objects"],
            }

        return ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


class Problems:
    """Collects one-line problems per image while a reader validates annotations."""

    def __init__(self, source: str, on_error: str):
        check_choice("on_error", on_error, ON_ERROR)
        self.source = source
        self.on_error = on_error
        self.messages: list[str] = []
        self.bad_images: set = set()  # keys of images with a problem

    def add(self, message: str, image_key=None) -> None:
        self.messages.append(" ".join(str(message).split()))
        if image_key is not None:
            self.bad_images.add(image_key)

    def __bool__(self) -> bool:
        return bool(self.messages)

    def raise_if_needed(self) -> None:
        """In "raise" mode, raises `DataError` with the first problem and the total count."""
        if self.messages and self.on_error == "raise":
            more = len(self.messages) - 1
            extra = f" ({more} more problem{'s' * (more != 1)} in {self.source})" if more else ""
            raise DataError(
                f"{self.messages[0]}{extra}; fix the data or pass on_error='skip' to leave "
                "out the images with problems"
            )

    def warn_skipped(self, num_images: int, total: int) -> None:
        if self.messages:
            warnings.warn(
                f"{self.source}: skipped {num_images} of {total} images with "
                f"{len(self.messages)} problem(s) (on_error='skip'); first: {self.messages[0]}",
                DataWarning,
                stacklevel=4,  # the caller of read_coco / read_voc
            )


# --- image checks -------------------------------------------------------------------------


def _jpeg_size(f):
    f.seek(2)
    while True:
        marker = f.read(2)
        if len(marker) < 2 or marker[0] != 0xFF:
            raise ValueError("a JPEG without a frame header (truncated or corrupt)")
        kind = marker[1]
        if kind == 0xFF:  # fill byte: the marker starts one byte later
            f.seek(-1, 1)
            continue
        if kind in (0x01, 0xD8) or 0xD0 <= kind <= 0xD7:  # markers without a length
            continue
        length_bytes = f.read(2)
        if len(length_bytes) < 2:
            raise ValueError("a truncated JPEG header")
        (length,) = struct.unpack(">H", length_bytes)
        # SOF0..SOF15 carry the size, except DHT (C4), JPG (C8) and DAC (CC).
        if 0xC0 <= kind <= 0xCF and kind not in (0xC4, 0xC8, 0xCC):
            data = f.read(5)
            if len(data) < 5:
                raise ValueError("a truncated JPEG frame header")
            height, width = struct.unpack(">HH", data[1:5])
            return height, width
        f.seek(length - 2, 1)


def image_size_from_header(path: str):
    """`(height, width)` of a PNG, JPEG, GIF or BMP from its header; `None` for other formats.

    Raises `ValueError` (a short reason) for an empty or truncated header.
    """
    with open(path, "rb") as f:
        head = f.read(32)
        if not head:
            raise ValueError("an empty file")
        if head[:8] == b"\x89PNG\r\n\x1a\n":
            if len(head) < 24 or head[12:16] != b"IHDR":
                raise ValueError("a PNG without its IHDR header (truncated or corrupt)")
            width, height = struct.unpack(">II", head[16:24])
            return int(height), int(width)
        if head[:3] == b"\xff\xd8\xff":
            return _jpeg_size(f)
        if head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
            width, height = struct.unpack("<HH", head[6:10])
            return int(height), int(width)
        if head[:2] == b"BM" and len(head) >= 26:
            width, height = struct.unpack("<ii", head[18:26])
            return abs(int(height)), int(width)  # negative height: rows stored top-down
    return None


def _decode_error(path: str) -> str:
    try:
        data = tf.io.read_file(path)
        tf.io.decode_image(data, channels=3, expand_animations=False)
    except (tf.errors.OpError, ValueError) as error:
        message = getattr(error, "message", str(error))
        return " ".join(message.split("[Op:")[0].split("}}")[-1].split()).rstrip(".")
    return "an image that could not be decoded"


def decoded_sizes(paths: list) -> dict:
    """Decodes every image once (parallel `tf.data`); `{index: (h, w)}` for those that decode.

    A file that fails to read or decode is simply absent from the result, so the caller can
    name it (`Dataset.ignore_errors` drops exactly the failing elements).
    """
    if not paths:
        return {}
    ds = tf.data.Dataset.from_tensor_slices((tf.range(len(paths), dtype=tf.int64), list(paths)))

    def size(index, path):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        return index, tf.shape(image)[:2]

    ds = ds.map(size, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False).ignore_errors()
    return {int(i): (int(hw[0]), int(hw[1])) for i, hw in ds.as_numpy_iterator()}


def check_image_files(paths, expected_sizes, describe, problems: Problems, check_images: str):
    """Checks every image file; fills in unknown sizes; reports problems per image.

    Args:
        paths: image paths, one per image.
        expected_sizes: `(height, width)` from the annotation per image, or `None` where the
            annotation does not say.
        describe: `describe(i)` names image `i` in a message ("instances.json: image id 3
            'a.png'").
        problems: where problems go (keyed by image index).
        check_images: `"decode"` or `"header"`.

    Returns:
        list of `(height, width)` per image (`None` for images with a problem).
    """
    check_choice("check_images", check_images, CHECK_IMAGES)
    sizes = [None] * len(paths)
    present = []
    for i, path in enumerate(paths):
        if not os.path.isfile(path):
            problems.add(f"{describe(i)}: image file {path} does not exist", i)
        elif os.path.getsize(path) == 0:
            problems.add(f"{describe(i)}: image file {path} is empty", i)
        else:
            present.append(i)
    if check_images == "decode":
        decoded = decoded_sizes([paths[i] for i in present])
        found = {present[j]: hw for j, hw in decoded.items()}
    else:
        found = {}
        for i in present:
            try:
                hw = image_size_from_header(paths[i])
            except (ValueError, OSError) as error:
                problems.add(f"{describe(i)}: image file {paths[i]} is {error}", i)
                continue
            if hw is None:  # a format without a header parser here: decode this one
                hw = decoded_sizes([paths[i]]).get(0)
            found[i] = hw
    for i in present:
        hw = found.get(i)
        if hw is None:
            if i not in problems.bad_images:
                problems.add(
                    f"{describe(i)}: image file {paths[i]} is corrupt or not an image: "
                    f"{_decode_error(paths[i])}",
                    i,
                )
            continue
        want = expected_sizes[i]
        if want is not None and tuple(int(v) for v in want) != tuple(hw):
            # Swapped sides usually mean a JPEG with an EXIF rotation that the annotation
            # tool applied; decoders (TensorFlow's too) return the pixels as stored.
            hint = (
                " (swapped: an EXIF-rotated JPEG? pixels are read as stored)"
                if tuple(int(v) for v in want) == tuple(hw[::-1])
                else ""
            )
            problems.add(
                f"{describe(i)}: image file {paths[i]} is {hw[1]}x{hw[0]} (width x height) but "
                f"the annotation says {int(want[1])}x{int(want[0])}{hint}",
                i,
            )
            continue
        sizes[i] = hw
    return sizes


# --- assembling records from parsed entries -----------------------------------------------


@dataclasses.dataclass
class ImageEntry:
    """One image as a reader parsed it, before the checks that need the image itself.

    Attributes:
        path: the image file.
        filename: the name the annotation uses.
        image_id: int64 id.
        name: how messages name the image, e.g. `"instances.json: image id 3 'a.png'"`.
        size: `(height, width)` the annotation gives, or `None`.
        boxes: per object, `[y1, x1, y2, x2]` pixels as annotated (already checked to have
            positive width and height).
        labels: per object, the class id.
        object_names: per object, how messages name it, e.g. `"annotation id 7"`.
        flags: per-object bool lists by name (`"is_crowd"`, `"is_difficult"`).
    """

    path: str
    filename: str
    image_id: int
    name: str
    size: tuple | None = None
    boxes: list = dataclasses.field(default_factory=list)
    labels: list = dataclasses.field(default_factory=list)
    object_names: list = dataclasses.field(default_factory=list)
    flags: dict = dataclasses.field(default_factory=dict)


def _check_inside(entry: ImageEntry, index: int, size, problems: Problems, tolerance: float):
    """Boxes must lie in the image (up to `tolerance` pixels out, which is clipped)."""
    height, width = size
    for box, obj in zip(entry.boxes, entry.object_names):
        y1, x1, y2, x2 = box
        if y1 < -tolerance or x1 < -tolerance or y2 > height + tolerance or x2 > width + tolerance:
            problems.add(
                f"{entry.name}: {obj}: box [x1={x1:g}, y1={y1:g}, x2={x2:g}, y2={y2:g}] extends "
                f"outside the {width}x{height} (width x height) image by more than "
                f"{tolerance:g} pixel(s)",
                index,
            )
        elif min(y2, height) - max(y1, 0) <= 0 or min(x2, width) - max(x1, 0) <= 0:
            problems.add(
                f"{entry.name}: {obj}: box [x1={x1:g}, y1={y1:g}, x2={x2:g}, y2={y2:g}] has no "
                f"area inside the {width}x{height} (width x height) image",
                index,
            )


def finish_records(
    entries: list,
    problems: Problems,
    *,
    class_names,
    check_images: str,
    box_tolerance: float,
    ignored: dict,
) -> DetectionRecords:
    """Checks boxes against image sizes and the image files, then builds the records.

    Problems found while parsing are already in `problems` (keyed by entry index). In
    "raise" mode, problems that need no image file are raised before any image is read.
    """
    if box_tolerance < 0:
        raise ValueError(f"`box_tolerance` must be >= 0 pixels, got {box_tolerance!r}")
    for i, entry in enumerate(entries):
        if entry.size is not None:
            _check_inside(entry, i, entry.size, problems, box_tolerance)
    problems.raise_if_needed()  # cheap checks first: no image is read for a bad annotation

    todo = [i for i in range(len(entries)) if i not in problems.bad_images]
    sizes = check_image_files(
        [entries[i].path for i in todo],
        [entries[i].size for i in todo],
        lambda j: entries[todo[j]].name,
        _Remapped(problems, todo),
        check_images,
    )
    for j, i in enumerate(todo):
        if sizes[j] is not None and entries[i].size is None:
            _check_inside(entries[i], i, sizes[j], problems, box_tolerance)
    problems.raise_if_needed()

    keep = [(i, sizes[j]) for j, i in enumerate(todo) if i not in problems.bad_images]
    flag_names = sorted({name for entry in entries for name in entry.flags})
    records = DetectionRecords(
        image_paths=[],
        image_sizes=np.zeros([len(keep), 2], np.int64),
        boxes=[],
        labels=[],
        class_names=list(class_names),
        image_ids=[],
        filenames=[],
        flags={name: [] for name in flag_names},
        source=problems.source,
        skipped=list(problems.messages),
        ignored=dict(ignored),
    )
    for row, (i, (height, width)) in enumerate(keep):
        entry = entries[i]
        boxes = np.asarray(entry.boxes, np.float32).reshape(-1, 4)
        # Boxes within the tolerance may stick out a little: clip them to the image.
        boxes = np.clip(boxes, 0.0, np.array([height, width, height, width], np.float32))
        records.image_paths.append(entry.path)
        records.image_sizes[row] = (height, width)
        records.boxes.append(boxes)
        records.labels.append(np.asarray(entry.labels, np.int64).reshape(-1))
        records.image_ids.append(int(entry.image_id))
        records.filenames.append(entry.filename)
        for name in flag_names:
            values = entry.flags.get(name, [False] * len(entry.boxes))
            records.flags[name].append(np.asarray(values, bool).reshape(-1))
    problems.warn_skipped(len(entries) - len(keep), len(entries))
    return records


class _Remapped:
    """`Problems` seen through an index map (image checks run on a subset of entries)."""

    def __init__(self, problems: Problems, indices: list):
        self._problems = problems
        self._indices = indices

    @property
    def bad_images(self):
        inverse = {i: j for j, i in enumerate(self._indices)}
        return {inverse[i] for i in self._problems.bad_images if i in inverse}

    def add(self, message, image_key=None):
        self._problems.add(message, None if image_key is None else self._indices[image_key])
