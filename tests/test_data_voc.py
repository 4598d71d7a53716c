"""VOC-layout folders: round trips, splits, `difficult`, class names, bad data, COCO export."""

import os

import numpy as np
import pytest
import tensorflow as tf

from kerasdet.data import (
    VOC_CLASSES,
    DataError,
    DataWarning,
    load_detection_data,
    read_coco,
    read_voc,
    write_coco_json,
)

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]

# id -> ((height, width), [(name, xmin, ymin, xmax, ymax, difficult), ...])
IMAGES = {
    "000001": ((60, 80), [("dog", 10, 5, 30, 35, 0), ("person", 40, 20, 70, 45, 1)]),
    "000002": ((50, 50), [("cat", 0, 0, 50, 50, 0)]),
    "000003": ((40, 100), [("dog", 60, 8, 91, 32, 0), ("cat", 5, 5, 25, 35, 0)]),
}
SPLITS = {"train": ["000001", "000003"], "val": ["000002"]}


def object_xml(name, x1, y1, x2, y2, difficult):
    return (
        f"<object><name>{name}</name><pose>Left</pose><truncated>0</truncated>"
        f"<difficult>{difficult}</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
        f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox>"
        # A person-layout part: its <name> must not be taken for a class.
        f"<part><name>hand</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax>"
        f"<ymax>2</ymax></bndbox></part></object>"
    )


def write_voc(root, images=IMAGES, splits=SPLITS, sizes=True):
    root = str(root)
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    for image_id, ((h, w), objects) in images.items():
        image = np.zeros((h, w, 3), np.uint8)
        for k, (_, x1, y1, x2, y2, _) in enumerate(objects):
            image[y1:y2, x1:x2] = COLOURS[k % 3]
        with open(os.path.join(root, "JPEGImages", f"{image_id}.jpg"), "wb") as f:
            f.write(tf.io.encode_jpeg(image, quality=100).numpy())
        size = f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>" if sizes else ""
        xml = (
            f"<annotation><folder>VOC2007</folder><filename>{image_id}.jpg</filename>{size}"
            + "".join(object_xml(*o) for o in objects)
            + "</annotation>"
        )
        with open(os.path.join(root, "Annotations", f"{image_id}.xml"), "w") as f:
            f.write(xml)
    for split, ids in splits.items():
        with open(os.path.join(root, "ImageSets", "Main", f"{split}.txt"), "w") as f:
            f.write("\n".join(ids) + "\n")
    return root


def test_read_voc_boxes_classes_and_difficult(tmp_path):
    records = read_voc(write_voc(tmp_path), "train")
    assert records.class_names == list(VOC_CLASSES)  # every name is a VOC class
    assert [os.path.basename(p) for p in records.image_paths] == ["000001.jpg", "000003.jpg"]
    assert records.ignored == {"difficult": 1}  # the difficult person
    np.testing.assert_allclose(records.boxes[0], [[5, 10, 35, 30]])
    np.testing.assert_allclose(records.boxes[1], [[8, 60, 32, 91], [5, 5, 35, 25]])
    dog, cat = VOC_CLASSES.index("dog"), VOC_CLASSES.index("cat")
    np.testing.assert_array_equal(records.labels[1], [dog, cat])
    kept = read_voc(tmp_path, "train", keep_difficult=True)
    np.testing.assert_array_equal(kept.flags["is_difficult"][0], [False, True])
    assert kept.labels[0][1] == VOC_CLASSES.index("person") and kept.ignored == {"difficult": 0}
    # Like TFDS's voc builder: xmin / width with no 1-pixel shift.
    example = next(iter(kept.to_dataset()))
    np.testing.assert_allclose(example["objects"]["bbox"][1], [20 / 60, 40 / 80, 45 / 60, 70 / 80])
    assert read_voc(tmp_path, None).image_ids == [1, 2, 3]  # every xml


def test_round_trip_through_the_pipeline(tmp_path):
    ds, names = load_detection_data(
        write_voc(tmp_path), "val", image_size=(100, 100), batch_size=1
    )
    assert names == list(VOC_CLASSES)
    images, gt = next(iter(ds))
    np.testing.assert_allclose(gt["boxes"][0, 0], [0, 0, 100, 100])
    assert gt["classes"].numpy().tolist() == [[VOC_CLASSES.index("cat")]]
    np.testing.assert_allclose(images[0, 50, 50], COLOURS[0], atol=8)
    train, _ = load_detection_data(tmp_path, "train", image_size=(30, 50), batch_size=2, seed=1)
    images, gt = next(iter(train))
    assert images.shape == (2, 30, 50, 3) and gt["boxes"].shape == (2, 2, 4)


def test_custom_class_names(tmp_path):
    images = {"a": ((20, 20), [("Widget", 1, 1, 10, 10, 0)]), "b": ((20, 20), [("gadget", 2, 2, 9, 9, 0)])}
    root = write_voc(tmp_path, images, {"train": ["a"], "val": ["b"]})
    # Inferred from every xml of the folder, so train and val agree.
    assert read_voc(root, "train").class_names == ["Widget", "gadget"]
    assert read_voc(root, "val").class_names == ["Widget", "gadget"]
    records = read_voc(root, "val", class_names=["gadget", "Widget"])
    assert records.labels[0].tolist() == [0]
    with pytest.raises(DataError, match=r"a.xml: object 0 \('Widget'\): object name 'Widget' is not one of"):
        read_voc(root, "train", class_names=["gadget"])


def test_size_missing_from_xml_comes_from_the_image(tmp_path):
    records = read_voc(write_voc(tmp_path, sizes=False), "train", check_images="header")
    np.testing.assert_array_equal(records.image_sizes, [[60, 80], [40, 100]])
    bad = {"x": ((20, 30), [("dog", 1, 1, 35, 10, 0)])}  # outside the 30-wide image
    root = write_voc(tmp_path / "bad", bad, {"train": ["x"]}, sizes=False)
    with pytest.raises(DataError, match=r"x.xml: object 0 \('dog'\): box .* outside the 30x20"):
        read_voc(root, "train")


def _replace(image_id, old, new):
    def edit(root):
        path = os.path.join(root, "Annotations", f"{image_id}.xml")
        text = open(path).read()
        assert old in text
        open(path, "w").write(text.replace(old, new, 1))

    return edit


BAD = [
    (_replace("000003", "<xmax>91</xmax>", "<xmax>50</xmax>"), "000003", ["000003.xml", "object 0 ('dog')", "width -10"]),
    (_replace("000003", "<ymax>32</ymax>", "<ymax>8</ymax>"), "000003", ["000003.xml", "height 0"]),
    (_replace("000003", "<xmax>91</xmax>", "<xmax>120</xmax>"), "000003", ["000003.xml", "outside the 100x40"]),
    (_replace("000001", "<name>dog</name>", "<name>dragon</name>"), "000001", ["000001.xml", "'dragon' is not one of"]),
    (_replace("000001", "<xmin>10</xmin>", "<xmin>ten</xmin>"), "000001", ["000001.xml", "numeric", "'xmin': 'ten'"]),
    (_replace("000001", "</annotation>", ""), "000001", ["000001.xml", "not valid XML"]),
    (lambda root: os.remove(os.path.join(root, "JPEGImages", "000003.jpg")), "000003", ["000003.xml", "000003.jpg does not exist"]),
    (lambda root: open(os.path.join(root, "JPEGImages", "000001.jpg"), "wb").write(b"\xff\xd8\xff" + b"0" * 40), "000001", ["000001.xml", "000001.jpg is"]),
    (_replace("000001", "<width>80</width>", "<width>81</width>"), "000001", ["000001.xml", "is 80x60", "says 81x60"]),
]


@pytest.mark.parametrize("edit, skipped, pieces", BAD, ids=["neg-width", "zero-height", "outside", "unknown-class", "non-numeric", "bad-xml", "missing-image", "corrupt-image", "size"])
def test_bad_entries_name_file_and_entry(tmp_path, edit, skipped, pieces):
    root = write_voc(tmp_path)
    edit(root)
    with pytest.raises(DataError) as info:
        read_voc(root, "train", class_names=list(VOC_CLASSES))
    message = str(info.value)
    assert "\n" not in message and all(p in message for p in pieces), message
    with pytest.warns(DataWarning, match="skipped 1 of 2 images with 1 problem"):
        records = read_voc(root, "train", class_names=list(VOC_CLASSES), on_error="skip")
    assert len(records.skipped) == 1
    left = {"000001", "000003"} - {skipped}
    assert {os.path.basename(p)[:6] for p in records.image_paths} == left


def test_missing_split_lists_the_available_ones(tmp_path):
    root = write_voc(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"test.txt does not exist; splits found: \['train', 'val'\]"):
        read_voc(root, "test")
    with pytest.raises(FileNotFoundError, match="not a VOC folder"):
        read_voc(tmp_path / "JPEGImages")


def test_voc_to_coco_json_round_trip(tmp_path):
    records = read_voc(write_voc(tmp_path / "voc"), "train", keep_difficult=True)
    path = tmp_path / "gt.json"
    data = write_coco_json(records, path)
    assert data["categories"][0] == {"id": 1, "name": "aeroplane"}
    assert data["annotations"][0]["bbox"] == [10, 5, 20, 30]  # [x, y, w, h]
    again = read_coco(path, keep_crowd=True)
    assert again.class_names == records.class_names
    for a, b in zip(records.boxes, again.boxes, strict=True):
        np.testing.assert_allclose(a, b)
    for a, b in zip(records.labels, again.labels, strict=True):
        np.testing.assert_array_equal(a, b)


def test_split_aliases(tmp_path):
    from kerasdet.data import read_records

    root = write_voc(tmp_path)
    assert len(read_records(root, "validation")) == 1  # ImageSets/Main/val.txt
    with pytest.raises(FileNotFoundError, match="test.txt does not exist"):
        read_records(root, "test")
