"""`kerasdet train CONFIG`: train a zoo configuration (or a YAML file) on a dataset.

Faster R-CNN trains end to end with `model.fit`. OverFeat trains in stages, then the
multi-scale detector is assembled from the classifier and box regressor (it shares their
layers) and evaluated. The configuration's `train.recipe` picks the stages:

  dense  optional crop pre-training (`train.crop_epochs`), then the classifier and the box
         regressor (on the frozen layers 1-5) on whole-image patches with a target at every
         window, each for `train.classifier_minutes` / `train.localizer_minutes` or
         `train.classifier_steps` / `train.localizer_steps`: the recipe of the bundled
         overfeat_tiny weights (`kerasdet.training.overfeat_dense_recipe`);
  crops  the paper's: the classifier, then the box regressor, on window crops for
         `train.classifier_epochs` / `train.localizer_epochs`.

For the dense recipe `--minutes M` is the training budget of all stages: the crop
pre-training runs its epochs (stopped at M at the latest), and the dense classifier and box
regressor share what remains of M in proportion to `train.classifier_minutes :
train.localizer_minutes` (halves if either is null); `--steps N` stops each dense stage
after N steps at most (and caps the crop batches per epoch); `--epochs` sets the crop
pre-training's epochs. An interrupted OverFeat run resumes after its last finished stage.

`--data` takes anything `kerasdet.data.load_detection_data` reads: a COCO json file or a
folder holding one, a VOC folder, a TFDS name (`voc/2007`, `coco/2017`) or `shapes[/CONFIG]`
(the built-in synthetic set). The class names come from the data; when their number
differs from the configuration's `num_classes`, the model is built for the data's classes.

The output directory receives `NAME.weights.h5` (the trained weights), `NAME.yaml` (the
configuration with a `trained` weights entry: SHA-256, classes, validation metrics and the
command), `checkpoints/` (the last epoch's weights) and, while training runs, `backup/`
(`kerasdet.training.ResumableBackup`, at each epoch's end or every `--save-every` steps):
rerunning the same command after an interruption, even a SIGKILL, resumes from the last
backup, mid-epoch included. Every file is written atomically.

`--strategy mirrored|multiworker|tpu` trains Faster R-CNN under a `tf.distribute` strategy
(`--batch-size` is then the global batch, split across the replicas); see
`docs/distributed.md`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shlex
import shutil
import sys
import time
import warnings

# The built-in synthetic sets `--data` serves from memory (no TFDS files written); every
# other source goes through `kerasdet.data.load_detection_data` (see `_load_data`).
SHAPES_SOURCES = {"shapes": "default", "shapes/small": "small", "shapes/tiny": "tiny"}
# `kerasdet.training.distribute.STRATEGY_NAMES`, spelled out so `kerasdet --help` does not
# import TensorFlow (tests/test_distribute.py checks they agree).
STRATEGY_NAMES = ("default", "mirrored", "multiworker", "tpu")
DATA_HELP = (
    "dataset: a COCO json file or folder, a VOC folder, a TFDS name (voc/2007, coco/2017) or "
    f"{', '.join(SHAPES_SOURCES)} (default: the config's)"
)
ON_ERROR_HELP = (
    "COCO / VOC data with a bad annotation or image: raise (stop with one line naming it, "
    "the default) or skip (leave out those images, say how many)"
)


def _number_type(cast, accept, expected):
    """An argparse `type`: `cast(text)` must satisfy `accept`, else a one-line error."""

    def parse(text):
        try:
            value = cast(text)
        except ValueError:
            value = None
        if value is None or not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


positive_int = _number_type(int, lambda v: v >= 1, "a positive integer")
non_negative_int = _number_type(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _number_type(float, lambda v: v > 0, "a positive number")


@dataclasses.dataclass
class Data:
    """A batched detection dataset for one split.

    Attributes:
        dataset: `tf.data.Dataset` of `(images float32 [B, H, W, 3] 0–255, {"boxes":
            [B, M, 4] yxyx pixels, "classes": [B, M], −1 padding})`.
        class_names: names by class id.
        num_images: images in the split (after `max_images`); None when the source does not
            tell without reading it all (TFDS names).
    """

    dataset: object
    class_names: tuple
    num_images: int | None


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


def _load_data(
    source, split, *, image_size, batch_size, max_images=None, training=False, seed=0, on_error="raise"
) -> Data:
    """The one entry point from a `--data` value to batched model inputs.

    Args:
        source: `"shapes"` (the built-in synthetic set, 256×256), `"shapes/small"`
            (128×128) or `"shapes/tiny"` (64×64), generated in memory; or anything
            `kerasdet.data.load_detection_data` reads (COCO json file or folder, VOC folder,
            TFDS name, `shapes/<config>` through TFDS).
        split: `"train"`, `"validation"` (COCO / VOC folders also find `val` or `valid`), ...
        image_size: `(H, W)` of the model: images are resized keeping their aspect ratio
            and padded (`kerasdet.data.detection_dataset`).
        max_images: use the first this many images of the split (default: all).
        training: shuffle, flip, drop the last incomplete batch.
        on_error: `"raise"` or `"skip"` bad images of COCO / VOC folders (skipped images are
            reported in one line on stderr).

    Raises:
        ValueError: an unknown split of the built-in set, a source that is neither a file,
            a folder nor a dataset name (with the closest built-in name), bad annotations
            (`kerasdet.data.DataError`, one line naming the file and the entry), or too few
            images for one training batch. FileNotFoundError: a missing split.
    """
    if source not in SHAPES_SOURCES:
        return _load_any_data(source, split, image_size=image_size, batch_size=batch_size, max_images=max_images,
                              training=training, seed=seed, on_error=on_error)
    from kerasdet.data import detection_dataset
    from kerasdet.data.shapes import CLASS_NAMES, KerasdetShapes
    from kerasdet.zoo.config import unknown_error

    if on_error != "raise":
        raise ValueError(f"--on-error {on_error} applies to COCO / VOC folders, not to {source!r}")
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


def _first_images(records, count):
    """The first `count` images of `DetectionRecords` (file order), as `DetectionRecords`."""
    if count >= len(records):
        return records
    return dataclasses.replace(
        records,
        image_paths=records.image_paths[:count], image_sizes=records.image_sizes[:count],
        boxes=records.boxes[:count], labels=records.labels[:count], image_ids=records.image_ids[:count],
        filenames=records.filenames[:count], flags={k: v[:count] for k, v in records.flags.items()},
    )


def _read_records(source, split, on_error):
    """`kerasdet.data.read_records`, its skipped-images warnings printed as one line each."""
    from kerasdet.data import DataWarning, read_records

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        records = read_records(source, split, on_error=on_error)
    for warning in caught:
        if issubclass(warning.category, DataWarning):
            print(f"kerasdet: {' '.join(str(warning.message).split())}", file=sys.stderr)
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return records


def _check_dataset_name(source):
    """A `--data` value that is not an existing path must name a dataset TFDS knows (or the
    built-in set): a one-line error otherwise, before anything is built or downloaded."""
    import tensorflow_datasets as tfds

    from kerasdet.data.sources import _TFDS_NAME, _is_shapes
    from kerasdet.zoo.config import suggestion

    if _is_shapes(source):
        return
    if _TFDS_NAME.match(source):
        try:
            tfds.builder_cls(source.split("/")[0].split(":")[0])
            return
        except ValueError:  # tfds's DatasetNotFoundError
            pass
    elif os.sep in source or source.endswith((".json", ".xml")):
        raise FileNotFoundError(f"--data {source!r} does not exist (expected a COCO json file or a folder)")
    # Close matches among the usual detection sets only: against all TFDS names a typo gets
    # suggestions like 'math_qa'.
    known = [*SHAPES_SOURCES, "voc/2007", "voc/2012", "coco/2017", "coco/2014"]
    raise ValueError(
        f"unknown data source {source!r}.{suggestion(source, known)} Expected an existing COCO json file "
        f"or folder, a VOC folder, a TFDS dataset name such as 'voc/2007', or one of {', '.join(SHAPES_SOURCES)}"
    )


def _load_any_data(source, split, *, image_size, batch_size, max_images, training, seed, on_error) -> Data:
    """`_load_data` for sources other than the in-memory shapes sets."""
    from kerasdet.data import load_detection_data

    if os.path.exists(source):
        records = _read_records(source, split, on_error)
        if max_images is not None:
            records = _first_images(records, int(max_images))
        if not len(records):
            raise ValueError(f"{source} ({split}) has no usable images")
        data, count = records, len(records)
    else:
        if on_error != "raise":
            raise ValueError(f"--on-error {on_error} applies to COCO / VOC folders, not to {source!r}")
        _check_dataset_name(source)
        # TFDS slicing takes the first images of the split without reading the others.
        data, count = (source, None)
        if max_images is not None:
            split = f"{split}[:{int(max_images)}]"
    if training and count is not None and count < batch_size:
        raise ValueError(
            f"{count} training images make no full batch of --batch-size {batch_size}; "
            "use more images or a smaller batch"
        )
    try:
        dataset, names = load_detection_data(
            data, split, image_size=tuple(image_size), batch_size=batch_size, training=training, seed=seed
        )
    except (ValueError, FileNotFoundError):
        raise
    except Exception as error:
        if count is not None:  # a folder: read already, so not a download problem
            raise
        # `tfds.load` downloads and prepares a dataset on first use; offline that fails with
        # whatever its download stack raises (connection, import or OS errors).
        lines = str(error).strip().splitlines()
        raise ValueError(
            f"could not load TFDS dataset {source!r} ({type(error).__name__}: {lines[0] if lines else ''}); "
            "TFDS downloads and prepares a dataset on first use, which needs network access. Expected a prepared "
            "TFDS dataset, or a COCO / VOC folder"
        ) from None
    return Data(dataset, tuple(names), count)


@contextlib.contextmanager
def graph_errors_as_value_errors():
    """Turns a failed kerasdet graph assertion (bad box or class values met inside a
    `tf.function`, or a data-pipeline check) into a one-line `ValueError`; other errors pass."""
    import tensorflow as tf

    from kerasdet.models.checks import assertion_message

    try:
        yield
    except tf.errors.InvalidArgumentError as error:
        message = assertion_message(error)
        if message is None:
            raise
        raise ValueError(message) from None


def _as_examples(data: Data):
    """Unbatches a `Data` into dicts `{"image" uint8, "boxes", "classes"}` (padding
    removed), the form OverFeat's crop and patch samplers read."""
    import numpy as np

    examples = []
    for images, truth in data.dataset:
        # uint8: a quarter of float32's memory (1800 images of 256² take 350 MB, not 1.4 GB).
        images = np.clip(np.round(images.numpy()), 0, 255).astype(np.uint8)
        for image, boxes, classes in zip(images, truth["boxes"].numpy(), truth["classes"].numpy()):
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
    parser.add_argument("--data", default=None, help=DATA_HELP)
    parser.add_argument("--on-error", choices=("raise", "skip"), default="raise", help=ON_ERROR_HELP)
    parser.add_argument("--output", "-o", default=None, help="output directory (default: runs/NAME)")
    parser.add_argument("--epochs", type=positive_int, default=None,
                        help="epochs (OverFeat crops recipe: of each stage; dense recipe: of the crop "
                             "pre-training); default: the config's")
    parser.add_argument("--steps", type=positive_int, default=None,
                        help="steps per epoch (default: the whole split; OverFeat: crop batches per epoch, and the "
                             "most steps of each dense stage)")
    parser.add_argument("--batch-size", type=positive_int, default=None)
    parser.add_argument("--max-images", type=positive_int, default=None, help="training images (default: the config's)")
    parser.add_argument("--val-images", type=non_negative_int, default=None,
                        help="validation images evaluated after training (0: none)")
    parser.add_argument("--minutes", type=positive_float, default=None,
                        help="wall-clock training budget (Faster R-CNN; OverFeat dense recipe: of all stages, split "
                             "as above)")
    parser.add_argument("--learning-rate", type=positive_float, default=None)
    parser.add_argument("--weights", default=None,
                        help="initial weights: an entry of the config, a .weights.h5/.keras path, or imagenet")
    parser.add_argument("--image-size", type=positive_int, nargs=2, default=None, metavar=("H", "W"))
    parser.add_argument("--seed", type=non_negative_int, default=None)
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1, help="Keras progress output")
    parser.add_argument("--run-eagerly", action="store_true",
                        help="Faster R-CNN: run train steps eagerly (debugging; skips the tf.function trace, "
                             "which pays off for a few steps only)")
    parser.add_argument("--save-every", type=positive_int, default=None, metavar="STEPS",
                        help="back up the training state every STEPS steps (default: at each epoch's end)")
    parser.add_argument("--strategy", choices=STRATEGY_NAMES, default="default",
                        help="Faster R-CNN: tf.distribute strategy (multiworker reads TF_CONFIG; tpu: $TPU_NAME "
                             "or the local TPU)")
    return parser


def _command(args) -> str:
    parts = ["kerasdet", "train", args.config]
    for option in ("data", "output", "epochs", "steps", "batch_size", "max_images", "val_images", "minutes",
                   "learning_rate", "weights", "image_size", "seed", "on_error"):
        value = getattr(args, option)
        if option == "on_error" and value == "raise":
            continue  # the default
        if value is not None:
            flag = "--" + option.replace("_", "-")
            parts += [flag, *(str(v) for v in value)] if isinstance(value, list) else [flag, str(value)]
    return " ".join(shlex.quote(p) for p in parts)


def _train_overrides(args, family, recipe=None) -> dict:
    """`kerasdet train` flags as `train:` keys of a `family` configuration (`recipe`: an
    OverFeat configuration's `train.recipe`)."""
    overrides = {}
    if args.epochs is not None:
        if family == "overfeat" and recipe == "dense":
            overrides["crop_epochs"] = args.epochs
        elif family == "overfeat":
            overrides.update(classifier_epochs=args.epochs, localizer_epochs=args.epochs)
        else:
            overrides["epochs"] = args.epochs
    if args.run_eagerly and family != "faster_rcnn":
        raise ValueError("--run-eagerly is for Faster R-CNN configurations")
    if getattr(args, "strategy", "default") != "default" and family != "faster_rcnn":
        raise ValueError("--strategy is for Faster R-CNN configurations")
    if args.minutes is not None:
        if family == "overfeat" and recipe != "dense":
            raise ValueError(
                f"--minutes is for Faster R-CNN and OverFeat's dense recipe; this configuration's train.recipe is "
                f"{recipe!r}, which trains by --epochs per stage (expected train.recipe: dense)"
            )
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
    from kerasdet.training.checkpoint import atomic_save_weights
    from kerasdet.training.distribute import make_strategy, worker_directory
    from kerasdet.zoo.api import _load
    from kerasdet.zoo.config import WeightsEntry, get_config

    config = get_config(args.config)
    config = config.with_train(_train_overrides(args, config.family, config.train.get("recipe")),
                               where="kerasdet train")
    # Before any other TensorFlow op: MultiWorkerMirroredStrategy must configure the runtime.
    strategy = make_strategy(args.strategy)
    recipe = config.train
    image_size = args.image_size or config.model["image_size"]
    output = args.output or os.path.join("runs", config.name)
    keras.utils.set_random_seed(recipe["seed"])

    batch = recipe["batch_size"]
    source = recipe["dataset"]
    train = _load_data(source, "train", image_size=image_size, batch_size=batch,
                       max_images=recipe["train_images"], training=config.family == "faster_rcnn",
                       seed=recipe["seed"], on_error=args.on_error)
    # The validation split is opened before training too, so a missing split or a bad
    # annotation stops the command before it spends the training time.
    val = None
    if recipe["val_images"]:
        val = _load_data(source, "validation", image_size=image_size, batch_size=8,
                         max_images=recipe["val_images"], on_error=args.on_error)
    num_classes = len(train.class_names)
    if num_classes != config.model["num_classes"]:
        shown = ", ".join(train.class_names[:8]) + (", ..." if num_classes > 8 else "")
        print(f"{source} has {num_classes} classes ({shown}); building {config.name} with num_classes="
              f"{num_classes} instead of the configuration's {config.model['num_classes']}")
    with strategy.scope():  # variables of the model (and, in fit, the optimizer) are mirrored
        loaded = _load(config, num_classes=num_classes, weights=args.weights, image_size=list(image_size))
    config = loaded.config
    # Only now that data, model and weights are known to be good.
    os.makedirs(os.path.join(output, "checkpoints"), exist_ok=True)
    if loaded.report is not None and loaded.report.reinitialized:
        print(f"new class-dependent layers for {num_classes} classes: "
              f"{', '.join(loaded.report.reinitialized)}")

    start = time.perf_counter()
    with graph_errors_as_value_errors(), strategy.scope():
        if config.family == "faster_rcnn":
            _fit_faster_rcnn(loaded.model, train, recipe, args, output)
        else:
            _fit_overfeat(loaded.parts, train, recipe, args, output, config)
    seconds = time.perf_counter() - start

    name = config.name
    # Every worker saves and evaluates (both can run collective ops); only the chief's files stay.
    files = worker_directory(output, strategy)
    weights_path = os.path.join(files, f"{name}.weights.h5")
    atomic_save_weights(loaded.model, weights_path)
    metrics = {}
    if val is not None and files == output:  # the chief evaluates
        model = loaded.model
        if args.strategy != "default":
            # A distributed model's predict gathers every worker's batch: evaluate a
            # single-device copy of the trained model instead.
            model = _load(config, num_classes=num_classes, weights=weights_path, image_size=list(image_size)).model
        with graph_errors_as_value_errors():
            result = evaluate_model(model, val.dataset, class_names=val.class_names)
        metrics = {k: round(float(result[k]), 4) for k in ("AP", "AP50", "AP75") if result[k] == result[k]}
    entry = WeightsEntry(
        name="trained", file=os.path.basename(weights_path), sha256=zoo.sha256_of(weights_path),
        classes=tuple(train.class_names), metrics=metrics,
        dataset=f"{recipe['dataset']} validation ({val.num_images or recipe['val_images']} images)" if metrics
        else recipe["dataset"],
        command=_command(args),
    )
    trained = config.with_model({"num_classes": len(train.class_names)}).with_weights({"trained": entry})
    config_path = os.path.join(files, f"{name}.yaml")
    trained.dump(config_path)
    if files != output:
        shutil.rmtree(files, ignore_errors=True)
        print(f"trained {name} as a non-chief worker; the chief writes the outputs to {output}")
        return 0

    count = "" if train.num_images is None else f"{train.num_images} "
    print(f"trained {name} in {seconds / 60:.1f} min on {count}{recipe['dataset']} images"
          + (f"; validation {', '.join(f'{k} {v:.3f}' for k, v in metrics.items())}" if metrics else ""))
    print(f"weights: {weights_path}\nconfig:  {config_path} (kerasdet detect {config_path} IMAGE)")
    print("weights entry for a zoo YAML (copy the file into kerasdet/zoo/weights/):")
    key = "shapes" if recipe["dataset"].startswith("shapes") else "trained"
    print(yaml.safe_dump({"weights": {key: entry.to_dict()}}, sort_keys=False, default_flow_style=None,
                         width=1000).rstrip())
    return 0


def _callbacks(output, stage, save_every=None):
    from kerasdet.training.checkpoint import ResumableBackup, WeightsCheckpoint

    return [
        WeightsCheckpoint(os.path.join(output, "checkpoints", f"{stage}last.weights.h5")),
        ResumableBackup(os.path.join(output, "backup", stage or "model"), save_freq=save_every or "epoch"),
    ]


def _fit_faster_rcnn(model, train, recipe, args, output):
    import keras

    if recipe["optimizer"] == "sgd":
        optimizer = keras.optimizers.SGD(recipe["learning_rate"], momentum=recipe["momentum"],
                                         clipnorm=recipe["clipnorm"])
    else:
        optimizer = keras.optimizers.Adam(recipe["learning_rate"], clipnorm=recipe["clipnorm"])
    model.compile(optimizer=optimizer, run_eagerly=args.run_eagerly)
    # One pass of a repeated dataset rather than a new pass per epoch: the shuffle order of
    # every epoch then follows from the seed alone, so a resumed run reads on exactly where
    # the interrupted one stopped (an unknown split size keeps per-epoch passes).
    steps = args.steps or (train.num_images // recipe["batch_size"] if train.num_images else None)
    dataset = train.dataset.repeat() if steps else train.dataset
    callbacks = _callbacks(output, "", args.save_every)
    if recipe["minutes"]:
        from kerasdet.training.budget import CosineOverBudget, TimeBudget

        budget = TimeBudget(recipe["minutes"] * 60)
        callbacks.append(budget)
        if recipe["schedule"] == "cosine":
            callbacks.append(CosineOverBudget(budget, recipe["learning_rate"], warmup=recipe["warmup_steps"]))
    # The dataset shuffles itself (`_load_data`); Keras cannot shuffle a tf.data.Dataset.
    model.fit(dataset, epochs=recipe["epochs"], steps_per_epoch=steps, callbacks=callbacks, shuffle=False,
              verbose=args.verbose)


def _fit_overfeat(parts, train, recipe, args, output, config):
    # Both recipes train the standard-pool networks (one output per window crop or patch
    # window). A configuration whose detector pools offset / stride 2 (a test-time choice)
    # gets their weights after: pools have none, so the same weights fit.
    detector = parts.detector
    if config.model["last_pool"] != "standard":
        from kerasdet.zoo.builders import build_overfeat

        parts = build_overfeat(config.with_model({"last_pool": "standard"}, where="kerasdet train"), parts.num_classes)
        parts.detector.set_weights(detector.get_weights())  # e.g. --weights to fine-tune
    fit = _fit_overfeat_dense if recipe["recipe"] == "dense" else _fit_overfeat_crops
    fit(parts, train, recipe, args, output)
    if parts.detector is not detector:
        detector.set_weights(parts.detector.get_weights())


def _fit_overfeat_crops(parts, train, recipe, args, output):
    from kerasdet.analysis import spatial_geometry
    from kerasdet.data.crops import crop_dataset
    from kerasdet.models.overfeat import _architecture
    from kerasdet.training.checkpoint import atomic_save_weights
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
            f"{len(examples)} training images gave {len(crops)} classifier and {len(loc_crops)} "
            "localizer crops; use more images"
        )
    print(f"OverFeat: {len(examples)} images → {len(crops)} classifier crops, {len(loc_crops)} localizer crops")
    done = os.path.join(output, "checkpoints", "after_classifier.weights.h5")
    if os.path.exists(done):
        # An interrupted run already finished stage 1: resume at the localizer.
        print(f"stage 1 already done ({done}); resuming at the localizer")
        load_weights_by_name(parts.detector, done)
    else:
        print("stage 1/2: classifier on window crops")
        fit_classifier(parts.classifier, crops, labels, epochs=recipe["classifier_epochs"],
                       batch_size=recipe["batch_size"], learning_rate=recipe["learning_rate"],
                       seed=recipe["seed"], verbose=args.verbose, callbacks=_callbacks(output, "classifier_", args.save_every))
        atomic_save_weights(parts.detector, done)  # a partial file would pass for a finished stage 1
    print("stage 2/2: box regressor on the frozen layers 1-5")
    fit_localizer(parts.localizer, loc_crops, loc_targets, window_center_x=center[1],
                  epochs=recipe["localizer_epochs"], batch_size=recipe["batch_size"],
                  learning_rate=recipe["learning_rate"], seed=recipe["seed"], verbose=args.verbose,
                  callbacks=_callbacks(output, "localizer_", args.save_every))
    os.remove(done)  # the run is complete: a new run in this directory starts from stage 1


def _fit_overfeat_dense(parts, train, recipe, args, output):
    from kerasdet.training.checkpoint import atomic_save_weights
    from kerasdet.training.overfeat_dense_recipe import STAGES, fit_dense_recipe
    from kerasdet.zoo import load_weights_by_name
    from kerasdet.zoo.config import OVERFEAT_DENSE_KEYS

    examples = _as_examples(train)
    # The weights after each finished stage: an interrupted run resumes at the next one.
    marks = {stage: os.path.join(output, "checkpoints", f"after_{stage}.weights.h5") for stage in ("crops", "classifier")}
    start_at = "crops"
    for stage, following in (("classifier", "localizer"), ("crops", "classifier")):
        if os.path.exists(marks[stage]):
            print(f"the {stage} stage is done already ({marks[stage]}); resuming at the {following}")
            load_weights_by_name(parts.detector, marks[stage])
            start_at = following
            break

    def checkpoint(stage):
        if stage in marks:
            atomic_save_weights(parts.detector, marks[stage])  # a partial file would pass for a finished stage

    kwargs = {key: recipe[key] for key in OVERFEAT_DENSE_KEYS}
    if args.steps:  # --steps caps each dense stage
        for key in ("classifier_steps", "localizer_steps"):
            kwargs[key] = min(args.steps, kwargs[key] or args.steps)
    print(f"OverFeat dense recipe on {len(examples)} images")
    result = fit_dense_recipe(
        parts.classifier, examples, arch=parts.arch, localizer=parts.localizer, crop_steps=args.steps,
        start_at=start_at, on_stage_end=checkpoint, verbose=args.verbose, log=print,
        callbacks={stage: _callbacks(output, f"{stage}_", args.save_every) for stage in STAGES}, **kwargs,
    )
    print("stage times: " + ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items()))
    for path in marks.values():  # the run is complete: a new run in this directory starts afresh
        if os.path.exists(path):
            os.remove(path)
