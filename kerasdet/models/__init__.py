"""Detection models assembled from kerasdet layers."""

from kerasdet.models.overfeat import input_normalization, overfeat_classifier, overfeat_features
from kerasdet.models.overfeat_architectures import ARCHITECTURES as OVERFEAT_ARCHITECTURES

__all__ = ["OVERFEAT_ARCHITECTURES", "input_normalization", "overfeat_classifier", "overfeat_features"]

from kerasdet.models.backbones import BACKBONES, build_backbone  # noqa: E402
from kerasdet.models.faster_rcnn import FasterRCNN  # noqa: E402
from kerasdet.models.proposals import ProposalLayer  # noqa: E402

__all__ += ["BACKBONES", "FasterRCNN", "ProposalLayer", "build_backbone"]

from kerasdet.models.compress import truncate_head_svd  # noqa: E402

__all__ += ["truncate_head_svd"]
