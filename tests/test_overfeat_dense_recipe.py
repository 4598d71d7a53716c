"""`kerasdet.training.overfeat_dense_recipe`: OverFeat's dense recipe (crop pre-training,
dense classifier, dense localizer) in one call, by steps or minutes."""

import keras
import numpy as np
import pytest

from kerasdet.data.shapes import generate_example
from kerasdet.models import overfeat_classifier
from kerasdet.training import overfeat_dense_recipe as recipe
from kerasdet.training.overfeat_dense_recipe import (
    StopAfterSteps,
    fit_dense_recipe,
    split_minutes,
    stage_schedule,
)

# Small and fast: 110×110 patches (2×2 windows of tiny's 86, stride 24), batches of 2.
SMALL = dict(batch_size=2, patch_size=110, scale_range=(0.8, 1.6), classifier_minutes=None, localizer_minutes=None,
             verbose=0)


def _examples(count=6, size=128):
    rng = np.random.default_rng(0)
    return [generate_example(rng, size, size, max_objects=3, min_size=30, max_size=80) for _ in range(count)]


def _classifier():
    keras.utils.set_random_seed(0)
    return overfeat_classifier("tiny", num_classes=6, dropout=0.0)


def test_steps_train_every_stage_and_stop_at_the_caps(monkeypatch):
    # Epochs of 2 steps: the classifier's 3 steps end with an epoch cut short after 1.
    monkeypatch.setattr(recipe, "LOG_EVERY", 2)
    classifier = _classifier()
    conv1 = classifier.get_layer("conv1").get_weights()[0].copy()
    snapshots, messages = {}, []

    def snapshot(stage):
        snapshots[stage] = classifier.get_layer("conv1").get_weights()[0].copy()

    result = fit_dense_recipe(
        classifier, _examples(), crop_epochs=1, crop_images=4, crop_steps=1, classifier_steps=3, localizer_steps=2,
        on_stage_end=snapshot, log=messages.append, **SMALL,
    )
    assert list(snapshots) == ["crops", "classifier", "localizer"]
    assert [m.split(":")[0] for m in messages] == ["stage 1/3", "stage 2/3", "stage 3/3"]
    assert "dense classifier on 110×110 patches of 6 images (3 steps)" in messages[1]
    assert set(result.seconds) == {"crop_classifier", "dense_classifier", "dense_localizer"}
    assert result.classifier is classifier and result.localizer.output.shape[-1] == 4 * 5

    assert int(classifier.optimizer.iterations) == 3 and int(result.localizer.optimizer.iterations) == 2
    assert len(result.histories["classifier"].history["loss"]) == 2  # epochs of 2 + 1 steps
    assert len(result.histories["localizer"].history["loss"]) == 1
    for stage, history in result.histories.items():
        assert np.all(np.isfinite(history.history["loss"])), stage
    # Each classifier stage moves layer 1; the localizer's stage leaves it (frozen).
    assert not np.array_equal(snapshots["crops"], conv1)
    assert not np.array_equal(snapshots["classifier"], snapshots["crops"])
    np.testing.assert_array_equal(snapshots["localizer"], snapshots["classifier"])


def test_start_at_the_localizer_trains_it_alone():
    classifier = _classifier()
    weights = [w.copy() for w in classifier.get_weights()]
    messages = []
    result = fit_dense_recipe(classifier, _examples(4), crop_epochs=2, start_at="localizer", localizer_steps=1,
                              log=messages.append, **SMALL)
    assert messages[0].startswith("stage 3/3: dense box regressor") and len(messages) == 1
    assert list(result.histories) == ["localizer"] and list(result.seconds) == ["dense_localizer"]
    for before, after in zip(weights, classifier.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)


def test_total_minutes_are_split_between_the_dense_stages(monkeypatch):
    budgets = {}

    def fake_fit(stage):
        def fit(model, dataset, *, steps, epochs, minutes, **kwargs):
            budgets[stage] = (minutes, steps, epochs)
            return keras.callbacks.History()
        return fit

    monkeypatch.setattr(recipe, "fit_dense_classifier", fake_fit("classifier"))
    monkeypatch.setattr(recipe, "fit_dense_localizer", fake_fit("localizer"))
    classifier = _classifier()
    fit_dense_recipe(classifier, _examples(2), minutes=6.0, **{**SMALL, "classifier_minutes": 8.0,
                                                               "localizer_minutes": 4.0, "localizer_steps": 50})
    assert budgets["classifier"] == (pytest.approx(4.0), 100, 1000)  # on the clock alone
    assert budgets["localizer"] == (pytest.approx(2.0), 50, 1)  # the clock or 50 steps
    # A stage without minutes of its own: halves.
    fit_dense_recipe(classifier, _examples(2), minutes=6.0, **{**SMALL, "localizer_minutes": 4.0})
    assert budgets["classifier"][0] == budgets["localizer"][0] == pytest.approx(3.0)


def test_split_minutes():
    assert split_minutes(12.0, [8.0, 4.0], spent=3.0) == [6.0, 3.0]
    shares = split_minutes(15.0, [8.3, 4.0], spent=2.7)
    assert sum(shares) == pytest.approx(12.3) and shares[0] / shares[1] == pytest.approx(8.3 / 4.0)
    assert split_minutes(2.0, [1, 1]) == [1.0, 1.0]
    with pytest.raises(ValueError, match="3.00 of the 2 minutes were spent before the dense stages, none remains"):
        split_minutes(2.0, [8.3, 4.0], spent=3.0)
    with pytest.raises(ValueError, match=r"`weights` must be non-negative numbers, not all 0, got \[0.0, 0.0\]"):
        split_minutes(2.0, [0, 0])


def test_stage_schedule():
    assert stage_schedule(200, None) == (100, 2, [])
    assert stage_schedule(7, 1.5) == (7, 1, [])
    assert stage_schedule(None, 1.5) == (100, 1000, [])
    per_epoch, epochs, (stop,) = stage_schedule(250, None)  # 84 + 84 + 82
    assert (per_epoch, epochs) == (84, 3) and isinstance(stop, StopAfterSteps) and stop.steps == 250
    with pytest.raises(ValueError, match="needs a budget"):
        stage_schedule(None, None)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(classifier_minutes=None), "`classifier_minutes` must be a number when `classifier_steps` and `minutes` are "
                                        "None (the dense stage's budget), got None"),
        (dict(localizer_steps=0), "`localizer_steps` must be an integer >= 1 or None, got 0"),
        (dict(center_tolerance=0.3, ignore_center=0.2), "`ignore_center` must be at least `center_tolerance` = 0.3, got 0.2"),
        (dict(scale_range=(2.0, 1.0)), "`scale_range` must be [low, high] with 0 < low <= high, got [2.0, 1.0]"),
        (dict(start_at="dense"), "`start_at` must be one of ['crops', 'classifier', 'localizer'], got 'dense'"),
        (dict(minutes=0.0), "`minutes` must be a positive number or None, got 0.0"),
        (dict(patch_size=80), "`patch_size` must be at least the 86×86 window of arch 'tiny', got 80"),
    ],
)
def test_bad_arguments_are_one_line_errors(kwargs, message):
    # Checked before anything is built or trained (no model needed).
    with pytest.raises(ValueError) as error:
        fit_dense_recipe(None, [], **kwargs)
    assert str(error.value) == message
