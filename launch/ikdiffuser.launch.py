"""Launch ikdiffuser_node for one robot.

    ros2 launch ikdiffuser_ros ikdiffuser.launch.py robot:=baxter [params_file:=...] [device:=cuda] [model_path:=...]

The robot description (URDF and SRDF, xacro expanded) comes from
config/robots/<robot>.yaml and is passed as the robot_description /
robot_description_semantic parameters; the node parameters come from
params_file (which must exist) or else config/<robot>.yaml. In a MoveIt setup,
drop the description parameters and the node reads the robot_description topics
published by robot_state_publisher and move_group instead.
"""
from __future__ import annotations

import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def _share() -> str:
    try:
        from ament_index_python.packages import get_package_share_directory

        return get_package_share_directory("ikdiffuser_ros")
    except Exception:  # running from a source checkout
        return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _params_files(context, robot: str) -> list[str]:
    """The node parameters file: params_file when given (it must exist; launch_ros would only warn
    and start the node without it), else config/<robot>.yaml when there is one."""
    given = LaunchConfiguration("params_file").perform(context)
    if given:
        if not os.path.isfile(given):
            raise FileNotFoundError(f"params_file {given!r} is not a file")
        return [given]
    default = os.path.join(_share(), "config", f"{robot}.yaml")
    return [default] if os.path.isfile(default) else []


def _node(context):
    from ikdiffuser_ros.robots import robot_config

    robot = LaunchConfiguration("robot").perform(context)
    params_files = _params_files(context, robot)
    cfg = robot_config(robot)
    if len(cfg.srdf) <= 1:
        srdf = cfg.srdf_texts()
        description = {"robot_description": cfg.urdf_text(), "robot_description_semantic": srdf[0] if srdf else ""}
    else:  # several SRDF files are merged by the robot config itself: let the node load them
        description = {"robot_description_timeout": 0.0}
    overrides = {"device": LaunchConfiguration("device").perform(context)}
    model_path = LaunchConfiguration("model_path").perform(context)
    if model_path:
        overrides["model_path"] = model_path
    return [Node(package="ikdiffuser_ros", executable="ikdiffuser_node", name="ikdiffuser_node", output="screen",
                 parameters=[*params_files, description, overrides])]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        DeclareLaunchArgument("robot", default_value="baxter", description="robot in config/robots"),
        DeclareLaunchArgument("params_file", default_value="", description="node parameters (default "
                              "config/<robot>.yaml)"),
        DeclareLaunchArgument("device", default_value="cpu", description="cpu, cuda or cuda:<index>"),
        DeclareLaunchArgument("model_path", default_value="", description="checkpoint folder (default: "
                              "the one in models/ matching the robot)"),
        OpaqueFunction(function=_node),
    ])
