"""mgcda_core: MGCDA anomaly segmentation on the Synboost dissimilarity network (never imports ROS)."""

__version__ = "0.1.0"
