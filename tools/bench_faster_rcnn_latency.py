"""Benchmark: Faster R-CNN inference latency per image, where the time goes, and GFLOP/s
against the machine's measured matmul peak.

The Faster R-CNN issue's benchmarks 2 and 3: a ResNet50 Faster R-CNN on one 640×640 image,
91 classes, default test settings (6000 pre-NMS / NMS 0.7 / 300 post-NMS proposals, FC
head (1024, 1024), RoIPool 7×7). The peer, TF Model Garden's `fasterrcnn_resnetfpn_coco`,
takes about 3.0 s per image on this machine; goal ≤ 1.5 s, with the matmul peak as the
limit. Stage split (the paper's GPU split is 141 / 10 / 47 ms, proposals 5 %); goal: the
proposal stage ≤ 5 % here too.

    python tools/bench_faster_rcnn_latency.py                       # the issue's setting
    python tools/bench_faster_rcnn_latency.py --backbone tiny --image-size 256 256 \
        --num-classes 5 --head-units 256 256 --runs 3               # fast smoke

Measured, batch 1, graph mode (`tf.function`, `jit_compile=False`), tracing excluded by
warm-up calls, all functions timed round-robin (one call of each per round, rotating the
order) so that drift on the shared machine hits them alike:

  * end to end: the model call in a `tf.function`, and `model.predict_on_batch`;
  * cumulative prefixes — backbone; + RPN head, anchors, proposals; + RoI pool, RoI head;
    + decode, NMS (= the model) — whose differences are the stages;
  * each stage alone on precomputed inputs, as a cross-check of the differences (and
    the proposal stage split into the RPN head's convolutions and the `ProposalLayer`);
  * post-processing (decode + NMS) also on a worst case: score threshold 0, so that
    `max_candidates` (5,000; or all N·C if fewer) candidates enter NMS;
  * the matmul peak: a float32 2048×2048 @ 2048×2048 `tf.matmul`, same threads.

Weights are random (`weights=None`): the convolutions and FC layers cost the same with any
weights. What does depend on them is the NMS work — how many proposals survive NMS and how
many (box, class) candidates pass the score threshold (0.05) into the detection NMS — so
both counts are printed. With random weights that count is arbitrary (a few hundred of
the 300 × 91 pairs in the ResNet50 setting), hence also the worst-case row.

FLOPs (2 per multiply-add) of the convolutions and FC layers: backbone (every `Conv2D` /
`DepthwiseConv2D` / `Dense` / `ConvFC` at its static output size;
`kerasdet.analysis.count_flops` as a cross-check where the backbone is a plain chain), the
RPN head, and the RoI head on all `post_nms_top_k` rows (padding rows are computed too).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from timing import time_interleaved  # noqa: E402  (tools/timing.py)

import kerasdet  # noqa: E402,F401  (TF backend)
from kerasdet.analysis import count_flops  # noqa: E402
from kerasdet.layers import ConvFC, RoIAlign  # noqa: E402
from kerasdet.models import FasterRCNN, ProposalLayer  # noqa: E402
from kerasdet.postprocess.nms import NonMaxSuppression  # noqa: E402

PEER_SECONDS = 3.0  # TF Model Garden fasterrcnn_resnetfpn_coco on this machine (the issue)
GOAL_SECONDS = 1.5
GOAL_PROPOSAL_SHARE = 0.05


# --- FLOPs ---------------------------------------------------------------------------------


def layer_flops(layer) -> int:
    """FLOPs of one `Conv2D` / `DepthwiseConv2D` / `Conv1D` / `Dense` / `ConvFC` layer at its
    static output shape (0 for other layers). A convolution costs 2 · (kernel weights) per
    output position, grouped and depthwise ones included (their kernels hold only the
    weights one output position uses)."""
    if not isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense, ConvFC)):
        return 0
    kernel = int(np.prod(layer.kernel.shape))
    positions = int(np.prod([d for d in layer.output.shape[1:-1]]))  # 1 for Dense on [B, C]
    return 2 * kernel * positions


def model_flops(model: keras.Model) -> int:
    """FLOPs of every convolution / dense layer of a functional model, nested models
    included (a DAG such as ResNet is fine: each layer counts once at its output size)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += model_flops(layer)
        else:
            total += layer_flops(layer)
    return total


def _weights_per_position(conv) -> int:
    """Multiply-adds per output position of a conv: its kernel weights (a separable conv's
    depthwise and pointwise kernels together)."""
    if isinstance(conv, keras.layers.SeparableConv2D):
        return int(np.prod(conv.depthwise_kernel.shape)) + int(np.prod(conv.pointwise_kernel.shape))
    return int(np.prod(conv.kernel.shape))


def _describe_rpn_conv(model) -> str:
    head = model.rpn_head
    size = f"{head.kernel_size}×{head.kernel_size}"
    kind = f"separable {size} conv (depthwise + 1×1)" if head.separable else f"{size} conv"
    return f"{kind}, {model.backbone.output.shape[-1]} → {head.channels} channels"


def rpn_head_flops(rpn_head, feature_hw) -> int:
    positions = feature_hw[0] * feature_hw[1]
    convs = (rpn_head.conv, rpn_head.objectness_conv, rpn_head.delta_conv)
    return sum(2 * _weights_per_position(c) * positions for c in convs)


def roi_head_flops(roi_head, num_rois) -> int:
    """The RoI head on `num_rois` pooled maps: each ConvFC's kernel is its whole input
    (7×7, then 1×1), so one output position per RoI."""
    layers = (*roi_head.fcs, roi_head.cls, roi_head.box)
    return num_rois * sum(2 * int(np.prod(layer.kernel.shape)) for layer in layers)


def flops_by_stage(model, image_size):
    """`{"backbone", "proposals" (RPN head), "RoI head"}` FLOPs for one image, and the
    `count_flops` cross-check of the backbone (None where it does not apply)."""
    feature_hw = tuple(int(d) for d in model.backbone.output.shape[1:3])
    backbone = model_flops(model.backbone)
    try:
        # count_flops walks a chain; the tiny backbone is one, ResNet / MobileNet are not.
        chain = count_flops(model.backbone, image_size)
    except ValueError:
        chain = None
    _, post_k = model.proposal_layer.sizes(training=False)
    return {
        "backbone": backbone,
        "proposals": rpn_head_flops(model.rpn_head, feature_hw),
        "RoI head": roi_head_flops(model.roi_head, post_k),
    }, chain


# --- timing --------------------------------------------------------------------------------


def matmul_peak(size=2048, runs=10, summary=statistics.median):
    """GFLOP/s of a float32 `size`×`size` matmul (`summary` of `runs`, default the median),
    same threads as TF."""
    rng = np.random.default_rng(0)
    a = tf.constant(rng.standard_normal((size, size), dtype=np.float32))
    b = tf.constant(rng.standard_normal((size, size), dtype=np.float32))
    fn = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)[:1, :1]), jit_compile=False)
    times = time_interleaved({"matmul": lambda: fn().numpy()}, runs, warmup=2)["matmul"]
    return 2 * size**3 / summary(times) / 1e9, times


def fetch(structure):
    """Brings a result to NumPy (all of it is on the CPU already; this just makes sure the
    work is done)."""
    return tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, structure)


# --- the model's stages --------------------------------------------------------------------


def build_model(args):
    proposal_layer = ProposalLayer(
        pre_nms_top_k_test=args.pre_nms_top_k, post_nms_top_k_test=args.post_nms_top_k, nms_iou=0.7,
        name="proposals",
    )
    kwargs = {} if args.head_units is None else {"head_units": tuple(args.head_units)}
    if args.roi_align:
        kwargs["roi_pool"] = RoIAlign(7, 1 / args.backbone_stride, sampling_ratio=args.sampling_ratio, name="roi_pool")
    return FasterRCNN(
        args.num_classes, backbone=args.backbone, backbone_stride=args.backbone_stride,
        image_size=tuple(args.image_size), proposal_layer=proposal_layer,
        score_threshold=args.score_threshold, rpn_channels=args.rpn_channels, rpn_separable=args.rpn_separable,
        rpn_kernel_size=args.rpn_kernel_size, **kwargs,
    )


class Stages:
    """The model's inference path cut into stages, calling the model's own layers."""

    def __init__(self, model):
        self.m = model

    def backbone(self, images):
        return self.m.backbone(images, training=False)

    def rpn(self, features):
        return self.m.rpn_head(features, training=False)

    def proposals_from_rpn(self, features, logits, deltas):
        anchors = self.m.anchors(features)
        return self.m.proposal_layer(logits, deltas, anchors, image_shape=self.m.image_size, training=False)

    def proposals(self, features):
        rpn = self.rpn(features)
        return self.proposals_from_rpn(features, rpn["objectness_logits"], rpn["box_deltas"])

    def pool(self, features, boxes):
        return self.m.roi_pool(features, boxes)

    def roi_head(self, pooled):
        return self.m.roi_head(pooled, training=False)

    def head(self, features, boxes):
        return self.roi_head(self.pool(features, boxes))

    def post(self, logits, deltas, boxes, valid):
        decoded, scores = self.m.decode(logits, deltas, boxes, valid)
        return self.m.nms(decoded, scores)

    # cumulative prefixes
    def upto_proposals(self, images):
        return self.proposals(self.backbone(images))

    def upto_head(self, images):
        features = self.backbone(images)
        props = self.proposals(features)
        return self.head(features, props["boxes"])

    def full(self, images):
        features = self.backbone(images)
        props = self.proposals(features)
        logits, deltas = self.head(features, props["boxes"])
        return self.post(logits, deltas, props["boxes"], props["valid"])


def example_image(height, width, seed):
    """A `kerasdet_shapes`-style image (content does not change the cost of the dense
    layers; it is only there to look like an input)."""
    from kerasdet.data.shapes import generate_example

    max_size = min(120, height, width)
    example = generate_example(
        np.random.default_rng([seed, 7]), height, width, min_size=min(12, max_size), max_size=max_size
    )
    return example["image"][None].astype("float32")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet50", help="tiny, vgg16, resnet50, mobilenetv2")
    parser.add_argument("--backbone-stride", type=int, default=16, choices=(8, 16))
    parser.add_argument("--image-size", type=int, nargs=2, default=[640, 640], metavar=("H", "W"))
    parser.add_argument("--num-classes", type=int, default=91)
    parser.add_argument("--head-units", type=int, nargs="+", default=None,
                        help="RoI head FC widths (default: the model's, 1024 1024)")
    parser.add_argument("--rpn-channels", type=int, default=None, help="RPN conv width (default min(512, C))")
    parser.add_argument("--rpn-separable", action="store_true",
                        help="depthwise-separable RPN conv (ThunderNet) instead of the paper's dense 3×3")
    parser.add_argument("--rpn-kernel-size", type=int, default=3)
    parser.add_argument("--roi-align", action="store_true", help="RoIAlign instead of RoIPool")
    parser.add_argument("--sampling-ratio", type=int, default=2, help="RoIAlign samples per bin and axis")
    parser.add_argument("--pre-nms-top-k", type=int, default=6000)
    parser.add_argument("--post-nms-top-k", type=int, default=300)
    parser.add_argument("--score-threshold", type=float, default=0.05)
    parser.add_argument("--runs", type=int, default=10, help="timed runs per function (median)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per function")
    parser.add_argument("--statistic", choices=("median", "min"), default="median",
                        help="summary of the runs (min is more robust when other jobs share the CPU)")
    parser.add_argument("--threads", type=int, default=0,
                        help="TF intra-op threads (0: TF's default, one per core)")
    parser.add_argument("--matmul-size", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    keras.utils.set_random_seed(args.seed)
    height, width = args.image_size
    start = time.perf_counter()
    model = build_model(args)
    build_seconds = time.perf_counter() - start
    stages = Stages(model)
    images = tf.constant(example_image(height, width, args.seed))

    def graph(fn):
        return tf.function(fn, jit_compile=False, reduce_retracing=True)

    # Precomputed inputs of each stage, for the isolated timings.
    features = graph(stages.backbone)(images)
    rpn = graph(stages.rpn)(features)
    props = graph(stages.proposals)(features)
    pooled = graph(stages.pool)(features, props["boxes"])
    logits, deltas = graph(stages.roi_head)(pooled)
    post_fn = graph(stages.post)
    detections = post_fn(logits, deltas, props["boxes"], props["valid"])
    _, scores = model.decode(logits, deltas, props["boxes"], props["valid"])
    candidates = int(np.sum(scores.numpy() >= model.score_threshold))
    num_proposals = int(props["num_proposals"].numpy()[0])
    num_detections = int(detections["num_detections"].numpy()[0])
    # Worst case for the detection NMS: score threshold 0, every (box, class) pair a
    # candidate, so `max_candidates` of them (or all N·C if fewer) enter NMS.
    worst_nms = NonMaxSuppression(
        iou_threshold=model.nms.iou_threshold, score_threshold=0.0, max_detections=model.nms.max_detections,
        max_candidates=model.nms.max_candidates,
    )
    worst_candidates = min(int(np.prod(scores.shape[1:])), model.nms.max_candidates)

    def post_worst(logits, deltas, boxes, valid):
        return worst_nms(*model.decode(logits, deltas, boxes, valid))

    fns = {
        "full (tf.function)": graph(model),
        "predict_on_batch": None,
        "prefix: backbone": graph(stages.backbone),
        "prefix: + proposals": graph(stages.upto_proposals),
        "prefix: + RoI pool + head": graph(stages.upto_head),
        "prefix: + decode + NMS (= full)": graph(stages.full),
        "alone: backbone": graph(stages.backbone),
        "alone: proposals (RPN head + ProposalLayer)": graph(stages.proposals),
        "alone:   RPN head": graph(stages.rpn),
        "alone:   ProposalLayer (+ anchors)": graph(stages.proposals_from_rpn),
        "alone: RoI pool + head": graph(stages.head),
        "alone:   RoI pool": graph(stages.pool),
        "alone:   RoI head (FC layers)": graph(stages.roi_head),
        "alone: decode + NMS": post_fn,
        "alone: decode + NMS, worst case": graph(post_worst),
    }
    inputs = {
        "full (tf.function)": (images,),
        "prefix: backbone": (images,),
        "prefix: + proposals": (images,),
        "prefix: + RoI pool + head": (images,),
        "prefix: + decode + NMS (= full)": (images,),
        "alone: backbone": (images,),
        "alone: proposals (RPN head + ProposalLayer)": (features,),
        "alone:   RPN head": (features,),
        "alone:   ProposalLayer (+ anchors)": (features, rpn["objectness_logits"], rpn["box_deltas"]),
        "alone: RoI pool + head": (features, props["boxes"]),
        "alone:   RoI pool": (features, props["boxes"]),
        "alone:   RoI head (FC layers)": (pooled,),
        "alone: decode + NMS": (logits, deltas, props["boxes"], props["valid"]),
        "alone: decode + NMS, worst case": (logits, deltas, props["boxes"], props["valid"]),
    }
    image_np = images.numpy()
    calls = {
        name: (lambda: model.predict_on_batch(image_np)) if fn is None
        else (lambda fn=fn, x=inputs[name]: fetch(fn(*x)))
        for name, fn in fns.items()
    }
    times = time_interleaved(calls, args.runs, args.warmup)
    summary = statistics.median if args.statistic == "median" else min
    ms = {name: 1e3 * summary(values) for name, values in times.items()}
    peak, _ = matmul_peak(args.matmul_size, max(args.runs, 5), summary)

    flops, chain_flops = flops_by_stage(model, (height, width))
    total_flops = sum(flops.values())
    full = ms["full (tf.function)"]
    prefixes = [ms[n] for n in ("prefix: backbone", "prefix: + proposals", "prefix: + RoI pool + head",
                                "prefix: + decode + NMS (= full)")]
    diffs = [prefixes[0]] + [b - a for a, b in zip(prefixes, prefixes[1:])]
    alone = [ms["alone: backbone"], ms["alone: proposals (RPN head + ProposalLayer)"],
             ms["alone: RoI pool + head"], ms["alone: decode + NMS"]]
    stage_names = ["backbone", "proposals (RPN head + ProposalLayer)", "RoI pool + RoI head", "decode + NMS"]
    stage_flops = [flops["backbone"], flops["proposals"], flops["RoI head"], 0]
    threads = tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()

    head_units = model.head_units
    print(f"Faster R-CNN, {args.backbone} backbone (stride {model.backbone_stride}, random weights), "
          f"{height}×{width} image, {args.num_classes} classes, head {tuple(head_units)}, "
          f"{type(model.roi_pool).__name__} {model.roi_pool.pool_size[0]}×{model.roi_pool.pool_size[1]}, RPN "
          f"{_describe_rpn_conv(model)}, proposals "
          f"{args.pre_nms_top_k} pre-NMS / NMS 0.7 / {args.post_nms_top_k} post-NMS, batch 1")
    print(f"TF {tf.__version__}, Keras {keras.__version__}, graph mode (jit_compile=False), "
          f"{threads} intra-op threads, {args.statistic} of {args.runs} interleaved runs, load average "
          f"{os.getloadavg()[0]:.2f}, model built in {build_seconds:.1f} s")
    print(f"NMS work (random weights): {num_proposals} proposals after the RPN NMS; "
          f"{candidates} (box, class) candidates ≥ {model.score_threshold} entered the detection NMS, "
          f"{num_detections} detections")
    print()
    print("| stage | prefix difference ms | share | alone ms | GFLOP | GFLOP/s |")
    print("|---|---|---|---|---|---|")
    for name, diff, one, fl in zip(stage_names, diffs, alone, stage_flops):
        rate = f"{fl / 1e9 / (one / 1e3):.1f}" if fl else ""
        print(f"| {name} | {diff:.1f} | {100 * diff / prefixes[-1]:.1f} % | {one:.1f} | "
              f"{fl / 1e9:.2f} | {rate} |")
    print(f"| (proposals alone: RPN head convs) | | | {ms['alone:   RPN head']:.1f} | "
          f"{flops['proposals'] / 1e9:.2f} | {flops['proposals'] / 1e9 / (ms['alone:   RPN head'] / 1e3):.1f} |")
    print(f"| (proposals alone: ProposalLayer + anchors) | | | "
          f"{ms['alone:   ProposalLayer (+ anchors)']:.1f} | | |")
    print(f"| (RoI pool + head alone: RoIPool) | | | {ms['alone:   RoI pool']:.1f} | | |")
    print(f"| (RoI pool + head alone: FC layers) | | | {ms['alone:   RoI head (FC layers)']:.1f} | "
          f"{flops['RoI head'] / 1e9:.2f} | {flops['RoI head'] / 1e9 / (ms['alone:   RoI head (FC layers)'] / 1e3):.1f} |")
    print(f"| (decode + NMS, worst case: {worst_candidates} candidates) | | | "
          f"{ms['alone: decode + NMS, worst case']:.1f} | | |")
    print(f"| **whole model, tf.function** | **{full:.1f}** | | {sum(alone):.1f} (sum) | "
          f"{total_flops / 1e9:.2f} | {total_flops / 1e9 / (full / 1e3):.1f} |")
    print(f"| whole model, predict_on_batch (jit_compile={model.jit_compile}) | {ms['predict_on_batch']:.1f} "
          "| | | | |")
    print(f"| matmul {args.matmul_size}² float32 (peak) | | | | | {peak:.1f} |")
    print()
    share = diffs[1] / prefixes[-1]
    print(f"end to end: {full / 1e3:.3f} s per image (goal ≤ {GOAL_SECONDS} s; peer {PEER_SECONDS} s → "
          f"{PEER_SECONDS / (full / 1e3):.2f}× the peer's speed); "
          f"{total_flops / 1e9 / (full / 1e3):.1f} GFLOP/s = {100 * total_flops / 1e9 / (full / 1e3) / peak:.0f} % "
          f"of the measured matmul peak {peak:.1f} GFLOP/s (the limit: "
          f"{total_flops / 1e9 / peak:.3f} s at peak)")
    print(f"proposal stage share: {100 * share:.1f} % (goal ≤ {100 * GOAL_PROPOSAL_SHARE:.0f} %; "
          f"alone: {100 * alone[1] / full:.1f} %, of which ProposalLayer "
          f"{100 * ms['alone:   ProposalLayer (+ anchors)'] / full:.1f} %); its FLOP share (the RPN head's "
          f"{_describe_rpn_conv(model)}) "
          f"is {100 * flops['proposals'] / total_flops:.1f} %")
    check = "" if chain_flops is None else (
        f"; kerasdet.analysis.count_flops(backbone) = {chain_flops / 1e9:.3f} GFLOP")
    print(f"FLOPs: backbone {flops['backbone'] / 1e9:.3f} GFLOP (per-layer count{check}), RPN head "
          f"{flops['proposals'] / 1e9:.3f}, RoI head ({args.post_nms_top_k} RoIs) {flops['RoI head'] / 1e9:.3f}")


if __name__ == "__main__":
    main()
