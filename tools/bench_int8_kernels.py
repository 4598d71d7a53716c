"""Benchmark: is full-int8 LiteRT faster than float32 on this CPU at all, and what does
kerasdet's int8 detector graph add?

    python tools/bench_int8_kernels.py                      # everything, 2 threads, 30 runs
    python tools/bench_int8_kernels.py --models tiny-backbone --runs 50
    python tools/bench_int8_kernels.py --threads 1 --no-detector

Three probes, each timed as float32 vs int8 in `ai_edge_litert.interpreter.Interpreter`
(`--threads` threads), with the default XNNPACK delegate (`AUTO`) and without it
(`BUILTIN_WITHOUT_DEFAULT_DELEGATES`: TFLite's own ruy / optimized kernels), so one sees
which kernel library makes the difference:

1. plain conv stacks, converted the standard way (`tf.lite.TFLiteConverter`, float32; and
   full int8: `Optimize.DEFAULT`, a representative dataset, `TFLITE_BUILTINS_INT8`, int8
   input and output): `tiny-backbone` = the trained backbone of the bundled
   `faster_rcnn_tiny` (256×256 → 16×16×96), `mobilenetv2` = `keras.applications.MobileNetV2`
   at 320×320 (`weights=None`, no top), `tiny-head` = that model's RoI head alone
   (100 RoIs of 7×7×96 → 256 → 256 → class / box);
2. the detector: `kerasdet.export.export(faster_rcnn_tiny, quantization="int8")` (weights
   layers int8, box arithmetic float) against its float32 export;
3. the op table of that int8 file: op counts, QUANTIZE / DEQUANTIZE and where they sit
   (producer → consumer op types), and the float ops that remain.

Latency: every variant is warmed up once, then the variants are called in turn (the order
rotating every run, so load drift hits all alike), `--runs` times; the median per variant
is reported, with int8 / float32 ratios. Calibration uses the synthetic `kerasdet_shapes`
training images (resized for MobileNetV2).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import os
import statistics
import sys
import tempfile

import numpy as np
from timing import time_interleaved  # tools/timing.py

MODELS = ("tiny-backbone", "tiny-head", "mobilenetv2")
RESOLVERS = ("xnnpack", "no-xnnpack")
CALIBRATION = 50


def calibration_images(count, size):
    """`count` kerasdet_shapes training images `[1, H, W, 3]` float32 0–255, resized to
    `size` when it is not 256×256."""
    import tensorflow as tf

    from kerasdet.data.shapes import make_example

    for i in range(count):
        image = make_example("train", i)["image"].astype(np.float32)
        if image.shape[:2] != tuple(size):
            image = tf.image.resize(image, size).numpy()
        yield image[None]


def convert(model, int8, calibration):
    """The standard converter on a Keras model: float32, or full int8 with int8 input and
    output (`calibration`: a callable yielding lists of input arrays)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = calibration
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    # Keras 3's export (inside from_keras_model) prints the signature and every captured
    # variable: noise here.
    with contextlib.redirect_stdout(io.StringIO()):
        return converter.convert()


def plain_model(name, detector):
    """`(keras model, calibration callable)` of a plain conv / FC stack."""
    import keras

    if name == "tiny-backbone":
        model = detector.backbone
        size = tuple(model.inputs[0].shape[1:3])
        return model, lambda: ([x] for x in calibration_images(CALIBRATION, size))
    if name == "mobilenetv2":
        inputs = keras.Input((320, 320, 3))
        x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)  # preprocess_input, inside
        features = keras.applications.MobileNetV2(input_shape=(320, 320, 3), include_top=False, weights=None)(x)
        model = keras.Model(inputs, features, name="mobilenetv2_320")
        return model, lambda: ([x] for x in calibration_images(CALIBRATION, (320, 320)))
    if name == "tiny-head":
        # The RoI head on the pooled RoIs it sees at test time: pooled features of the
        # calibration images at the proposals (post_nms_top_k_test = 100).
        import tensorflow as tf

        head = detector.roi_head
        pooled_shape = (100, *detector.roi_pool.pool_size, detector.backbone.output.shape[-1])
        inputs = keras.Input(pooled_shape, batch_size=1)
        logits, deltas = head(inputs)
        model = keras.Model(inputs, [logits, deltas], name="tiny_roi_head")

        def samples():
            for image in calibration_images(CALIBRATION, detector.image_size):
                features = detector.backbone(image)
                rpn = detector.rpn_head(features)
                anchors = detector.anchors(features)
                proposals = detector.proposal_layer(
                    rpn["objectness_logits"], rpn["box_deltas"], anchors, image_shape=detector.image_size
                )
                yield [tf.convert_to_tensor(detector.roi_pool(features, proposals["boxes"])).numpy()]

        return model, samples
    raise ValueError(f"--models: expected names from {MODELS}, got {name!r}")


def interpreter(content, threads, resolver):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kind = OpResolverType.AUTO if resolver == "xnnpack" else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interp = Interpreter(model_content=content, num_threads=threads, experimental_op_resolver_type=kind)
    interp.allocate_tensors()
    return interp


def runner(content, threads, resolver):
    """A no-argument call of the file on a fixed input (zeros of its first input's
    type; a detector file gets a uint8 image with one bright square)."""
    interp = interpreter(content, threads, resolver)
    for detail in interp.get_input_details():
        data = np.zeros(detail["shape"], detail["dtype"])
        if data.ndim == 4 and data.shape[-1] == 3:
            data[:, 64:128, 64:128] = 100
        interp.set_tensor(detail["index"], data)
    return interp.invoke


def interleaved_medians(calls, runs):
    """`{name: median ms}` of `calls` (`{name: fn}`), called in turn with the order
    rotating every run, after one warm-up each."""
    return {name: 1000 * statistics.median(t) for name, t in time_interleaved(calls, runs, warmup=1).items()}


def op_table(content):
    """`(Counter of op names, Counter of QUANTIZE / DEQUANTIZE placements)` from the
    interpreter's op details (before delegation)."""
    interp = interpreter(content, 1, "no-xnnpack")
    ops = interp._get_ops_details()
    producer = {}
    for op in ops:
        for t in op["outputs"]:
            producer[int(t)] = op["op_name"]
    consumers = collections.defaultdict(list)
    for op in ops:
        for t in op["inputs"]:
            consumers[int(t)].append(op["op_name"])
    counts = collections.Counter(op["op_name"] for op in ops)
    placements = collections.Counter()
    for op in ops:
        if op["op_name"] in ("QUANTIZE", "DEQUANTIZE"):
            src = producer.get(int(op["inputs"][0]), "input/const")
            dst = ",".join(sorted(set(consumers.get(int(op["outputs"][0]), ["output"]))))
            placements[f"{op['op_name']}: {src} -> {dst}"] += 1
    return counts, placements


def float_ops(content):
    """Ops of `content` whose outputs are float32, by name (what int8 left float)."""
    interp = interpreter(content, 1, "no-xnnpack")
    dtypes = {d["index"]: d["dtype"] for d in interp.get_tensor_details()}
    counter = collections.Counter()
    for op in interp._get_ops_details():
        outs = [int(t) for t in op["outputs"] if int(t) >= 0]
        if outs and any(dtypes.get(t) == np.float32 for t in outs):
            counter[op["op_name"]] += 1
    return counter


def report_row(name, medians):
    cells = [f"{name:14s}"]
    for resolver in RESOLVERS:
        f32, i8 = medians[f"float32/{resolver}"], medians[f"int8/{resolver}"]
        cells.append(f"{resolver}: float32 {f32:8.2f} ms  int8 {i8:8.2f} ms  int8/float32 {i8 / f32:5.2f}")
    print("  " + " | ".join(cells), flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--runs", type=int, default=30, help="timed calls per variant (median)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-detector", action="store_true", help="skip the exported faster_rcnn_tiny probe")
    parser.add_argument("--calibration", type=int, default=100, help="images for the detector's int8 export")
    args = parser.parse_args(argv)

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from kerasdet import zoo

    print("python " + " ".join(sys.argv), flush=True)
    print(f"load average at start: {os.getloadavg()}", flush=True)
    detector = zoo.load("faster_rcnn_tiny", weights="shapes")

    print(f"\n1. plain stacks, standard conversion, {args.threads} threads, median of {args.runs} (interleaved)")
    for name in args.models:
        model, calibration = plain_model(name, detector)
        files = {"float32": convert(model, False, calibration), "int8": convert(model, True, calibration)}
        calls = {
            f"{kind}/{resolver}": runner(content, args.threads, resolver)
            for kind, content in files.items() for resolver in RESOLVERS
        }
        report_row(name, interleaved_medians(calls, args.runs))
        counts, _ = op_table(files["int8"])
        print(f"  {'':14s} int8 ops: {dict(counts)}", flush=True)

    if args.no_detector:
        return 0

    from kerasdet.data.shapes import make_example
    from kerasdet.export import export

    print(f"\n2. faster_rcnn_tiny via kerasdet.export (int8: {args.calibration} calibration images)", flush=True)
    with tempfile.TemporaryDirectory() as workdir:
        files = {}
        for kind in ("float32", "int8"):
            path = os.path.join(workdir, f"{kind}.tflite")
            data = (make_example("train", i)["image"] for i in range(args.calibration)) if kind == "int8" else None
            export(detector, path, "tflite", quantization=None if kind == "float32" else "int8", representative_data=data)
            with open(path, "rb") as f:
                files[kind] = f.read()
            print(f"  {kind}: {len(files[kind]) / 1e6:.2f} MB", flush=True)
    calls = {
        f"{kind}/{resolver}": runner(content, args.threads, resolver)
        for kind, content in files.items() for resolver in RESOLVERS
    }
    report_row("detector", interleaved_medians(calls, args.runs))

    print("\n3. op table of the int8 detector file", flush=True)
    counts, placements = op_table(files["int8"])
    print(f"  {sum(counts.values())} ops: {dict(counts.most_common())}")
    print(f"  QUANTIZE {counts['QUANTIZE']}, DEQUANTIZE {counts['DEQUANTIZE']}; where (producer -> consumers):")
    for where, n in placements.most_common():
        print(f"    {n:3d}  {where}")
    print(f"  ops with float32 outputs: {dict(float_ops(files['int8']).most_common())}")
    print(f"\nload average at end: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
