"""`kerasdet demo`: the bundled detector on fresh images, its COCO AP, and its TFLite twin.

With no network and no arguments, the demo

1. loads `faster_rcnn_tiny` with its bundled `shapes` weights (`kerasdet/zoo/weights/`);
2. draws fresh synthetic images from the `kerasdet_shapes` validation distribution (same
   generator and settings as the validation split, but a random stream that neither the
   train nor the validation split uses, so the weights have never seen them);
3. runs the Keras model and prints COCO AP / AP50 / AP75 (pycocotools);
4. writes the images with their detections as one PNG grid;
5. exports a float32 builtin-ops TFLite file, runs it with LiteRT (`TFLiteDetector`) on the
   same images, prints its AP and checks it agrees with Keras (`kerasdet.demo.parity`).

It returns 1 when TFLite disagrees, so the demo doubles as an end-to-end check.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import time

import numpy as np

from kerasdet.demo.parity import check_parity

MODEL = "faster_rcnn_tiny"
WEIGHTS = "shapes"
DEFAULT_NUM_IMAGES = 32
DEFAULT_SEED = 0
PNG_NAME = "kerasdet_demo.png"
# Drawn boxes: the detector keeps everything above 0.05 for AP; a grid of those is noise.
DRAW_SCORE_THRESHOLD = 0.5
# Demo image i of seed s is drawn from np.random.default_rng([s, DEMO_STREAM, i]).
# kerasdet_shapes draws train / validation example i from default_rng([0, 0 | 1, i]), so a
# second entry of 2 keeps the demo's images out of both splits for every seed.
DEMO_STREAM = 2
_BATCH_SIZE = 8
_GRID_COLUMNS = 8  # at most; a square grid up to 64 images
_THREADS = 2


def _check_arguments(num_images, seed):
    if isinstance(num_images, bool) or not isinstance(num_images, (int, np.integer)) or num_images < 1:
        raise ValueError(f"the number of demo images must be a positive integer, got {num_images!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"the demo seed must be an integer >= 0, got {seed!r}")


def demo_examples(num_images: int = DEFAULT_NUM_IMAGES, seed: int = DEFAULT_SEED) -> list:
    """Fresh `kerasdet_shapes`-like examples: the default config's generator settings
    (256×256, up to 6 shapes of 12–120 px, 5 % empty) on the demo's own random stream.

    Returns:
        A list of `generate_example` dicts (`image` uint8, `boxes` yxyx pixels, `classes`).
    """
    from kerasdet.data.shapes import shapes_config

    _check_arguments(num_images, seed)
    config = shapes_config("default")
    return [config.generate(np.random.default_rng([int(seed), DEMO_STREAM, i])) for i in range(int(num_images))]


def detection_rows(batch: dict, index: int) -> dict:
    """Image `index` of a batched detections dict, cut to its `num_detections` rows."""
    n = int(np.asarray(batch["num_detections"]).reshape(-1)[index])
    return {key: np.asarray(batch[key])[index, :n] for key in ("boxes", "scores", "classes")}


def coco_ap(examples, detections, class_names) -> dict:
    """COCO metrics (pycocotools) of per-image detection rows against the examples."""
    from kerasdet.data.shapes import ground_truth_batch
    from kerasdet.metrics import COCOEvaluator

    evaluator = COCOEvaluator(class_names=class_names)
    for i, (example, rows) in enumerate(zip(examples, detections)):
        evaluator.update(
            ground_truth_batch([example]),
            {key: np.asarray(value)[None] for key, value in rows.items() if key in ("boxes", "scores", "classes")},
            image_ids=[i + 1],
        )
    return evaluator.result()


def _format_ap(metrics) -> str:
    # A YAML weights entry may record only some of the three.
    return "  ".join(f"{key} {metrics[key]:.3f}" for key in ("AP", "AP50", "AP75") if key in metrics)


class _Steps:
    """Prints each step's report lines with the step's wall time; `total()` since creation."""

    def __init__(self):
        self.start = time.perf_counter()

    @contextlib.contextmanager
    def step(self, name: str, lines: list):
        """Times the block; the block appends its report lines to `lines`."""
        start = time.perf_counter()
        yield
        seconds = time.perf_counter() - start
        for i, line in enumerate(lines):
            prefix = f"{name:<7}" if i == 0 else " " * 7
            suffix = f"  ({seconds:.1f} s)" if i == 0 else ""
            print(f"{prefix} {line}{suffix}", flush=True)

    def total(self) -> float:
        return time.perf_counter() - self.start


def run_demo(num_images: int = DEFAULT_NUM_IMAGES, seed: int = DEFAULT_SEED, output_dir=None) -> int:
    """Runs the demo (see the module docstring) and prints its report.

    Args:
        num_images: fresh synthetic images to detect on.
        seed: which images (`default_rng([seed, DEMO_STREAM, i])`, i < `num_images`).
        output_dir: where the PNG and the `.tflite` file go; default: the PNG
            (`kerasdet_demo.png`) in the current directory and the `.tflite` file in a
            temporary directory, deleted afterwards.

    Returns:
        0 when the TFLite model agrees with the Keras model, else 1.
    """
    from kerasdet import visualize, zoo
    from kerasdet.export import export
    from kerasdet.lite import TFLiteDetector

    _check_arguments(num_images, seed)  # before the slow parts
    steps = _Steps()
    entry = zoo.info(MODEL)["weights"][WEIGHTS]
    names = tuple(entry["classes"])
    print(f"kerasdet demo: {MODEL} with its bundled {WEIGHTS!r} weights, offline", flush=True)

    lines = []
    with steps.step("model", lines):
        model = zoo.load(MODEL, weights=WEIGHTS)
        height, width = model.image_size
        lines.append(f"{MODEL}: {model.count_params():,} parameters, input {height}×{width}, "
                     f"classes {', '.join(names)}")

    lines = []
    with steps.step("images", lines):
        examples = demo_examples(num_images, seed)
        objects = sum(len(e["classes"]) for e in examples)
        lines.append(f"{len(examples)} fresh synthetic images, {objects} objects: kerasdet_shapes' validation "
                     f"distribution, image i from default_rng([{seed}, {DEMO_STREAM}, i]) (--seed {seed}), "
                     "a stream neither the train nor the validation split uses")

    lines = []
    with steps.step("keras", lines):
        images = np.stack([e["image"] for e in examples]).astype(np.float32)
        keras_rows = []
        for start in range(0, len(images), _BATCH_SIZE):
            batch = model.predict_on_batch(images[start : start + _BATCH_SIZE])
            keras_rows += [detection_rows(batch, i) for i in range(len(batch["num_detections"]))]
        keras_ap = coco_ap(examples, keras_rows, names)
        count = sum(len(r["scores"]) for r in keras_rows)
        lines.append(f"{count} detections (score ≥ {model.score_threshold:g}) in batches of {_BATCH_SIZE}, "
                     "first batch includes graph tracing")
        lines.append(f"COCO {_format_ap(keras_ap)}")
        if entry.get("metrics"):
            lines.append(f"recorded for these weights: {_format_ap(entry['metrics'])} "
                         f"on {entry.get('dataset') or 'their validation data'}")

    with contextlib.ExitStack() as cleanup:
        if output_dir is None:
            png_path = PNG_NAME
            tflite_dir = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="kerasdet_demo_"))
        else:
            os.makedirs(output_dir, exist_ok=True)
            png_path = os.path.join(output_dir, PNG_NAME)
            tflite_dir = output_dir
        tflite_path = os.path.join(tflite_dir, f"{MODEL}.tflite")

        lines = []
        with steps.step("png", lines):
            drawn = [
                visualize.draw_detections(e["image"], rows, class_names=names, score_threshold=DRAW_SCORE_THRESHOLD)
                for e, rows in zip(examples, keras_rows)
            ]
            visualize.save_png(png_path, visualize.make_grid(drawn, columns=min(math.ceil(math.sqrt(len(drawn))), _GRID_COLUMNS)))
            lines.append(f"{png_path}: the {len(drawn)} images with the detections scoring ≥ {DRAW_SCORE_THRESHOLD:g}")

        lines = []
        with steps.step("export", lines):
            export(model, tflite_path, "tflite", class_names=names)
            where = "" if output_dir is not None else " (temporary; --output-dir keeps it)"
            lines.append(f"{tflite_path}{where}: float32, builtin ops only, "
                         f"{os.path.getsize(tflite_path) / 1e6:.1f} MB")

        lines = []
        with steps.step("tflite", lines):
            detector = TFLiteDetector(tflite_path, num_threads=_THREADS)
            lite_start = time.perf_counter()
            lite_rows = [detector.detect(e["image"]) for e in examples]
            per_image = (time.perf_counter() - lite_start) / len(examples) * 1000
            lite_ap = coco_ap(examples, lite_rows, names)
            parity = check_parity(keras_rows, lite_rows, class_names=names)
            lines.append(f"LiteRT, {_THREADS} threads, {per_image:.0f} ms / image")
            lines.append(f"COCO {_format_ap(lite_ap)}")
            if parity.ok:
                lines.append(f"TFLite agrees: {parity.matched}/{parity.compared} detections ({parity.rule()})")
            elif parity.compared == 0:
                lines.append("TFLite NOT CHECKED: no Keras detection scored "
                             f"≥ {parity.min_score:g}; use more images (--images)")
            else:
                lines.append(f"TFLite DISAGREES: {parity.matched}/{parity.compared} detections matched ({parity.rule()})")
                lines += [f"  {failure}" for failure in parity.failures[:10]]
                if len(parity.failures) > 10:
                    lines.append(f"  ... and {len(parity.failures) - 10} more")

    print(f"total   {steps.total():.1f} s (after Python and TensorFlow start-up)", flush=True)
    return 0 if parity.ok else 1
