"""compute_ik on robots other than Baxter: the Panda's SRDF groups (tip panda_hand_tcp, reached
through the rigidly attached panda_link8), and dual_ur5_mobile's arm groups with the mobile base
and waist held at robot_state (the sub-group is re-converged with those joints pinned) plus its
whole_body group, whose planar base comes back in multi_dof_joint_state."""
from __future__ import annotations

import math

import numpy as np
import pytest

pytestmark = pytest.mark.ros

pytest.importorskip("moveit_msgs.srv", reason="moveit_msgs not built: run `make setup`")

import torch  # noqa: E402
from moveit_msgs.msg import RobotState  # noqa: E402
from moveit_msgs.srv import GetPositionIK  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402

from ik_helpers import NodeRunner, pose_stamped, reachable_poses, train_tiny  # noqa: E402


def _start(ros_context, tmp_path_factory, robot):
    ckpt = train_tiny(robot, tmp_path_factory.getbasetemp() / f"tiny_{robot}")
    return NodeRunner(ros_context, dict(robot=robot, robot_description_timeout=0.0, model_path=str(ckpt),
                                        moveit_default_timeout=10.0, follow_planning_scene=False),
                      name=f"ikd_{robot}")


def _solve(node, group, links, T_links, q_state):
    req = GetPositionIK.Request()
    req.ik_request.group_name = group
    req.ik_request.robot_state = RobotState(joint_state=JointState(
        name=list(node.robot.joint_names), position=[float(v) for v in q_state]))
    if len(links) == 1:
        req.ik_request.ik_link_name = links[0]
        req.ik_request.pose_stamped = pose_stamped(T_links[0])
    else:
        req.ik_request.ik_link_names = list(links)
        req.ik_request.pose_stamped_vector = [pose_stamped(T) for T in T_links]
    return node.compute_ik(req.ik_request, GetPositionIK.Response())


def _q_of(node, res):
    js = res.solution.joint_state
    values = dict(zip(js.name, js.position))
    for name, tf in zip(res.solution.multi_dof_joint_state.joint_names, res.solution.multi_dof_joint_state.transforms):
        values[f"{name}/x"], values[f"{name}/y"] = tf.translation.x, tf.translation.y
        r = tf.rotation
        values[f"{name}/theta"] = math.atan2(2 * (r.w * r.z + r.x * r.y), 1 - 2 * (r.y * r.y + r.z * r.z))
    return np.array([values[n] for n in node.robot.joint_names])


def test_panda_srdf_groups(ros_context, tmp_path_factory):
    runner = _start(ros_context, tmp_path_factory, "panda")
    try:
        node = runner.node
        assert set(node.pipeline.groups) >= {"arm", "arm_and_hand"}
        assert node.pipeline.groups["arm"].tips == ("panda_hand_tcp",)
        q, T = reachable_poses(node.robot, 4)
        # the pose of panda_link8 (rigidly attached to the tcp) is a valid target link too
        T8 = node.robot.fk_links(torch.as_tensor(q[0]), ["panda_link8"])[0].numpy()
        for links, T_links in ((["panda_hand_tcp"], [T[0, 0]]), (["panda_link8"], [T8])):
            res = _solve(node, "arm", links, T_links, node.robot.default_positions().numpy())
            assert res.error_code.val == 1, res.error_code.message
            q_sol = _q_of(node, res)
            T_sol = node.robot.fk_links(torch.as_tensor(q_sol), links)[0].numpy()
            assert np.linalg.norm(T_sol[:3, 3] - T_links[0][:3, 3]) <= 0.005
    finally:
        runner.close()


def test_dual_ur5_mobile_groups(ros_context, tmp_path_factory):
    runner = _start(ros_context, tmp_path_factory, "dual_ur5_mobile")
    try:
        node = runner.node
        robot = node.robot
        q, T = reachable_poses(robot, 5)
        q = q[0]
        for group, links in (("left_arm", ["left_tool0"]), ("both_arms", ["left_tool0", "right_tool0"]),
                             ("whole_body", ["left_tool0", "right_tool0"])):
            T_links = [T[0, robot.end_effectors.index(link)] for link in links]
            res = _solve(node, group, links, T_links, q)
            assert res.error_code.val == 1, (group, res.error_code.message)
            q_sol = _q_of(node, res)
            T_sol = robot.fk_links(torch.as_tensor(q_sol), links).numpy()
            for k in range(len(links)):
                assert np.linalg.norm(T_sol[k, :3, 3] - T_links[k][:3, 3]) <= 0.005, group
            held = [i for i in range(robot.n_joints) if i not in node.pipeline.groups[group].joints]
            assert np.allclose(q_sol[held], q[held], atol=1e-6), group  # joints outside the group unchanged
            assert list(res.solution.multi_dof_joint_state.joint_names) == ["base_joint"]
    finally:
        runner.close()


def test_description_from_parameters(ros_context, tmp_path_factory):
    """robot_description(_semantic) given as parameters (as a launch file does); the robot config is
    found by the URDF's robot name, the checkpoint by fingerprint among the given folder's cards."""
    from ikdiffuser_ros.robots import robot_config

    cfg = robot_config("panda")
    ckpt = train_tiny("panda", tmp_path_factory.getbasetemp() / "tiny_panda")
    runner = NodeRunner(ros_context, dict(robot_description=cfg.urdf_text(),
                                          robot_description_semantic=cfg.srdf_texts()[0],
                                          model_path=str(ckpt), follow_planning_scene=False),
                        name="ikd_panda_params")
    try:
        assert runner.node.robot.end_effectors == ["panda_hand_tcp"]
        assert runner.node.robot_config is not None and runner.node.robot_config.name == "panda"
        assert runner.node.robot.fingerprint() == cfg.load().fingerprint()
    finally:
        runner.close()
