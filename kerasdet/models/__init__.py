"""Detection models assembled from kerasdet layers."""

from kerasdet.models.overfeat import input_normalization, overfeat_classifier, overfeat_features
from kerasdet.models.overfeat_architectures import ARCHITECTURES as OVERFEAT_ARCHITECTURES

__all__ = ["OVERFEAT_ARCHITECTURES", "input_normalization", "overfeat_classifier", "overfeat_features"]
