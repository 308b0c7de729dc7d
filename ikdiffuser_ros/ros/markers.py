"""The last answer's solutions as a ``visualization_msgs/MarkerArray`` for RViz.

Each drawn solution is a stick figure of the robot: a LINE_LIST joining every
link origin to its parent link's origin, in the root frame. Namespace ``target_<b>``, one marker id per solution; the
colour goes from green (first solution) to blue; colliding solutions are red.
A DELETEALL marker first clears the previous answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from ikdiffuser_ros.ros.ik_solutions import solutions_array

if TYPE_CHECKING:
    from builtin_interfaces.msg import Time
    from visualization_msgs.msg import Marker, MarkerArray

    from ikdiffuser_ros.kinematics.robot_model import RobotModel
    from ikdiffuser_ros.srv import GetIKSolutions


def _skeleton(robot: RobotModel) -> tuple[list[str], list[tuple[int, int]]]:
    """(links L with a parent joint, or the root; (parent, child) index pairs into them) of the stick figures."""
    links = [link for link in robot.urdf.links if link in robot.urdf.child_joint or link == robot.urdf.root]
    index = {link: i for i, link in enumerate(links)}
    edges = [(index[robot.urdf.child_joint[link].parent], index[link]) for link in links
             if link in robot.urdf.child_joint and robot.urdf.child_joint[link].parent in index]
    return links, edges


def solutions_marker_array(robot: RobotModel, response: GetIKSolutions.Response, max_per_target: int,
                           stamp: Time) -> MarkerArray:
    """GetIKSolutions response -> MarkerArray (at most ``max_per_target`` solutions per target)."""
    from visualization_msgs.msg import Marker, MarkerArray

    cache = getattr(robot, "_ikd_skeleton", None)
    if cache is None:
        cache = _skeleton(robot)
        robot._ikd_skeleton = cache
    links, edges = cache
    array = MarkerArray()
    clear = Marker()
    clear.action = Marker.DELETEALL
    array.markers.append(clear)
    for b, result in enumerate(response.results):
        k = min(int(result.num_solutions), max_per_target)
        if k == 0:
            continue
        q = solutions_array(result, robot.joint_names)[:k]
        T = robot.fk_links(torch.as_tensor(q), links).numpy()  # (k, L, 4, 4)
        for s in range(k):
            colliding = bool(result.in_collision[s]) if len(result.in_collision) > s else False
            marker = _stick_figure(T[s], edges, s / max(k - 1, 1), colliding)
            marker.header.frame_id = robot.root_frame
            marker.header.stamp = stamp
            marker.ns = f"target_{b}"
            marker.id = s
            array.markers.append(marker)
    return array


def _stick_figure(T: np.ndarray, edges: list[tuple[int, int]], t: float, colliding: bool) -> Marker:
    """LINE_LIST marker (no header, ns, id) of one solution's skeleton.

    ``T``: (L, 4, 4) link poses in the root frame [m]; ``edges``: (parent, child) rows of ``T``;
    ``t`` in [0, 1]: the solution's rank, green (0) to blue (1); red when ``colliding``.
    """
    from geometry_msgs.msg import Point
    from std_msgs.msg import ColorRGBA
    from visualization_msgs.msg import Marker

    m = Marker()
    m.type = Marker.LINE_LIST
    m.action = Marker.ADD
    m.pose.orientation.w = 1.0
    m.scale.x = 0.01
    m.color = ColorRGBA(r=1.0, g=0.1, b=0.1, a=0.8) if colliding else \
        ColorRGBA(r=0.1, g=float(1.0 - 0.7 * t), b=float(0.3 + 0.7 * t), a=0.8)
    for i, j in edges:
        for idx in (i, j):
            p = T[idx, :3, 3]
            m.points.append(Point(x=float(p[0]), y=float(p[1]), z=float(p[2])))
    return m
