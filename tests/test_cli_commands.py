"""`kerasdet zoo | train | evaluate | detect`, run in-process through `kerasdet.cli.main`."""

import json
import re

import numpy as np
import pytest
import yaml

from kerasdet import visualize, zoo
from kerasdet.cli import main
from kerasdet.data.shapes import CLASS_NAMES, make_example
from kerasdet.zoo import config as zoo_config

# A tiny Faster R-CNN run: 64×64 shapes, 4 images, 2 steps of 2 images, 2 validation images.
TRAIN_ARGS = ["--data", "shapes/tiny", "--image-size", "64", "64", "--epochs", "1", "--steps", "2",
              "--batch-size", "2", "--max-images", "4", "--val-images", "2", "--verbose", "0"]


def _one_line_error(capsys, command):
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"kerasdet {command}: error: "), err
    assert "\n" not in err and "Traceback" not in err
    return err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`kerasdet train faster_rcnn_tiny` on a handful of tiny images; its output directory.

    Eager steps: two steps skip the ~15 s train-step trace (graph mode runs in the slow
    fine-tuning test below and in tests/test_faster_rcnn.py)."""
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "faster_rcnn_tiny", *TRAIN_ARGS, "--run-eagerly", "--output", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Two shapes images written as PNG files of different sizes."""
    directory = tmp_path_factory.mktemp("images")
    paths = []
    for i, size in enumerate([(64, 64), (48, 96)]):
        image = make_example("validation", i, "tiny")["image"]
        image = np.pad(image, [(0, max(size[0] - 64, 0)), (0, max(size[1] - 64, 0)), (0, 0)])[: size[0], : size[1]]
        paths.append(visualize.save_png(directory / f"img{i}.png", image))
    return paths


def test_help_for_every_command(capsys):
    for command in ("zoo", "train", "evaluate", "detect"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        assert f"usage: kerasdet {command}" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("demo", "zoo", "train", "evaluate", "detect"):
        assert command in out


def test_zoo_list_and_info(capsys):
    assert main(["zoo", "list"]) == 0
    out = capsys.readouterr().out
    for name in zoo.list():
        assert name in out
    assert re.search(r"^faster_rcnn_tiny +faster_rcnn +256x256 +5 +shapes +Faster R-CNN", out, re.M)
    assert main(["zoo", "info", "overfeat_tiny"]) == 0
    out = capsys.readouterr().out
    assert "overfeat_tiny (overfeat)" in out and "scales: [0.6, 0.85, 1.2, 1.7, 2.4, 3.4]" in out
    assert main(["zoo", "info", "faster_rcnn_tiny", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"]["head_units"] == [256, 256]


def test_zoo_info_counts_parameters(capsys):
    assert main(["zoo", "info", "faster_rcnn_tiny", "--count-params"]) == 0
    assert "parameters: 1,5" in capsys.readouterr().out  # 1,574,871 at 256×256


def test_unknown_zoo_name_is_one_line_with_a_suggestion(capsys):
    assert main(["zoo", "info", "overfeat_tin"]) == 2
    assert "Did you mean 'overfeat_tiny'?" in _one_line_error(capsys, "zoo")
    assert main(["train", "faster_rcnn_tin"]) == 2
    assert "Did you mean 'faster_rcnn_tiny'?" in _one_line_error(capsys, "train")


def test_train_writes_weights_config_and_checkpoints(trained, capsys):
    weights = trained / "faster_rcnn_tiny.weights.h5"
    assert weights.is_file() and (trained / "checkpoints" / "last.weights.h5").is_file()
    config = zoo.get_config(str(trained / "faster_rcnn_tiny.yaml"))
    entry = config.weights["trained"]
    assert entry.file == weights.name and entry.sha256 == zoo.sha256_of(weights)
    assert entry.classes == tuple(CLASS_NAMES) and set(entry.metrics) <= {"AP", "AP50", "AP75"}
    assert entry.command.startswith("kerasdet train faster_rcnn_tiny --data shapes/tiny")
    assert config.model["image_size"] == [64, 64] and config.train["train_images"] == 4
    # The written configuration loads the trained weights by its entry name.
    model = zoo.load(str(trained / "faster_rcnn_tiny.yaml"), weights="trained")
    assert model.num_classes == 5


@pytest.mark.slow
def test_train_fine_tunes_from_weights(trained, tmp_path, capsys):
    """`--weights` initializes from a file; the shapes data have 5 classes, as the file."""
    out = tmp_path / "finetune"
    assert main(["train", str(trained / "faster_rcnn_tiny.yaml"), *TRAIN_ARGS, "--val-images", "0",
                 "--weights", "trained", "--steps", "1", "--output", str(out)]) == 0
    assert (out / "faster_rcnn_tiny.weights.h5").is_file()
    assert zoo.get_config(str(out / "faster_rcnn_tiny.yaml")).weights["trained"].metrics == {}


def test_evaluate_prints_the_coco_table(trained, tmp_path, capsys):
    result = tmp_path / "metrics.json"
    assert main(["evaluate", str(trained / "faster_rcnn_tiny.yaml"), "--data", "shapes/tiny", "--max-images", "3",
                 "--per-class", "--json", str(result)]) == 0
    out = capsys.readouterr().out
    assert "Average Precision  (AP) @[ IoU=0.50      | area=   all | maxDets=100 ]" in out
    assert "faster_rcnn_tiny on shapes/tiny validation (3 images): AP " in out
    assert "AP circle:" in out
    record = json.loads(result.read_text())
    assert record["images"] == 3 and "AP50" in record["metrics"]


def test_evaluate_without_weights_is_a_one_line_error(capsys):
    assert main(["evaluate", "faster_rcnn_mobilenetv2"]) == 2
    assert "has no weights entry: pass --weights" in _one_line_error(capsys, "evaluate")


def test_detect_writes_annotated_png_and_json(trained, images, tmp_path, capsys):
    out = tmp_path / "detections"
    grid = tmp_path / "grid.png"
    assert main(["detect", str(trained / "faster_rcnn_tiny.yaml"), *images, "--output", str(out),
                 "--score-threshold", "0.0", "--grid", str(grid)]) == 0
    for index, (h, w) in enumerate([(64, 64), (48, 96)]):
        drawn = visualize.read_image(out / f"img{index}.png")
        assert drawn.shape == (h, w, 3)
        record = json.loads((out / f"img{index}.json").read_text())
        assert record["height"] == h and record["width"] == w and record["image"] == images[index]
        for det in record["detections"]:
            y1, x1, y2, x2 = det["box"]
            assert 0 <= y1 <= y2 <= h and 0 <= x1 <= x2 <= w
            assert det["class"] == CLASS_NAMES[det["class_id"]] and 0.0 <= det["score"] <= 1.0
            assert det["bbox"] == pytest.approx([x1, y1, x2 - x1, y2 - y1], abs=0.02)
    assert visualize.read_image(grid).shape[2] == 3


def test_letterbox_fits_keeping_the_aspect_ratio():
    from kerasdet.cli.detect import letterbox

    image = np.full([48, 96, 3], 200, np.uint8)
    boxed, (sy, sx) = letterbox(image, (64, 64))
    assert boxed.shape == (64, 64, 3) and boxed.dtype == np.float32
    assert (sy, sx) == (32 / 48, 64 / 96)
    np.testing.assert_allclose(boxed[:32], 200.0)
    np.testing.assert_array_equal(boxed[32:], 0.0)  # padding at the bottom


def test_load_data_gives_padded_batches_of_the_model_size():
    from kerasdet.cli.train import _load_data

    data = _load_data("shapes/tiny", "validation", image_size=(80, 96), batch_size=2, max_images=3)
    assert data.class_names == tuple(CLASS_NAMES) and data.num_images == 3
    batches = list(data.dataset)
    assert [b[0].shape[0] for b in batches] == [2, 1]
    images, truth = batches[0]
    assert images.shape[1:] == (80, 96, 3) and truth["boxes"].shape[1:] == (4, 4)  # tiny: <= 4 objects
    expected = make_example("validation", 0, "tiny")
    n = len(expected["boxes"])
    # 64×64 letterboxed into 80×96: scale 1.25, boxes scaled with it.
    np.testing.assert_allclose(truth["boxes"][0, :n].numpy(), expected["boxes"] * 1.25, atol=1e-4)
    np.testing.assert_array_equal(truth["classes"][0, n:].numpy(), -1)


def test_detect_errors_are_one_line(trained, images, tmp_path, capsys):
    config = str(trained / "faster_rcnn_tiny.yaml")
    assert main(["detect", config, str(tmp_path / "missing.png")]) == 2
    assert "missing.png" in _one_line_error(capsys, "detect")
    assert main(["detect", config, images[0], "--class-names", "a,b"]) == 2
    assert "--class-names lists 2 names, the model has 5 classes" in _one_line_error(capsys, "detect")
    assert main(["detect", config, images[0], "--weights", "nope"]) == 2
    assert "unknown weights 'nope'" in _one_line_error(capsys, "detect")


def test_bad_train_arguments(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default output directory is runs/NAME
    assert main(["train", "faster_rcnn_tiny", "--data", "shapez"]) == 2
    assert "unknown data source 'shapez'. Did you mean 'shapes'?" in _one_line_error(capsys, "train")
    assert main(["train", "overfeat", "--minutes", "1"]) == 2  # the crop recipe trains by epochs
    assert "--minutes is for Faster R-CNN and OverFeat's dense recipe" in _one_line_error(capsys, "train")
    assert main(["train", "faster_rcnn_tiny", "--data", "shapes/tiny", "--max-images", "2", "--batch-size", "4"]) == 2
    assert "2 training images make no full batch of --batch-size 4" in _one_line_error(capsys, "train")
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "faster_rcnn_tiny", "--epochs", "0"])
    assert exit_info.value.code == 2
    assert "expected a positive integer, got '0'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # nothing written for a failed command


@pytest.mark.slow
def test_train_overfeat_runs_the_staged_recipe(tmp_path, capsys):
    """OverFeat's crop recipe from a user YAML (96×96, one scale): classifier → localizer →
    detector (the dense recipe: tests/test_cli_train_overfeat.py)."""
    data = yaml.safe_load((zoo_config.CONFIG_DIR / "overfeat_tiny.yaml").read_text())
    data["model"].update(image_size=[96, 96], scales=[1.0])
    data["train"]["recipe"] = "crops"
    config = tmp_path / "overfeat_small.yaml"
    config.write_text(yaml.safe_dump(data))
    out = tmp_path / "run"
    assert main(["train", str(config), "--data", "shapes/tiny", "--image-size", "96", "96", "--epochs", "1",
                 "--steps", "1", "--batch-size", "16", "--max-images", "4", "--val-images", "2", "--verbose", "0",
                 "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "stage 1/2: classifier" in printed and "stage 2/2: box regressor" in printed
    assert not (out / "checkpoints" / "after_classifier.weights.h5").exists()  # removed once complete
    assert (out / "checkpoints" / "classifier_last.weights.h5").is_file()
    trained = zoo.get_config(str(out / "overfeat_tiny.yaml"))
    detector = zoo.load(str(out / "overfeat_tiny.yaml"), weights="trained")
    assert trained.family == "overfeat" and detector.output["boxes"].shape[1:] == (100, 4)
