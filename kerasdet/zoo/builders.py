"""Builds the models a `ZooConfig` describes (random initialization; weights come after)."""

from __future__ import annotations

import dataclasses

import keras

from kerasdet.layers import AnchorGenerator, RoIAlign, RoIPool
from kerasdet.models.backbones import build_backbone
from kerasdet.models.faster_rcnn import FasterRCNN
from kerasdet.models.overfeat import overfeat_classifier
from kerasdet.models.overfeat_detector import overfeat_detector
from kerasdet.models.overfeat_localizer import overfeat_localizer
from kerasdet.models.proposals import ProposalLayer
from kerasdet.zoo.config import ZooConfig
from kerasdet.zoo.weights import WeightsError

# Qualified names (see `kerasdet.zoo.weights`) of the layers whose shapes depend on the
# number of classes: the only layers rebuilt when fine-tuning to another `num_classes`.
CLASS_LAYERS = {
    "faster_rcnn": ("roi_head/class_logits", "roi_head/box_deltas"),
    "overfeat": ("logits", "reg_boxes"),
}
# The layer whose bias has one entry per class (+ background) tells a file's class count.
_CLASS_COUNT_LAYER = {"faster_rcnn": "roi_head/class_logits", "overfeat": "logits"}


def classes_from_bias_shape(shape) -> int:
    """Foreground classes of a logits bias `(C + 1,)` (background included)."""
    return int(shape[0]) - 1


def _anchor_generator(anchors):
    if anchors is None:
        return None
    if "wh" in anchors:
        return AnchorGenerator(anchors=anchors["wh"], stride=anchors["stride"], name="anchor_generator")
    return AnchorGenerator(
        sizes=anchors["sizes"], aspect_ratios=anchors["aspect_ratios"], stride=anchors["stride"],
        name="anchor_generator",
    )


def build_faster_rcnn(config: ZooConfig, num_classes: int, *, backbone_weights=None) -> FasterRCNN:
    """A `FasterRCNN` from `config.model` with `num_classes` foreground classes.

    Args:
        backbone_weights: None or `"imagenet"` (from `keras.applications`; a
            `WeightsError` of one line when the download fails, e.g. offline).
    """
    m = config.model
    image_size = tuple(m["image_size"])
    stride = m["backbone_stride"]
    backbone = m["backbone"]
    if backbone_weights is not None:
        try:
            backbone = build_backbone(backbone, input_shape=(*image_size, 3), weights=backbone_weights, stride=stride)
        except RuntimeError as error:  # build_backbone's "needs network access" error
            raise WeightsError(" ".join(str(error).split())) from None
    anchor_generator = _anchor_generator(m["anchors"])
    if m["roi_pool"] == "roi_align":
        roi_pool = RoIAlign(m["pool_size"], 1.0 / stride, sampling_ratio=m["sampling_ratio"], name="roi_pool")
    else:
        roi_pool = RoIPool(m["pool_size"], 1.0 / stride, name="roi_pool")
    # Batch-norm options are passed only when set, so configurations without them build
    # with any FasterRCNN.
    batch_norm = {key: True for key in ("backbone_batch_norm", "train_backbone_batch_norm") if m[key]}
    model = FasterRCNN(
        num_classes,
        backbone=backbone,
        backbone_stride=stride,
        **batch_norm,
        image_size=image_size,
        anchor_generator=anchor_generator,
        rpn_channels=m["rpn_channels"],
        rpn_separable=m["rpn_separable"],
        rpn_kernel_size=m["rpn_kernel_size"],
        proposal_layer=ProposalLayer(**m["proposals"], name="proposals"),
        roi_pool=roi_pool,
        head_units=tuple(m["head_units"]),
        score_threshold=m["score_threshold"],
        nms_iou=m["nms_iou"],
        max_detections=m["max_detections"],
        rpn_batch_size=m["rpn_batch_size"],
        rpn_positive_fraction=m["rpn_positive_fraction"],
        rpn_positive_iou=m["rpn_positive_iou"],
        rpn_negative_iou=m["rpn_negative_iou"],
        rpn_best_anchors_per_gt=m["rpn_best_anchors_per_gt"],
        rcnn_batch_size=m["rcnn_batch_size"],
        rcnn_positive_fraction=m["rcnn_positive_fraction"],
        rpn_ignore_cross_boundary=m["rpn_ignore_cross_boundary"],
        seed=m["seed"],
        name=config.name,
    )
    if not isinstance(backbone, str):
        # Serialize the backbone by name (its ImageNet weights are model weights now).
        model.backbone_name = m["backbone"]
    return model


@dataclasses.dataclass
class OverFeatParts:
    """The three OverFeat networks of one configuration; they share layers 1–5 (and the
    detector runs the classifier and localizer themselves), so training the classifier or
    the localizer changes what the detector detects.

    Attributes:
        classifier: `[B, H, W, 3]` → logits `[B, h, w, C + 1]` (class 0 = background);
            train it on window crops (`kerasdet.training.overfeat.fit_classifier`).
        localizer: `[B, H, W, 3]` → window-relative boxes `[B, h, w, 4·C]`; train it with
            layers 1–5 frozen (`fit_localizer`).
        detector: images → the detections dict (image pyramid, greedy merge or NMS).
        arch: `"accurate"`, `"fast"` or `"tiny"`.
        num_classes: foreground classes `C`.
    """

    classifier: keras.Model
    localizer: keras.Model
    detector: keras.Model
    arch: str
    num_classes: int

    def save_weights(self, path) -> None:
        """Writes all OverFeat weights (classifier + regressor) to a `.weights.h5` file
        that `kerasdet.zoo.load` / `load_parts` read back (the detector's weights)."""
        self.detector.save_weights(path)


def build_overfeat(config: ZooConfig, num_classes: int) -> OverFeatParts:
    """Classifier (C + 1 outputs), localizer (4·C) and detector from `config.model`."""
    m = config.model
    classifier = overfeat_classifier(
        m["arch"], num_classes + 1, last_pool=m["last_pool"], dropout=m["dropout"], batch_norm=m["batch_norm"],
        name=f"{config.name}_classifier",
    )
    localizer = overfeat_localizer(
        classifier, m["arch"], num_classes, units=m["regressor_units"], name=f"{config.name}_localizer"
    )
    detector = overfeat_detector(
        classifier, localizer, m["arch"],
        image_size=tuple(m["image_size"]),
        scales=tuple(m["scales"]),
        merge=m["merge"],
        score_threshold=m["score_threshold"],
        match_threshold=m["match_threshold"],
        iou_threshold=m["iou_threshold"],
        max_detections=m["max_detections"],
        max_candidates=m["max_candidates"],
        name=config.name,
    )
    return OverFeatParts(classifier, localizer, detector, m["arch"], num_classes)


def class_count_layer(family: str) -> str:
    return _CLASS_COUNT_LAYER[family]
