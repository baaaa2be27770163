"""ROS 2 side of the package: the ``anomaly_node``, message conversion, overlays and rosbag replay.

Everything here except :mod:`mgcda_ros.node` and :mod:`mgcda_ros.benchmark` works without a ROS installation
(replay and the demo read and write bags with the ``rosbags`` library).
"""
