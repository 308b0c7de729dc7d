"""Each arm of dual_ur5_mobile has exactly the kinematics of example-robot-data's UR5."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ikdiffuser_ros.kinematics.robot_model import RobotModel
from ikdiffuser_ros.resources import example_robot_data_share
from kinref import pose_error, random_q

UR5_JOINTS = ("shoulder_pan_joint", "shoulder_lift_joint", "elbow_joint",
              "wrist_1_joint", "wrist_2_joint", "wrist_3_joint")


@pytest.fixture(scope="module")
def ur5_path():
    return example_robot_data_share() / "robots" / "ur_description" / "urdf" / "ur5_joint_limited_robot.urdf"


@pytest.mark.parametrize("side", ["left", "right"])
def test_arm_equals_example_robot_data_ur5(side, robot, ur5_path, pk_chain):
    dual = robot("dual_ur5_mobile")
    ur5 = RobotModel.from_files(ur5_path, end_effectors=["tool0"])
    assert ur5.joint_names == list(UR5_JOINTS)
    # same joint specs (type, origin, axis, limits) joint by joint
    for j in UR5_JOINTS:
        a, b = dual.urdf.joints[f"{side}_{j}"], ur5.urdf.joints[j]
        assert a.type == b.type
        np.testing.assert_array_equal(a.origin, b.origin)
        np.testing.assert_array_equal(a.axis, b.axis)
        assert (a.lower, a.upper) == (b.lower, b.upper)
        i, k = dual.index_of(f"{side}_{j}"), ur5.index_of(j)
        assert (dual.lower[i], dual.upper[i]) == (ur5.lower[k], ur5.upper[k])
    # FK of tool0 relative to the arm's base link, for the same arm joint values
    q = random_q(dual, 500, seed=21)
    cols = [dual.index_of(f"{side}_{j}") for j in UR5_JOINTS]
    T_links = dual.fk_links(q, [f"{side}_base_link", f"{side}_tool0"])
    T_rel = torch.linalg.solve(T_links[:, 0], T_links[:, 1])
    T_ur5 = ur5.fk_links(q[:, cols], ["base_link", "tool0"])
    T_ur5_rel = torch.linalg.solve(T_ur5[:, 0], T_ur5[:, 1])
    pos, rot = pose_error(T_rel, T_ur5_rel)
    assert pos <= 1e-12 and rot <= 1e-12, (pos, rot)
    # and vs pytorch_kinematics on the original file, base_link -> tool0
    chain = pk_chain(ur5_path.read_text(), "tool0", "base_link")
    assert chain.get_joint_parameter_names() == list(UR5_JOINTS)
    pos, rot = pose_error(T_rel, chain.forward_kinematics(q[:, cols]).get_matrix())
    assert pos <= 1e-9 and rot <= 1e-9, (pos, rot)
