"""Soak benchmark (issue 9): the LiteRT runner and the SavedModel serve many consecutive
images of varying sizes in one process with flat memory.

    python tools/bench_soak.py                      # 1000 images, both formats
    python tools/bench_soak.py --images 200 --formats tflite

The bundled `faster_rcnn_tiny` (`weights="shapes"`, 256×256) is exported to a temporary
directory as float32 TFLite and as a SavedModel (before any measurement). Then, per format:
20 warm-up images, RSS recorded, `--images` consecutive single-image calls, RSS recorded
every 100 images and at the end. Images: `--distinct` synthetic shapes images
(`kerasdet.data.shapes.generate_example`) with heights and widths drawn uniformly from
120..640, cycled (generated once, before the measurement, so image generation is not part
of the memory or speed figures).

- `tflite`: `kerasdet.lite.TFLiteDetector(path, num_threads=--threads).detect(image)`
  (letterbox, invoke, boxes mapped back to the image).
- `saved_model`: `tf.saved_model.load(path).signatures["serving_default"]` on the image
  letterboxed with `kerasdet.lite.letterbox` (uint8 `[1, 256, 256, 3]`), boxes mapped back.

Both run in the same process, LiteRT first; each format's growth is measured from its own
post-warm-up RSS. Pass criterion: growth < 5%.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import time

import numpy as np

FORMATS = ("tflite", "saved_model")
WARMUP = 20
EVERY = 100
MAX_GROWTH = 0.05


def rss_mb() -> float:
    """Resident set size of this process in MiB (VmRSS of /proc/self/status)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def make_images(n, seed=0, lo=120, hi=640):
    from kerasdet.data.shapes import generate_example

    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        h, w = (int(v) for v in rng.integers(lo, hi + 1, size=2))
        images.append(generate_example(rng, h, w)["image"])
    return images


def tflite_runner(path, threads):
    from kerasdet.lite import TFLiteDetector

    detector = TFLiteDetector(path, num_threads=threads)
    return detector.detect


def saved_model_runner(path, input_size):
    import tensorflow as tf

    from kerasdet.lite import letterbox

    loaded = tf.saved_model.load(path)
    serve = loaded.signatures["serving_default"]

    def detect(image):
        height, width = image.shape[:2]
        padded, (sy, sx) = letterbox(image, input_size)
        batch = np.clip(np.round(padded), 0, 255).astype(np.uint8)[None]
        out = serve(images=tf.constant(batch))
        n = int(out["num_detections"].numpy()[0])
        boxes = out["boxes"].numpy()[0, :n] / np.array([sy, sx, sy, sx], np.float32)
        limits = np.array([height, width, height, width], np.float32)
        return {
            "boxes": np.clip(boxes, 0.0, limits),
            "scores": out["scores"].numpy()[0, :n],
            "classes": out["classes"].numpy()[0, :n].astype(np.int32),
        }

    detect._keepalive = loaded  # the signature needs its SavedModel object alive
    return detect


def soak(detect, images, count):
    for i in range(WARMUP):
        detect(images[i % len(images)])
    gc.collect()
    curve = [(0, rss_mb())]
    detections = 0
    start = time.perf_counter()
    for i in range(count):
        detections += len(detect(images[i % len(images)])["scores"])
        if (i + 1) % EVERY == 0 or i + 1 == count:
            curve.append((i + 1, rss_mb()))
    elapsed = time.perf_counter() - start
    return curve, count / elapsed, detections


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000, help="consecutive images per format")
    parser.add_argument("--formats", default=",".join(FORMATS), help=f"comma-separated subset of {FORMATS}")
    parser.add_argument("--distinct", type=int, default=50, help="distinct synthetic images, cycled")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (LiteRT num_threads, TF intra-op)")
    args = parser.parse_args(argv)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    for f in formats:
        if f not in FORMATS:
            parser.error(f"unknown format {f!r}; choose from {FORMATS}")

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)

    import kerasdet
    from kerasdet.export import export

    input_size = (256, 256)
    t0 = time.perf_counter()
    model = kerasdet.zoo.load("faster_rcnn_tiny", weights="shapes")
    tmp = tempfile.mkdtemp(prefix="kerasdet_soak_")
    paths = {}
    for f in formats:
        name = "detector.tflite" if f == "tflite" else "saved_model"
        paths[f] = export(model, os.path.join(tmp, name), format=f, input_size=input_size)
    del model
    images = make_images(args.distinct)
    gc.collect()
    sizes = sorted({im.shape[:2] for im in images})
    print(
        f"setup {time.perf_counter() - t0:.1f}s; {args.distinct} distinct synthetic shapes images "
        f"(h, w in 120..640; {len(sizes)} distinct sizes) cycled over {args.images} calls; "
        f"threads={args.threads}; RSS after setup {rss_mb():.0f} MiB",
        file=sys.stderr,
    )

    rows = []
    curves = {}
    for f in formats:
        if f == "tflite":
            detect = tflite_runner(paths[f], args.threads)
        else:
            detect = saved_model_runner(paths[f], input_size)
        curve, ips, dets = soak(detect, images, args.images)
        curves[f] = curve
        start, end = curve[0][1], curve[-1][1]
        growth = (end - start) / start
        peak = max(r for _, r in curve)
        rows.append((f, start, end, growth, peak, ips, dets))
        print(f"{f}: " + " ".join(f"{i}:{r:.0f}" for i, r in curve), file=sys.stderr)
        del detect
        gc.collect()
    shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(f"Soak: {args.images} consecutive images per format (after {WARMUP} warm-up), one process, RSS in MiB")
    print()
    print("| runner | RSS start | RSS end | growth | RSS max | images/s | detections | < 5% |")
    print("|---|---:|---:|---:|---:|---:|---:|:-:|")
    for f, start, end, growth, peak, ips, dets in rows:
        ok = "yes" if growth < MAX_GROWTH else "NO"
        label = "LiteRT (TFLiteDetector)" if f == "tflite" else "SavedModel (serving_default)"
        print(f"| {label} | {start:.0f} | {end:.0f} | {100 * growth:+.1f}% | {peak:.0f} | {ips:.1f} | {dets} | {ok} |")
    print()
    print("RSS curve (image index: MiB):")
    for f, curve in curves.items():
        print(f"- {f}: " + ", ".join(f"{i}: {r:.0f}" for i, r in curve))
    return 0 if all(r[3] < MAX_GROWTH for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
