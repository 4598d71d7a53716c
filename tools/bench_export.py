"""Benchmark: exported detectors — file size, latency and (optionally) AP50 of Keras vs LiteRT
float32 / float16 / dynamic_int8 / int8, all at the same CPU thread count.

    python tools/bench_export.py --model frcnn-tiny
    python tools/bench_export.py --model frcnn-mobilenetv2          # 320×320, random weights
    python tools/bench_export.py --model overfeat-tiny --weights /work/of_run4 --ap 100
    python tools/bench_export.py --model frcnn-tiny --weights frcnn.weights.h5 --ap 300
    python tools/bench_export.py --model path/to/detector.keras --ap 100
    python tools/bench_export.py --peer resnet50                    # a heavy reference point
    python tools/bench_export.py --peer resnet50 --head-svd-rank 256  # its head as a truncated SVD

Keras latency is a `tf.function` of the model (graph mode, no XLA) on a float32 image;
LiteRT latency is one `serving_default` call of the exported file on the uint8 image of the
model's input size (letterboxing a camera frame is extra and the same for every variant).
Both are medians over `--runs` calls after one warm-up, with `--threads` CPU threads
(TensorFlow's intra-op pool, LiteRT's `num_threads`).

`--ap N` evaluates every variant on the first N validation images of the synthetic
`kerasdet_shapes` set (256×256; letterboxed into the model's input, boxes mapped back) with
COCO AP50 (`kerasdet.metrics.COCOEvaluator`). Random weights give AP ≈ 0: pass trained
`--weights` for meaningful numbers. int8 is calibrated on the first 100 training images.

`--peer resnet50` exports FasterRCNN(91 classes, ResNet-50, 640×640, random weights) as
float32 TFLite and reports its size and LiteRT latency, for scale.

`--head-svd-rank T` factorizes the Faster R-CNN head's first FC layer (several values: one
per FC layer, 0 keeps a layer) with `kerasdet.models.truncate_head_svd` (Fast R-CNN §3.1)
after the weights are loaded and before any variant is measured (the peer model too).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

from timing import median_ms  # tools/timing.py

VARIANTS = ("keras", "float32", "float16", "dynamic_int8", "int8")
MODELS = ("frcnn-tiny", "frcnn-mobilenetv2", "overfeat-tiny")
CALIBRATION_IMAGES = 100


def build_model(args):
    """The Keras detector and the class names for `args.model` (a name or a .keras path)."""
    import keras

    from kerasdet.data.shapes import CLASS_NAMES
    from kerasdet.models import FasterRCNN, ProposalLayer, overfeat_classifier
    from kerasdet.models.overfeat_detector import overfeat_detector
    from kerasdet.models.overfeat_localizer import overfeat_localizer

    keras.utils.set_random_seed(0)
    names = list(CLASS_NAMES)
    if args.model.endswith(".keras"):
        return keras.saving.load_model(args.model, compile=False), names
    if args.model == "overfeat-tiny":
        classifier = overfeat_classifier("tiny", num_classes=len(names) + 1, batch_norm=args.batch_norm)
        localizer = overfeat_localizer(classifier, "tiny", num_classes=len(names))
        if args.weights:
            classifier.load_weights(os.path.join(args.weights, "classifier.weights.h5"))
            localizer.load_weights(os.path.join(args.weights, "localizer.weights.h5"))
        model = overfeat_detector(
            classifier, localizer, "tiny", image_size=(256, 256), scales=tuple(args.scales),
            merge=args.merge, score_threshold=args.score_threshold,
        )
        return model, names
    if args.model == "frcnn-tiny":
        # The configuration of tools/train_faster_rcnn_tiny.py, so its weights load.
        model = FasterRCNN(
            len(names), backbone="tiny", backbone_stride=args.backbone_stride,
            backbone_batch_norm=args.batch_norm, image_size=(256, 256), head_units=(256, 256),
            proposal_layer=ProposalLayer(pre_nms_top_k_test=1000, post_nms_top_k_test=100),
        )
    elif args.model == "frcnn-mobilenetv2":
        model = FasterRCNN(len(names), backbone="mobilenetv2", image_size=(320, 320))
    else:
        raise ValueError(f"--model must be one of {MODELS} or a .keras path, got {args.model!r}")
    if args.weights:
        model.load_weights(args.weights)
    return model, names


def maybe_truncate(args, model):
    """`model` with its head factorized per `--head-svd-rank` (unchanged without it)."""
    if args.head_svd_rank is None:
        return model
    from kerasdet.cli.export import head_svd_ranks
    from kerasdet.models import FasterRCNN, truncate_head_svd

    if not isinstance(model, FasterRCNN):
        raise ValueError(f"--head-svd-rank applies to Faster R-CNN models, got {type(model).__name__}")
    start = time.perf_counter()
    model = truncate_head_svd(model, head_svd_ranks(args.head_svd_rank))
    print(f"  head_ranks={model.head_ranks} (truncated SVD in {time.perf_counter() - start:.1f} s)", flush=True)
    return model


def validation_set(count):
    from kerasdet.data.shapes import make_example

    return [make_example("validation", i) for i in range(count)]


def average_precision(detect, examples, class_names):
    """COCO AP50 of `detect(image uint8 [h, w, 3]) -> {"boxes", "scores", "classes"}`
    (boxes in the image's pixels) on `examples`."""
    import numpy as np

    from kerasdet.metrics import COCOEvaluator

    evaluator = COCOEvaluator(class_names=class_names)
    for example in examples:
        boxes = np.asarray(example["boxes"], np.float32).reshape(1, -1, 4)
        classes = np.asarray(example["classes"], np.int32).reshape(1, -1)
        if boxes.shape[1] == 0:  # an image without objects: one padding row
            boxes, classes = np.zeros([1, 1, 4], np.float32), -np.ones([1, 1], np.int32)
        result = detect(example["image"])
        n = len(result["scores"])
        evaluator.update(
            {"boxes": boxes, "classes": classes},
            {"boxes": result["boxes"][None], "scores": result["scores"][None],
             "classes": result["classes"][None], "num_detections": np.array([n])},
        )
    return float(evaluator.result()["AP50"])


def keras_detector(model):
    """`detect(image)` for the Keras model, letterboxed exactly as TFLiteDetector does."""
    import numpy as np
    import tensorflow as tf

    from kerasdet.lite import letterbox

    size = tuple(model.inputs[0].shape[1:3])
    call = tf.function(lambda x: model(x, training=False))

    def detect(image):
        padded, (sy, sx) = letterbox(image, size)
        out = call(np.round(padded)[None].astype(np.float32))
        n = int(out["num_detections"][0])
        limits = np.array([*image.shape[:2], *image.shape[:2]], np.float32)[[0, 1, 0, 1]]
        boxes = np.clip(out["boxes"][0, :n].numpy() / np.array([sy, sx, sy, sx], np.float32), 0, limits)
        return {"boxes": boxes, "scores": out["scores"][0, :n].numpy(), "classes": out["classes"][0, :n].numpy()}

    return call, detect


def file_size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, files in os.walk(path) for f in files)


def run_variants(args, model, class_names, workdir):
    import numpy as np

    from kerasdet.data.shapes import make_example
    from kerasdet.export import export
    from kerasdet.lite import TFLiteDetector

    size = tuple(model.inputs[0].shape[1:3])
    image = np.zeros([*size, 3], np.uint8)
    image[size[0] // 4 : size[0] // 2, size[1] // 4 : size[1] // 2] = 200
    examples = validation_set(args.ap) if args.ap else []
    rows = []
    for variant in args.variants:
        row = {"variant": variant}
        if variant == "keras":
            call, detect = keras_detector(model)
            path = os.path.join(workdir, "keras_weights.weights.h5")
            model.save_weights(path)
            row["size_mb"] = file_size(path) / 1e6
            row["latency_ms"] = median_ms(lambda call=call: call(image[None].astype(np.float32)), args.runs)
        else:
            path = os.path.join(workdir, f"{variant}.tflite")
            quantization = None if variant == "float32" else variant
            data = None
            if variant == "int8":
                data = (make_example("train", i)["image"] for i in range(CALIBRATION_IMAGES))
            start = time.perf_counter()
            export(model, path, "tflite", quantization=quantization, representative_data=data, class_names=class_names)
            row["export_s"] = time.perf_counter() - start
            row["size_mb"] = file_size(path) / 1e6
            detector = TFLiteDetector(path, num_threads=args.threads)
            runner = detector._runner  # the bare call, no letterboxing
            row["latency_ms"] = median_ms(lambda runner=runner: runner(images=image[None]), args.runs)
            detect = detector.detect
        if examples:
            row["ap50"] = average_precision(detect, examples, class_names)
        rows.append(row)
        print("  " + "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    return rows


def run_peer(args, workdir):
    import numpy as np

    from kerasdet.export import export
    from kerasdet.lite import TFLiteDetector
    from kerasdet.models import FasterRCNN

    start = time.perf_counter()
    model = maybe_truncate(args, FasterRCNN(91, backbone="resnet50", image_size=(640, 640)))
    path = export(model, os.path.join(workdir, "resnet50_640.tflite"), "tflite")
    export_s = time.perf_counter() - start
    detector = TFLiteDetector(path, num_threads=args.threads)
    image = np.zeros([1, 640, 640, 3], np.uint8)
    latency = median_ms(lambda: detector._runner(images=image), args.runs)
    row = {"variant": "float32", "size_mb": file_size(path) / 1e6, "latency_ms": latency, "export_s": export_s}
    print("  " + "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    return [row]


def print_table(title, rows):
    keys = ["variant", "size_mb", "latency_ms", "export_s", "ap50"]
    keys = [k for k in keys if any(k in r for r in rows)]
    print(f"\n{title}")
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        cells = [f"{row[k]:.4g}" if isinstance(row.get(k), float) else str(row.get(k, "")) for k in keys]
        print("| " + " | ".join(cells) + " |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="frcnn-tiny", help=f"one of {MODELS} or a .keras path")
    parser.add_argument("--peer", choices=["resnet50"], default=None, help="benchmark the heavy peer model instead")
    parser.add_argument("--weights", default=None,
                        help="Faster R-CNN: a .weights.h5 file; OverFeat: the directory of train_overfeat_tiny.py")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--runs", type=int, default=20, help="timed calls per variant (median)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ap", type=int, default=0, metavar="N", help="AP50 on N validation images (0: skip)")
    parser.add_argument("--scales", type=float, nargs="+", default=[0.6, 0.85, 1.2, 1.7, 2.4, 3.4],
                        help="OverFeat pyramid")
    parser.add_argument("--merge", choices=["greedy", "nms", "greedy_nms"], default="greedy", help="OverFeat merge")
    parser.add_argument("--score-threshold", type=float, default=0.6, help="OverFeat confidence threshold")
    parser.add_argument("--backbone-stride", type=int, default=16, help="frcnn-tiny backbone stride (8 or 16)")
    parser.add_argument("--batch-norm", action="store_true", help="batch norm in the frcnn-tiny backbone / in overfeat-tiny's layers 1-5, as trained")
    parser.add_argument("--head-svd-rank", type=int, nargs="+", default=None, metavar="T",
                        help="Faster R-CNN: factorize the head's first FC layer at rank T (several: one per layer, 0 keeps)")
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args(argv)

    import tensorflow as tf

    # Before TensorFlow starts its thread pools: the same thread budget as LiteRT.
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import kerasdet  # noqa: F401  (TF backend)

    print("python " + " ".join(sys.argv), flush=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        if args.peer:
            title = f"FasterRCNN ResNet-50 640×640, 91 classes, LiteRT float32, {args.threads} threads"
            if args.head_svd_rank:
                title += f", head SVD rank {args.head_svd_rank}"
            rows = run_peer(args, workdir)
        else:
            model, class_names = build_model(args)
            model = maybe_truncate(args, model)
            size = tuple(model.inputs[0].shape[1:3])
            title = (f"{args.model} {size[0]}×{size[1]}, {args.threads} threads, median of {args.runs}"
                     + (f", AP50 on {args.ap} validation images" if args.ap else "")
                     + ("" if args.weights or args.model.endswith(".keras") else ", random weights")
                     + (f", head SVD rank {args.head_svd_rank}" if args.head_svd_rank else ""))
            rows = run_variants(args, model, class_names, workdir)
    print_table(title, rows)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"title": title, "args": vars(args), "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
