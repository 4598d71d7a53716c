"""One entry point for every detection data source: `load_detection_data(source, split)`.

`source` may be

* a COCO json file, or a folder holding one (see `find_coco_json` for the layouts tried);
* a VOC-layout folder (`Annotations/`, `JPEGImages/`, `ImageSets/Main/`);
* a TFDS name such as `"voc/2007"`, `"voc/2012"` or `"coco/2017"` (downloaded and prepared by
  `tfds.load` on first use, which needs the network; VOC `difficult` and COCO `iscrowd`
  objects are left out by default, as for the folder readers);
* `"shapes"` or `"shapes/<config>"`, the built-in offline `kerasdet_shapes` dataset;
* a `DetectionRecords` already read.

Every source becomes TFDS-schema examples and goes through the one `detection_dataset`
pipeline (decode, resize keeping the aspect ratio and pad, box conversion, augmentation,
padded batching, parallel `map`, `prefetch`; deterministic when seeded).
"""

from __future__ import annotations

import glob
import os
import re

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from kerasdet.data import coco as coco_lib
from kerasdet.data import voc as voc_lib
from kerasdet.data.pipeline import DEFAULT_SHUFFLE_BUFFER, default_data_dir, detection_dataset
from kerasdet.data.records import DetectionRecords

# The 80 COCO 2017 detection classes in category-id order: the names TFDS's `coco/2017`
# metadata gives its labels. Without that metadata (offline, or `tfds.testing.mock_data`)
# the builder only knows "80 classes", so the names come from here.
COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat",
    "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack",
    "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball",
    "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket",
    "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair",
    "couch", "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse",
    "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier",
    "toothbrush",
)  # fmt: skip

# Names the same split goes by: TFDS says "validation", COCO and VOC "val", Roboflow "valid".
SPLIT_ALIASES = {
    "validation": ("val", "valid"),
    "val": ("validation", "valid"),
    "valid": ("val", "validation"),
}
_TFDS_NAME = re.compile(r"^[a-z][a-z0-9_]*(/[A-Za-z0-9_.\-]+)?(:[0-9.*]+)?$")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _is_shapes(name: str) -> bool:
    return name in ("shapes", "kerasdet_shapes") or name.startswith(("shapes/", "kerasdet_shapes/"))


def find_coco_json(folder, split: str):
    """Finds the COCO json of `split` in `folder`; returns `(json_path, image_dir)`.

    Layouts tried, in order:

    1. COCO's own: `annotations/instances_<split>*.json` with images in `<folder>/<name>/`
       (e.g. `instances_val2017.json` and `val2017/`);
    2. Roboflow's: `<split>/_annotations.coco.json` with the images beside it;
    3. `<split>.json` or `annotations/<split>.json`, images relative to the json's folder;
    4. the only `*.json` in `folder`.
    """
    folder = os.fspath(folder)
    tried = []
    pattern = os.path.join(folder, "annotations", f"instances_{split}*.json")
    tried.append(pattern)
    matches = sorted(glob.glob(pattern))
    if len(matches) == 1:
        name = os.path.basename(matches[0])[len("instances_") : -len(".json")]
        image_dir = os.path.join(folder, name)
        return matches[0], image_dir if os.path.isdir(image_dir) else None
    for candidate in (
        os.path.join(folder, split, "_annotations.coco.json"),
        os.path.join(folder, f"{split}.json"),
        os.path.join(folder, "annotations", f"{split}.json"),
    ):
        tried.append(candidate)
        if os.path.isfile(candidate):
            return candidate, None
    jsons = sorted(glob.glob(os.path.join(folder, "*.json")))
    if len(jsons) == 1:
        return jsons[0], None
    raise FileNotFoundError(
        f"no COCO json for split {split!r} in {folder}: tried {tried} and a single *.json "
        f"(found {len(jsons)}); pass the json file itself"
    )


def _coco_image_dir(json_path):
    """COCO's own layout keeps `annotations/instances_X.json` beside the image folder `X/`."""
    parent = os.path.dirname(os.path.abspath(json_path))
    name = os.path.basename(json_path)
    if os.path.basename(parent) == "annotations" and name.startswith("instances_"):
        image_dir = os.path.join(os.path.dirname(parent), name[len("instances_") : -len(".json")])
        if os.path.isdir(image_dir):
            return image_dir
    return None


def _with_aliases(split, read):
    """`read(split)`, or `read(alias)` for the split's other names if `split` is not found."""
    try:
        return read(split)
    except FileNotFoundError as error:
        for alias in SPLIT_ALIASES.get(split, ()):
            try:
                return read(alias)
            except FileNotFoundError:
                pass
        raise error from None


def read_records(
    source,
    split: str | None = "train",
    *,
    image_dir=None,
    class_names=None,
    keep_crowd: bool = False,
    keep_difficult: bool = False,
    on_error: str = "raise",
    check_images: str = "decode",
    box_tolerance: float = 1.0,
) -> DetectionRecords:
    """Reads a COCO json (file or folder) or a VOC folder into validated `DetectionRecords`.

    Args:
        source: a COCO json file, a folder holding one, or a VOC folder.
        split: the split (COCO folder: which json, see `find_coco_json`; VOC: the
            `ImageSets/Main/<split>.txt` list, `None` for every xml). Ignored for a json file.
            `"validation"`, `"val"` and `"valid"` stand for each other when the one given is
            not found.
        image_dir: COCO only: folder the `file_name`s are relative to.
        class_names: VOC only: the classes in id order (default: see `read_voc`).
        keep_crowd, keep_difficult: keep COCO `iscrowd` / VOC `difficult` objects.
        on_error: `"raise"` or `"skip"` (see `kerasdet.data.records`).
        check_images: `"decode"` or `"header"`.
        box_tolerance: pixels a box may extend past the image (clipped).
    """
    path = os.fspath(source)
    common = dict(on_error=on_error, check_images=check_images, box_tolerance=box_tolerance)
    if os.path.isdir(path) and voc_lib.is_voc_folder(path):
        if image_dir is not None:
            raise ValueError(f"`image_dir` applies to COCO json, not to the VOC folder {path}")
        return _with_aliases(
            split,
            lambda name: voc_lib.read_voc(
                path, name, class_names=class_names, keep_difficult=keep_difficult, **common
            ),
        )
    if class_names is not None:
        raise ValueError("`class_names` applies to VOC folders; COCO json names its categories")
    if os.path.isdir(path):
        folder = path
        path, found_dir = _with_aliases(
            split if split is not None else "train", lambda name: find_coco_json(folder, name)
        )
        image_dir = image_dir if image_dir is not None else found_dir
    elif not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist (expected a COCO json or a VOC folder)")
    if image_dir is None:
        image_dir = _coco_image_dir(path)
    return coco_lib.read_coco(path, image_dir, keep_crowd=keep_crowd, **common)


# --- TFDS ----------------------------------------------------------------------------------


def _tfds_class_names(name, info):
    names = list(info.features["objects"]["label"].names)
    if name.split(":")[0].split("/")[0] == "coco" and names == [str(i) for i in range(80)]:
        return list(COCO_CLASSES)
    return names


def _drop_flagged(ds, keep_crowd, keep_difficult):
    """Leaves out VOC `is_difficult` / COCO `is_crowd` objects, keeping bbox and label."""
    flags = [f for f in ("is_crowd", "is_difficult") if f in ds.element_spec["objects"]]
    kept = {"is_crowd": keep_crowd, "is_difficult": keep_difficult}

    def select(example):
        objects = example["objects"]
        out = {"bbox": objects["bbox"], "label": objects["label"]}
        keep = tf.ones_like(objects["label"], tf.bool)
        for flag in flags:
            value = tf.cast(objects[flag], tf.bool)
            check = tf.debugging.assert_equal(
                tf.shape(value)[0],
                tf.shape(objects["label"])[0],
                message=f"kerasdet.data: objects/{flag} and objects/label differ in length",
            )
            with tf.control_dependencies([check]):
                value = tf.identity(value)
            if kept[flag]:
                out[flag] = value
            else:
                keep = keep & ~value
        out = {k: tf.boolean_mask(v, keep) for k, v in out.items()}
        return dict({k: v for k, v in example.items() if k != "objects"}, objects=out)

    return ds.map(select, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _tfds_examples(name, split, *, data_dir, download, shuffle_files, seed, keep_crowd, keep_difficult):
    """TFDS examples with the image still encoded (decoded after shuffling, to save memory)."""
    ds, info = tfds.load(
        name,
        split="validation" if split in ("val", "valid") else split,
        data_dir=data_dir,
        download=download,
        with_info=True,
        shuffle_files=shuffle_files,
        decoders={"image": tfds.decode.SkipDecoding()},
        read_config=tfds.ReadConfig(shuffle_seed=seed),
    )
    spec = ds.element_spec
    if not isinstance(spec, dict) or "objects" not in spec or "bbox" not in spec["objects"]:
        raise ValueError(
            f"TFDS dataset {name!r} is not a detection dataset: expected 'image' and 'objects' "
            f"with 'bbox' and 'label', got keys {sorted(spec) if isinstance(spec, dict) else spec}"
        )
    return _drop_flagged(ds, keep_crowd, keep_difficult), _tfds_class_names(name, info)


def _shapes_examples(name, split, *, data_dir, shuffle_files, seed):
    from kerasdet.data.shapes import CLASS_NAMES, KerasdetShapes  # registers the builder

    config = name.split("/", 1)[1] if "/" in name else "default"
    configs = {c.name: c for c in KerasdetShapes.BUILDER_CONFIGS}
    if config not in configs:
        raise ValueError(f"shapes config must be one of {sorted(configs)}, got {config!r}")
    builder = KerasdetShapes(config=config, data_dir=data_dir or default_data_dir())
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False)
    )
    ds = builder.as_dataset(
        split=split,
        shuffle_files=shuffle_files,
        decoders={"image": tfds.decode.SkipDecoding()},
        read_config=tfds.ReadConfig(shuffle_seed=seed),
    )
    return ds, list(CLASS_NAMES), configs[config]


def _decode_image(example):
    image = tf.io.decode_image(example["image"], channels=3, expand_animations=False)
    return dict(example, image=tf.ensure_shape(image, [None, None, 3]))


def encoded_image_size(encoded):
    """`(height, width)` int32 `[2]` of an encoded image, from the header for JPEG and PNG."""

    def png():
        raw = tf.cast(tf.io.decode_raw(tf.strings.substr(encoded, 16, 8), tf.uint8), tf.int32)
        be = raw * tf.constant([1 << 24, 1 << 16, 1 << 8, 1, 1 << 24, 1 << 16, 1 << 8, 1])
        return tf.stack([tf.reduce_sum(be[4:]), tf.reduce_sum(be[:4])])

    def decoded():
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        return tf.shape(image)[:2]

    is_png = tf.equal(tf.strings.substr(encoded, 0, 8), _PNG_SIGNATURE)
    return tf.case(
        [
            (tf.io.is_jpeg(encoded), lambda: tf.image.extract_jpeg_shape(encoded)[:2]),
            (is_png, png),
        ],
        default=decoded,
    )


# --- the entry points ----------------------------------------------------------------------


def _open(source, split, *, shuffle, seed, data_dir, download, reader_kwargs):
    """-> (kind, records or examples dataset with encoded images, class names, extra)."""
    if isinstance(source, DetectionRecords):
        return "records", source, list(source.class_names), None
    if not isinstance(source, (str, os.PathLike)):
        raise ValueError(
            "`source` must be a path (COCO json or folder, VOC folder), a TFDS name, 'shapes' "
            f"or DetectionRecords, got {type(source).__name__}"
        )
    name = os.fspath(source)
    if os.path.exists(name):
        records = read_records(name, split, **reader_kwargs)
        return "records", records, list(records.class_names), None
    if _is_shapes(name):
        _reject_reader_kwargs(name, reader_kwargs, allowed=())
        ds, names, config = _shapes_examples(
            name.replace("kerasdet_shapes", "shapes"),
            split,
            data_dir=data_dir,
            shuffle_files=bool(shuffle),
            seed=seed,
        )
        return "tfds", ds, list(names), config
    if _TFDS_NAME.match(name):
        _reject_reader_kwargs(name, reader_kwargs, allowed=("keep_crowd", "keep_difficult"))
        ds, names = _tfds_examples(
            name,
            split,
            data_dir=data_dir,
            download=download,
            shuffle_files=bool(shuffle),
            seed=seed,
            keep_crowd=reader_kwargs.get("keep_crowd", False),
            keep_difficult=reader_kwargs.get("keep_difficult", False),
        )
        return "tfds", ds, names, None
    raise FileNotFoundError(
        f"{name} is neither an existing file or folder nor a TFDS dataset name like 'voc/2007'"
    )


def _reject_reader_kwargs(name, reader_kwargs, allowed):
    given = {k for k, v in reader_kwargs.items() if v is not None and k not in allowed}
    # The defaults of the folder readers are harmless elsewhere; only explicit choices count.
    given -= {k for k in given if reader_kwargs[k] == _READER_DEFAULTS.get(k)}
    if given:
        raise ValueError(f"{sorted(given)} apply to COCO / VOC folders, not to {name!r}")


_READER_DEFAULTS = {
    "on_error": "raise",
    "check_images": "decode",
    "box_tolerance": 1.0,
    "keep_crowd": False,
    "keep_difficult": False,
}


def load_detection_data(
    source,
    split: str | None = "train",
    *,
    image_size=None,
    batch_size: int = 8,
    max_boxes: int | None = None,
    training: bool | None = None,
    shuffle: bool | int | None = None,
    seed: int | None = 0,
    image_dir=None,
    class_names=None,
    keep_crowd: bool = False,
    keep_difficult: bool = False,
    on_error: str = "raise",
    check_images: str = "decode",
    box_tolerance: float = 1.0,
    data_dir=None,
    download: bool = True,
    **pipeline_kwargs,
):
    """Loads any detection source as batches for kerasdet models, with its class names.

    Args:
        source: a COCO json file or folder, a VOC folder, a TFDS name (`"voc/2007"`,
            `"voc/2012"`, `"coco/2017"`), `"shapes"` / `"shapes/<config>"`, or
            `DetectionRecords` (see the module docstring).
        split: `"train"`, `"validation"`, ... (TFDS slices like `"train[:10%]"` work for
            TFDS names). For a COCO json file it only sets the `training` default.
        image_size: `(height, width)` of the model input; required except for `"shapes"`
            (default: the config's size).
        batch_size: images per batch.
        max_boxes: padded objects per image `M`; default: the most objects in one image for
            COCO / VOC folders (known at load time), the config's for shapes, 100 for TFDS.
        training: augment, shuffle and drop the last partial batch; default: `split` starts
            with `"train"`.
        shuffle: default `training`. Folders are shuffled whole, before decoding; TFDS
            through a buffer of encoded examples (`True`: 1024, or an int).
        seed: seed of shuffling and augmentation (`None`: random).
        image_dir, class_names, keep_crowd, keep_difficult, on_error, check_images,
            box_tolerance: for COCO / VOC folders, see `read_records`; `keep_crowd` and
            `keep_difficult` also apply to TFDS `coco` / `voc`.
        data_dir: TFDS data folder (TFDS names and shapes).
        download: let `tfds.load` download and prepare (TFDS names).
        **pipeline_kwargs: passed to `detection_dataset`: `keep_aspect`, `augment`,
            `flip_prob`, `drop_remainder`.

    Returns:
        `(dataset, class_names)`: a `tf.data.Dataset` of `(images float32 [B, H, W, 3] 0-255,
        {"boxes": float32 [B, M, 4] yxyx pixels, "classes": int32 [B, M] -1 padded})` and
        the list of class names (class id `c` is `class_names[c]`).

    Example:
    >>> ds, names = load_detection_data("shapes/tiny", "validation", batch_size=4)  # doctest: +SKIP
    >>> ds, names = load_detection_data("data/my_coco", "train", image_size=(512, 512))  # doctest: +SKIP
    """
    if training is None:
        training = (split or "train").startswith("train")
    if shuffle is None:
        shuffle = training
    reader_kwargs = dict(
        image_dir=image_dir,
        class_names=class_names,
        keep_crowd=keep_crowd,
        keep_difficult=keep_difficult,
        on_error=on_error,
        check_images=check_images,
        box_tolerance=box_tolerance,
    )
    kind, data, names, config = _open(
        source,
        split,
        shuffle=shuffle,
        seed=seed,
        data_dir=data_dir,
        download=download,
        reader_kwargs=reader_kwargs,
    )
    if kind == "records":
        examples = data.to_dataset(shuffle=bool(shuffle), seed=seed)
        if max_boxes is None:
            max_boxes = max(1, data.max_objects)
    else:
        if shuffle:
            buffer = DEFAULT_SHUFFLE_BUFFER if shuffle is True else int(shuffle)
            data = data.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
        examples = data.map(_decode_image, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if max_boxes is None:
            max_boxes = config.max_objects if config is not None else 100
    if image_size is None:
        if config is None:
            raise ValueError(
                f"`image_size=(height, width)` is required for {source!r} (the model's input size)"
            )
        image_size = (config.height, config.width)
    ds = detection_dataset(
        examples,
        image_size=image_size,
        batch_size=batch_size,
        max_boxes=max_boxes,
        shuffle=False,  # shuffled above, before decoding
        seed=seed,
        training=training,
        **pipeline_kwargs,
    )
    return ds, names


def box_sizes(
    source,
    split: str | None = "train",
    *,
    image_size=None,
    keep_aspect: bool = True,
    data_dir=None,
    **reader_kwargs,
) -> np.ndarray:
    """Widths and heights of every box of a source, as the pipeline resizes them.

    For COCO / VOC folders this needs no image decoding (sizes are known at load time; note
    the default `check_images="decode"` still validates every image once); for TFDS sources
    image sizes come from JPEG / PNG headers.

    Args:
        source, split: as `load_detection_data`.
        image_size: `(height, width)` of the model input; `None`: original pixels.
        keep_aspect: as `detection_dataset`.
        data_dir: TFDS data folder.
        **reader_kwargs: `on_error`, `check_images`, `keep_crowd`, ... as `read_records`.

    Returns:
        float32 `[N, 2]` `(width, height)` in pixels.
    """
    full = dict(_READER_DEFAULTS, image_dir=None, class_names=None)
    full.update(reader_kwargs)
    kind, data, _, _ = _open(
        source, split, shuffle=False, seed=None, data_dir=data_dir, download=True, reader_kwargs=full
    )
    if kind == "records":
        return data.box_sizes(image_size, keep_aspect)

    def sizes(example):
        hw = tf.cast(encoded_image_size(example["image"]), tf.float32)
        bbox = tf.cast(example["objects"]["bbox"], tf.float32)
        if image_size is None:
            content = hw
        elif keep_aspect:
            scale = tf.minimum(image_size[0] / hw[0], image_size[1] / hw[1])
            content = tf.round(hw * scale)
        else:
            content = tf.constant(image_size, tf.float32)
        return tf.stack(
            [(bbox[:, 3] - bbox[:, 1]) * content[1], (bbox[:, 2] - bbox[:, 0]) * content[0]], axis=1
        )

    parts = [
        wh for wh in data.map(sizes, num_parallel_calls=tf.data.AUTOTUNE).as_numpy_iterator()
    ]
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros([0, 2], np.float32)
