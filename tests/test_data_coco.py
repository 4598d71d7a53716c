"""COCO-json folders: round trips through the pipeline, layouts, crowd boxes, bad data."""

import json
import os
import warnings

import numpy as np
import pytest
import tensorflow as tf

from kerasdet.data import (
    Augmentation,
    DataError,
    DataWarning,
    find_coco_json,
    load_detection_data,
    read_coco,
    write_coco_json,
)

# Arbitrary, unsorted category ids: sorted they give classes dog=0, cat=1, bird=2.
CATEGORIES = [{"id": 7, "name": "cat"}, {"id": 3, "name": "dog"}, {"id": 12, "name": "bird"}]
CLASS_OF = {3: 0, 7: 1, 12: 2}
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]

# (file, (height, width), [(category id, [x, y, w, h]), ...])
IMAGES = [
    ("a.png", (60, 80), [(7, [10, 5, 20, 30]), (3, [40, 20, 30, 25])]),
    ("sub/b.png", (50, 50), [(12, [0, 0, 50, 50])]),
    ("c.jpg", (40, 100), [(3, [60, 8, 31, 24])]),
    ("d.png", (30, 30), []),  # an image without objects is a negative, kept
]


def write_image(path, size, boxes_xywh, fmt=None):
    """Black image with one filled rectangle of a distinct colour per box."""
    image = np.zeros((*size, 3), np.uint8)
    for k, (x, y, w, h) in enumerate(boxes_xywh):
        image[int(y) : int(y + h), int(x) : int(x + w)] = COLOURS[k % len(COLOURS)]
    fmt = fmt or os.path.splitext(path)[1]
    data = tf.io.encode_png(image) if fmt == ".png" else tf.io.encode_jpeg(image, quality=100)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data.numpy())
    return image


def write_coco(folder, images=IMAGES, json_name="instances.json", image_subdir="", extra=None):
    """Writes images and a COCO json; returns the json path."""
    folder = str(folder)
    data = {"images": [], "annotations": [], "categories": CATEGORIES}
    for i, (name, size, objects) in enumerate(images):
        image_id = 100 + i
        write_image(os.path.join(folder, image_subdir, name), size, [b for _, b in objects])
        data["images"].append({"id": image_id, "file_name": name, "height": size[0], "width": size[1]})
        for cat, box in objects:
            data["annotations"].append(
                {
                    "id": len(data["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": cat,
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": 0,
                }
            )
    if extra:
        extra(data)
    path = os.path.join(folder, json_name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f)
    return path


def test_read_coco_maps_categories_and_boxes(tmp_path):
    records = read_coco(write_coco(tmp_path))
    assert records.class_names == ["dog", "cat", "bird"]
    assert len(records) == 4 and records.num_objects == 4 and records.max_objects == 2
    assert records.image_ids == [100, 101, 102, 103]
    for (name, size, objects), path, hw, boxes, labels in zip(
        IMAGES, records.image_paths, records.image_sizes, records.boxes, records.labels, strict=True
    ):
        assert path == os.path.join(str(tmp_path), name)
        assert tuple(hw) == size
        want = [[y, x, y + h, x + w] for _, (x, y, w, h) in objects]
        np.testing.assert_allclose(boxes, np.reshape(want, (-1, 4)))
        np.testing.assert_array_equal(labels, [CLASS_OF[c] for c, _ in objects])
    assert records.ignored == {"crowd": 0} and records.skipped == []


@pytest.mark.parametrize("keep_aspect", [True, False])
def test_round_trip_through_the_pipeline(tmp_path, keep_aspect):
    ds, names = load_detection_data(
        write_coco(tmp_path),
        "val",
        image_size=(64, 96),
        batch_size=4,
        keep_aspect=keep_aspect,
    )
    assert names == ["dog", "cat", "bird"]
    images, gt = next(iter(ds))
    images, boxes, classes = images.numpy(), gt["boxes"].numpy(), gt["classes"].numpy()
    assert images.shape == (4, 64, 96, 3) and boxes.shape == (4, 2, 4)  # M = most objects
    for i, (_, (h, w), objects) in enumerate(IMAGES):  # not shuffled: split is not train
        sy, sx = 64 / h, 96 / w
        if keep_aspect:
            sy = sx = min(sy, sx)
            nh, nw = round(h * sy), round(w * sx)
            sy, sx = nh / h, nw / w  # the pipeline scales by the rounded content size
        want = np.array([[y * sy, x * sx, (y + bh) * sy, (x + bw) * sx] for _, (x, y, bw, bh) in objects])
        n = len(objects)
        np.testing.assert_allclose(boxes[i, :n], want.reshape(-1, 4), atol=1e-3)
        np.testing.assert_array_equal(classes[i, :n], [CLASS_OF[c] for c, _ in objects])
        assert np.all(classes[i, n:] == -1)
        for k, (y1, x1, y2, x2) in enumerate(want.reshape(-1, 4)):
            # The middle of each box shows the box's colour (ignoring resampled edges).
            cy, cx = int((y1 + y2) / 2), int((x1 + x2) / 2)
            np.testing.assert_allclose(images[i, cy, cx], COLOURS[k], atol=8)


def test_official_and_roboflow_layouts(tmp_path):
    official = tmp_path / "coco"
    write_coco(official, json_name="annotations/instances_val2017.json", image_subdir="val2017")
    path, image_dir = find_coco_json(official, "val")
    assert path.endswith("instances_val2017.json") and image_dir == str(official / "val2017")
    _, names = load_detection_data(official, "val", image_size=(32, 32), batch_size=2)
    assert names == ["dog", "cat", "bird"]
    # The json file itself also finds the image folder beside `annotations/`.
    ds, _ = load_detection_data(path, "val", image_size=(32, 32), batch_size=4)
    assert next(iter(ds))[0].shape == (4, 32, 32, 3)

    roboflow = tmp_path / "rf"
    write_coco(roboflow / "train", json_name="_annotations.coco.json")
    path, image_dir = find_coco_json(roboflow, "train")
    assert path == str(roboflow / "train" / "_annotations.coco.json") and image_dir is None
    ds, _ = load_detection_data(roboflow, "train", image_size=(32, 32), batch_size=2)
    assert ds.element_spec[0].shape.as_list() == [2, 32, 32, 3]  # training: drop remainder
    with pytest.raises(FileNotFoundError, match="no COCO json for split 'test'"):
        find_coco_json(roboflow, "test")


def test_crowd_boxes_left_out_and_counted_or_kept(tmp_path):
    def add_crowd(data):
        data["annotations"].append(
            {"id": 99, "image_id": 100, "category_id": 3, "bbox": [1, 1, 5, 5], "iscrowd": 1}
        )

    path = write_coco(tmp_path, extra=add_crowd)
    records = read_coco(path)
    assert records.ignored == {"crowd": 1} and records.num_objects == 4
    kept = read_coco(path, keep_crowd=True)
    assert kept.num_objects == 5
    np.testing.assert_array_equal(kept.flags["is_crowd"][0], [False, False, True])
    example = next(iter(kept.to_dataset()))
    np.testing.assert_array_equal(example["objects"]["is_crowd"], [False, False, True])
    np.testing.assert_allclose(example["objects"]["bbox"][2], [1 / 60, 1 / 80, 6 / 60, 6 / 80], rtol=1e-6)


def test_write_coco_json_round_trip(tmp_path):
    records = read_coco(write_coco(tmp_path / "src"))
    out = tmp_path / "gt" / "instances.json"
    data = write_coco_json(records, out)
    assert [c["name"] for c in data["categories"]] == ["dog", "cat", "bird"]
    again = read_coco(out)
    assert again.class_names == records.class_names
    assert again.image_paths == [os.path.abspath(p) for p in records.image_paths]
    for a, b in zip(records.boxes, again.boxes, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)
    for a, b in zip(records.labels, again.labels, strict=True):
        np.testing.assert_array_equal(a, b)


def test_seeded_augmented_batches_are_deterministic(tmp_path):
    path = write_coco(tmp_path, images=IMAGES * 2)
    aug = Augmentation(scale_range=(0.7, 1.3), crop_prob=0.5, brightness=0.1, hue=0.05)

    def run(seed):
        ds, _ = load_detection_data(
            path, image_size=(48, 48), batch_size=4, seed=seed, augment=aug, check_images="header"
        )
        return [(x.numpy(), y["boxes"].numpy(), y["classes"].numpy()) for x, y in ds]

    # (Different seeds giving different batches is tested in test_augment.py.)
    a, b = run(3), run(3)
    assert len(a) == 2
    for batch_a, batch_b in zip(a, b, strict=True):
        for x, y in zip(batch_a, batch_b, strict=True):
            np.testing.assert_array_equal(x, y)



# --- bad data --------------------------------------------------------------------------------


def _set_bbox(ann_id, bbox):
    def edit(data):
        next(a for a in data["annotations"] if a["id"] == ann_id)["bbox"] = bbox

    return edit


def _set_category(data):
    data["annotations"][0]["category_id"] = 5


def _orphan(data):
    data["annotations"].append({"id": 50, "image_id": 999, "category_id": 3, "bbox": [1, 1, 2, 2]})


def _wrong_size(data):
    data["images"][2]["width"] = 99


BAD_ANNOTATIONS = [
    # (edit, the image left out in skip mode (index into IMAGES or None), message pieces)
    (_set_bbox(1, [10, 5, -20, 30]), 0, ["annotation id 1", "'a.png'", "width -20"]),
    (_set_bbox(3, [0, 0, 50, 0]), 1, ["annotation id 3", "'sub/b.png'", "height 0"]),
    (_set_bbox(4, [80, 8, 31, 24]), 2, ["annotation id 4", "'c.jpg'", "outside the 100x40"]),
    (_set_bbox(2, [40, 20, "30", 25]), 0, ["annotation id 2", "4 finite numbers"]),
    (_set_category, 0, ["annotation id 1", "category_id 5 is not in 'categories'", "[3, 7, 12]"]),
    (_orphan, None, ["annotation id 50", "image_id 999 is not in 'images'"]),
    (_wrong_size, 2, ["'c.jpg'", "is 100x40", "annotation says 99x40"]),
]


@pytest.mark.parametrize("edit, skipped, pieces", BAD_ANNOTATIONS)
def test_bad_annotations_name_file_and_entry(tmp_path, edit, skipped, pieces):
    path = write_coco(tmp_path, extra=edit)
    with pytest.raises(DataError) as info:
        read_coco(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(("instances.json: ", str(tmp_path)))
    for piece in pieces:
        assert piece in message
    with pytest.warns(DataWarning, match=r"skipped \d of 4 images with 1 problem") as caught:
        records = read_coco(path, on_error="skip")
    assert pieces[0] in str(caught[0].message)
    assert len(records.skipped) == 1 and pieces[0] in records.skipped[0]
    left = [name for name, _, _ in IMAGES if name != (IMAGES[skipped][0] if skipped is not None else None)]
    assert [os.path.relpath(p, tmp_path) for p in records.image_paths] == left


@pytest.mark.parametrize("check_images", ["decode", "header"])
@pytest.mark.parametrize(
    "damage, pieces",
    [
        (lambda p: os.remove(p), ["'sub/b.png'", "does not exist"]),
        (lambda p: open(p, "wb").close(), ["'sub/b.png'", "is empty"]),
        (lambda p: open(p, "wb").write(b"not an image at all" * 4), ["'sub/b.png'", "not an image"]),
    ],
    ids=["missing", "empty", "garbage"],
)
def test_bad_image_files_name_the_file(tmp_path, damage, pieces, check_images):
    path = write_coco(tmp_path)
    damage(str(tmp_path / "sub" / "b.png"))
    with pytest.raises(DataError) as info:
        read_coco(path, check_images=check_images)
    message = str(info.value)
    assert "\n" not in message and all(p in message for p in pieces), message
    with pytest.warns(DataWarning, match="skipped 1 of 4 images"):
        records = read_coco(path, on_error="skip", check_images=check_images)
    assert len(records) == 3 and "sub/b.png" not in " ".join(records.image_paths)


def test_truncated_jpeg_is_caught_by_decode_check(tmp_path):
    path = write_coco(tmp_path)
    jpeg = tmp_path / "c.jpg"
    data = jpeg.read_bytes()
    jpeg.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"'c.jpg'.*corrupt or not an image.*JPEG"):
        read_coco(path)
    # The header check passes it (documented): decoding it later fails in TensorFlow.
    assert len(read_coco(path, check_images="header")) == 4


def test_several_problems_are_counted_and_default_is_stop(tmp_path):
    def two(data):
        _set_bbox(1, [10, 5, 0, 30])(data)
        _set_category(data)  # annotation 1 again: counted once per problem found
        data["annotations"][3]["bbox"] = [0, 0, -1, 1]

    path = write_coco(tmp_path, extra=two)
    with pytest.raises(DataError, match=r"annotation id 1.*\(1 more problem in .*on_error='skip'"):
        read_coco(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = read_coco(path, on_error="skip")
    assert len(records) == 2 and len(records.skipped) == 2
    assert "skipped 2 of 4 images with 2 problem(s)" in str(caught[0].message)


def test_structural_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="bad.json: not valid JSON"):
        read_coco(bad)
    bad.write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(DataError, match="expected a list under 'categories'"):
        read_coco(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_coco(tmp_path / "nope.json")
    with pytest.raises(ValueError, match="on_error"):
        read_coco(write_coco(tmp_path), on_error="ignore")
    with pytest.raises(ValueError, match="image_size"):
        load_detection_data(write_coco(tmp_path), batch_size=1)
