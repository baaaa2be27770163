"""Anomaly-segmentation metrics (Fishyscapes exact, SegmentMeIfYouCan binned and component level), the
``metrics.json`` writer, PR/ROC plots and the best/worst gallery.

Light imports only here; plots and gallery (matplotlib) are imported from their modules.
"""

from mgcda_core.evaluation.accumulator import PROTOCOLS, MetricAccumulator, frame_metrics, validate_pair
from mgcda_core.evaluation.components import ComponentAccumulator
from mgcda_core.evaluation.curves import Curve, MetricInputError
from mgcda_core.evaluation.metrics_file import write_metrics

__all__ = [
    "PROTOCOLS",
    "ComponentAccumulator",
    "Curve",
    "MetricAccumulator",
    "MetricInputError",
    "frame_metrics",
    "validate_pair",
    "write_metrics",
]
