"""Benchmark of `RoIPool` (and `RoIAlign`) against the usual `crop_and_resize` pooling.

Faster R-CNN's VGG16 setting: 300 RoIs pooled to 7x7 from a `[1, 38, 63, 512]` float32 map
(stride 16 on a 600x1000 image), random RoIs inside the image. Timed, in graph mode
(`tf.function`, tracing excluded by warm-up calls), interleaved round-robin to cancel drift:

  * `RoIPool`       the exact builtin-op layer (sparse-table gathers);
  * `crop_and_resize` the common TF approach: `tf.image.crop_and_resize` to 14x14 with
                    normalized boxes, then a 2x2 max pool to 7x7 (not a TFLite builtin);
  * `RoIAlign`      the builtin-op RoIAlign (sampling_ratio 2), for information;
  * `table build`   only the sparse tables `RoIPool` builds for these RoIs, to see how the
                    time splits between building the table and gathering from it.

It prints the median latency of each, the ratio RoIPool / crop_and_resize, and the LiteRT
latency (2 threads) of both layers converted with builtin ops only.

Run:
    . /work/venv/bin/activate
    python tools/bench_roi_pool.py                  # 25 timed runs each
    python tools/bench_roi_pool.py --runs 50 --no-tflite
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from timing import time_interleaved  # noqa: E402  (tools/timing.py)

from kerasdet.layers import roi_pool as roi_pool_module  # noqa: E402
from kerasdet.layers._roi_utils import channel_groups, one_group_at_a_time  # noqa: E402
from kerasdet.layers.roi_align import RoIAlign  # noqa: E402
from kerasdet.layers.roi_pool import RoIPool  # noqa: E402


def make_inputs(num_rois, height, width, channels, image=(600.0, 1000.0), seed=0):
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((1, height, width, channels)).astype(np.float32)
    ys = np.sort(rng.uniform(0, image[0], (num_rois, 2)), axis=1)
    xs = np.sort(rng.uniform(0, image[1], (num_rois, 2)), axis=1)
    rois = np.stack([ys[:, 0], xs[:, 0], ys[:, 1], xs[:, 1]], axis=-1)[None].astype(np.float32)
    return features, rois


def crop_and_resize_pool(features, rois, pool=7, spatial_scale=1 / 16):
    """The usual TF RoI pooling: bilinear crops at 2x the pool size, then a 2x2 max pool."""
    height = tf.cast(tf.shape(features)[1], tf.float32)
    width = tf.cast(tf.shape(features)[2], tf.float32)
    boxes = rois[0] * spatial_scale / tf.stack([height - 1, width - 1, height - 1, width - 1])
    crops = tf.image.crop_and_resize(
        features, boxes, tf.zeros(tf.shape(boxes)[:1], tf.int32), [2 * pool, 2 * pool]
    )
    return tf.nn.max_pool2d(crops, 2, 2, "VALID")


def table_build_only(features, rois, pool=7, spatial_scale=1 / 16):
    """The sparse tables `RoIPool` builds for these inputs, all channel groups.

    Returns a strided sample of each table (which needs the whole table) rather than the
    tables themselves, so that the timing does not include handing ~180 MB back to Python.
    """
    height, width, channels = features.shape[1:]
    levels = (height.bit_length(), width.bit_length())
    flat = tf.reshape(features, [-1, channels])
    per_channel = levels[0] * levels[1] * height * width * 4
    sizes = channel_groups(
        channels,
        per_channel,
        roi_pool_module._GROUP_TABLE_BYTES,
        roi_pool_module._MAX_CHANNEL_GROUPS,
    )
    samples = []
    for part in one_group_at_a_time(tf.split(flat, sizes, axis=1), samples):
        table = roi_pool_module._build_table(part, *levels, width)
        samples.append(tf.reduce_sum(table[::101]))
    return tf.add_n(samples)


def tflite_latency(layer, features, rois, runs, threads=2):
    from ai_edge_litert.interpreter import Interpreter

    from kerasdet.export.tflite import convert_builtin_only

    model = convert_builtin_only(
        layer, [tf.TensorSpec(features.shape, tf.float32), tf.TensorSpec(rois.shape, tf.float32)]
    )
    interpreter = Interpreter(model_content=model, num_threads=threads)
    interpreter.allocate_tensors()
    for detail, value in zip(interpreter.get_input_details(), (features, rois), strict=True):
        interpreter.set_tensor(detail["index"], value)
    interpreter.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
    output = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    return statistics.median(times), output


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=25, help="timed runs per method (median)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls per method")
    parser.add_argument("--rois", type=int, default=300)
    parser.add_argument(
        "--shape", type=int, nargs=3, default=(38, 63, 512), metavar=("H", "W", "C")
    )
    parser.add_argument("--no-tflite", action="store_true", help="skip the LiteRT timings")
    args = parser.parse_args()

    features_np, rois_np = make_inputs(args.rois, *args.shape)
    features, rois = tf.constant(features_np), tf.constant(rois_np)
    roi_pool_layer = RoIPool(pool_size=7, spatial_scale=1 / 16)
    roi_align_layer = RoIAlign(pool_size=7, spatial_scale=1 / 16, sampling_ratio=2, aligned=True)
    graphs = {
        "RoIPool (ours)": tf.function(roi_pool_layer),
        "crop_and_resize + max_pool": tf.function(crop_and_resize_pool),
        "RoIAlign (ours)": tf.function(roi_align_layer),
        "  RoIPool table build only": tf.function(table_build_only),
    }
    functions = {
        name: (lambda fn=fn: tf.nest.map_structure(lambda t: t.numpy(), fn(features, rois)))
        for name, fn in graphs.items()
    }
    medians = {name: statistics.median(t) for name, t in time_interleaved(functions, args.runs, args.warmup).items()}

    print(
        f"RoI pooling, {args.rois} RoIs -> 7x7, features [1, {', '.join(map(str, args.shape))}] "
        f"float32, TF {tf.__version__}, graph mode, median of {args.runs} interleaved runs"
    )
    print(f"{'method':<30} {'ms':>9}")
    for name, seconds in medians.items():
        print(f"{name:<30} {seconds * 1e3:9.2f}")
    ratio = medians["RoIPool (ours)"] / medians["crop_and_resize + max_pool"]
    print(f"ratio RoIPool / crop_and_resize = {ratio:.2f} (goal <= 1.5)")

    if not args.no_tflite:
        print(f"LiteRT, 2 threads, median of {args.runs} invokes")
        for name, layer in (("RoIPool", roi_pool_layer), ("RoIAlign", roi_align_layer)):
            seconds, output = tflite_latency(layer, features_np, rois_np, args.runs)
            diff = np.abs(output - layer(features, rois).numpy()).max()
            print(f"{name + ' (TFLite)':<30} {seconds * 1e3:9.2f}   max |TFLite - TF| = {diff:.1e}")


if __name__ == "__main__":
    main()
