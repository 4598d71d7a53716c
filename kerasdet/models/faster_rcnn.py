"""Faster R-CNN (Ren et al. 2015): backbone → RPN → proposals → RoI pooling → Fast R-CNN head.

`FasterRCNN` is a functional `keras.Model` (the keras-hub task pattern): calling it, or
`predict`, runs the whole detector including per-class NMS and returns the padded
detections dict. `fit` runs a custom `train_step` (approximate joint training: one forward
pass per step, proposals treated as constants, RPN and Fast R-CNN losses summed).
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
import tensorflow as tf

from kerasdet.boxes import BoxCoder, clip_boxes
from kerasdet.layers import AnchorGenerator, ConvFC, RoIPool, RPNHead
from kerasdet.models import checks
from kerasdet.models.backbones import build_backbone
from kerasdet.models.proposals import ProposalLayer
from kerasdet.postprocess.nms import NonMaxSuppression
from kerasdet.training import rcnn_losses, rcnn_targets, rpn_losses, rpn_targets
from kerasdet.training.matcher import check_best_matches_per_gt
from kerasdet.training.targets import RCNN_BOX_WEIGHTS

LOSS_NAMES = ("loss", "rpn_objectness", "rpn_box", "rcnn_class", "rcnn_box")


def _check_loss_weights(loss_weights) -> dict:
    """`None` or `{term name: float ≥ 0}` → a dict (empty = every term weighted 1)."""
    if loss_weights is None:
        return {}
    if not isinstance(loss_weights, dict):
        raise ValueError(f"`loss_weights` must be a dict of loss names to floats, got {loss_weights!r}")
    terms = LOSS_NAMES[1:]
    checked = {}
    for name, weight in loss_weights.items():
        if name not in terms:
            raise ValueError(f"`loss_weights` has an unknown loss {name!r}; expected one of {terms}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float, np.integer, np.floating)) or not weight >= 0:
            raise ValueError(f"`loss_weights[{name!r}]` must be a float >= 0, got {weight!r}")
        checked[name] = float(weight)
    return checked


def default_anchor_sizes(image_size) -> tuple[float, ...]:
    """The paper's `(128, 256, 512)` for images of at least 512 px (shorter side `s`);
    `(s/8, s/4, s/2)` below that, e.g. `(16, 32, 64)` for 128×128 images."""
    s = min(image_size)
    if s >= 512:
        return (128.0, 256.0, 512.0)
    return (s / 8.0, s / 4.0, s / 2.0)


@keras.saving.register_keras_serializable(package="kerasdet")
class FeatureAnchors(keras.layers.Layer):
    """Anchors `[A, 4]` for a feature map of an image of static `image_size` (a layer so
    that anchors are a node of the functional graph)."""

    def __init__(self, anchor_generator, image_size, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.anchor_generator = anchor_generator
        self.image_size = tuple(int(v) for v in image_size)

    def call(self, features):
        shape = features.shape[1:3]
        if shape[0] is None or shape[1] is None:
            shape = tf.shape(features)[1:3]
        return self.anchor_generator(image_shape=self.image_size, feature_shapes=[tuple(shape)])

    def compute_output_spec(self, features):
        h, w = features.shape[1:3]
        k = self.anchor_generator.anchors_per_location[0]
        return keras.KerasTensor((None if h is None or w is None else h * w * k, 4), dtype="float32")


def check_head_ranks(head_ranks, head_units):
    """`head_ranks` as a tuple with one entry per FC layer (`None` = full rank), checked.

    Accepts `None` (no layer factorized) or a sequence as long as `head_units` of `None`
    or positive ints; a rank must not exceed the layer's `units` (the input side is checked
    when the head is built, where the channel count is known).
    """
    if head_ranks is None:
        return (None,) * len(head_units)
    if isinstance(head_ranks, (str, bytes)) or not hasattr(head_ranks, "__len__"):
        raise ValueError(f"`head_ranks` must be None or a list with one rank (or None) per FC layer, got {head_ranks!r}")
    if len(head_ranks) != len(head_units):
        raise ValueError(
            f"`head_ranks` needs one entry per FC layer ({len(head_units)} for head_units "
            f"{tuple(head_units)}), got {tuple(head_ranks)!r}"
        )
    ranks = []
    for i, (rank, units) in enumerate(zip(head_ranks, head_units)):
        if rank is not None and (isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank <= 0):
            raise ValueError(f"`head_ranks[{i}]` must be None or a positive int, got {rank!r}")
        if rank is not None and rank > units:
            raise ValueError(f"`head_ranks[{i}]` = {rank} exceeds the layer's {units} units; a rank is at most min(inputs, units)")
        ranks.append(None if rank is None else int(rank))
    return tuple(ranks)


@keras.saving.register_keras_serializable(package="kerasdet")
class RoIHead(keras.layers.Layer):
    """Fast R-CNN head on pooled RoIs: ConvFC layers (first kernel = pool size, then 1×1)
    with ReLU, then class logits (`C + 1`, column 0 background) and class-specific deltas.

    An FC layer `i` with `head_ranks[i] = t` is factorized as in Fast R-CNN §3.1
    ("Truncated SVD for faster detection"): a layer of `v` inputs and `u` units becomes
    `fc{i+1}_svd_v` (the same kernel window, `t` units, no bias, no activation; kernel
    `Σ_t V_tᵀ`) followed by `fc{i+1}_svd_u` (1×1, `u` units, the original bias and ReLU;
    kernel `U_t`): `t·(v + u) + u` parameters instead of `v·u + u`, fewer when
    `t < v·u / (v + u)`. `kerasdet.models.truncate_head_svd` fills them from a trained
    head. Full-rank layers keep the names `fc1`, `fc2`, … (and their weight-file paths).

    Args:
        num_classes: foreground classes `C`.
        head_units: widths of the FC layers.
        pool_size: the pooled RoI size `(ph, pw)` (the first FC layer's window).
        head_ranks: `None` or one entry per FC layer, `None` (full rank) or the rank
            `1 ≤ t ≤ min(v, u)` of its factorization.

    Call arguments:
        pooled: `[B, N, ph, pw, D]`.

    Returns:
        `(class_logits [B, N, C + 1], box_deltas [B, N, C, 4])`.
    """

    def __init__(self, num_classes, head_units=(1024, 1024), pool_size=7, head_ranks=None, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.head_units = tuple(int(u) for u in head_units)
        if not self.head_units:
            raise ValueError("`head_units` must have at least one entry")
        self.pool_size = (pool_size, pool_size) if isinstance(pool_size, int) else tuple(pool_size)
        self.head_ranks = check_head_ranks(head_ranks, self.head_units)
        # One flat list of ConvFC layers run in order: a factorized FC layer is two
        # entries. Keras saves a list's layers by class name and position, so the
        # full-rank head keeps the weight paths of earlier files (`fcs/conv_fc`, …).
        self.fcs = []
        for i, (units, rank) in enumerate(zip(self.head_units, self.head_ranks)):
            window = self.pool_size if i == 0 else 1
            if rank is None:
                self.fcs.append(ConvFC(units, kernel_size=window, activation="relu", name=f"fc{i + 1}"))
            else:
                self.fcs += [
                    # No activation in between: the pair is one linear map of rank `rank`.
                    ConvFC(rank, kernel_size=window, use_bias=False, name=f"fc{i + 1}_svd_v"),
                    ConvFC(units, kernel_size=1, activation="relu", name=f"fc{i + 1}_svd_u"),
                ]
        self.cls = ConvFC(
            self.num_classes + 1, kernel_size=1, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
            name="class_logits",
        )
        self.box = ConvFC(
            4 * self.num_classes, kernel_size=1, kernel_initializer=keras.initializers.RandomNormal(stddev=0.001),
            name="box_deltas",
        )

    def fc_layers(self):
        """The FC layers as `[(full_layer, None) | (svd_v_layer, svd_u_layer)]`, one pair
        per entry of `head_units`."""
        out, layers = [], iter(self.fcs)
        for rank in self.head_ranks:
            out.append((next(layers), None) if rank is None else (next(layers), next(layers)))
        return out

    def build(self, input_shape):
        shape = (None, *self.pool_size, input_shape[-1])
        for i, (rank, units) in enumerate(zip(self.head_ranks, self.head_units)):
            inputs = int(np.prod(shape[1:]))
            if rank is not None and rank > min(inputs, units):
                raise ValueError(
                    f"`head_ranks[{i}]` = {rank} exceeds min(inputs, units) = min({inputs}, {units}) of FC layer {i + 1}"
                )
            shape = (None, 1, 1, units)
        shape = (None, *self.pool_size, input_shape[-1])
        for fc in self.fcs:
            fc.build(shape)
            shape = (None, 1, 1, fc.units)
        self.cls.build(shape)
        self.box.build(shape)

    def call(self, pooled):
        batch, num = tf.shape(pooled)[0], tf.shape(pooled)[1]
        x = tf.reshape(pooled, tf.concat([[-1], tf.shape(pooled)[2:]], axis=0))
        for fc in self.fcs:
            x = fc(x)
        logits = tf.reshape(self.cls(x), [batch, num, self.num_classes + 1])
        deltas = tf.reshape(self.box(x), [batch, num, self.num_classes, 4])
        return logits, deltas

    def compute_output_spec(self, pooled):
        b, n = pooled.shape[:2]
        return (
            keras.KerasTensor((b, n, self.num_classes + 1), dtype=self.compute_dtype),
            keras.KerasTensor((b, n, self.num_classes, 4), dtype=self.compute_dtype),
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "head_units": list(self.head_units),
                "pool_size": self.pool_size,
                "head_ranks": list(self.head_ranks),
            }
        )
        return config


@keras.saving.register_keras_serializable(package="kerasdet")
class DecodeDetections(keras.layers.Layer):
    """Softmax scores without background and class-specific boxes decoded on the proposals
    (`BoxCoder` weights `(10, 10, 5, 5)`) and clipped to the image; padding proposals score 0.

    Returns:
        `(boxes [B, N, C, 4], scores [B, N, C])`, float32.
    """

    def __init__(self, image_size, **kwargs):
        kwargs.setdefault("dtype", "float32")
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.image_size = tuple(int(v) for v in image_size)
        self.coder = BoxCoder(weights=RCNN_BOX_WEIGHTS)

    def call(self, class_logits, box_deltas, proposals, valid):
        probs = tf.nn.softmax(tf.cast(class_logits, tf.float32), axis=-1)[..., 1:]
        scores = tf.where(valid[..., None], probs, 0.0)
        boxes = self.coder.decode(box_deltas, tf.cast(proposals, tf.float32)[:, :, None, :])
        return clip_boxes(boxes, self.image_size), scores

    def compute_output_spec(self, class_logits, box_deltas, proposals, valid):
        b, n, c = box_deltas.shape[:3]
        return keras.KerasTensor((b, n, c, 4), dtype="float32"), keras.KerasTensor((b, n, c), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config["image_size"] = self.image_size
        return config


def _feature_stride(backbone, image_size) -> int:
    """The backbone's output stride, from its static output size (`"same"` padding:
    `ceil(H / stride)`)."""
    height = backbone.output.shape[1]
    if height is None:
        raise ValueError("The backbone must have a static output size for a static `image_size`")
    for stride in (4, 8, 16, 32, 64):
        if -(-image_size[0] // stride) == height:
            return stride
    raise ValueError(f"Cannot infer the backbone's stride: image height {image_size[0]} → feature height {height}")


def _serialize(obj):
    return obj if obj is None or isinstance(obj, str) else keras.saving.serialize_keras_object(obj)


def _deserialize(obj):
    return obj if obj is None or isinstance(obj, str) else keras.saving.deserialize_keras_object(obj)


@keras.saving.register_keras_serializable(package="kerasdet")
class FasterRCNN(keras.Model):
    """Faster R-CNN detector, trainable with `compile` + `fit`, NMS in the graph.

    Args:
        num_classes: foreground classes `C` (background is internal).
        backbone: a name for `build_backbone` (default `"tiny"`) or a `keras.Model`
            images (0–255 RGB) → stride-16 (or 8) features.
        backbone_stride: the output stride of a named backbone (16; `"tiny"` also 8). The
            stride of a model backbone is read off its output shape. It sets the default
            anchor stride and RoI pooling scale.
        backbone_batch_norm: `"tiny"` backbone with batch normalization.
        train_backbone_batch_norm: run the backbone in training mode during `fit`, so its
            batch-norm layers normalize with batch statistics and update their moving
            averages — right for a backbone trained from scratch. The default freezes them
            (inference mode), the standard for an ImageNet-initialized backbone trained with
            small detection batches.
        image_size: static `(H, W)` of the input images.
        anchor_generator: default `AnchorGenerator(default_anchor_sizes(image_size),
            aspect ratios (0.5, 1, 2), the backbone's stride)`.
        rpn_head: default `RPNHead(k, channels=rpn_channels, separable=rpn_separable,
            kernel_size=rpn_kernel_size)`.
        rpn_channels: width of the default RPN head's conv (default `min(512, backbone
            channels)`).
        rpn_separable, rpn_kernel_size: the default RPN head's conv: depthwise-separable
            (ThunderNet's compressed RPN) or dense (the paper's, default), and its size (3).
        proposal_layer: default `ProposalLayer()` (paper sizes: 12000/2000 train,
            6000/300 test).
        roi_pool: default `RoIPool(7, 1 / stride)`.
        head_units: widths of the Fast R-CNN FC layers (run as `ConvFC`).
        head_ranks: `None` (default) or one entry per FC layer: `None` keeps the layer,
            an int `t` factorizes it into two layers of rank `t` (Fast R-CNN's truncated
            SVD, see `RoIHead`); `kerasdet.models.truncate_head_svd` makes such a model
            from a trained one.
        score_threshold, nms_iou, max_detections: per-class NMS of the detections.
        rpn_batch_size, rpn_positive_fraction: RPN anchor sampling (256, 0.5).
        rpn_positive_iou, rpn_negative_iou: an anchor is an RPN positive at IoU ≥
            `rpn_positive_iou` with a ground-truth box (or as a box's best anchor), a
            negative below `rpn_negative_iou`, ignored between (the paper's 0.7 / 0.3;
            the source notes use 0.5 for positives).
        rpn_best_anchors_per_gt: each ground-truth box also makes its this many best
            anchors positive when their IoU is at least `rpn_negative_iou` (default 1: the
            paper's one best anchor). More gives small boxes, which overlap no anchor by
            `rpn_positive_iou`, more than one positive (see `Matcher`).
        rcnn_batch_size, rcnn_positive_fraction: RoI sampling (512, 0.25; gt boxes added).
        rpn_ignore_cross_boundary: leave anchors that cross the image border out of the RPN
            loss (the paper's choice, default). On small images most large anchors cross
            the border; ignored in training, their objectness stays untrained yet they still
            make (clipped) proposals at test time — turn this off there (torchvision keeps
            every anchor).
        loss_weights: `None` or a dict from loss names (`rpn_objectness`, `rpn_box`,
            `rcnn_class`, `rcnn_box`) to floats ≥ 0 that multiply those terms (default 1,
            the paper's balance); the logged terms are the weighted ones, and sum to `loss`.
        seed: base seed of the (stateless) samplers; step `t` uses `(seed, 2t)` for the RPN
            and `(seed, 2t + 1)` for the RoIs, `t` = the optimizer's iteration counter.

    Calling the model returns `{"boxes" [B, D, 4], "scores" [B, D], "classes" [B, D] int32,
    "num_detections" [B] int32}` with `D = max_detections`. `fit` expects
    `(images, {"boxes": [B, M, 4], "classes": [B, M]})` and logs `loss`, `rpn_objectness`,
    `rpn_box`, `rcnn_class`, `rcnn_box`. The backbone runs in inference mode during training
    (frozen batch-norm statistics, as in standard Faster R-CNN training) unless
    `train_backbone_batch_norm`.
    """

    def __init__(
        self,
        num_classes,
        *,
        backbone="tiny",
        backbone_stride=16,
        backbone_batch_norm=False,
        train_backbone_batch_norm=False,
        image_size=(512, 512),
        anchor_generator=None,
        rpn_head=None,
        rpn_channels=None,
        rpn_separable=False,
        rpn_kernel_size=3,
        proposal_layer=None,
        roi_pool=None,
        head_units=(1024, 1024),
        head_ranks=None,
        score_threshold=0.05,
        nms_iou=0.5,
        max_detections=100,
        rpn_batch_size=256,
        rpn_positive_fraction=0.5,
        rpn_positive_iou=0.7,
        rpn_negative_iou=0.3,
        rpn_best_anchors_per_gt=1,
        rcnn_batch_size=512,
        rcnn_positive_fraction=0.25,
        rpn_ignore_cross_boundary=True,
        loss_weights=None,
        seed=0,
        **kwargs,
    ):
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes <= 0:
            raise ValueError(f"`num_classes` must be a positive int, got {num_classes!r}")
        image_size = tuple(int(v) for v in image_size)
        if not 0.0 <= rpn_negative_iou <= rpn_positive_iou <= 1.0:
            raise ValueError(
                "`rpn_negative_iou` <= `rpn_positive_iou` must both be in [0, 1], got "
                f"rpn_negative_iou={rpn_negative_iou!r}, rpn_positive_iou={rpn_positive_iou!r}"
            )
        rpn_best_anchors_per_gt = check_best_matches_per_gt(rpn_best_anchors_per_gt, "rpn_best_anchors_per_gt")
        if len(image_size) != 2 or min(image_size) <= 0:
            raise ValueError(f"`image_size` must be a positive (height, width), got {image_size!r}")
        backbone_name = backbone if isinstance(backbone, str) else None
        if isinstance(backbone, str):
            backbone = build_backbone(
                backbone, input_shape=(*image_size, 3), stride=backbone_stride, batch_norm=backbone_batch_norm
            )
        channels = backbone.output.shape[-1]
        stride = _feature_stride(backbone, image_size)
        if image_size[0] % stride or image_size[1] % stride:
            # "same"-padded stride-2 convs pad odd sizes on both sides, which shifts the
            # feature grid against the anchors: RPN recall@300 fell from 0.99 (384x512) to
            # 0.58 (375x500) with the same weights. Letterboxing pads to the input size.
            padded = tuple(-(-v // stride) * stride for v in image_size)
            warnings.warn(
                f"FasterRCNN image_size {image_size} is not a multiple of the backbone stride "
                f"{stride}: the feature grid is misaligned with the anchors; use {padded} and "
                f"pad images at the bottom/right (letterboxing does)",
                stacklevel=2,
            )
        anchor_generator = anchor_generator or AnchorGenerator(
            sizes=default_anchor_sizes(image_size), stride=stride
        )
        if anchor_generator.num_levels != 1:
            raise ValueError("FasterRCNN uses one feature level; `anchor_generator` must have one stride")
        num_anchors = anchor_generator.anchors_per_location[0]
        if rpn_head is None:
            rpn_head = RPNHead(num_anchors=num_anchors, channels=int(rpn_channels or min(512, channels)),
                               separable=rpn_separable, kernel_size=rpn_kernel_size, name="rpn_head")
        elif (rpn_channels, rpn_separable, rpn_kernel_size) != (None, False, 3):
            raise ValueError(
                "`rpn_channels` / `rpn_separable` / `rpn_kernel_size` configure the default RPN head; "
                f"with an `rpn_head` given they must stay unset, got rpn_channels={rpn_channels!r}, "
                f"rpn_separable={rpn_separable!r}, rpn_kernel_size={rpn_kernel_size!r}"
            )
        if rpn_head.num_anchors != num_anchors:
            raise ValueError(f"`rpn_head.num_anchors` = {rpn_head.num_anchors} but the anchor generator has {num_anchors}")
        proposal_layer = proposal_layer or ProposalLayer(name="proposals")
        roi_pool = roi_pool or RoIPool(7, 1.0 / stride, name="roi_pool")

        # === Layers ===
        self.backbone = backbone
        self.anchor_generator = anchor_generator
        self.anchors = FeatureAnchors(anchor_generator, image_size, name="anchors")
        self.rpn_head = rpn_head
        self.proposal_layer = proposal_layer
        self.roi_pool = roi_pool
        self.roi_head = RoIHead(num_classes, head_units, roi_pool.pool_size, head_ranks=head_ranks, name="roi_head")
        self.decode = DecodeDetections(image_size, name="decode")
        self.nms = NonMaxSuppression(
            iou_threshold=nms_iou, score_threshold=score_threshold, max_detections=max_detections, name="nms"
        )

        # === Functional model (inference graph, post-processing included) ===
        images = keras.Input(shape=(*image_size, 3), name="images")
        features = self.backbone(images)
        rpn = self.rpn_head(features)
        anchors = self.anchors(features)
        proposals = self.proposal_layer(rpn["objectness_logits"], rpn["box_deltas"], anchors, image_shape=image_size)
        pooled = self.roi_pool(features, proposals["boxes"])
        class_logits, box_deltas = self.roi_head(pooled)
        boxes, scores = self.decode(class_logits, box_deltas, proposals["boxes"], proposals["valid"])
        detections = self.nms(boxes, scores)
        super().__init__(inputs=images, outputs=detections, **kwargs)

        # === Config ===
        self.num_classes = int(num_classes)
        self.backbone_name = backbone_name
        self.backbone_stride = stride
        self.backbone_batch_norm = bool(backbone_batch_norm)
        self.train_backbone_batch_norm = bool(train_backbone_batch_norm)
        self.image_size = image_size
        self.head_units = tuple(int(u) for u in head_units)
        self.head_ranks = self.roi_head.head_ranks
        self.score_threshold = float(score_threshold)
        self.nms_iou = float(nms_iou)
        self.max_detections = int(max_detections)
        self.rpn_batch_size = int(rpn_batch_size)
        self.rpn_positive_fraction = float(rpn_positive_fraction)
        self.rpn_positive_iou = float(rpn_positive_iou)
        self.rpn_negative_iou = float(rpn_negative_iou)
        self.rpn_best_anchors_per_gt = rpn_best_anchors_per_gt
        self.rcnn_batch_size = int(rcnn_batch_size)
        self.rcnn_positive_fraction = float(rcnn_positive_fraction)
        self.rpn_ignore_cross_boundary = bool(rpn_ignore_cross_boundary)
        self.loss_weights = _check_loss_weights(loss_weights)
        self.seed = int(seed)
        self.loss_trackers = {name: keras.metrics.Mean(name=name) for name in LOSS_NAMES}

    # --- training -----------------------------------------------------------------------

    @property
    def metrics(self):
        return list(self.loss_trackers.values())

    def _step_seeds(self):
        optimizer = getattr(self, "optimizer", None)
        step = tf.cast(optimizer.iterations if optimizer is not None else 0, tf.int32)
        base = tf.constant(self.seed, tf.int32)
        return tf.stack([base, 2 * step]), tf.stack([base, 2 * step + 1])

    def compute_losses(self, images, ground_truth, training=True):
        """One forward pass of both stages on `images` with `ground_truth`; returns the dict
        of scalar losses (`loss` = their sum, plus any regularization losses).

        Bad inputs are one-line errors (`kerasdet.models.checks`): shapes and dtypes in
        Python, box and class values in Python for eager values, else as graph assertions.
        Boxes partly outside the image are clipped to it."""
        checks.check_images(images, self.image_size, where=self.name)
        gt_boxes, gt_classes = checks.check_ground_truth(ground_truth, self.num_classes, where=self.name, images=images)
        gt_boxes = clip_boxes(gt_boxes, self.image_size)
        images = tf.cast(images, self.compute_dtype)
        rpn_seed, rcnn_seed = self._step_seeds()

        # By default the backbone runs in inference mode (frozen batch-norm statistics).
        features = self.backbone(images, training=training and self.train_backbone_batch_norm)
        rpn = self.rpn_head(features, training=training)
        anchors = self.anchors(features)
        targets = rpn_targets(
            anchors, gt_boxes, gt_classes, self.image_size,
            high=self.rpn_positive_iou, low=self.rpn_negative_iou,
            best_matches_per_gt=self.rpn_best_anchors_per_gt,
            num_samples=self.rpn_batch_size, positive_fraction=self.rpn_positive_fraction,
            ignore_cross_boundary=self.rpn_ignore_cross_boundary, seed=rpn_seed,
        )
        rpn_objectness, rpn_box = rpn_losses(targets, rpn["objectness_logits"], rpn["box_deltas"])

        proposals = self.proposal_layer(
            rpn["objectness_logits"], rpn["box_deltas"], anchors, image_shape=self.image_size, training=True
        )
        rois = rcnn_targets(
            proposals["boxes"], gt_boxes, gt_classes,
            num_samples=self.rcnn_batch_size, positive_fraction=self.rcnn_positive_fraction,
            add_gt_boxes=True, seed=rcnn_seed,
        )
        pooled = self.roi_pool(features, rois["rois"])
        class_logits, box_deltas = self.roi_head(pooled, training=training)
        rcnn_class, rcnn_box = rcnn_losses(
            rois["class_targets"], rois["box_targets"], rois["box_weights"], rois["valid"],
            class_logits, box_deltas,
        )
        losses = {
            "rpn_objectness": rpn_objectness,
            "rpn_box": rpn_box,
            "rcnn_class": rcnn_class,
            "rcnn_box": rcnn_box,
        }
        losses = {name: value * self.loss_weights[name] if name in self.loss_weights else value
                  for name, value in losses.items()}
        total = tf.add_n(list(losses.values()))
        if self.losses:
            total = total + tf.add_n([tf.cast(extra, tf.float32) for extra in self.losses])
        losses["loss"] = total
        return losses

    def _update_trackers(self, losses):
        for name, tracker in self.loss_trackers.items():
            tracker.update_state(losses[name])
        logs = {name: tracker.result() for name, tracker in self.loss_trackers.items()}
        strategy = tf.distribute.get_strategy()
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and strategy.extended._in_multi_worker_mode():
            # Keras 3.15 averages step logs across workers with `reduce("MEAN", axis=0)`,
            # which needs an axis (keras-team/keras#20585): give each replica's value one.
            logs = {name: value[None] for name, value in logs.items()}
        return logs

    def train_step(self, data):
        images, ground_truth, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            losses = self.compute_losses(images, ground_truth, training=True)
            # Under tf.distribute each replica's loss is the mean over its own shard and the
            # optimizer sums the replicas' gradients: divide by the replica count so a step
            # is that of the global-batch mean (as Keras's built-in train_step does).
            total = losses["loss"]
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            if replicas > 1:
                total = total / replicas
            scaled = self.optimizer.scale_loss(total)
        variables = self.trainable_variables
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply(gradients, variables)
        return self._update_trackers(losses)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Under a distribution strategy Keras 3.15 first takes a batch off the input and
        # reduces it across replicas to read its shapes, which fails under
        # MultiWorkerMirroredStrategy (keras-team/keras#20585). This model is built by its
        # constructor and compiles no losses or metrics: the build needs no data, only the
        # optimizer's variables, created in the strategy's scope (not inside a replica).
        built = all(layer.built for layer in self._flatten_layers())
        compiled_extras = self._compile_loss is not None or self._compile_metrics is not None
        if self._distribute_strategy is None or not built or compiled_extras:
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=None)

    def test_step(self, data):
        images, ground_truth, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self._update_trackers(self.compute_losses(images, ground_truth, training=False))

    # --- input checks (kerasdet.models.checks): one-line errors before any graph runs ------

    def __call__(self, *args, **kwargs):
        if args:
            checks.check_images(args[0], self.image_size, where=self.name)
        return super().__call__(*args, **kwargs)

    def fit(self, x=None, y=None, *args, **kwargs):
        checks.check_arrays(self, x, y, kwargs.get("validation_data"))
        return super().fit(x, y, *args, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        checks.check_arrays(self, x, y)
        return super().evaluate(x, y, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        checks.check_arrays(self, x)
        return super().predict(x, *args, **kwargs)

    # --- serialization --------------------------------------------------------------------

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "num_classes": self.num_classes,
            "backbone": self.backbone_name or _serialize(self.backbone),
            "backbone_stride": self.backbone_stride,
            "backbone_batch_norm": self.backbone_batch_norm,
            "train_backbone_batch_norm": self.train_backbone_batch_norm,
            "image_size": list(self.image_size),
            "anchor_generator": _serialize(self.anchor_generator),
            "rpn_head": _serialize(self.rpn_head),
            "proposal_layer": _serialize(self.proposal_layer),
            "roi_pool": _serialize(self.roi_pool),
            "head_units": list(self.head_units),
            "head_ranks": None if self.head_ranks == (None,) * len(self.head_ranks) else list(self.head_ranks),
            "score_threshold": self.score_threshold,
            "nms_iou": self.nms_iou,
            "max_detections": self.max_detections,
            "rpn_batch_size": self.rpn_batch_size,
            "rpn_positive_fraction": self.rpn_positive_fraction,
            "rpn_positive_iou": self.rpn_positive_iou,
            "rpn_negative_iou": self.rpn_negative_iou,
            "rpn_best_anchors_per_gt": self.rpn_best_anchors_per_gt,
            "rcnn_batch_size": self.rcnn_batch_size,
            "rcnn_positive_fraction": self.rcnn_positive_fraction,
            "rpn_ignore_cross_boundary": self.rpn_ignore_cross_boundary,
            "loss_weights": dict(self.loss_weights) or None,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("backbone", "anchor_generator", "rpn_head", "proposal_layer", "roi_pool"):
            if key in config:
                config[key] = _deserialize(config[key])
        return cls(**config)
