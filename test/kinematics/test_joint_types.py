"""Mimic joints, continuous joints, URDF planar joints and SRDF floating virtual joints."""

from __future__ import annotations

import math

import numpy as np
import torch

from ikdiffuser_ros.kinematics.robot_model import RobotModel
from kinref import pose_error

LIMIT = '<limit lower="-2" upper="2" effort="1" velocity="1"/>'


def arm(third_joint_extra: str, extra_links: str = "") -> str:
    """A 3-joint arm base -> l1 -> l2 -> l3 -> tip; the 3rd joint's extra XML is a parameter."""
    return f"""<robot name="arm3">
      <link name="base"/><link name="l1"/><link name="l2"/><link name="l3"/><link name="tip"/>{extra_links}
      <joint name="j1" type="revolute"><parent link="base"/><child link="l1"/>
        <origin xyz="0 0 0.3" rpy="0 0 0.2"/><axis xyz="0 0 1"/>{LIMIT}</joint>
      <joint name="j2" type="revolute"><parent link="l1"/><child link="l2"/>
        <origin xyz="0.1 0 0.2" rpy="0.3 0 0"/><axis xyz="0 1 0"/>{LIMIT}</joint>
      <joint name="j3" type="revolute"><parent link="l2"/><child link="l3"/>
        <origin xyz="0.4 0.05 0" rpy="0 -0.4 0.1"/><axis xyz="1 1 0"/>{third_joint_extra}</joint>
      <joint name="tip_joint" type="fixed"><parent link="l3"/><child link="tip"/>
        <origin xyz="0.2 0 0.1" rpy="0.5 0.6 0.7"/></joint>
    </robot>"""


MIMIC = arm('<limit lower="-5" upper="5" effort="1" velocity="1"/><mimic joint="j2" multiplier="2" offset="0.1"/>')
EXPLICIT = arm('<limit lower="-5" upper="5" effort="1" velocity="1"/>')


def test_mimic_joint_on_ee_path(pk_chain):
    mimic = RobotModel.from_urdf(MIMIC, end_effectors=["tip"])
    explicit = RobotModel.from_urdf(EXPLICIT, end_effectors=["tip"])
    assert mimic.joint_names == ["j1", "j2"]
    assert explicit.joint_names == ["j1", "j2", "j3"]
    g = torch.Generator().manual_seed(0)
    q = (torch.rand(200, 2, generator=g, dtype=torch.float64) * 4 - 2)
    q3 = torch.cat([q, 2 * q[:, 1:2] + 0.1], -1)
    T, J = mimic.fk_and_jacobian(q)
    T_ex, J_ex = explicit.fk_and_jacobian(q3)
    pos, rot = pose_error(T, T_ex)
    assert pos <= 1e-12 and rot <= 1e-12
    # pytorch_kinematics on the explicit arm
    chain = pk_chain(EXPLICIT, "tip")
    pos, rot = pose_error(T[:, 0], chain.forward_kinematics(q3).get_matrix())
    assert pos <= 1e-9 and rot <= 1e-9
    # chain rule: d/dq2 = col(j2) + 2 col(j3)
    torch.testing.assert_close(J[..., 0], J_ex[..., 0], atol=1e-12, rtol=0)
    torch.testing.assert_close(J[..., 1], J_ex[..., 1] + 2 * J_ex[..., 2], atol=1e-12, rtol=0)
    # and by central differences of the mimic model's FK (position rows)
    h = 1e-6
    dp = (mimic.fk(q + torch.tensor([0, h])) - mimic.fk(q - torch.tensor([0, h])))[..., :3, 3] / (2 * h)
    torch.testing.assert_close(J[:, :, :3, 1], dp, atol=1e-6, rtol=0)


def test_mimic_of_a_joint_off_the_path_makes_the_leader_active():
    """A mimic joint on the EE path whose leader is off the path: the leader becomes active."""
    extra = '<link name="side"/><joint name="j_side" type="revolute"><parent link="base"/><child link="side"/>' \
            '<axis xyz="0 0 1"/><limit lower="0.5" upper="1"/></joint>'
    xml = arm('<limit lower="-5" upper="5"/><mimic joint="j_side" multiplier="2" offset="0.1"/>', extra)
    model = RobotModel.from_urdf(xml, end_effectors=["tip"])
    explicit = RobotModel.from_urdf(EXPLICIT, end_effectors=["tip"])
    assert model.joint_names == ["j1", "j2", "j_side"]
    assert model.lower[2].item() == 0.5 and model.upper[2].item() == 1.0
    q = torch.tensor([[0.3, -0.7, 0.8]], dtype=torch.float64)
    expected = explicit.fk(torch.tensor([[0.3, -0.7, 2 * 0.8 + 0.1]], dtype=torch.float64))
    torch.testing.assert_close(model.fk(q), expected, atol=1e-12, rtol=0)
    J, J_ex = model.jacobian(q), explicit.jacobian(torch.tensor([[0.3, -0.7, 1.7]], dtype=torch.float64))
    torch.testing.assert_close(J[..., 2], 2 * J_ex[..., 2], atol=1e-12, rtol=0)


def test_passive_mimic_follows_passive_leader():
    """A mimic joint off the path whose leader is passive: both stay at their passive values;
    a locked leader keeps its mimic on the path at multiplier * passive(leader) + offset, the passive
    value being MoveIt's default (0 is outside [0.5, 1]: the middle, 0.75)."""
    extra = '<link name="side"/><joint name="j_side" type="revolute"><parent link="base"/><child link="side"/>' \
            '<axis xyz="0 0 1"/><limit lower="0.5" upper="1"/></joint>'
    xml = arm('<limit lower="-5" upper="5"/><mimic joint="j_side" multiplier="2" offset="0.1"/>', extra)
    model = RobotModel.from_urdf(xml, end_effectors=["tip"], locked_joints=["j_side"])
    explicit = RobotModel.from_urdf(EXPLICIT, end_effectors=["tip"])
    assert model.joint_names == ["j1", "j2"]
    q = torch.tensor([[0.3, -0.7]], dtype=torch.float64)
    expected = explicit.fk(torch.tensor([[0.3, -0.7, 2 * 0.75 + 0.1]], dtype=torch.float64))
    torch.testing.assert_close(model.fk(q), expected, atol=1e-12, rtol=0)


CONTINUOUS = MIMIC.replace('type="revolute"><parent link="l2"/>', 'type="continuous"><parent link="l2"/>') \
    .replace('<limit lower="-5" upper="5" effort="1" velocity="1"/><mimic joint="j2" multiplier="2" offset="0.1"/>', "")


def test_continuous_joint_gets_minus_pi_pi():
    model = RobotModel.from_urdf(CONTINUOUS, end_effectors=["tip"])
    assert model.urdf.joints["j3"].type == "continuous"
    i = model.index_of("j3")
    assert (model.lower[i].item(), model.upper[i].item()) == (-math.pi, math.pi)
    assert model.lower[model.index_of("j1")].item() == -2.0


def _rot(axis: str, a: np.ndarray) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    R = np.zeros((len(a), 3, 3))
    i, j = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}[axis]
    k = 3 - i - j
    R[:, k, k] = 1
    R[:, i, i], R[:, i, j], R[:, j, i], R[:, j, j] = c, -s, s, c
    return R


PLANAR_URDF = """<robot name="mobile">
  <link name="world"/><link name="base"/><link name="l1"/>
  <joint name="drive" type="planar"><parent link="world"/><child link="base"/>
    <origin xyz="0.1 0.2 0.05" rpy="0 0 0.3"/><axis xyz="0 0 1"/></joint>
  <joint name="j1" type="revolute"><parent link="base"/><child link="l1"/>
    <origin xyz="0.3 0 0.4" rpy="0.2 0 0"/><axis xyz="0 1 0"/>""" + LIMIT + """</joint>
</robot>"""


def test_urdf_planar_joint():
    model = RobotModel.from_urdf(PLANAR_URDF, end_effectors=["l1"])
    assert model.joint_names == ["drive/x", "drive/y", "drive/theta", "j1"]
    assert model.lower.tolist() == [-1.0, -1.0, -math.pi, -2.0]
    g = torch.Generator().manual_seed(1)
    q = torch.rand(50, 4, generator=g, dtype=torch.float64) * 2 - 1
    T = model.fk(q)[:, 0]
    x, y, th, a = (v.numpy() for v in q.unbind(-1))
    # world -> joint origin -> (x, y, 0) Rz(theta) -> j1 origin -> Ry(a)
    O = np.eye(4); O[:3, :3] = _rot("z", np.array([0.3]))[0]; O[:3, 3] = [0.1, 0.2, 0.05]
    P = np.tile(np.eye(4), (50, 1, 1)); P[:, :3, :3] = _rot("z", th); P[:, 0, 3], P[:, 1, 3] = x, y
    O1 = np.eye(4); O1[:3, :3] = _rot("x", np.array([0.2]))[0]; O1[:3, 3] = [0.3, 0, 0.4]
    M = np.tile(np.eye(4), (50, 1, 1)); M[:, :3, :3] = _rot("y", a)
    expected = torch.from_numpy(O @ P @ O1 @ M)
    pos, rot = pose_error(T, expected)
    assert pos <= 1e-12 and rot <= 1e-12


def test_srdf_floating_virtual_joint():
    srdf = '<robot name="mobile"><virtual_joint name="float" type="floating" parent_frame="map" ' \
           'child_link="world"/></robot>'
    fixed_planar = PLANAR_URDF.replace('type="planar"', 'type="fixed"')
    model = RobotModel.from_urdf(fixed_planar, srdf, end_effectors=["l1"])
    assert model.root_frame == "map"
    assert model.joint_names == ["float/x", "float/y", "float/z", "float/yaw", "float/pitch", "float/roll", "j1"]
    assert model.lower[:6].tolist() == [-1, -1, -1, -math.pi, -math.pi / 2, -math.pi]
    g = torch.Generator().manual_seed(2)
    q = torch.rand(50, 7, generator=g, dtype=torch.float64) * 2 - 1
    T, J = model.fk_and_jacobian(q)
    fixed = RobotModel.from_urdf(fixed_planar, end_effectors=["l1"])
    T_arm = fixed.fk(q[:, 6:]).numpy()[:, 0]
    x, y, z, yaw, pitch, roll = (v.numpy() for v in q[:, :6].unbind(-1))
    F = np.tile(np.eye(4), (50, 1, 1))
    F[:, :3, :3] = _rot("z", yaw) @ _rot("y", pitch) @ _rot("x", roll)
    F[:, :3, 3] = np.stack([x, y, z], -1)
    pos, rot = pose_error(T[:, 0], torch.from_numpy(F @ T_arm))
    assert pos <= 1e-12 and rot <= 1e-12
    # translation columns are the unit axes
    torch.testing.assert_close(J[:, 0, :3, :3], torch.eye(3, dtype=torch.float64).expand(50, 3, 3))
    assert torch.all(J[:, 0, 3:, :3] == 0)


def test_robot_without_active_joints():
    """Only fixed joints: n = 0, poses constant, Jacobians (…, E, 6, 0)."""
    xml = ('<robot name="r"><link name="a"/><link name="b"/><joint name="j" type="fixed"><parent link="a"/>'
           '<child link="b"/><origin xyz="1 0 0"/></joint></robot>')
    model = RobotModel.from_urdf(xml, end_effectors=["a", "b"])
    assert model.joint_names == []
    T, J = model.fk_and_jacobian(torch.zeros(4, 0, dtype=torch.float64))
    assert T.shape == (4, 2, 4, 4) and J.shape == (4, 2, 6, 0)
    assert model.fk(torch.zeros(0))[1, :3, 3].tolist() == [1.0, 0.0, 0.0]


def test_urdf_floating_joint_and_prismatic_mimic_of_off_path_leader():
    from test_jacobian_fd import fd_jacobian

    xml = """<robot name="f"><link name="w"/><link name="body"/><link name="arm"/><link name="x"/>
      <joint name="fl" type="floating"><parent link="w"/><child link="body"/>
        <origin xyz="0.1 0.2 0.3" rpy="0.1 0.2 0.3"/></joint>
      <joint name="ja" type="prismatic"><parent link="body"/><child link="arm"/><origin xyz="0.3 0 0"/>
        <axis xyz="0 1 0"/><limit lower="-1" upper="1"/><mimic joint="jb" multiplier="0.5" offset="0.2"/></joint>
      <joint name="jb" type="revolute"><parent link="w"/><child link="x"/><axis xyz="0 0 1"/>
        <limit lower="-1" upper="1"/></joint></robot>"""
    model = RobotModel.from_urdf(xml, end_effectors=["arm"])
    assert model.joint_names == ["fl/x", "fl/y", "fl/z", "fl/yaw", "fl/pitch", "fl/roll", "jb"]
    g = torch.Generator().manual_seed(4)
    q = torch.rand(20, 7, generator=g, dtype=torch.float64) * 2 - 1
    T = model.fk(q)[:, 0]
    # by hand: origin, then x y z yaw pitch roll, then the prismatic slide 0.5 * jb + 0.2 along y
    O = np.eye(4)
    O[:3, :3] = _rot("z", np.array([0.3]))[0] @ _rot("y", np.array([0.2]))[0] @ _rot("x", np.array([0.1]))[0]
    O[:3, 3] = [0.1, 0.2, 0.3]
    x, y, z, yaw, pitch, roll, jb = (v.numpy() for v in q.unbind(-1))
    F = np.tile(np.eye(4), (20, 1, 1))
    F[:, :3, :3] = _rot("z", yaw) @ _rot("y", pitch) @ _rot("x", roll)
    F[:, :3, 3] = np.stack([x, y, z], -1)
    P = np.tile(np.eye(4), (20, 1, 1))
    P[:, 0, 3], P[:, 1, 3] = 0.3, 0.5 * jb + 0.2
    pos, rot = pose_error(T, torch.from_numpy(O @ F @ P))
    assert pos <= 1e-12 and rot <= 1e-12
    assert (model.jacobian(q) - fd_jacobian(model, q)).abs().max().item() <= 1e-6


def test_default_positions_are_moveits():
    """MoveIt's default state (``JointModel::getVariableDefaultPositions``): 0 where the range holds it,
    else the middle of the range (panda's joint 4 is [-3.0718, -0.0698])."""
    from ikdiffuser_ros.robots import load_robot

    panda = load_robot("panda")
    default = panda.default_positions()
    j4 = panda.index_of("panda_joint4")
    assert default[j4].item() == (panda.lower[j4].item() + panda.upper[j4].item()) / 2
    others = [i for i in range(panda.n_joints) if i != j4]
    assert bool((default[others] == 0).all())
