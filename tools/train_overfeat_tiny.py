"""Recipe + benchmark: OverFeat-tiny on the synthetic `kerasdet_shapes` dataset, all three
stages of the notes' workflow on this CPU, and its detection AP on the validation split.

  1. classifier: `model.fit` on 86×86 crops (5 shape classes + background);
  2. localizer: the box regressor on the frozen layers 1–5, L2 loss, IoU ≥ 0.5 windows;
  3. detector: one functional model — image pyramid, dense classifier + regressor at
     each scale, confidence threshold, greedy merge (or NMS) — evaluated with COCO AP.

    python tools/train_overfeat_tiny.py --output /tmp/overfeat_tiny

Prints the time of each stage, the crop accuracy per epoch and the COCO table; the goal of
the OverFeat issue is AP50 ≥ 0.80 within 15 minutes of training in total.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import keras
import numpy as np

import kerasdet  # noqa: F401  (TF backend)
from kerasdet.analysis import spatial_geometry
from kerasdet.data.crops import crop_dataset
from kerasdet.data.shapes import CLASS_NAMES, make_example
from kerasdet.metrics.coco import COCOEvaluator
from kerasdet.models import overfeat_classifier
from kerasdet.models.overfeat_detector import overfeat_detector
from kerasdet.models.overfeat_localizer import overfeat_localizer
from kerasdet.training.overfeat import fit_classifier, fit_localizer


def evaluate(detector, split="validation", count=300, batch_size=8):
    evaluator = COCOEvaluator(class_names=CLASS_NAMES)
    examples = [make_example(split, i) for i in range(count)]
    start = time.perf_counter()
    for k in range(0, count, batch_size):
        chunk = examples[k : k + batch_size]
        images = np.stack([e["image"] for e in chunk]).astype("float32")
        m = max(1, max(len(e["boxes"]) for e in chunk))
        boxes = np.zeros([len(chunk), m, 4], np.float32)
        classes = -np.ones([len(chunk), m], np.int32)
        for i, e in enumerate(chunk):
            boxes[i, : len(e["boxes"])] = e["boxes"]
            classes[i, : len(e["classes"])] = e["classes"]
        detections = detector.predict_on_batch(images)
        evaluator.update({"boxes": boxes, "classes": classes}, detections)
    seconds = time.perf_counter() - start
    return evaluator.result(), evaluator.summary, seconds / count


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-images", type=int, default=1500)
    parser.add_argument("--classifier-epochs", type=int, default=12)
    parser.add_argument("--localizer-epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--dropout", type=float, default=0.25)
    parser.add_argument("--crops-per-object", type=int, default=3)
    parser.add_argument("--backgrounds", type=int, default=3)
    parser.add_argument("--shifted-negatives", type=int, default=1)
    parser.add_argument("--small-object-negatives", type=int, default=0)
    parser.add_argument("--localizer-crops-per-object", type=int, default=1)
    parser.add_argument("--scales", type=float, nargs="+", default=[0.6, 0.85, 1.2, 1.7, 2.4, 3.4])
    parser.add_argument("--score-threshold", type=float, default=0.5)
    parser.add_argument("--merge", choices=["greedy", "nms"], default="greedy")
    parser.add_argument("--val-images", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="directory for weights and a JSON report")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    num_classes = len(CLASS_NAMES)
    report = {"args": vars(args)}

    start = time.perf_counter()
    train = [make_example("train", i) for i in range(args.train_images)]
    classifier = overfeat_classifier("tiny", num_classes=num_classes + 1, dropout=args.dropout)
    center = spatial_geometry(classifier, (86, 86)).first_center
    crops, labels, _ = crop_dataset(
        train, window=86, window_center=center, seed=args.seed, crops_per_object=args.crops_per_object,
        backgrounds=args.backgrounds, shifted_negatives=args.shifted_negatives,
        small_object_negatives=args.small_object_negatives,
    )
    loc_crops, _, loc_targets = crop_dataset(
        train, window=86, window_center=center, seed=args.seed + 1, object_fraction=(0.7, 1.0),
        crops_per_object=args.localizer_crops_per_object, backgrounds=0,
    )
    keep = loc_targets[:, 4] >= 0
    loc_crops, loc_targets = loc_crops[keep], loc_targets[keep]
    data_s = time.perf_counter() - start
    print(f"data: {len(train)} images → {len(crops)} classifier crops, {len(loc_crops)} localizer crops ({data_s:.0f} s)")

    start = time.perf_counter()
    history = fit_classifier(classifier, crops, labels, epochs=args.classifier_epochs, batch_size=args.batch_size)
    classifier_s = time.perf_counter() - start
    localizer = overfeat_localizer(classifier, "tiny", num_classes=num_classes)
    start = time.perf_counter()
    loc_history = fit_localizer(
        localizer, loc_crops, loc_targets, window_center_x=center[1],
        epochs=args.localizer_epochs, batch_size=args.batch_size,
    )
    localizer_s = time.perf_counter() - start

    start = time.perf_counter()
    detector = overfeat_detector(
        classifier, localizer, "tiny", image_size=(256, 256), scales=args.scales,
        merge=args.merge, score_threshold=args.score_threshold,
    )
    build_s = time.perf_counter() - start
    metrics, summary, per_image_s = evaluate(detector, count=args.val_images)
    other = "nms" if args.merge == "greedy" else "greedy"
    other_detector = overfeat_detector(
        classifier, localizer, "tiny", image_size=(256, 256), scales=args.scales,
        merge=other, score_threshold=args.score_threshold,
    )
    other_metrics, _, other_s = evaluate(other_detector, count=args.val_images)
    print(f"with {other} instead: AP50 = {other_metrics['AP50']:.3f}, AP = {other_metrics['AP']:.3f} "
          f"({other_s * 1000:.0f} ms/image)")
    train_total = classifier_s + localizer_s + build_s
    print(summary)
    print(f"crop accuracy per epoch: {[round(a, 3) for a in history.history['accuracy']]}")
    print(f"localizer L2 per epoch: {[round(v, 4) for v in loc_history.history['loss']]}")
    print(f"time: data {data_s:.0f} s (not training), classifier {classifier_s:.0f} s, "
          f"localizer {localizer_s:.0f} s, detector build {build_s:.0f} s → training total "
          f"{train_total / 60:.1f} min; evaluation {per_image_s * 1000:.0f} ms/image")
    print(f"AP50 = {metrics['AP50']:.3f}, AP = {metrics['AP']:.3f}, AP75 = {metrics['AP75']:.3f} "
          f"({args.merge} merge, scales {args.scales}, threshold {args.score_threshold})")
    report.update(
        metrics=metrics, seconds={"data": data_s, "classifier": classifier_s, "localizer": localizer_s,
                                  "detector_build": build_s, "eval_per_image": per_image_s},
        crop_accuracy=history.history["accuracy"], localizer_loss=loc_history.history["loss"],
    )
    if args.output:
        os.makedirs(args.output, exist_ok=True)
        classifier.save_weights(os.path.join(args.output, "classifier.weights.h5"))
        localizer.save_weights(os.path.join(args.output, "localizer.weights.h5"))
        with open(os.path.join(args.output, "report.json"), "w") as f:
            json.dump(report, f, indent=1, default=float)


if __name__ == "__main__":
    main()
