"""Start the earl node on a ROS 2 installation: `ros2 launch earl_ros earl.launch.py`.

Arguments (all optional):
  namespace:=earl                      node namespace (service <ns>/query, topics <ns>/interaction ...)
  params_file:=<share>/config/earl.yaml  the ONE parameter list (also used by earl-launch)
  camera_topic:=/camera/image_raw      remapped to the node's `image` (and `image/compressed`)
  model_dir:=DIR                       overrides model_dir from the params file when non-empty
  use_shm:=true                        sets FASTDDS_DEFAULT_PROFILES_FILE to <share>/config/fastdds_shm.xml
                                       (unless already set in the environment)
  autostart:=true                      the lifecycle node configures and activates itself; false leaves
                                       it unconfigured for a lifecycle manager

Example: ros2 launch earl_ros earl.launch.py model_dir:=/opt/models/earl camera_topic:=/head_cam/image_raw
"""
import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

PACKAGE = "earl_ros"
EXECUTABLE = "earl"  # console script installed to lib/earl_ros (setup.cfg)


def _node(context, *args, **kwargs):
    camera_topic = LaunchConfiguration("camera_topic").perform(context)
    model_dir = LaunchConfiguration("model_dir").perform(context)
    autostart = LaunchConfiguration("autostart").perform(context).lower() in ("true", "1", "yes")
    parameters = [LaunchConfiguration("params_file"), {"autostart": autostart}]
    if model_dir:
        parameters.append({"model_dir": model_dir})
    return [
        Node(
            package=PACKAGE,
            executable=EXECUTABLE,
            name="earl",
            namespace=LaunchConfiguration("namespace"),
            parameters=parameters,
            remappings=[
                ("image", camera_topic),
                ("image/compressed", camera_topic.rstrip("/") + "/compressed"),
            ],
            output="screen",
            emulate_tty=True,
        )
    ]


def generate_launch_description():
    share = FindPackageShare(PACKAGE)
    actions = [
        DeclareLaunchArgument("namespace", default_value="earl", description="node namespace"),
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution([share, "config", "earl.yaml"]),
            description="parameters file (the shipped config/earl.yaml by default)",
        ),
        DeclareLaunchArgument("camera_topic", default_value="/camera/image_raw",
                              description="camera image topic (sensor_msgs/Image)"),
        DeclareLaunchArgument("model_dir", default_value="",
                              description="model directory; empty = the params file's model_dir"),
        DeclareLaunchArgument("use_shm", default_value="true",
                              description="use the shipped shared-memory Fast DDS profile"),
        DeclareLaunchArgument("autostart", default_value="true",
                              description="configure and activate the lifecycle node at startup"),
    ]
    if not os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE"):
        actions.append(SetEnvironmentVariable(
            "FASTDDS_DEFAULT_PROFILES_FILE",
            PathJoinSubstitution([share, "config", "fastdds_shm.xml"]),
            condition=IfCondition(LaunchConfiguration("use_shm")),
        ))
    actions.append(OpaqueFunction(function=_node))
    return LaunchDescription(actions)
