"""Launch ``anomaly_node``: ``ros2 launch mgcda_ros anomaly.launch.py camera_topic:=/camera/image_raw``.

Arguments: camera_topic (remapped to the node's ``image``; with input_transport compressed, the node reads
``<camera_topic>/compressed``), params_file (default: the installed config/anomaly.yaml), use_sim_time, namespace.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "mgcda_ros"


def generate_launch_description() -> LaunchDescription:
    default_params = os.path.join(get_package_share_directory(PACKAGE), "config", "anomaly.yaml")
    camera_topic = LaunchConfiguration("camera_topic")
    return LaunchDescription([
        DeclareLaunchArgument("camera_topic", default_value="/camera/image_raw",
                              description="camera image topic (sensor_msgs/Image)"),
        DeclareLaunchArgument("params_file", default_value=default_params, description="node parameters (YAML)"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock (rosbag play --clock)"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node and its outputs"),
        Node(
            package=PACKAGE,
            executable="anomaly_node",
            name="anomaly_node",
            namespace=LaunchConfiguration("namespace"),
            output="screen",
            parameters=[LaunchConfiguration("params_file"), {"use_sim_time": LaunchConfiguration("use_sim_time")}],
            remappings=[("image", camera_topic), ("image/compressed", [camera_topic, "/compressed"])],
        ),
    ])
