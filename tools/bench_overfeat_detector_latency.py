"""Benchmark: OverFeat detector latency per image, split by pyramid scale and by merge.

Times, on one image, each scale's dense pass (resize + classifier + regressor as one
graph) and the post-processing of all scales' candidates with greedy merge (XLA and
plain graph), with NMS, and with the greedy merge then NMS (`merge="greedy_nms"`), then the
whole detector model end to end.

    python tools/bench_overfeat_detector_latency.py --arch tiny --size 256 256
    python tools/bench_overfeat_detector_latency.py --arch accurate --size 461 569 \
        --scales 0.532 0.6 0.683 0.8 0.921 1.0

Weights are random unless `--weights DIR` (from tools/train_overfeat_tiny.py --output,
or `zoo` for the bundled overfeat_tiny weights) is given; `--last-pool offset` runs the same
weights with offset pooling (stride /3, 9× the locations), as the zoo's overfeat_tiny does:

    python tools/bench_overfeat_detector_latency.py --weights zoo --last-pool offset \
        --scales 0.6 0.8 1.0 1.25 1.55 1.95 2.45 3.05 3.8 --score-threshold 0.1

The dense passes do not depend on the weights; the merge cost does (through the number
of candidates above `--score-threshold`, reported).
"""

from __future__ import annotations

import argparse

import keras
import numpy as np
import tensorflow as tf
from timing import median_ms  # tools/timing.py

import kerasdet  # noqa: F401  (TF backend)
from kerasdet.models import overfeat_classifier
from kerasdet.models.overfeat import LAST_POOL_MODES
from kerasdet.models.overfeat_detector import overfeat_detector, with_last_pool
from kerasdet.postprocess import merge_detections


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="tiny")
    parser.add_argument("--size", type=int, nargs=2, default=[256, 256])
    parser.add_argument("--scales", type=float, nargs="+", default=[0.6, 0.85, 1.2, 1.7, 2.4, 3.4])
    parser.add_argument("--num-classes", type=int, default=5)
    parser.add_argument("--score-threshold", type=float, default=0.3)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--last-pool", default="standard", choices=LAST_POOL_MODES)
    parser.add_argument("--max-candidates", type=int, default=2000, help="merge bound (the zoo's: 2000)")
    parser.add_argument("--nms-iou", type=float, default=0.5, help="NMS IoU (NMS, greedy merge then NMS)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch-norm", action="store_true",
                        help="layers 1-5 with batch norm, as trained with --batch-norm (with --weights DIR or none; "
                             "`--weights zoo` builds the zoo's network)")
    args = parser.parse_args(argv)

    from kerasdet.models.overfeat_localizer import overfeat_localizer

    keras.utils.set_random_seed(0)
    if args.weights == "zoo":
        from kerasdet import zoo

        parts = zoo.load_parts("overfeat_tiny", weights="shapes", last_pool="standard")
        classifier, localizer = parts.classifier, parts.localizer
    else:
        classifier = overfeat_classifier(args.arch, num_classes=args.num_classes + 1, batch_norm=args.batch_norm)
        localizer = overfeat_localizer(classifier, args.arch, num_classes=args.num_classes)
        if args.weights:
            classifier.load_weights(f"{args.weights}/classifier.weights.h5")
            localizer.load_weights(f"{args.weights}/localizer.weights.h5")
    classifier, localizer = with_last_pool(classifier, localizer, args.arch, args.last_pool)
    height, width = args.size
    image = np.random.default_rng(0).uniform(0, 255, [1, height, width, 3]).astype("float32")
    if args.weights and args.arch == "tiny":
        from kerasdet.data.shapes import make_example

        image = make_example("validation", 0)["image"][None].astype("float32")

    detector = overfeat_detector(
        classifier, localizer, args.arch, image_size=(height, width), scales=args.scales,
        score_threshold=args.score_threshold, max_candidates=args.max_candidates,
    )
    rows = []
    for index, scale in enumerate(args.scales):
        decode = detector.get_layer(f"decode_{index}")
        part = keras.Model(detector.input, decode.output)
        fn = tf.function(lambda x, part=part: part(x, training=False))
        size = (round(height * scale), round(width * scale))
        rows.append((f"scale {scale} ({size[0]}×{size[1]})", median_ms(lambda fn=fn: fn(image), args.repeats),
                     int(decode.output[1].shape[1] or 0)))
    gather = keras.Model(detector.input, [detector.get_layer(n).output for n in ("all_boxes", "all_scores", "all_classes")]
                         if len(args.scales) > 1 else detector.get_layer("decode_0").output)
    boxes, scores, classes = gather(image)
    candidates = int(np.sum(scores.numpy() >= args.score_threshold))
    # The detector's own merge function (its MergeDetections layer runs it), per mode.
    merge_kwargs = dict(num_classes=args.num_classes, score_threshold=args.score_threshold,
                        iou_threshold=args.nms_iou, max_candidates=args.max_candidates)
    xla = tf.function(lambda: merge_detections(boxes, scores, classes, merge="greedy", **merge_kwargs))
    plain = tf.function(lambda: merge_detections(boxes, scores, classes, merge="greedy", jit_compile=False,
                                                 **merge_kwargs))
    nms = tf.function(lambda: merge_detections(boxes, scores, classes, merge="nms", **merge_kwargs))
    greedy_then_nms = tf.function(lambda: merge_detections(boxes, scores, classes, merge="greedy_nms",
                                                           **merge_kwargs))
    merges = [
        ("greedy merge (XLA)", median_ms(xla, args.repeats)),
        ("greedy merge (graph)", median_ms(plain, args.repeats)),
        ("NMS", median_ms(nms, args.repeats)),
        (f"greedy merge (XLA), then NMS at IoU {args.nms_iou}", median_ms(greedy_then_nms, args.repeats)),
    ]
    whole = tf.function(lambda x: detector(x, training=False))
    total = median_ms(lambda: whole(image), args.repeats)

    print(f"OverFeat-{args.arch} detector, {args.last_pool} last pool, {height}×{width} image, {len(args.scales)} scales, "
          f"{'trained' if args.weights else 'random'} weights, median of {args.repeats}")
    print("| part | median ms | locations |")
    print("|---|---|---|")
    for name, ms, n in rows:
        print(f"| {name} | {ms:.1f} | {n} |")
    print(f"| all scales (sum) | {sum(r[1] for r in rows):.1f} | {sum(r[2] for r in rows)} |")
    for name, ms in merges:
        print(f"| {name} on {candidates} candidates ≥ {args.score_threshold} | {ms:.1f} | |")
    print(f"| whole detector (greedy merge, XLA) | {total:.1f} | |")


if __name__ == "__main__":
    main()
