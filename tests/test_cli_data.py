"""`kerasdet train --data` / `kerasdet evaluate --data` on COCO folders and TFDS names.

The fixture is a tiny COCO folder written by the test: 64×64 PNG images with filled
rectangles, category ids 7 ("box") and 12 ("bar"), `train.json` (four good images and one
with a bad annotation) and `val.json` (two images).
"""

import contextlib
import dataclasses
import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from kerasdet import zoo
from kerasdet.cli import main

CATEGORIES = [{"id": 12, "name": "bar"}, {"id": 7, "name": "box"}]  # unsorted: ids decide the order
CLASS_NAMES = ("box", "bar")  # class 0 = category 7, class 1 = category 12
FAST = ["--image-size", "64", "64", "--epochs", "1", "--steps", "2", "--batch-size", "2", "--verbose", "0",
        "--run-eagerly"]


# Every test here runs offline (fixture in conftest.py).
pytestmark = pytest.mark.usefixtures("no_network")


def _write_split(folder, name, images):
    """images: [(file, [(category id, [x, y, w, h]), ...])]; writes the PNGs and `name`."""
    data = {"images": [], "annotations": [], "categories": CATEGORIES}
    for i, (file_name, objects) in enumerate(images):
        image = np.full((64, 64, 3), 30, np.uint8)
        for k, (_, (x, y, w, h)) in enumerate(objects):
            image[int(y): int(y + h), int(x): int(x + w)] = (220, 60 + 80 * k, 40)
        path = os.path.join(folder, "images", file_name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tf.io.write_file(path, tf.io.encode_png(image))
        data["images"].append({"id": i + 1, "file_name": f"images/{file_name}", "height": 64, "width": 64})
        for category, box in objects:
            data["annotations"].append({"id": len(data["annotations"]) + 1, "image_id": i + 1,
                                        "category_id": category, "bbox": box, "area": box[2] * box[3],
                                        "iscrowd": 0})
    with open(os.path.join(folder, name), "w") as f:
        json.dump(data, f)


@pytest.fixture(scope="module")
def coco_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("coco")
    _write_split(folder, "train.json", [
        ("t0.png", [(7, [8, 8, 20, 20]), (12, [36, 10, 20, 40])]),
        ("t1.png", [(12, [5, 30, 50, 12])]),
        ("t2.png", [(7, [30, 30, 25, 25])]),
        ("t3.png", []),  # an image without objects is valid
        ("bad.png", [(99, [10, 10, 10, 10])]),  # a category the json does not declare
    ])
    _write_split(folder, "val.json", [
        ("v0.png", [(7, [10, 12, 22, 20])]),
        ("v1.png", [(12, [20, 8, 16, 44]), (7, [40, 40, 18, 18])]),
    ])
    return folder


@pytest.fixture(scope="module")
def trained(coco_folder, tmp_path_factory):
    """`kerasdet train faster_rcnn_tiny --data FOLDER --on-error skip`: its output and what it
    printed."""
    out = tmp_path_factory.mktemp("run")
    # capsys is function-scoped: capture this module-scoped run by hand.
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["train", "faster_rcnn_tiny", "--data", str(coco_folder), *FAST, "--val-images", "2",
                     "--on-error", "skip", "--output", str(out)])
    assert code == 0, stderr.getvalue()
    return out, stdout.getvalue(), stderr.getvalue()


def _one_line_error(capsys, command):
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"kerasdet {command}: error: ") and "\n" not in err, err
    return err


def test_train_on_a_coco_folder_uses_its_classes(trained, coco_folder):
    out, printed, stderr = trained
    assert (f"{coco_folder} has 2 classes (box, bar); building faster_rcnn_tiny with num_classes=2 instead of "
            "the configuration's 5") in printed
    # The bad image is left out, said in one line.
    skipped = [line for line in stderr.splitlines() if line.startswith("kerasdet: ")]
    assert len(skipped) == 1 and "category_id 99 is not in 'categories'" in skipped[0], stderr
    assert f"on 4 {coco_folder} images" in printed
    config = zoo.get_config(str(out / "faster_rcnn_tiny.yaml"))
    entry = config.weights["trained"]
    assert entry.classes == CLASS_NAMES and config.model["num_classes"] == 2
    assert config.train["dataset"] == str(coco_folder)
    assert entry.command.endswith("--on-error skip") and "--data " + str(coco_folder) in entry.command
    assert set(entry.metrics) == {"AP", "AP50", "AP75"} and entry.dataset == f"{coco_folder} validation (2 images)"
    model = zoo.load(str(out / "faster_rcnn_tiny.yaml"), weights="trained")
    assert model.num_classes == 2


def test_evaluate_on_the_coco_folder_prints_the_ap_table(trained, coco_folder, capsys, tmp_path):
    out, _, _ = trained
    result = tmp_path / "metrics.json"
    assert main(["evaluate", str(out / "faster_rcnn_tiny.yaml"), "--data", str(coco_folder), "--per-class",
                 "--json", str(result)]) == 0
    printed = capsys.readouterr().out
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] =" in printed
    assert f"faster_rcnn_tiny on {coco_folder} validation (2 images): AP " in printed
    assert "AP box:" in printed and "AP bar:" in printed
    record = json.loads(result.read_text())
    assert record["images"] == 2 and record["data"] == str(coco_folder)


@pytest.mark.slow
def test_evaluate_defaults_to_the_configurations_data_and_warns_on_other_names(trained, coco_folder, capsys, tmp_path):
    """Without --data the dataset the run trained on (written into NAME.yaml) is evaluated.
    Weights whose class names differ from the data's (same count) get a one-line warning."""
    out, _, _ = trained
    renamed = tmp_path / "renamed.yaml"
    config = zoo.get_config(str(out / "faster_rcnn_tiny.yaml"))
    entry = config.weights["trained"]
    (tmp_path / entry.file).write_bytes((out / entry.file).read_bytes())
    config.with_weights({"trained": dataclasses.replace(entry, classes=("cat", "dog"))}).dump(renamed)
    assert main(["evaluate", str(renamed), "--split", "val", "--max-images", "1"]) == 0
    captured = capsys.readouterr()
    assert f"on {coco_folder} val (1 images)" in captured.out
    assert captured.err.strip() == (
        "kerasdet evaluate: warning: the weights' classes (cat, dog) are not the data's (box, bar); class ids are "
        "compared as they are"
    )


def test_a_bad_annotation_stops_train_in_one_line_by_default(coco_folder, capsys, tmp_path):
    assert main(["train", "faster_rcnn_tiny", "--data", str(coco_folder), *FAST,
                 "--output", str(tmp_path / "run")]) == 2
    err = _one_line_error(capsys, "train")
    assert "train.json" in err and "category_id 99 is not in 'categories'" in err
    assert not (tmp_path / "run").exists()  # nothing written


def test_load_data_reads_coco_folders_with_max_images(coco_folder):
    from kerasdet.cli.train import _load_data

    data = _load_data(str(coco_folder), "validation", image_size=(80, 96), batch_size=2, max_images=1)
    assert data.class_names == CLASS_NAMES and data.num_images == 1
    (images, truth), = list(data.dataset)
    assert images.shape == (1, 80, 96, 3)
    # 64×64 letterboxed into 80×96: scale 1.25. COCO [x, y, w, h] [10, 12, 22, 20] → yxyx.
    np.testing.assert_allclose(truth["boxes"][0, 0].numpy(), np.array([12, 10, 32, 32]) * 1.25, atol=1e-4)
    assert truth["classes"].numpy().tolist() == [[0]]


def test_bad_data_arguments_are_one_line(trained, capsys, tmp_path):
    small = tmp_path / "small"  # one training image, no validation split
    _write_split(small, "train.json", [("a.png", [(7, [1, 1, 9, 9])])])
    _write_split(small, "other.json", [("b.png", [])])
    cases = [
        (["--data", str(tmp_path / "nowhere" / "data.json")], "--data '" + str(tmp_path / "nowhere" / "data.json")
         + "' does not exist (expected a COCO json file or a folder)"),
        (["--data", "mydata"], "unknown data source 'mydata'. Expected an existing COCO json file or folder"),
        (["--data", "vocc/2007"], "unknown data source 'vocc/2007'. Did you mean 'voc/2007'? Expected an existing"),
        (["--data", "shapes/tiny", "--on-error", "skip"], "--on-error skip applies to COCO / VOC folders"),
        (["--data", str(small)], "1 training images make no full batch of --batch-size 2"),
        (["--data", str(small), "--batch-size", "1"], f"no COCO json for split 'validation' in {small}"),
    ]
    for argv, message in cases:
        assert main(["train", "faster_rcnn_tiny", *FAST, *argv, "--output", str(tmp_path / "run")]) == 2
        assert message in _one_line_error(capsys, "train")
    assert not (tmp_path / "run").exists()  # every error came before anything was written
    assert main(["evaluate", str(trained[0] / "faster_rcnn_tiny.yaml"), "--data", str(small)]) == 2
    assert f"no COCO json for split 'validation' in {small}" in _one_line_error(capsys, "evaluate")


@pytest.mark.slow
def test_train_on_a_tfds_name_offline_with_mock_data(tmp_path, capsys):
    """A TFDS name goes through `load_detection_data` (here TFDS's mock data: no network);
    `--max-images` becomes a split slice."""
    from test_data_tfds_mock import consistent_mock, raw_examples, voc_example

    raw = raw_examples(4, seed=5, num_classes=20)
    out = tmp_path / "run"
    with consistent_mock(raw, voc_example):
        assert main(["train", "faster_rcnn_tiny", "--data", "voc/2007", *FAST, "--steps", "1", "--max-images", "2",
                     "--val-images", "0", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "voc/2007 has 20 classes (aeroplane, bicycle, bird, boat, bottle, bus, car, cat, ...)" in printed
    assert "on voc/2007 images" in printed  # TFDS does not tell the count without reading
    assert zoo.get_config(str(out / "faster_rcnn_tiny.yaml")).weights["trained"].classes[0] == "aeroplane"


def test_a_tfds_dataset_that_needs_a_download_is_one_line_offline(tmp_path, capsys, monkeypatch):
    import tensorflow_datasets as tfds

    monkeypatch.setattr(tfds.core.constants, "DATA_DIR", str(tmp_path / "tfds"))  # nothing prepared there
    assert main(["train", "faster_rcnn_tiny", "--data", "voc/2007", *FAST, "--output", str(tmp_path / "run")]) == 2
    err = _one_line_error(capsys, "train")
    assert "could not load TFDS dataset 'voc/2007' (" in err and "needs network access" in err
