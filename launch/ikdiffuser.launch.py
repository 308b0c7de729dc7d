"""Launch ikdiffuser_node for one robot.

    ros2 launch ikdiffuser_ros ikdiffuser.launch.py robot:=baxter [params_file:=...] [device:=cuda] [model_path:=...]
        [namespace:=...] [node_name:=...] [log_level:=debug] [use_sim_time:=true]
    ros2 launch ikdiffuser_ros ikdiffuser.launch.py robot:=/path/to/my_robot.yaml model_path:=/path/to/model

The robot is a name in config/robots or the path of a robot YAML (``ikdiffuser init-robot``
writes one; docs/your_robot.md); it is passed to the node as its ``robot`` parameter (an absolute
path for a YAML). The robot description (URDF and SRDF, xacro expanded) comes from that robot
config and is passed as the robot_description / robot_description_semantic parameters; the node
parameters come from params_file (which must exist) or else, for a robot name, config/<robot>.yaml
(a robot YAML has none: the node's defaults): the sections of the file for this node (keyed
``ikdiffuser_node``, ``node_name``, ``<namespace>/<node_name>`` or the wildcard ``/**``), so they
apply under any name and namespace. In a MoveIt
setup, drop the description parameters and the node reads the robot_description
topics published by robot_state_publisher and move_group instead.
"""
from __future__ import annotations

import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

#: the node's default name, and the key of its section in config/<robot>.yaml
DEFAULT_NAME = "ikdiffuser_node"


def _share() -> str:
    try:
        from ament_index_python.packages import get_package_share_directory

        return get_package_share_directory("ikdiffuser_ros")
    except Exception:  # running from a source checkout
        return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _robot(context) -> str:
    """The robot argument: a robot name, or the absolute path of a robot YAML."""
    robot = LaunchConfiguration("robot").perform(context).strip()
    if robot.endswith((".yaml", ".yml")) or os.sep in robot:
        robot = os.path.abspath(os.path.expanduser(robot))
        if not os.path.isfile(robot):
            raise FileNotFoundError(f"robot {robot!r}: no such robot YAML")
    return robot


def _params_file(context, robot: str) -> str | None:
    """The node parameters file: params_file when given (it must exist; launch_ros would only warn
    and start the node without it), else config/<robot>.yaml when there is one (robot names only)."""
    given = LaunchConfiguration("params_file").perform(context)
    if given:
        if not os.path.isfile(given):
            raise FileNotFoundError(f"params_file {given!r} is not a file")
        return given
    if os.path.isabs(robot):
        return None
    default = os.path.join(_share(), "config", f"{robot}.yaml")
    return default if os.path.isfile(default) else None


def _file_parameters(path: str, keys: set[str]) -> dict:
    """The ``ros__parameters`` of the sections of parameters file ``path`` keyed by one of ``keys`` (a
    leading ``/`` ignored), merged in file order. rcl would apply a section keyed ``ikdiffuser_node``
    only to a node of that name in the root namespace; read here, it applies under any name."""
    import yaml

    with open(path) as f:
        data = yaml.safe_load(f) or {}
    sections = [v for k, v in data.items() if str(k).lstrip("/") in keys and isinstance(v, dict)]
    if not sections:
        raise ValueError(f"params_file {path!r} has no section for this node: expected one of "
                         f"{sorted(keys)}, found {sorted(map(str, data))}")
    out: dict = {}
    for section in sections:
        out.update(section.get("ros__parameters") or {})
    return out


def _use_sim_time(context) -> bool:
    """The use_sim_time argument as a bool (true/false, any case)."""
    value = LaunchConfiguration("use_sim_time").perform(context).strip().lower()
    if value not in ("true", "false"):
        raise ValueError(f"use_sim_time {value!r}: expected true or false")
    return value == "true"


def _node(context):
    from ikdiffuser_ros.robots import robot_config

    robot = _robot(context)
    name = LaunchConfiguration("node_name").perform(context)
    namespace = LaunchConfiguration("namespace").perform(context).strip("/")
    path = _params_file(context, robot)
    keys = {"**", DEFAULT_NAME, name, f"{namespace}/{name}".strip("/")}
    file_parameters = _file_parameters(path, keys) if path else {}
    cfg = robot_config(robot)
    if len(cfg.srdf) <= 1:
        srdf = cfg.srdf_texts()
        description = {"robot_description": cfg.urdf_text(), "robot_description_semantic": srdf[0] if srdf else ""}
    else:  # several SRDF files are merged by the robot config itself: let the node load them
        description = {"robot_description_timeout": 0.0}
    overrides = {"robot": robot, "device": LaunchConfiguration("device").perform(context),
                 "use_sim_time": _use_sim_time(context)}
    model_path = LaunchConfiguration("model_path").perform(context)
    if model_path:
        overrides["model_path"] = model_path
    return [Node(package="ikdiffuser_ros", executable="ikdiffuser_node", name=name, namespace=namespace or None,
                 output="screen", parameters=[file_parameters, description, overrides],
                 ros_arguments=["--log-level", LaunchConfiguration("log_level").perform(context)])]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        DeclareLaunchArgument("robot", default_value="baxter", description="robot in config/robots, or the path "
                              "of a robot YAML (ikdiffuser init-robot)"),
        DeclareLaunchArgument("params_file", default_value="", description="node parameters (default "
                              "config/<robot>.yaml)"),
        DeclareLaunchArgument("device", default_value="cpu", description="cpu, cuda or cuda:<index>"),
        DeclareLaunchArgument("model_path", default_value="", description="checkpoint folder (default: "
                              "the one in models/ matching the robot)"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node (its services "
                              "and the robot_description topics it reads are resolved in it)"),
        DeclareLaunchArgument("node_name", default_value=DEFAULT_NAME, description="name of the node"),
        DeclareLaunchArgument("log_level", default_value="info", description="debug, info, warn, error or fatal"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="true: the node's ROS clock "
                              "follows /clock (time stamps of markers; budgets are always wall-clock)"),
        OpaqueFunction(function=_node),
    ])
