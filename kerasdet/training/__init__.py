"""Training recipes and targets, crash-safe checkpoints, distribution strategies."""

from kerasdet.training.budget import CosineOverBudget, TimeBudget
from kerasdet.training.checkpoint import ResumableBackup, WeightsCheckpoint, atomic_save_weights
from kerasdet.training.distribute import STRATEGY_NAMES, is_chief, make_strategy
from kerasdet.training.losses import rcnn_losses, rpn_losses, smooth_l1
from kerasdet.training.matcher import Matcher
from kerasdet.training.sampler import sample_balanced, sample_balanced_indices
from kerasdet.training.targets import rcnn_targets, rpn_targets

__all__ = [
    "STRATEGY_NAMES",
    "CosineOverBudget",
    "Matcher",
    "ResumableBackup",
    "TimeBudget",
    "WeightsCheckpoint",
    "atomic_save_weights",
    "is_chief",
    "make_strategy",
    "rcnn_losses",
    "rcnn_targets",
    "rpn_losses",
    "rpn_targets",
    "sample_balanced",
    "sample_balanced_indices",
    "smooth_l1",
]
