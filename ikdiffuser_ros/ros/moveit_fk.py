"""MoveIt's ``compute_fk`` (moveit_msgs/srv/GetPositionFK) <-> :meth:`IKPipeline.forward_kinematics`.

Request: ``fk_link_names`` (any links of the robot), ``robot_state`` (joints not named keep their
default values; planar/floating joints from ``multi_dof_joint_state``) and ``header.frame_id`` (the
frame of the answer: a link of the robot, empty = the root frame, or a frame outside the robot that the
node resolves through tf2 or ``fixed_frame_transforms``, passed in as ``external``). Response: one PoseStamped per
link, in that frame, stamped with the request's stamp, ``fk_link_names`` echoed, and the error code
of the one table (:mod:`ikdiffuser_ros.ros.error_codes`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ikdiffuser_ros.ros.conversions import JointStateLayout, matrix_to_pose

if TYPE_CHECKING:
    from collections.abc import Mapping

    import numpy as np
    from moveit_msgs.srv import GetPositionFK

    from ikdiffuser_ros.pipeline import IKPipeline


def answer(pipeline: "IKPipeline", layout: JointStateLayout, req: "GetPositionFK.Request",
           response: "GetPositionFK.Response", external: "Mapping[str, np.ndarray] | None" = None
           ) -> "GetPositionFK.Response":
    """Fill ``response`` with the poses of the request's links (core errors propagate to the caller);
    ``external``: ``{frame: T_root_frame}`` of a ``header.frame_id`` outside the robot."""
    from geometry_msgs.msg import PoseStamped

    q, _, _ = layout.from_joint_state(req.robot_state.joint_state, what="robot_state")
    layout.from_multi_dof(req.robot_state.multi_dof_joint_state, q)
    links = list(req.fk_link_names)
    T = pipeline.forward_kinematics(q, links, req.header.frame_id, external)[0]
    frame = pipeline.frames.normalize(req.header.frame_id)
    response.pose_stamped = []
    for Ti in T:
        ps = PoseStamped()
        ps.header.frame_id, ps.header.stamp = frame, req.header.stamp
        ps.pose = matrix_to_pose(Ti)
        response.pose_stamped.append(ps)
    response.fk_link_names = links
    response.error_code.val = 1  # MoveItErrorCodes.SUCCESS
    return response
