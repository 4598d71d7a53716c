"""`kerasdet train CONFIG`: train a zoo configuration (or a YAML file) on a dataset.

Faster R-CNN trains end to end with `model.fit`. OverFeat trains in the paper's three
stages: the classifier on window crops, the box regressor on the frozen layers 1–5, then
the multi-scale detector is assembled from both (it shares their layers) and evaluated.

The output directory receives `NAME.weights.h5` (the trained weights), `NAME.yaml` (the
configuration with a `trained` weights entry: SHA-256, classes, validation metrics and the
command), `checkpoints/` (`keras.callbacks.ModelCheckpoint`) and, while training runs,
`backup/` (`keras.callbacks.BackupAndRestore`: rerunning the same command after an
interruption resumes from the last finished epoch).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import time

# Data sources `--data` accepts; `_load_data` is the one place to add more.
SHAPES_SOURCES = {"shapes": "default", "shapes/small": "small", "shapes/tiny": "tiny"}


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


@dataclasses.dataclass
class Data:
    """A batched detection dataset for one split.

    Attributes:
        dataset: `tf.data.Dataset` of `(images float32 [B, H, W, 3] 0–255, {"boxes":
            [B, M, 4] yxyx pixels, "classes": [B, M], −1 padding})`.
        class_names: names by class id.
        num_images: images in the split (after `max_images`).
    """

    dataset: object
    class_names: tuple
    num_images: int


def _shapes_examples(config_name, split, count):
    """`kerasdet_shapes` examples in the TFDS detection schema, generated in memory
    (identical to the TFDS builder's; no files written)."""
    import numpy as np
    import tensorflow as tf

    from kerasdet.data.shapes import make_example

    def generate():
        for index in range(count):
            example = make_example(split, index, config_name)
            h, w = example["image"].shape[:2]
            yield {
                "image": example["image"],
                "objects": {
                    "bbox": (example["boxes"] / np.array([h, w, h, w], np.float32)).astype(np.float32),
                    "label": example["classes"].astype(np.int32),
                },
            }

    signature = {
        "image": tf.TensorSpec([None, None, 3], tf.uint8),
        "objects": {"bbox": tf.TensorSpec([None, 4], tf.float32), "label": tf.TensorSpec([None], tf.int32)},
    }
    # Cached in memory: later epochs do not redraw the images.
    return tf.data.Dataset.from_generator(generate, output_signature=signature).cache()


def _load_data(source, split, *, image_size, batch_size, max_images=None, training=False, seed=0) -> Data:
    """The one entry point from a `--data` value to batched model inputs.

    Args:
        source: `"shapes"` (the built-in synthetic set, 256×256), `"shapes/small"`
            (128×128) or `"shapes/tiny"` (64×64).
        split: `"train"` or `"validation"`.
        image_size: `(H, W)` of the model: images are resized keeping their aspect ratio
            and padded (`kerasdet.data.detection_dataset`).
        max_images: use the first this many images of the split (default: all).
        training: shuffle, flip, drop the last incomplete batch.

    Raises:
        ValueError: an unknown source (listing the valid ones) or split.
    """
    from kerasdet.data import detection_dataset
    from kerasdet.data.shapes import CLASS_NAMES, KerasdetShapes
    from kerasdet.zoo.config import unknown_error

    if source not in SHAPES_SOURCES:
        raise unknown_error("data source", source, list(SHAPES_SOURCES))
    if split not in ("train", "validation"):
        raise unknown_error("split", split, ["train", "validation"])
    config = {c.name: c for c in KerasdetShapes.BUILDER_CONFIGS}[SHAPES_SOURCES[source]]
    available = config.train_size if split == "train" else config.validation_size
    count = available if max_images is None else int(max_images)
    if training and count < batch_size:
        raise ValueError(
            f"{count} training images make no full batch of --batch-size {batch_size}; "
            "use more images or a smaller batch"
        )
    examples = _shapes_examples(config.name, split, count)
    dataset = detection_dataset(
        examples, image_size=tuple(image_size), batch_size=batch_size, max_boxes=config.max_objects,
        shuffle=min(count, 1024) if training else False, seed=seed, training=training,
    )
    return Data(dataset, tuple(CLASS_NAMES), count)


def _as_examples(data: Data):
    """Unbatches a `Data` into dicts `{"image", "boxes", "classes"}` (padding removed),
    the form OverFeat's crop sampler reads."""
    examples = []
    for images, truth in data.dataset:
        for image, boxes, classes in zip(images.numpy(), truth["boxes"].numpy(), truth["classes"].numpy()):
            keep = classes >= 0
            examples.append({"image": image, "boxes": boxes[keep], "classes": classes[keep]})
    return examples


def register(subparsers):
    parser = subparsers.add_parser(
        "train",
        help="train a zoo model (or a YAML configuration) on a dataset",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("config", help="zoo name (kerasdet zoo list) or path of a YAML configuration")
    parser.add_argument("--data", default=None, help=f"dataset: {', '.join(SHAPES_SOURCES)} (default: the config's)")
    parser.add_argument("--output", "-o", default=None, help="output directory (default: runs/NAME)")
    parser.add_argument("--epochs", type=positive_int, default=None,
                        help="epochs (OverFeat: of each stage); default: the config's")
    parser.add_argument("--steps", type=positive_int, default=None, help="steps per epoch (default: the whole split)")
    parser.add_argument("--batch-size", type=positive_int, default=None)
    parser.add_argument("--max-images", type=positive_int, default=None, help="training images (default: the config's)")
    parser.add_argument("--val-images", type=non_negative_int, default=None,
                        help="validation images evaluated after training (0: none)")
    parser.add_argument("--minutes", type=positive_float, default=None, help="Faster R-CNN: wall-clock training budget")
    parser.add_argument("--learning-rate", type=positive_float, default=None)
    parser.add_argument("--weights", default=None,
                        help="initial weights: an entry of the config, a .weights.h5/.keras path, or imagenet")
    parser.add_argument("--image-size", type=positive_int, nargs=2, default=None, metavar=("H", "W"))
    parser.add_argument("--seed", type=non_negative_int, default=None)
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1, help="Keras progress output")
    parser.add_argument("--run-eagerly", action="store_true",
                        help="Faster R-CNN: run train steps eagerly (debugging; skips the tf.function trace, "
                             "which pays off for a few steps only)")
    return parser


def _time_budget(seconds):
    """A callback that stops `fit` once `seconds` of training steps have run (the time
    between steps, e.g. evaluation, does not count)."""
    import keras

    class TimeBudget(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.elapsed = 0.0

        def on_train_batch_begin(self, batch, logs=None):
            self._start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.elapsed += time.perf_counter() - self._start
            if self.elapsed >= seconds:
                self.model.stop_training = True

    return TimeBudget()


def _command(args) -> str:
    parts = ["kerasdet", "train", args.config]
    for option in ("data", "output", "epochs", "steps", "batch_size", "max_images", "val_images", "minutes",
                   "learning_rate", "weights", "image_size", "seed"):
        value = getattr(args, option)
        if value is not None:
            flag = "--" + option.replace("_", "-")
            parts += [flag, *(str(v) for v in value)] if isinstance(value, list) else [flag, str(value)]
    return " ".join(shlex.quote(p) for p in parts)


def _train_overrides(args, family) -> dict:
    overrides = {}
    if args.epochs is not None:
        if family == "overfeat":
            overrides.update(classifier_epochs=args.epochs, localizer_epochs=args.epochs)
        else:
            overrides["epochs"] = args.epochs
    if args.run_eagerly and family != "faster_rcnn":
        raise ValueError("--run-eagerly is for Faster R-CNN configurations")
    if args.minutes is not None:
        if family != "faster_rcnn":
            raise ValueError("--minutes is for Faster R-CNN configurations; OverFeat trains by --epochs per stage")
        overrides["minutes"] = args.minutes
    for option, key in (("batch_size", "batch_size"), ("max_images", "train_images"), ("val_images", "val_images"),
                        ("learning_rate", "learning_rate"), ("seed", "seed"), ("data", "dataset")):
        if getattr(args, option) is not None:
            overrides[key] = getattr(args, option)
    return overrides


def run(args) -> int:
    import keras
    import yaml

    from kerasdet import zoo
    from kerasdet.metrics import evaluate_model
    from kerasdet.zoo.api import _load
    from kerasdet.zoo.config import WeightsEntry, get_config

    config = get_config(args.config)
    config = config.with_train(_train_overrides(args, config.family), where="kerasdet train")
    recipe = config.train
    image_size = args.image_size or config.model["image_size"]
    output = args.output or os.path.join("runs", config.name)
    keras.utils.set_random_seed(recipe["seed"])

    batch = recipe["batch_size"]
    train = _load_data(recipe["dataset"], "train", image_size=image_size, batch_size=batch,
                       max_images=recipe["train_images"], training=config.family == "faster_rcnn",
                       seed=recipe["seed"])
    loaded = _load(config, num_classes=len(train.class_names), weights=args.weights, image_size=list(image_size))
    config = loaded.config
    # Only now that data, model and weights are known to be good.
    os.makedirs(os.path.join(output, "checkpoints"), exist_ok=True)
    if loaded.report is not None and loaded.report.reinitialized:
        print(f"new class-dependent layers for {len(train.class_names)} classes: "
              f"{', '.join(loaded.report.reinitialized)}")

    start = time.perf_counter()
    if config.family == "faster_rcnn":
        _fit_faster_rcnn(loaded.model, train, recipe, args, output)
    else:
        _fit_overfeat(loaded.parts, train, recipe, args, output)
    seconds = time.perf_counter() - start

    name = config.name
    weights_path = os.path.join(output, f"{name}.weights.h5")
    loaded.model.save_weights(weights_path)
    metrics = {}
    if recipe["val_images"]:
        val = _load_data(recipe["dataset"], "validation", image_size=image_size, batch_size=8,
                         max_images=recipe["val_images"])
        result = evaluate_model(loaded.model, val.dataset, class_names=val.class_names)
        metrics = {k: round(float(result[k]), 4) for k in ("AP", "AP50", "AP75") if result[k] == result[k]}
    entry = WeightsEntry(
        name="trained", file=os.path.basename(weights_path), sha256=zoo.sha256_of(weights_path),
        classes=tuple(train.class_names), metrics=metrics,
        dataset=f"{recipe['dataset']} validation ({recipe['val_images']} images)" if metrics else recipe["dataset"],
        command=_command(args),
    )
    trained = config.with_model({"num_classes": len(train.class_names)}).with_weights({"trained": entry})
    config_path = os.path.join(output, f"{name}.yaml")
    trained.dump(config_path)

    print(f"trained {name} in {seconds / 60:.1f} min on {train.num_images} {recipe['dataset']} images"
          + (f"; validation {', '.join(f'{k} {v:.3f}' for k, v in metrics.items())}" if metrics else ""))
    print(f"weights: {weights_path}\nconfig:  {config_path} (kerasdet detect {config_path} IMAGE)")
    print("weights entry for a zoo YAML (copy the file into kerasdet/zoo/weights/):")
    key = "shapes" if recipe["dataset"].startswith("shapes") else "trained"
    print(yaml.safe_dump({"weights": {key: entry.to_dict()}}, sort_keys=False, default_flow_style=None,
                         width=1000).rstrip())
    return 0


def _callbacks(output, stage):
    import keras

    return [
        keras.callbacks.ModelCheckpoint(os.path.join(output, "checkpoints", f"{stage}last.weights.h5"),
                                        save_weights_only=True),
        keras.callbacks.BackupAndRestore(os.path.join(output, "backup", stage or "model")),
    ]


def _fit_faster_rcnn(model, train, recipe, args, output):
    import keras

    if recipe["optimizer"] == "sgd":
        optimizer = keras.optimizers.SGD(recipe["learning_rate"], momentum=recipe["momentum"],
                                         clipnorm=recipe["clipnorm"])
    else:
        optimizer = keras.optimizers.Adam(recipe["learning_rate"], clipnorm=recipe["clipnorm"])
    model.compile(optimizer=optimizer, run_eagerly=args.run_eagerly)
    dataset = train.dataset.repeat() if args.steps else train.dataset
    callbacks = _callbacks(output, "")
    if recipe["minutes"]:
        callbacks.append(_time_budget(recipe["minutes"] * 60))
    # The dataset shuffles itself (`_load_data`); Keras cannot shuffle a tf.data.Dataset.
    model.fit(dataset, epochs=recipe["epochs"], steps_per_epoch=args.steps, callbacks=callbacks, shuffle=False,
              verbose=args.verbose)


def _fit_overfeat(parts, train, recipe, args, output):
    from kerasdet.analysis import spatial_geometry
    from kerasdet.data.crops import crop_dataset
    from kerasdet.models.overfeat import _architecture
    from kerasdet.training.overfeat import fit_classifier, fit_localizer
    from kerasdet.zoo import load_weights_by_name

    window = _architecture(parts.arch).window
    center = spatial_geometry(parts.classifier, (window, window)).first_center
    examples = _as_examples(train)
    crops, labels, _ = crop_dataset(
        examples, window=window, window_center=center, seed=recipe["seed"],
        crops_per_object=recipe["crops_per_object"], backgrounds=recipe["backgrounds"],
        shifted_negatives=recipe["shifted_negatives"], small_object_negatives=recipe["small_object_negatives"],
    )
    loc_crops, _, loc_targets = crop_dataset(
        examples, window=window, window_center=center, seed=recipe["seed"] + 1, object_fraction=(0.7, 1.0),
        crops_per_object=recipe["localizer_crops_per_object"], backgrounds=0,
    )
    keep = loc_targets[:, 4] >= 0
    loc_crops, loc_targets = loc_crops[keep], loc_targets[keep]
    if args.steps:  # --steps caps the crops each epoch sees
        crops, labels = crops[: args.steps * recipe["batch_size"]], labels[: args.steps * recipe["batch_size"]]
        loc_crops = loc_crops[: args.steps * recipe["batch_size"]]
        loc_targets = loc_targets[: args.steps * recipe["batch_size"]]
    if not len(crops) or not len(loc_crops):
        raise ValueError(
            f"{train.num_images} training images gave {len(crops)} classifier and {len(loc_crops)} "
            "localizer crops; use more images"
        )
    print(f"OverFeat: {train.num_images} images → {len(crops)} classifier crops, {len(loc_crops)} localizer crops")
    done = os.path.join(output, "checkpoints", "after_classifier.weights.h5")
    if os.path.exists(done):
        # An interrupted run already finished stage 1: resume at the localizer.
        print(f"stage 1 already done ({done}); resuming at the localizer")
        load_weights_by_name(parts.detector, done)
    else:
        print("stage 1/2: classifier on window crops")
        fit_classifier(parts.classifier, crops, labels, epochs=recipe["classifier_epochs"],
                       batch_size=recipe["batch_size"], learning_rate=recipe["learning_rate"],
                       seed=recipe["seed"], verbose=args.verbose, callbacks=_callbacks(output, "classifier_"))
        parts.save_weights(done)
    print("stage 2/2: box regressor on the frozen layers 1-5")
    fit_localizer(parts.localizer, loc_crops, loc_targets, window_center_x=center[1],
                  epochs=recipe["localizer_epochs"], batch_size=recipe["batch_size"],
                  learning_rate=recipe["learning_rate"], seed=recipe["seed"], verbose=args.verbose,
                  callbacks=_callbacks(output, "localizer_"))
    os.remove(done)  # the run is complete: a new run in this directory starts from stage 1
