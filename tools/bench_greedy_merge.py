"""Benchmark of `kerasdet.postprocess.greedy_merge` on OverFeat-like detections.

Each image has ~20 objects of a few classes, each found by many jittered windows (so most
boxes merge), plus ~5% scattered boxes. For every n it reports the median latency of the
graph-mode function (tracing and XLA compilation excluded by a warm-up call), the number of
merges and loop iterations (merges + lazy row refreshes), and the growth factor of the
latency from the previous n. Modes: plain TF graph, XLA (`jit_compile=True`), and
optionally the LiteRT interpreter on the builtin-op TFLite conversion.

Run:
    . /work/venv/bin/activate
    python tools/bench_greedy_merge.py                    # n = 500 1000 2000 4000
    python tools/bench_greedy_merge.py --sizes 2000 --runs 9 --tflite --threads 1

Latency is the median (and min) over `--runs` timed calls; on a shared machine the min is
the better estimate of the uncontended cost. The 1-minute load average is printed first.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from kerasdet.postprocess.greedy_merge import _greedy_merge_impl  # noqa: E402


def overfeat_like(n, batch=1, objects=20, classes=3, scatter=0.05, seed=0, image=800.0):
    """Detections as a sliding-window detector emits them: jittered boxes per object."""
    rng = np.random.default_rng(seed)
    size = rng.uniform(40, 200, (batch, objects, 2))
    center = rng.uniform(size / 2, image - size / 2)
    obj_class = rng.integers(0, classes, (batch, objects))
    who = rng.integers(0, objects, (batch, n))
    c = np.take_along_axis(center, who[..., None], 1)
    s = np.take_along_axis(size, who[..., None], 1)
    c = c + rng.normal(0, 0.1, c.shape) * s  # window positions jitter ~10% of the size
    s = s * rng.uniform(0.8, 1.25, s.shape)  # and scales ±20%
    cls = np.take_along_axis(obj_class, who, 1)
    scores = rng.uniform(0.3, 1.0, (batch, n))
    stray = rng.random((batch, n)) < scatter  # background windows anywhere, any class
    c[stray] = rng.uniform(0, image, (stray.sum(), 2))
    s[stray] = rng.uniform(20, 200, (stray.sum(), 2))
    cls[stray] = rng.integers(0, classes, stray.sum())
    scores[stray] = rng.uniform(0.05, 0.5, stray.sum())
    boxes = np.concatenate([c - s / 2, c + s / 2], axis=-1)
    return boxes.astype(np.float32), scores.astype(np.float32), cls.astype(np.int32)


def make_fn(n, jit, args):
    @tf.function(
        input_signature=[
            tf.TensorSpec([None, n, 4], tf.float32),
            tf.TensorSpec([None, n], tf.float32),
            tf.TensorSpec([None, n], tf.int32),
        ]
    )
    def fn(boxes, scores, classes):
        return _greedy_merge_impl(
            boxes, scores, classes, args.match_threshold, args.score_threshold,
            args.max_detections, None, True, jit,
        )

    return fn


def litert_runner(boxes, scores, classes, args):
    """Converts the op (batch 1, static shapes) and returns a callable invoking LiteRT."""
    from ai_edge_litert.interpreter import Interpreter

    from kerasdet.export.tflite import convert_builtin_only

    specs = [tf.TensorSpec(x.shape, tf.as_dtype(x.dtype)) for x in (boxes, scores, classes)]
    flatbuffer = convert_builtin_only(
        lambda b, s, c: _greedy_merge_impl(
            b, s, c, args.match_threshold, args.score_threshold, args.max_detections,
            None, False, False,
        )[0],
        specs,
    )
    interpreter = Interpreter(model_content=flatbuffer, num_threads=1)
    interpreter.allocate_tensors()
    inputs = interpreter.get_input_details()
    outputs = interpreter.get_output_details()

    def run():
        for detail, value in zip(inputs, (boxes, scores, classes), strict=True):
            interpreter.set_tensor(detail["index"], value)
        interpreter.invoke()
        return [interpreter.get_tensor(d["index"]) for d in outputs]

    return run


def time_it(call, runs):
    """(median, min) wall time in ms of `call` after one warm-up call."""
    call()  # warm-up: tracing / XLA compilation
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        result = call()
        for value in tf.nest.flatten(result):  # make sure the work is done
            np.asarray(value)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3, min(times) * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 2000, 4000])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per case (median)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--match-threshold", type=float, default=1.0)
    parser.add_argument("--score-threshold", type=float, default=0.05)
    parser.add_argument("--max-detections", type=int, default=100)
    parser.add_argument("--modes", nargs="+", default=["graph", "xla"], choices=["graph", "xla"])
    parser.add_argument("--tflite", action="store_true", help="also time LiteRT (batch 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0,
                        help="TF intra/inter-op threads (0 = TF default)")
    args = parser.parse_args()
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)

    print(f"TF {tf.__version__}, batch {args.batch}, match_threshold {args.match_threshold}, "
          f"{args.runs} runs, threads {args.threads or 'default'}, "
          f"load average {os.getloadavg()[0]:.2f}")
    header = (f"{'mode':<7}{'n':>6}{'median ms':>11}{'min ms':>9}{'growth':>8}{'merges':>8}"
              f"{'iters':>7}{'out':>5}")
    print(header)
    modes = list(args.modes) + (["litert"] if args.tflite else [])
    for mode in modes:
        previous = None
        for n in args.sizes:
            boxes, scores, classes = overfeat_like(n, args.batch, seed=args.seed)
            fn = make_fn(n, mode == "xla", args)
            if mode == "litert":
                boxes, scores, classes = boxes[:1], scores[:1], classes[:1]
                ms, ms_min = time_it(litert_runner(boxes, scores, classes, args), args.runs)
            else:
                ms, ms_min = time_it(functools.partial(fn, boxes, scores, classes), args.runs)
            det, stats = fn(boxes, scores, classes)
            growth = f"{ms / previous:.2f}x" if previous else "-"
            previous = ms
            print(f"{mode:<7}{n:>6}{ms:>11.1f}{ms_min:>9.1f}{growth:>8}"
                  f"{int(stats['merges'].numpy().sum()):>8}{int(stats['iterations']):>7}"
                  f"{int(det['num_detections'].numpy().sum()):>5}", flush=True)


if __name__ == "__main__":
    main()
