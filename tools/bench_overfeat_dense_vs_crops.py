"""Benchmark: OverFeat's dense sliding window vs running the classifier on every crop.

The notes' central claim: with FC layers as convolutions, one pass over a 461×569 image
computes the classifier at all 7×10 = 70 window positions (221×221 at stride 36) and
shares the overlapping convolution work, instead of running 70 separate crops. This
measures both on this machine, in one run, with the same weights:

  * dense: OverFeat-accurate on the whole [1, 461, 569, 3] image (graph mode);
  * crops: the same model on the 70 crops [70, 221, 221, 3], batched (graph mode);

and reports the measured speed-up next to the FLOP ratio (the limit), plus how far the
outputs agree (they differ only where the 3×3 convs' zero padding meets a crop border).

    python tools/bench_overfeat_dense_vs_crops.py --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import keras
import numpy as np
import tensorflow as tf

import kerasdet  # noqa: F401  (TF backend)
from kerasdet.analysis import count_flops, spatial_geometry
from kerasdet.models import overfeat_classifier


def _median_seconds(fn, repeats):
    fn()  # warm-up (tracing, allocation)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--height", type=int, default=461)
    parser.add_argument("--width", type=int, default=569)
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    model = overfeat_classifier("accurate", num_classes=1000)
    geometry = spatial_geometry(model, (args.height, args.width))
    rows, cols = geometry.output_size
    stride = geometry.effective_stride[0]
    window = 221
    image = np.random.default_rng(0).uniform(0, 255, [1, args.height, args.width, 3]).astype("float32")
    crops = np.concatenate(
        [image[:, i * stride : i * stride + window, j * stride : j * stride + window]
         for i in range(rows) for j in range(cols)]
    )

    dense_fn = tf.function(lambda x: model(x, training=False), jit_compile=False)
    dense_input, crops_input = tf.constant(image), tf.constant(crops)
    dense_out = dense_fn(dense_input).numpy()[0]
    crop_out = np.concatenate([dense_fn(crops_input[k : k + 14]).numpy() for k in range(0, len(crops), 14)])
    crop_out = crop_out.reshape(rows, cols, -1)

    # Interleave the two measurements so machine drift hits both alike.
    dense_times, crop_times = [], []
    dense_fn(dense_input)
    dense_fn(crops_input)
    for _ in range(args.repeats):
        start = time.perf_counter()
        dense_fn(dense_input).numpy()
        dense_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        dense_fn(crops_input).numpy()
        crop_times.append(time.perf_counter() - start)
    dense_s, crop_s = statistics.median(dense_times), statistics.median(crop_times)

    dense_flops = count_flops(model, (args.height, args.width))
    crop_flops = len(crops) * count_flops(model, (window, window))
    flop_ratio = crop_flops / dense_flops
    speedup = crop_s / dense_s
    diff = np.abs(dense_out - crop_out)
    top1 = np.mean(dense_out.argmax(-1) == crop_out.argmax(-1))

    print(f"OverFeat-accurate, {args.height}×{args.width} image → {rows}×{cols} outputs, {len(crops)} crops of {window}×{window} at stride {stride}")
    print(f"TF {tf.__version__}, {tf.config.threading.get_inter_op_parallelism_threads() or 'default'} inter-op threads, median of {args.repeats}")
    print("| pass | GFLOP | median s | runs (s) | GFLOP/s |")
    print("|---|---|---|---|---|")
    print(f"| dense (1 image) | {dense_flops / 1e9:.1f} | {dense_s:.3f} | {', '.join(f'{t:.3f}' for t in dense_times)} | {dense_flops / 1e9 / dense_s:.1f} |")
    print(f"| crops (70, batched) | {crop_flops / 1e9:.1f} | {crop_s:.3f} | {', '.join(f'{t:.3f}' for t in crop_times)} | {crop_flops / 1e9 / crop_s:.1f} |")
    print(f"FLOP ratio (limit): {flop_ratio:.2f}×; measured speed-up: {speedup:.2f}× = {speedup / flop_ratio:.2f} of the FLOP ratio (goal ≥ 0.80)")
    print(f"outputs: max |Δlogit| = {diff.max():.3g} (logit std {dense_out.std():.3g}), top-1 class agreement {top1:.0%} "
          "(differences come from zero padding at crop borders)")

    # Same comparison on the padding-free variant (no conv padding): there the dense
    # output must equal the crops exactly, up to float rounding.
    valid = overfeat_classifier("accurate", num_classes=1000, conv_padding="valid")
    valid_fn = tf.function(lambda x: valid(x, training=False))
    valid_dense = valid_fn(dense_input).numpy()[0]
    v_rows, v_cols = valid_dense.shape[:2]
    valid_crops = np.concatenate(
        [valid_fn(crops_input[k : k + 14]).numpy() for k in range(0, len(crops), 14)]
    ).reshape(rows, cols, -1)[:v_rows, :v_cols]
    exact = np.abs(valid_dense[:rows, :cols] - valid_crops).max()
    print(f"padding-free variant: max |Δlogit| dense vs crops = {exact:.2g} "
          f"(logit std {valid_dense.std():.3g}), top-1 agreement "
          f"{np.mean(valid_dense[:rows, :cols].argmax(-1) == valid_crops.argmax(-1)):.0%}")


if __name__ == "__main__":
    main()
