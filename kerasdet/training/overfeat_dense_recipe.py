"""OverFeat's dense training recipe in one call: optional crop pre-training, the classifier
on whole-image patches, then the box regressor on the frozen layers 1–5.

It is the recipe of the bundled `overfeat_tiny` weights: `tools/train_overfeat_tiny.py`
(the time-budget benchmark) and `kerasdet train` with `train.recipe: dense` both call
`fit_dense_recipe`.

    classifier = overfeat_classifier("tiny", num_classes=C + 1, batch_norm=True)
    result = fit_dense_recipe(classifier, examples, classifier_minutes=None, classifier_steps=3000,
                              localizer_minutes=None, localizer_steps=1500)
    detector = overfeat_detector(result.classifier, result.localizer, "tiny", image_size=(256, 256))

Each dense stage runs a fixed number of steps (reproducible), a wall-clock budget in
minutes (what a time-budget benchmark needs), or until the first of both is reached.
"""

from __future__ import annotations

import dataclasses
import math
import time

import keras

from kerasdet.analysis import spatial_geometry
from kerasdet.data.crops import crop_dataset
from kerasdet.models.overfeat_architectures import ARCHITECTURES
from kerasdet.models.overfeat_localizer import overfeat_localizer
from kerasdet.training.budget import TimeBudget
from kerasdet.training.overfeat import fit_classifier
from kerasdet.training.overfeat_dense_data import DensePatchSampler
from kerasdet.training.overfeat_dense_fit import fit_dense_classifier, fit_dense_localizer

STAGES = ("crops", "classifier", "localizer")
# Steps per Keras epoch of a dense stage: the history holds one mean loss per 100 steps.
LOG_EVERY = 100
# A stage on a clock alone stops at LOG_EVERY · this many steps at the latest.
_CLOCK_EPOCHS = 1000
# Crop pre-training as for the bundled weights: 2 crops per object, 2 random backgrounds and
# 1 off-centre negative per image, batches of 128.
_PRETRAIN_CROPS = dict(crops_per_object=2, backgrounds=2, shifted_negatives=1)
_PRETRAIN_BATCH = 128


@dataclasses.dataclass
class DenseRecipeResult:
    """What `fit_dense_recipe` trained.

    Attributes:
        classifier: the trained classifier (the model passed in).
        localizer: the trained localizer; it shares layers 1–5 with `classifier`.
        histories: `{"crops" | "classifier" | "localizer": keras.callbacks.History}` for
            the stages that ran (dense stages: one `loss` value per epoch of at most
            `LOG_EVERY` steps).
        seconds: wall-clock seconds of the stages that ran: `"crop_classifier"` (crop
            cutting included), `"dense_classifier"`, `"dense_localizer"`.
    """

    classifier: keras.Model
    localizer: keras.Model
    histories: dict
    seconds: dict


class StopAfterSteps(keras.callbacks.Callback):
    """Stops `model.fit` after `steps` training steps (batches skipped by a resumed
    `ResumableBackup` count: they still run the batch callbacks)."""

    def __init__(self, steps: int):
        super().__init__()
        self.steps = int(steps)
        self.done = 0

    def on_train_batch_end(self, batch, logs=None):
        self.done += 1
        if self.done >= self.steps:
            self.model.stop_training = True


def split_minutes(total: float, weights, spent: float = 0.0) -> list[float]:
    """Splits what remains of a budget of `total` minutes, after `spent`, in proportion to
    `weights`.

    Args:
        total: the whole budget in minutes, > 0.
        weights: non-negative numbers, not all 0 (e.g. the stages' own budgets).
        spent: minutes already used (e.g. by the crop pre-training).

    Returns:
        One share per weight, in minutes, summing to `total − spent`.

    Raises:
        ValueError: nothing remains (`spent >= total`), or bad weights.

    Example:
    >>> split_minutes(12.0, [8.0, 4.0], spent=3.0)
    [6.0, 3.0]
    """
    weights = [float(w) for w in weights]
    if not weights or min(weights) < 0 or sum(weights) <= 0:
        raise ValueError(f"`weights` must be non-negative numbers, not all 0, got {weights}")
    if not total > 0:
        raise ValueError(f"`total` must be a positive number of minutes, got {total!r}")
    remaining = total - spent
    if remaining <= 0:
        raise ValueError(
            f"{spent:.2f} of the {total:g} minutes were spent before the dense stages, none remains for them: "
            "give more minutes or fewer crop pre-training epochs"
        )
    return [remaining * w / sum(weights) for w in weights]


def stage_schedule(steps: int | None, minutes: float | None):
    """`(steps_per_epoch, epochs, callbacks)` of one dense stage's `fit`.

    `steps` alone: exactly `steps` steps, in epochs of at most `LOG_EVERY` (a
    `StopAfterSteps` ends the last epoch early when they do not divide evenly; the cosine
    learning rate then decays over the whole epochs, at most `epochs − 1` steps more).
    `minutes` alone: epochs of `LOG_EVERY` steps until the clock stops `fit` (the
    `fit_dense_*` functions' `minutes`). Both: whichever comes first.
    """
    if steps is None:
        if minutes is None:
            raise ValueError("a dense stage needs a budget: steps, minutes or both, got neither")
        return LOG_EVERY, _CLOCK_EPOCHS, []
    if steps < 1:
        raise ValueError(f"a dense stage's steps must be >= 1, got {steps}")
    epochs = math.ceil(steps / LOG_EVERY)
    per_epoch = math.ceil(steps / epochs)
    epochs = math.ceil(steps / per_epoch)
    return per_epoch, epochs, [StopAfterSteps(steps)] if per_epoch * epochs != steps else []


def _budget(steps, minutes) -> str:
    parts = ([f"{minutes:.2f} min"] if minutes is not None else []) + ([f"{steps} steps"] if steps is not None else [])
    return " or ".join(parts)


def dense_recipe_violations(settings: dict, *, arch: str = "tiny", start_at: str = "crops", prefix: str = "",
                            none: str = "None"):
    """The dense recipe's argument rules, in one place for its two front doors:
    `fit_dense_recipe` (library callers) and the zoo configuration's `train:` section
    (checked before any data loads, with its own error wording).

    Args:
        settings: `fit_dense_recipe`'s keyword arguments by name (any missing key is not
            checked): `minutes`, `{classifier,localizer}_{minutes,steps}`, `patch_size`,
            `scale_range`, `regression_fraction`, `center_tolerance`, `ignore_center`.
        arch: the classifier's architecture (its window bounds `patch_size`).
        start_at: the first stage to run; a stage before it needs no budget.
        prefix: prepended to the key names inside the expectations (e.g. `"train."`).
        none: the word for "no value" in the expectations (`"null"` for YAML).

    Returns:
        `[(key, expectation, value)]`, empty when the settings are valid; each reads
        "`key` must be <expectation>, got <value>".
    """
    problems = []

    def given(key):
        return settings.get(key) is not None

    for key in ("minutes", "classifier_minutes", "localizer_minutes"):
        # A 0 budget has no time to decay the learning rate over.
        if given(key) and not settings[key] > 0:
            problems.append((key, f"a positive number or {none}", settings[key]))
    for key in ("classifier_steps", "localizer_steps"):
        if given(key) and not (isinstance(settings[key], int) and settings[key] >= 1):
            problems.append((key, f"an integer >= 1 or {none}", settings[key]))
    for key in ("scale_range", "regression_fraction"):
        if given(key):
            pair = list(settings[key])
            if len(pair) != 2 or not 0 < pair[0] <= pair[1]:
                problems.append((key, "[low, high] with 0 < low <= high", pair))
    if given("ignore_center") and given("center_tolerance") and settings["ignore_center"] < settings["center_tolerance"]:
        problems.append(("ignore_center", f"at least `{prefix}center_tolerance` = {settings['center_tolerance']}",
                         settings["ignore_center"]))
    window = ARCHITECTURES[arch].window
    if given("patch_size") and settings["patch_size"] < window:
        problems.append(("patch_size", f"at least the {window}×{window} window of arch {arch!r}", settings["patch_size"]))
    for stage in ("classifier", "localizer"):
        if STAGES.index(stage) < STAGES.index(start_at):
            continue  # done already
        if not any(given(key) for key in (f"{stage}_minutes", f"{stage}_steps", "minutes")):
            problems.append((f"{stage}_minutes", f"a number when `{prefix}{stage}_steps` and `{prefix}minutes` are "
                             f"{none} (the dense stage's budget)", None))
    return problems


def fit_dense_recipe(
    classifier: keras.Model,
    examples,
    *,
    arch: str = "tiny",
    localizer: keras.Model | None = None,
    crop_epochs: int = 0,
    crop_images: int = 600,
    crop_steps: int | None = None,
    classifier_minutes: float | None = 9.0,
    classifier_steps: int | None = None,
    localizer_minutes: float | None = 3.0,
    localizer_steps: int | None = None,
    minutes: float | None = None,
    batch_size: int = 32,
    patch_size: int = 230,
    scale_range=(0.5, 3.8),
    object_prob: float = 0.5,
    foreground_weight: float = 3.0,
    learning_rate: float = 1e-3,
    center_tolerance: float = 0.15,
    ignore_center: float = 0.3,
    localizer_lr: float = 2e-3,
    localizer_object_prob: float = 0.9,
    regression_center: float = 0.3,
    regression_fraction=(0.35, 1.2),
    seed: int = 0,
    start_at: str = "crops",
    on_stage_end=None,
    callbacks: dict | None = None,
    verbose=2,
    log=None,
) -> DenseRecipeResult:
    """Trains an OverFeat classifier and localizer with the dense recipe.

    1. `crops` (optional, `crop_epochs > 0`): `fit_classifier` on `S × S` window crops of
       the first `crop_images` examples (batches of 128, learning rate 2e-3);
    2. `classifier`: `fit_dense_classifier` on `P × P` patches of the examples at random
       pyramid scales, a target at every output location (`DensePatchSampler`);
    3. `localizer`: `fit_dense_localizer`, the box regressor on the frozen layers 1–5,
       densely the same way (L2 loss near the windows the detector decodes).

    Args:
        classifier: from `overfeat_classifier(arch, num_classes=C + 1)` with the standard
            last pool (one output per window); trained in place.
        examples: sequence of dicts `{"image" [H, W, 3] 0–255 (uint8 saves memory),
            "boxes" [N, 4] yxyx pixels, "classes" [N] ints in [0, C)}`.
        arch: the classifier's architecture (`"tiny"`, `"fast"`, `"accurate"`): its
            training window `S`.
        localizer: from `overfeat_localizer(classifier, arch, C)`; default: built after the
            classifier stages.
        crop_epochs: epochs of crop pre-training (0: none).
        crop_images: examples `[:crop_images]` cut into crops.
        crop_steps: optional cap of the crop batches per epoch (quick runs).
        classifier_minutes, classifier_steps: the dense classifier's budget: a wall-clock
            budget, a number of steps, or both (it stops at the first); at least one.
        localizer_minutes, localizer_steps: the same for the localizer.
        minutes: optional total budget instead of the stage minutes: what the crop
            pre-training leaves of it is split between the dense classifier and localizer in
            proportion to `classifier_minutes : localizer_minutes` (halves when either is
            None; `split_minutes`). Stage steps still cap. A run that starts past the crops
            (`start_at`) splits the whole budget (the earlier stages' time is not known).
        batch_size: patches per dense batch.
        patch_size: `P`; `P − S` a multiple of the stride (tiny: 230 → 7×7 windows).
        scale_range: `(min, max)` resize factors of the patches.
        object_prob: fraction of the classifier's patches placed on an object at a
            positive's scale (`DensePatchSampler`).
        foreground_weight: weight of object locations in `DenseClassificationLoss`.
        learning_rate: the dense classifier's (cosine-decayed) Adam learning rate.
        center_tolerance: a location is positive when an object's centre is within
            `center_tolerance · S` of its window's centre (`dense_targets`).
        ignore_center: locations up to `ignore_center · S` from an object's centre that
            are not positive carry no loss; >= `center_tolerance`.
        localizer_lr: the localizer's learning rate.
        localizer_object_prob: `object_prob` of the localizer's patches.
        regression_center, regression_fraction: which windows get box targets
            (`dense_targets`: centre offset up to `regression_center · S`, object size
            `regression_fraction` of `S`).
        seed: crop and patch sampling seed (the localizer's patches use `seed + 1`).
        start_at: the first stage to run, `"crops"`, `"classifier"` or `"localizer"`: the
            earlier ones are done (a resumed run; `classifier` holds their weights).
        on_stage_end: optional `on_stage_end(stage)` called after each stage that ran (e.g.
            to checkpoint).
        callbacks: optional `{stage: [keras callbacks]}` for the stages' `fit`.
        verbose: Keras `fit` verbosity.
        log: optional `log(message)` for one line per stage (e.g. `print`).

    Returns:
        A `DenseRecipeResult`: the classifier, the localizer, the histories and seconds of
        the stages that ran.

    Raises:
        ValueError: an unknown `start_at`, any of `dense_recipe_violations` (a stage
            without a budget, `ignore_center < center_tolerance`, a `scale_range` or
            `regression_fraction` that is not `(low, high)`, a patch smaller than the
            window), or no time left of `minutes` after the crop pre-training.

    Example:
    >>> classifier = overfeat_classifier("tiny", num_classes=6)
    >>> result = fit_dense_recipe(classifier, examples, classifier_steps=20, localizer_steps=10,
    ...                           classifier_minutes=None, localizer_minutes=None)
    >>> result.localizer(images).shape   # [B, h, w, 4 · 5]
    """
    if start_at not in STAGES:
        raise ValueError(f"`start_at` must be one of {list(STAGES)}, got {start_at!r}")
    problems = dense_recipe_violations(
        dict(minutes=minutes, classifier_minutes=classifier_minutes, classifier_steps=classifier_steps,
             localizer_minutes=localizer_minutes, localizer_steps=localizer_steps, patch_size=patch_size,
             scale_range=scale_range, regression_fraction=regression_fraction, center_tolerance=center_tolerance,
             ignore_center=ignore_center),
        arch=arch, start_at=start_at,
    )
    if problems:
        key, expected, value = problems[0]
        raise ValueError(f"`{key}` must be {expected}, got {value!r}")
    examples = list(examples)
    log = log or (lambda message: None)
    callbacks = callbacks or {}
    window = ARCHITECTURES[arch].window
    num_classes = classifier.output.shape[-1] - 1
    # Numbered among all the recipe's stages, so a resumed run says which one it is at.
    planned = [s for s in STAGES if s != "crops" or crop_epochs > 0]
    number = {stage: f"stage {k + 1}/{len(planned)}" for k, stage in enumerate(planned)}
    stages = [s for s in planned if STAGES.index(s) >= STAGES.index(start_at)]
    histories, seconds = {}, {}
    crop_seconds = 0.0

    def done(stage):
        if on_stage_end is not None:
            on_stage_end(stage)

    if "crops" in stages:
        # Crop cutting counts as this stage's time: unlike loading the images, it is its work.
        start = time.perf_counter()
        center = spatial_geometry(classifier, (window, window)).first_center
        crops, labels, _ = crop_dataset(examples[:crop_images], window=window, window_center=center, seed=seed,
                                        **_PRETRAIN_CROPS)
        if crop_steps is not None:
            crops, labels = crops[: crop_steps * _PRETRAIN_BATCH], labels[: crop_steps * _PRETRAIN_BATCH]
        log(f"{number['crops']}: classifier on {len(crops)} window crops of {min(len(examples), crop_images)} "
            f"images, {crop_epochs} epochs")
        stage_callbacks = list(callbacks.get("crops", []))
        if minutes is not None:
            stage_callbacks.append(TimeBudget(60.0 * minutes))  # never past the whole budget
        histories["crops"] = fit_classifier(
            classifier, crops, labels, epochs=crop_epochs, batch_size=_PRETRAIN_BATCH, seed=seed, verbose=verbose,
            callbacks=stage_callbacks, jit_compile=False,
        )
        crop_seconds = seconds["crop_classifier"] = time.perf_counter() - start
        done("crops")

    budgets = {"classifier": classifier_minutes, "localizer": localizer_minutes}
    if minutes is not None:
        weights = [1.0, 1.0] if None in budgets.values() else list(budgets.values())
        budgets = dict(zip(budgets, split_minutes(minutes, weights, spent=crop_seconds / 60)))

    if "classifier" in stages:
        steps_per_epoch, epochs, stop = stage_schedule(classifier_steps, budgets["classifier"])
        log(f"{number['classifier']}: dense classifier on {patch_size}×{patch_size} patches of "
            f"{len(examples)} images ({_budget(classifier_steps, budgets['classifier'])})")
        sampler = DensePatchSampler(
            examples, model=classifier, window=window, patch_size=patch_size, scale_range=scale_range,
            object_prob=object_prob, seed=seed, center_tolerance=center_tolerance, ignore_center=ignore_center,
        )
        start = time.perf_counter()
        histories["classifier"] = fit_dense_classifier(
            classifier, sampler.dataset(batch_size), steps=steps_per_epoch, epochs=epochs,
            learning_rate=learning_rate, foreground_weight=foreground_weight, minutes=budgets["classifier"],
            verbose=verbose, callbacks=[*stop, *callbacks.get("classifier", [])],
        )
        seconds["dense_classifier"] = time.perf_counter() - start
        done("classifier")

    if localizer is None:
        localizer = overfeat_localizer(classifier, arch, num_classes=num_classes)
    steps_per_epoch, epochs, stop = stage_schedule(localizer_steps, budgets["localizer"])
    log(f"{number['localizer']}: dense box regressor on the frozen layers 1-5 "
        f"({_budget(localizer_steps, budgets['localizer'])})")
    sampler = DensePatchSampler(
        examples, model=classifier, window=window, patch_size=patch_size, scale_range=scale_range,
        object_prob=localizer_object_prob, seed=seed + 1, regression_center=regression_center,
        regression_fraction=tuple(regression_fraction),
    )
    start = time.perf_counter()
    histories["localizer"] = fit_dense_localizer(
        localizer, sampler.dataset(batch_size, target="boxes"), steps=steps_per_epoch, epochs=epochs,
        learning_rate=localizer_lr, minutes=budgets["localizer"], verbose=verbose,
        callbacks=[*stop, *callbacks.get("localizer", [])],
    )
    seconds["dense_localizer"] = time.perf_counter() - start
    done("localizer")
    return DenseRecipeResult(classifier, localizer, histories, seconds)
