"""Pure loss and sampling functions of MGCDA training: MDAT (eq. 1-2), CACL (eq. 3), weighted CE."""

from mgcda_core.losses.cacl import PixelSample, contrastive_loss, sample_pixels
from mgcda_core.losses.mdat import classifier_accuracy, classifier_loss, generator_adversarial_loss, tau_at
from mgcda_core.losses.segmentation import (
    SYNBOOST_CLASS_WEIGHTS,
    enet_class_weights,
    label_folder_pixel_counts,
    label_pixel_counts,
    weighted_cross_entropy,
)

__all__ = [
    "PixelSample",
    "SYNBOOST_CLASS_WEIGHTS",
    "classifier_accuracy",
    "classifier_loss",
    "contrastive_loss",
    "enet_class_weights",
    "generator_adversarial_loss",
    "label_folder_pixel_counts",
    "label_pixel_counts",
    "sample_pixels",
    "tau_at",
    "weighted_cross_entropy",
]
