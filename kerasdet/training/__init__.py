"""Training recipes and targets."""

from kerasdet.training.losses import rcnn_losses, rpn_losses, smooth_l1
from kerasdet.training.matcher import Matcher
from kerasdet.training.sampler import sample_balanced, sample_balanced_indices
from kerasdet.training.targets import rcnn_targets, rpn_targets

__all__ = [
    "Matcher",
    "rcnn_losses",
    "rcnn_targets",
    "rpn_losses",
    "rpn_targets",
    "sample_balanced",
    "sample_balanced_indices",
    "smooth_l1",
]
