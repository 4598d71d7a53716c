"""Benchmark: learned proposals (RPN) vs the classical ones (selective search).

The Faster R-CNN issue's benchmark 4 (the notes' comparison): on 500×375 images, RPN
proposals (backbone included) vs OpenCV's selective search in fast mode — time per image
and recall of the ground-truth boxes (IoU ≥ 0.5) at 300 proposals, on synthetic validation
images. Goal: the RPN ≥ 20× faster at a higher recall. The recall depends on how many steps
the recipe took: about 1,600 steps (10 minutes on a slower machine) recalled 0.987 against
selective search's 0.991, about 3,250 (the bundled weights) 0.995 (BENCHMARKS.md).

    python tools/train_faster_rcnn_tiny.py --output /tmp/frcnn.weights.h5   # the weights
    python tools/bench_proposals.py --weights /tmp/frcnn.weights.h5         # 100 images
    python tools/bench_proposals.py --images 3                              # smoke, untrained

Images: `kerasdet_shapes`-style validation images drawn at 375 (height) × 500 (width) by
`kerasdet.data.shapes.generate_example` with the default config's object sizes (12–120 px,
≤ 6 objects, 5 % empty) from `np.random.default_rng([seed, 1, i])` — the validation split's
seeds (split id 1; training uses split id 0), so none of them is a training image.
`--held-out START` draws training-split images START, START+1, … instead (split id 0; the
recipe trains on 0..1999): the images to choose test settings such as `--nms-iou` on,
never the validation ones.

RPN: the model of `tools/train_faster_rcnn_tiny.py` (tiny backbone, head (256, 256); pass
the same `--backbone-stride` and `--anchor-sizes` as the training run) built for
375×500 inputs — the weights do not depend on the image size — with 300 post-NMS
proposals (`--pre-nms-top-k` boxes, default 6000 as in the paper's test setting, enter
the NMS at `--nms-iou`, default the paper's 0.7). The default anchor sizes are those of the
training image size (`--train-image-size`, 256 → (32, 64, 128)), not of 375×500: the RPN
regresses from the anchors it was trained with. Backbone + RPN head + proposal layer run as one `tf.function`,
one image at a time, timed from the uint8 image to the NumPy proposals.

Selective search: `cv2.ximgproc.segmentation` (`pip install opencv-contrib-python-headless`,
not a kerasdet dependency), `switchToSelectiveSearchFast()`, 2 OpenCV threads, timed from
the RGB image (create, set the image, switch to fast mode, process). Its proposals come in
its own order (ranked by hierarchy level with a random factor: the RNG is seeded per image
for reproducibility); recall@300 takes the first 300, recall@all all of them.

Recall: ground-truth boxes of all images pooled; a box is recalled when some proposal
overlaps it with IoU ≥ `--iou`. Times are medians over the images (after one untimed
warm-up image per method).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

GOAL_SPEEDUP = 20.0
SPLIT_ID = 1  # kerasdet_shapes' validation split id (make_example); training is 0


# --- helpers (no TensorFlow) -----------------------------------------------------------------


def validation_images(count, height=375, width=500, seed=0, split_id=SPLIT_ID, start=0):
    """`count` synthetic validation examples (`image` uint8 RGB, `boxes` yxyx pixels) at
    `height` × `width` with the default config's object sizes; `split_id=0, start=k` gives
    training-split images k, k+1, … instead (held out from a recipe that trains on 0..k-1)."""
    from kerasdet.data.shapes import ShapesConfig, generate_example

    config = ShapesConfig(name="bench")
    return [
        generate_example(
            np.random.default_rng([seed, split_id, start + i]), height, width,
            max_objects=config.max_objects, min_size=config.min_size, max_size=config.max_size,
            empty_prob=config.empty_prob,
        )
        for i in range(count)
    ]


def padded_size(image_size, stride):
    """`(H, W)` rounded up to multiples of `stride`."""
    return tuple(-(-int(v) // stride) * stride for v in image_size)


def rects_to_yxyx(rects):
    """OpenCV rectangles `[N, 4]` `(x, y, w, h)` → float32 `[N, 4]` yxyx pixel edges."""
    rects = np.asarray(rects, np.float32).reshape(-1, 4)
    x, y, w, h = rects.T
    return np.stack([y, x, y + h, x + w], axis=-1)


def iou_matrix(a, b):
    """IoU `[N, M]` of yxyx boxes `a [N, 4]` and `b [M, 4]` (NumPy); 0 where the union is
    empty."""
    a = np.asarray(a, np.float64).reshape(-1, 4)[:, None, :]
    b = np.asarray(b, np.float64).reshape(-1, 4)[None, :, :]
    inter_h = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    inter_w = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = inter_h * inter_w
    area_a = np.clip(a[..., 2] - a[..., 0], 0, None) * np.clip(a[..., 3] - a[..., 1], 0, None)
    area_b = np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def recall(proposals, ground_truth, iou=0.5, top=None):
    """Fraction of ground-truth boxes (all images pooled) overlapped with IoU ≥ `iou` by
    one of the first `top` (all if None) proposals of their image.

    Args:
        proposals: per image, `[N_i, 4]` yxyx in ranking order.
        ground_truth: per image, `[M_i, 4]` yxyx.

    Returns:
        `(recall, recalled, total)`; recall is NaN without ground truth.
    """
    recalled = total = 0
    for props, gt in zip(proposals, ground_truth, strict=True):
        gt = np.asarray(gt).reshape(-1, 4)
        total += len(gt)
        props = np.asarray(props).reshape(-1, 4)[:top]
        if len(gt) and len(props):
            recalled += int(np.sum(iou_matrix(gt, props).max(axis=1) >= iou))
    return (recalled / total if total else float("nan")), recalled, total


def median_ms(seconds):
    return 1e3 * statistics.median(seconds)


# --- the two methods ------------------------------------------------------------------------


def selective_search_module():
    """`cv2` with the contrib `ximgproc` module, or None."""
    try:
        import cv2
    except ImportError:
        return None
    return cv2 if hasattr(cv2, "ximgproc") else None


def selective_search(cv2, image_rgb, seed):
    """Fast-mode selective search on one RGB uint8 image → `[N, 4]` yxyx, in its order."""
    cv2.setRNGSeed(int(seed))
    search = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    search.setBaseImage(np.ascontiguousarray(image_rgb[..., ::-1]))  # OpenCV wants BGR
    search.switchToSelectiveSearchFast()
    return rects_to_yxyx(search.process())


def build_rpn(args):
    """The training recipe's Faster R-CNN at `args.image_size`, and a `tf.function` from a
    uint8 image `[1, H, W, 3]` to its proposals (boxes, valid)."""
    import tensorflow as tf

    import kerasdet  # noqa: F401  (TF backend)
    from kerasdet.data.shapes import CLASS_NAMES
    from kerasdet.layers import AnchorGenerator
    from kerasdet.models import FasterRCNN, ProposalLayer
    from kerasdet.models.faster_rcnn import default_anchor_sizes

    sizes = tuple(args.anchor_sizes) if args.anchor_sizes else default_anchor_sizes(args.train_image_size)
    anchors = AnchorGenerator(sizes=sizes, aspect_ratios=(0.5, 1.0, 2.0), stride=args.backbone_stride)
    model = FasterRCNN(
        len(CLASS_NAMES), backbone="tiny", backbone_stride=args.backbone_stride, anchor_generator=anchors,
        backbone_batch_norm=args.batch_norm,
        rpn_separable=args.rpn_separable, rpn_kernel_size=args.rpn_kernel_size if args.rpn_separable else 3,
        # The model input is the image padded at the bottom/right to a multiple of the
        # stride (as torchvision's size_divisibility and kerasdet's letterboxing do):
        # at 375×500 itself the "same"-padded stride-2 convs shift the feature grid
        # against the anchors and recall@300 falls from 0.99 to 0.58.
        image_size=padded_size(args.image_size, args.backbone_stride), head_units=(256, 256),
        proposal_layer=ProposalLayer(pre_nms_top_k_train=2000, post_nms_top_k_train=256,
                                     pre_nms_top_k_test=args.pre_nms_top_k, post_nms_top_k_test=args.top,
                                     nms_iou=args.nms_iou),
    )
    if args.weights:
        model.load_weights(args.weights)

    @tf.function(jit_compile=False)
    def propose(images):
        images = tf.cast(images, tf.float32)
        features = model.backbone(images, training=False)
        rpn = model.rpn_head(features, training=False)
        out = model.proposal_layer(
            rpn["objectness_logits"], rpn["box_deltas"], model.anchors(features),
            image_shape=model.image_size, training=False,
        )
        return out["boxes"], out["valid"]

    def run(image):
        h, w = image.shape[:2]
        padded = np.zeros((*model.image_size, 3), image.dtype)
        padded[:h, :w] = image
        boxes, valid = propose(tf.constant(padded[None]))
        return boxes.numpy()[0][valid.numpy()[0]]

    return run, sizes, model


def time_method(fn, images, warmup=1):
    """Runs `fn(i, image)` on every image; returns (outputs, seconds per image)."""
    for i in range(min(warmup, len(images))):
        fn(i, images[i])
    outputs, seconds = [], []
    for i, image in enumerate(images):
        start = time.perf_counter()
        outputs.append(fn(i, image))
        seconds.append(time.perf_counter() - start)
    return outputs, seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=None,
                        help="trained weights from tools/train_faster_rcnn_tiny.py --output (else untrained)")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--image-size", type=int, nargs=2, default=[375, 500], metavar=("H", "W"))
    parser.add_argument("--train-image-size", type=int, nargs=2, default=[256, 256], metavar=("H", "W"),
                        help="image size the weights were trained at (sets the default anchor sizes)")
    parser.add_argument("--backbone-stride", type=int, default=16, choices=(8, 16))
    parser.add_argument("--batch-norm", action="store_true", help="the tiny backbone with batch norm (as trained)")
    parser.add_argument("--anchor-sizes", type=float, nargs="+", default=None,
                        help="as given to the training run (default: the model's for --train-image-size)")
    parser.add_argument("--rpn-separable", action="store_true",
                        help="the weights have a depthwise-separable RPN conv (as trained)")
    parser.add_argument("--rpn-kernel-size", type=int, default=5, help="its kernel size (with --rpn-separable)")
    parser.add_argument("--pre-nms-top-k", type=int, default=6000)
    parser.add_argument("--nms-iou", type=float, default=0.7,
                        help="the proposal NMS IoU (0.7: the paper's; tune it with --held-out, not here)")
    parser.add_argument("--top", type=int, default=300, help="proposals per image scored (recall@top)")
    parser.add_argument("--iou", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0, help="images: np.random.default_rng([seed, 1, i])")
    parser.add_argument("--held-out", type=int, default=None, metavar="START",
                        help="tune on training-split images START, START+1, ... (np.random.default_rng([seed, 0, "
                             "START+i]); the recipe trains on 0..1999) instead of the validation images")
    parser.add_argument("--cv-threads", type=int, default=2)
    parser.add_argument("--no-selective-search", action="store_true", help="time the RPN only")
    args = parser.parse_args(argv)

    cv2 = None
    if not args.no_selective_search:
        cv2 = selective_search_module()
        if cv2 is None:
            print("selective search needs cv2.ximgproc (OpenCV contrib): "
                  "pip install opencv-contrib-python-headless (or pass --no-selective-search)")
            return 1
        cv2.setNumThreads(args.cv_threads)

    height, width = args.image_size
    if args.held_out is None:
        examples = validation_images(args.images, height, width, args.seed)
    else:
        examples = validation_images(args.images, height, width, args.seed, split_id=0, start=args.held_out)
    images = [e["image"] for e in examples]
    gt = [e["boxes"] for e in examples]

    import tensorflow as tf

    run_rpn, sizes, _ = build_rpn(args)
    rpn_props, rpn_seconds = time_method(lambda i, image: run_rpn(image), images)
    rows = [("RPN (tiny backbone included)", rpn_seconds, rpn_props)]
    if cv2 is not None:
        ss_props, ss_seconds = time_method(lambda i, image: selective_search(cv2, image, args.seed * 100003 + i), images)
        rows.append(("selective search (OpenCV, fast)", ss_seconds, ss_props))

    images_kind = "validation" if args.held_out is None else f"held-out training (from {args.held_out})"
    print(f"Proposals on {args.images} synthetic {images_kind} images {width}×{height} (W×H), "
          f"{sum(len(g) for g in gt)} ground-truth boxes, recall at IoU ≥ {args.iou}")
    print(f"RPN: tiny backbone, stride {args.backbone_stride}, anchors {tuple(round(s, 2) for s in sizes)} × "
          f"ratios (0.5, 1, 2), {args.pre_nms_top_k} pre-NMS → NMS {args.nms_iou} → {args.top}, "
          f"{'weights ' + args.weights if args.weights else 'UNTRAINED (random weights: recall is meaningless)'}; "
          f"TF {tf.__version__}, tf.function, batch 1")
    if cv2 is not None:
        print(f"selective search: OpenCV {cv2.__version__}, switchToSelectiveSearchFast, "
              f"{cv2.getNumThreads()} threads")
    print(f"medians over the images, load average {os.getloadavg()[0]:.2f}")
    print()
    print(f"| method | ms per image (median) | proposals per image (mean) | recall@{args.top} | recall@all |")
    print("|---|---|---|---|---|")
    for name, seconds, props in rows:
        at_top, hit, total = recall(props, gt, args.iou, top=args.top)
        at_all, hit_all, _ = recall(props, gt, args.iou)
        print(f"| {name} | {median_ms(seconds):.1f} | {np.mean([len(p) for p in props]):.0f} | "
              f"{at_top:.3f} ({hit}/{total}) | {at_all:.3f} ({hit_all}/{total}) |")
    if cv2 is not None:
        speedup = statistics.median(ss_seconds) / statistics.median(rpn_seconds)
        rpn_recall = recall(rpn_props, gt, args.iou, top=args.top)[0]
        ss_recall = recall(ss_props, gt, args.iou, top=args.top)[0]
        print()
        print(f"speed-up RPN vs selective search: {speedup:.1f}× (goal ≥ {GOAL_SPEEDUP:.0f}×); "
              f"recall@{args.top}: RPN {rpn_recall:.3f} vs selective search {ss_recall:.3f} "
              f"({'higher' if rpn_recall > ss_recall else 'NOT higher'}"
              f"{'' if args.weights else ', untrained RPN'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
