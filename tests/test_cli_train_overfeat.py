"""`kerasdet train` for OverFeat configurations with `train.recipe: dense`."""

import argparse
import shutil

import yaml

from kerasdet import zoo
from kerasdet.cli import main
from kerasdet.cli.train import _train_overrides, register
from kerasdet.zoo import config as zoo_config


def _one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("kerasdet train: error: "), err
    assert "\n" not in err and "Traceback" not in err
    return err


def _small_config(tmp_path, **train):
    """overfeat_tiny (its dense recipe) at 96×96, one scale, 110×110 patches (2×2 windows)."""
    data = yaml.safe_load((zoo_config.CONFIG_DIR / "overfeat_tiny.yaml").read_text())
    data["model"].update(image_size=[96, 96], scales=[1.0])
    data["train"].update(patch_size=110, scale_range=[0.8, 1.6], crop_images=4, **train)
    path = tmp_path / "overfeat_small.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _parse(argv):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(["train", *argv])


def test_dense_recipe_trains_end_to_end_and_resumes_at_the_localizer(tmp_path, capsys):
    config = _small_config(tmp_path, minutes=None)  # each stage's own minutes, printed exactly
    out = tmp_path / "run"
    argv = ["train", str(config), "--data", "shapes/tiny", "--image-size", "96", "96", "--epochs", "1", "--steps", "2",
            "--batch-size", "2", "--max-images", "6", "--verbose", "0", "--output", str(out)]
    assert main([*argv, "--val-images", "2"]) == 0
    printed = capsys.readouterr().out
    assert "OverFeat dense recipe on 6 images" in printed
    assert "stage 1/3: classifier on" in printed and "window crops of 4 images, 1 epochs" in printed
    assert "stage 2/3: dense classifier on 110×110 patches of 6 images (8.40 min or 2 steps)" in printed
    assert "stage 3/3: dense box regressor on the frozen layers 1-5 (4.00 min or 2 steps)" in printed
    for stage in ("crops", "classifier"):  # removed once the run is complete
        assert not (out / "checkpoints" / f"after_{stage}.weights.h5").exists()
    assert (out / "checkpoints" / "localizer_last.weights.h5").is_file()
    trained = zoo.get_config(str(out / "overfeat_tiny.yaml"))
    assert trained.train["recipe"] == "dense" and trained.train["crop_epochs"] == 1
    detector = zoo.load(str(out / "overfeat_tiny.yaml"), weights="trained")
    assert detector.output["boxes"].shape[1:] == (100, 4)

    # Interrupted after the classifier stages: a rerun trains the localizer only.
    shutil.copy(out / "overfeat_tiny.weights.h5", out / "checkpoints" / "after_classifier.weights.h5")
    assert main([*argv, "--val-images", "0"]) == 0
    printed = capsys.readouterr().out
    assert "the classifier stage is done already" in printed and "resuming at the localizer" in printed
    assert "stage 3/3: dense box regressor" in printed and "stage 2/3" not in printed
    assert not (out / "checkpoints" / "after_classifier.weights.h5").exists()


def test_flags_map_to_the_dense_recipe_keys():
    args = _parse(["overfeat_tiny", "--epochs", "3", "--minutes", "12", "--learning-rate", "1e-3"])
    assert _train_overrides(args, "overfeat", "dense") == {"crop_epochs": 3, "minutes": 12.0, "learning_rate": 1e-3}
    args = _parse(["overfeat", "--epochs", "3"])
    assert _train_overrides(args, "overfeat", "crops") == {"classifier_epochs": 3, "localizer_epochs": 3}
    config = zoo.get_config("overfeat_tiny").with_train(_train_overrides(_parse(["x", "--minutes", "15"]), "overfeat",
                                                                         "dense"))
    assert config.train["minutes"] == 15.0


def test_minutes_with_the_crop_recipe_and_an_unknown_recipe_are_one_line_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default output directory is runs/NAME
    assert main(["train", "overfeat", "--minutes", "1"]) == 2
    assert ("--minutes is for Faster R-CNN and OverFeat's dense recipe; this configuration's train.recipe is "
            "'crops', which trains by --epochs per stage (expected train.recipe: dense)") in _one_line_error(capsys)
    assert main(["train", str(_small_config(tmp_path, recipe="dence"))]) == 2
    assert ("overfeat_small.yaml: `train.recipe` must be one of ['crops', 'dense'], got 'dence'. Did you mean 'dense'?"
            in _one_line_error(capsys))
    assert not (tmp_path / "runs").exists()

