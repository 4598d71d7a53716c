"""Recipe + benchmark: Faster R-CNN with the small CPU backbone on `kerasdet_shapes`,
trained with `model.fit` under a wall-clock budget, COCO AP50 on the validation split.

    python tools/train_faster_rcnn_tiny.py --minutes 10

The Faster R-CNN issue's goal is AP50 ≥ 0.90 on the validation split within 10 minutes of
training on this 2-core CPU. The script prints the AP50 curve (per epoch, on a validation
subset) and the final COCO table on the whole validation split.
"""

from __future__ import annotations

import argparse

import keras
import numpy as np
import tensorflow as tf

import kerasdet  # noqa: F401  (TF backend)
from kerasdet.data.shapes import CLASS_NAMES, make_example
from kerasdet.layers import AnchorGenerator, RoIAlign, RoIPool
from kerasdet.metrics import COCOEvaluator
from kerasdet.models import FasterRCNN, ProposalLayer
from kerasdet.training.budget import CosineOverBudget, TimeBudget


def arrays(split, count, max_boxes=8, dtype="float32"):
    examples = [make_example(split, i) for i in range(count)]
    images = np.stack([e["image"] for e in examples]).astype(dtype)
    boxes = np.zeros([count, max_boxes, 4], np.float32)
    classes = -np.ones([count, max_boxes], np.int32)
    for i, e in enumerate(examples):
        boxes[i, : len(e["boxes"])] = e["boxes"]
        classes[i, : len(e["classes"])] = e["classes"]
    return images, {"boxes": boxes, "classes": classes}


def random_flip(image, gt, width):
    """Mirrors one image and its (padded) boxes left-right with probability ½."""
    flip = tf.random.uniform([]) < 0.5
    y1, x1, y2, x2 = tf.unstack(gt["boxes"], axis=-1)
    flipped = tf.stack([y1, width - x2, y2, width - x1], axis=-1)
    # Padding rows (class −1) keep their zeros so they stay recognisable as padding.
    flipped = tf.where((gt["classes"] >= 0)[:, None], flipped, gt["boxes"])
    return (tf.where(flip, image[:, ::-1], image),
            {"boxes": tf.where(flip, flipped, gt["boxes"]), "classes": gt["classes"]})


def evaluate(model, images, gt, batch_size=16):
    evaluator = COCOEvaluator(class_names=CLASS_NAMES)
    for k in range(0, len(images), batch_size):
        detections = model.predict_on_batch(images[k : k + batch_size])
        evaluator.update({key: v[k : k + batch_size] for key, v in gt.items()}, detections)
    return evaluator.result(), evaluator.summary


class CurveCallback(keras.callbacks.Callback):
    def __init__(self, images, gt, budget):
        super().__init__()
        self.images, self.gt, self.budget = images, gt, budget
        self.curve = []

    def on_epoch_end(self, epoch, logs=None):
        metrics, _ = evaluate(self.model, self.images, self.gt)
        self.curve.append((round(self.budget.elapsed / 60, 2), round(metrics["AP50"], 3)))
        print(f"  epoch {epoch + 1}: training {self.budget.elapsed / 60:.1f} min, val-subset AP50 {metrics['AP50']:.3f}", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--train-images", type=int, default=2000)
    parser.add_argument("--val-images", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backbone-stride", type=int, default=16, choices=(8, 16),
                        help="8: the tiny backbone's stride-16 stage upsampled onto its stride-8 stage (FPN step)")
    parser.add_argument("--anchor-sizes", type=float, nargs="+", default=None,
                        help="anchor sizes in pixels (default: the model's, from the image size)")
    parser.add_argument("--keep-cross-boundary", action="store_true",
                        help="train the RPN on anchors crossing the image border too")
    parser.add_argument("--cosine", action="store_true", help="cosine learning-rate decay over the time budget")
    parser.add_argument("--batch-norm", action="store_true", help="tiny backbone with batch norm, trained")
    parser.add_argument("--rcnn-batch-size", type=int, default=128, help="RoIs sampled per image for the head")
    parser.add_argument("--nms-iou", type=float, default=0.3,
                        help="per-class NMS IoU of the detections (0.3: chosen on held-out training images)")
    parser.add_argument("--roi-align", action="store_true",
                        help="RoIAlign (bilinear samples) instead of RoIPool (quantized bins)")
    parser.add_argument("--sampling-ratio", type=int, default=2, help="RoIAlign samples per bin and axis")
    parser.add_argument("--rpn-separable", action="store_true",
                        help="depthwise-separable RPN conv (ThunderNet) instead of the dense 3×3 conv")
    parser.add_argument("--rpn-kernel-size", type=int, default=3)
    parser.add_argument("--rpn-iou", type=float, nargs=2, default=[0.7, 0.3], metavar=("POSITIVE", "NEGATIVE"),
                        help="RPN anchor IoU thresholds (the paper's 0.7 / 0.3; the notes use 0.5 for positives)")
    parser.add_argument("--rpn-best-anchors", type=int, default=1,
                        help="each box's this many best anchors at IoU >= the negative threshold are RPN positives")
    parser.add_argument("--rpn-box-weight", type=float, default=1.0, help="weight of the RPN's box loss")
    parser.add_argument("--flip", action="store_true", help="random horizontal flips of the training images")
    parser.add_argument("--output", default=None, help="write the trained weights here (.weights.h5)")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    # uint8 in the pipeline (a quarter of float32's memory), cast per batch.
    train_images, train_gt = arrays("train", args.train_images, dtype="uint8")
    val_images, val_gt = arrays("validation", args.val_images)
    anchors = None if args.anchor_sizes is None else AnchorGenerator(
        sizes=tuple(args.anchor_sizes), aspect_ratios=(0.5, 1.0, 2.0), stride=args.backbone_stride)
    model = FasterRCNN(
        len(CLASS_NAMES), backbone="tiny", backbone_stride=args.backbone_stride, anchor_generator=anchors,
        backbone_batch_norm=args.batch_norm, train_backbone_batch_norm=args.batch_norm,
        rpn_ignore_cross_boundary=not args.keep_cross_boundary,
        image_size=(256, 256), head_units=(256, 256),
        rpn_batch_size=256, rcnn_batch_size=args.rcnn_batch_size, nms_iou=args.nms_iou,
        rpn_positive_iou=args.rpn_iou[0], rpn_negative_iou=args.rpn_iou[1],
        rpn_best_anchors_per_gt=args.rpn_best_anchors,
        loss_weights=None if args.rpn_box_weight == 1.0 else {"rpn_box": args.rpn_box_weight},
        rpn_separable=args.rpn_separable, rpn_kernel_size=args.rpn_kernel_size,
        roi_pool=(RoIAlign(7, 1 / args.backbone_stride, sampling_ratio=args.sampling_ratio, name="roi_pool")
                  if args.roi_align else RoIPool(7, 1 / args.backbone_stride, name="roi_pool")),
        proposal_layer=ProposalLayer(pre_nms_top_k_train=2000, post_nms_top_k_train=256,
                                     pre_nms_top_k_test=1000, post_nms_top_k_test=100),
        seed=args.seed,
    )
    model.compile(optimizer=keras.optimizers.Adam(args.learning_rate, clipnorm=10.0))
    # One endless stream (repeat, then shuffle) read by one iterator: a new pass per epoch
    # refilled the whole-split shuffle buffer before its first batch, and those epoch-start
    # stalls (up to 53 s, counted in the budget) cost about a tenth of the 10 minutes.
    ds = (tf.data.Dataset.from_tensor_slices((train_images, train_gt))
          .repeat()
          .shuffle(len(train_images), seed=args.seed))
    if args.flip:
        ds = ds.map(lambda image, gt: random_flip(image, gt, width=256), num_parallel_calls=tf.data.AUTOTUNE)
    ds = (ds.batch(args.batch_size, drop_remainder=True)
          .map(lambda images, gt: (tf.cast(images, tf.float32), gt))
          .prefetch(tf.data.AUTOTUNE))
    budget = TimeBudget(args.minutes * 60)
    curve = CurveCallback(val_images[:100], {k: v[:100] for k, v in val_gt.items()}, budget)
    callbacks = [budget, curve]
    if args.cosine:
        callbacks.insert(1, CosineOverBudget(budget, args.learning_rate, warmup=100))
    history = model.fit(ds, epochs=args.epochs, steps_per_epoch=len(train_images) // args.batch_size,
                        callbacks=callbacks, verbose=2)
    if args.output:
        model.save_weights(args.output)
    metrics, summary = evaluate(model, val_images, val_gt)
    print(summary)
    print(f"AP50 curve (training minutes, AP50 on 100 val images): {curve.curve}")
    print(f"final: {len(history.history['loss'])} epochs, {budget.elapsed / 60:.1f} min of training; "
          f"validation ({args.val_images} images) AP50 = {metrics['AP50']:.3f}, AP = {metrics['AP']:.3f}, "
          f"AP75 = {metrics['AP75']:.3f}")


if __name__ == "__main__":
    main()
