"""compute_ik's position and orientation constraints become per-axis tolerances (moveit_bridge), and the
pipeline's answers keep them: a relaxed yaw on the panda, a box and a sphere region, refused forms."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.ros

from geometry_msgs.msg import Pose, PoseStamped  # noqa: E402
from moveit_msgs.msg import BoundingVolume, OrientationConstraint, PositionConstraint, RobotState  # noqa: E402
from moveit_msgs.srv import GetPositionIK  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from shape_msgs.msg import SolidPrimitive  # noqa: E402

from ikdiffuser_ros import errors  # noqa: E402
from ikdiffuser_ros.kinematics.transforms import matrix_to_quat  # noqa: E402
from ikdiffuser_ros.query import Status  # noqa: E402
from ikdiffuser_ros.ros import moveit_bridge  # noqa: E402
from ikdiffuser_ros.ros.conversions import JointStateLayout  # noqa: E402
from ikdiffuser_ros.ros.params import NodeConfig  # noqa: E402


@pytest.fixture(scope="module")
def panda_pipeline():
    from ikdiffuser_ros.pipeline import IKPipeline

    return IKPipeline.from_robot("panda", warmup=False)


def _pose_msg(T: np.ndarray) -> Pose:
    pose = Pose()
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in T[:3, 3])
    x, y, z, w = (float(v) for v in matrix_to_quat(torch.as_tensor(T[:3, :3])))
    pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = x, y, z, w
    return pose


def _request(pl, T: np.ndarray):
    req = GetPositionIK.Request().ik_request
    group = next(iter(pl.groups))
    req.group_name, req.ik_link_name = group, pl.robot.end_effectors[0]
    req.pose_stamped = PoseStamped(pose=_pose_msg(T))
    q0 = pl.robot.default_positions().numpy()
    req.robot_state = RobotState(joint_state=JointState(name=list(pl.robot.joint_names), position=list(q0)))
    return req


def _target(pl, seed: int) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    q = pl.robot.default_positions() + 0.4 * (torch.rand(pl.robot.n_joints, generator=g, dtype=torch.float64) - 0.5)
    return pl.robot.fk(q).numpy()[0]


def _answer(pl, req, num: int = 8):
    cfg = NodeConfig(moveit_num_candidates=num)
    query, _ = moveit_bridge.query_of(req, pl.groups, JointStateLayout(pl.robot), cfg, world=None)
    return query, pl.answer(query).targets[0]


def test_orientation_constraint_relaxes_yaw(panda_pipeline):
    pl = panda_pipeline
    T = _target(pl, 1)
    req = _request(pl, T)
    oc = OrientationConstraint(link_name=pl.robot.end_effectors[0], orientation=_pose_msg(T).orientation,
                               absolute_x_axis_tolerance=0.01, absolute_y_axis_tolerance=0.01,
                               absolute_z_axis_tolerance=math.pi)
    req.constraints.orientation_constraints = [oc]
    query, t = _answer(pl, req)
    assert list(query.targets[0].tolerances[0]) == pytest.approx([0, 0, 0, 0.01, 0.01, math.pi])
    assert t.status is Status.SOLVED
    T_sol = pl.robot.fk(torch.as_tensor(t.q)).numpy()[:, 0]
    assert np.abs(T_sol[:, :3, 3] - T[:3, 3]).max() < 1.01e-5
    tilt = np.arccos(np.clip(T_sol[:, :3, 2] @ T[:3, 2], -1, 1))
    assert tilt.max() < 0.0142  # within the x / y tolerances (their diagonal), whatever the yaw


@pytest.mark.parametrize("kind", ["box", "sphere"])
def test_position_region_becomes_a_box(panda_pipeline, kind):
    pl = panda_pipeline
    T = _target(pl, 2)
    req = _request(pl, T)
    centre = T.copy()
    centre[:3, 3] += T[:3, :3] @ np.array([0.005, 0.0, 0.0])  # a region centred 5 mm off the pose, along x
    if kind == "box":
        prim = SolidPrimitive(type=SolidPrimitive.BOX, dimensions=[0.02, 0.01, 0.004])
    else:
        prim = SolidPrimitive(type=SolidPrimitive.SPHERE, dimensions=[0.01])
    pc = PositionConstraint(link_name=pl.robot.end_effectors[0],
                            constraint_region=BoundingVolume(primitives=[prim], primitive_poses=[_pose_msg(centre)]))
    req.constraints.position_constraints = [pc]
    query, t = _answer(pl, req)
    half = np.array([0.01, 0.005, 0.002]) if kind == "box" else np.full(3, 0.01 / math.sqrt(3))
    assert np.allclose(query.targets[0].tolerances[0][:3], half)
    assert t.status is Status.SOLVED
    T_sol = pl.robot.fk(torch.as_tensor(t.q)).numpy()[:, 0]
    offset = (T_sol[:, :3, 3] - centre[:3, 3]) @ T[:3, :3]
    assert np.all(np.abs(offset) <= half + 1.01e-5)


def test_constraints_that_cannot_be_expressed_are_refused(panda_pipeline):
    pl = panda_pipeline
    T = _target(pl, 3)
    req = _request(pl, T)
    req.constraints.orientation_constraints = [OrientationConstraint(link_name="panda_link3")]
    with pytest.raises(errors.InvalidGoalError, match="no pose in the request"):
        _answer(pl, req)
    oc = OrientationConstraint(link_name=pl.robot.end_effectors[0], orientation=_pose_msg(T).orientation)
    oc.header.frame_id = "panda_link3"
    req.constraints.orientation_constraints = [oc]
    with pytest.raises(errors.InvalidGoalError, match="same frame"):
        _answer(pl, req)
    req.constraints.orientation_constraints = []
    cone = SolidPrimitive(type=SolidPrimitive.CONE, dimensions=[0.1, 0.1])
    req.constraints.position_constraints = [PositionConstraint(
        link_name=pl.robot.end_effectors[0], constraint_region=BoundingVolume(primitives=[cone],
                                                                              primitive_poses=[_pose_msg(T)]))]
    with pytest.raises(errors.InvalidGoalError, match="one box or sphere"):
        _answer(pl, req)
