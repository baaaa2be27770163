"""Launch ``anomaly_node``: ``ros2 launch mgcda_ros anomaly.launch.py camera_topic:=/camera/image_raw``.

Arguments: camera_topic (remapped to the node's ``image``; with input_transport compressed, the node reads
``<camera_topic>/compressed``), params_file (default: the installed config/anomaly.yaml), use_sim_time, namespace,
node_name, log_level, respawn (restart the node when it exits), lifecycle (true: the managed variant
``anomaly_lifecycle_node``, which starts unconfigured and waits for its lifecycle transitions).
The node's environment gets FASTDDS_DEFAULT_PROFILES_FILE = the installed config/fastdds_large_images.xml unless it
is already set or MGCDA_FASTDDS_PROFILE=0 (``mgcda_ros.transport``).
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition, UnlessCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node

from mgcda_ros.transport import profile_environment

PACKAGE = "mgcda_ros"
RESPAWN_DELAY_S = 2.0


def generate_launch_description() -> LaunchDescription:
    default_params = os.path.join(get_package_share_directory(PACKAGE), "config", "anomaly.yaml")
    camera_topic = LaunchConfiguration("camera_topic")
    lifecycle = LaunchConfiguration("lifecycle")
    common = dict(
        package=PACKAGE,
        name=LaunchConfiguration("node_name"),
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        parameters=[LaunchConfiguration("params_file"), {"use_sim_time": LaunchConfiguration("use_sim_time")}],
        remappings=[("image", camera_topic), ("image/compressed", [camera_topic, "/compressed"])],
        ros_arguments=["--log-level", LaunchConfiguration("log_level")],
        respawn=LaunchConfiguration("respawn"),
        respawn_delay=RESPAWN_DELAY_S,
        # the Fast DDS profile for large images, as the executable applies it (docs/ROS.md)
        additional_env=profile_environment(),
    )
    return LaunchDescription([
        DeclareLaunchArgument("camera_topic", default_value="/camera/image_raw",
                              description="camera image topic (sensor_msgs/Image)"),
        DeclareLaunchArgument("params_file", default_value=default_params, description="node parameters (YAML)"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock (ros2 bag play --clock)"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node and its outputs"),
        DeclareLaunchArgument("node_name", default_value="anomaly_node", description="name of the node"),
        DeclareLaunchArgument("log_level", default_value="info", description="debug, info, warn, error or fatal"),
        DeclareLaunchArgument("respawn", default_value="false", description="restart the node when it exits"),
        DeclareLaunchArgument("lifecycle", default_value="false",
                              description="true: the managed node (starts unconfigured; configure, activate)"),
        Node(executable="anomaly_node", condition=UnlessCondition(lifecycle), **common),
        LifecycleNode(executable="anomaly_lifecycle_node", condition=IfCondition(lifecycle), **common),
    ])
