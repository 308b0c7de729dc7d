"""MoveIt's compute_fk (moveit_msgs/srv/GetPositionFK) through a real node: any link of the robot, in
the root frame or another link's frame, equal to Orocos KDL (chains built from the URDF) to 1e-9;
errors by the one code table."""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.ros

pytest.importorskip("moveit_msgs.srv", reason="moveit_msgs not built: run `make setup`")

from moveit_msgs.srv import GetPositionFK  # noqa: E402

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from ik_helpers import served  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kinematics"))  # the KDL reference helpers
from kinref import import_pykdl  # noqa: E402

NODE = "ikd_fk_node"
# links on and off the end effectors' chains, a fixed-joint child, a frame for the answer
CASES = {"panda": (["panda_link3", "panda_hand_tcp", "panda_link8"], "panda_link2"),
         "baxter": (["left_lower_elbow", "right_gripper", "left_hand_camera_link"], "torso")}


@pytest.fixture(scope="module", params=sorted(CASES))
def node(request, ros_context, tmp_path_factory):
    name = request.param
    with served(ros_context, name, NODE, GetPositionFK, "compute_fk", tmp_path_factory.getbasetemp()) as (node, call):
        yield name, node, call


def _kdl_pose(kdl, xml, robot, q, link):
    """(4, 4) pose of ``link`` at ``q`` by a KDL chain from the URDF root."""
    from test_fk_vs_kdl import kdl_chain

    chain, names = kdl_chain(kdl, xml, link)
    arr = kdl.JntArray(len(names))
    for k, name in enumerate(names):
        arr[k] = float(q[robot.index_of(name)]) if name in robot.joint_names else robot.passive_value(
            robot.urdf.joints[name])
    F = kdl.Frame()
    kdl.ChainFkSolverPos_recursive(chain).JntToCart(arr, F)
    T = np.eye(4)
    T[:3, :3] = [[F.M[i, j] for j in range(3)] for i in range(3)]
    T[:3, 3] = [F.p[i] for i in range(3)]
    return T


def _request(robot, q, links, frame=""):
    req = GetPositionFK.Request()
    req.header.frame_id = frame
    req.fk_link_names = list(links)
    req.robot_state.joint_state.name = list(robot.joint_names)
    req.robot_state.joint_state.position = [float(v) for v in q]
    return req


def test_compute_fk_matches_kdl_in_the_root_frame_and_in_a_link_frame(node):
    kdl = import_pykdl()
    name, ik_node, call = node
    robot = ik_node.robot
    from ikdiffuser_ros.robots import robot_config

    xml = robot_config(name).urdf_text()
    links, frame = CASES[name]
    rng = np.random.default_rng(0)
    lo, hi = robot.lower.numpy(), robot.upper.numpy()
    for _ in range(5):
        q = lo + (hi - lo) * rng.random(robot.n_joints)
        res = call(_request(robot, q, links))
        assert res.error_code.val == 1 and list(res.fk_link_names) == links
        T_frame = _kdl_pose(kdl, xml, robot, q, frame)
        res_f = call(_request(robot, q, links, frame))
        assert res_f.error_code.val == 1
        for link, ps, ps_f in zip(links, res.pose_stamped, res_f.pose_stamped):
            T_ref = _kdl_pose(kdl, xml, robot, q, link)
            assert ps.header.frame_id == robot.root_frame and ps_f.header.frame_id == frame
            assert np.abs(_matrix(ps.pose) - T_ref).max() <= 1e-9, link
            assert np.abs(_matrix(ps_f.pose) - np.linalg.inv(T_frame) @ T_ref).max() <= 1e-9, link


def test_compute_fk_refuses_unknown_links_frames_and_joints(node):
    name, ik_node, call = node
    robot = ik_node.robot
    q = robot.default_positions().numpy()
    res = call(_request(robot, q, ["no_such_link"]))
    assert res.error_code.val < 0 and "no_such_link" in res.error_code.message
    res = call(_request(robot, q, [robot.end_effectors[0]], "no_such_frame"))
    assert res.error_code.val == -21 and "no_such_frame" in res.error_code.message  # FRAME_TRANSFORM_FAILURE
    bad = _request(robot, q, [robot.end_effectors[0]])
    bad.robot_state.joint_state.position[0] = float("nan")
    assert call(bad).error_code.val == -17  # INVALID_ROBOT_STATE
    # the node serves on
    assert call(_request(robot, q, [robot.end_effectors[0]])).error_code.val == 1


def _matrix(pose) -> np.ndarray:
    from ikdiffuser_ros.kinematics.frames import pose_matrix

    p, o = pose.position, pose.orientation
    return pose_matrix([p.x, p.y, p.z, o.x, o.y, o.z, o.w])
