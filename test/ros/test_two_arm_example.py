"""scripts/two_arm_compute_ik.py, the worked two-arm example of docs/moveit.md, against a real node.

An ikdiffuser_node for Baxter (the shipped checkpoint when models/ has one for it, else a tiny one
trained here) is spun in this process; the example's ``main`` is imported from scripts/ and run
with its own rclpy Context, as a user would run the script. Targets are the hands' poses at random
collision-free configurations, so they are reachable; the answers are checked with an independent
forward kinematics (``ikdiffuser_ros.robots.load_robot``).
"""
from __future__ import annotations

import importlib.util
import json
import threading

import numpy as np
import pytest

pytestmark = pytest.mark.ros

pytest.importorskip("moveit_msgs.srv", reason="moveit_msgs not built: run `make setup`")

import torch  # noqa: E402

from ik_helpers import REPO, NodeRunner, shipped_model_for, train_tiny  # noqa: E402

NODE = "ikd_two_arm_node"
SCRIPT = REPO / "scripts" / "two_arm_compute_ik.py"
POS_TOL = 1e-4  # [m]
ROT_TOL = 1e-3  # [rad]


def _example():
    spec = importlib.util.spec_from_file_location("two_arm_compute_ik", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def example():
    return _example()


@pytest.fixture(scope="module")
def robot():
    from ikdiffuser_ros.robots import load_robot

    return load_robot("baxter")


@pytest.fixture(scope="module")
def node(ros_context, tmp_path_factory):
    params = dict(robot="baxter", robot_description_timeout=0.0, follow_planning_scene=False,
                  moveit_default_timeout=5.0, default_timeout=10.0)
    if not shipped_model_for("baxter"):
        params["model_path"] = str(train_tiny("baxter", tmp_path_factory.getbasetemp() / "tiny_baxter"))
    runner = NodeRunner(ros_context, params, name=NODE)
    try:
        yield runner.node
    finally:
        runner.close()


def _free_configs(node, robot, n: int, seed: int) -> np.ndarray:
    """``n`` collision-free configurations from the middle half of every joint range."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = robot.limits()
    q = lo + (hi - lo) * (0.25 + 0.5 * torch.rand(64, robot.n_joints, generator=g, dtype=torch.float64))
    checker = node.pipeline.checker
    free = ~checker.check(q).in_collision if checker is not None else np.ones(64, bool)
    idx = np.flatnonzero(np.asarray(free))[:n]
    assert len(idx) == n
    return q[idx].numpy()


def _pose7(T: np.ndarray) -> list[float]:
    from ikdiffuser_ros.ros.conversions import matrix_to_pose

    p = matrix_to_pose(T)
    return [p.position.x, p.position.y, p.position.z, p.orientation.x, p.orientation.y, p.orientation.z,
            p.orientation.w]


def _target(pose7) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    T = np.eye(4)
    T[:3, :3] = Rotation.from_quat(pose7[3:]).as_matrix()
    T[:3, 3] = pose7[:3]
    return T


def _assert_reaches(robot, q: np.ndarray, targets: list[np.ndarray]) -> None:
    """FK of ``q`` puts left_gripper and right_gripper at ``targets`` (POS_TOL, ROT_TOL)."""
    T = robot.fk_links(torch.as_tensor(q, dtype=torch.float64), ["left_gripper", "right_gripper"]).numpy()
    for k, target in enumerate(targets):
        assert np.linalg.norm(T[k, :3, 3] - target[:3, 3]) <= POS_TOL, (k, T[k], target)
        cos = np.clip((np.trace(T[k, :3, :3].T @ target[:3, :3]) - 1) / 2, -1.0, 1.0)
        assert np.arccos(cos) <= ROT_TOL, (k, T[k], target)


def _run(example, capsys, argv: list[str]) -> tuple[int, dict]:
    rc = example.main(["--node-name", NODE, "--json", *argv])
    out = capsys.readouterr().out
    return rc, json.loads(out) if out.strip() else {}


def _q(robot, joint_state: dict) -> np.ndarray:
    return np.array([joint_state[name] for name in robot.joint_names])


def test_two_arm_compute_ik_and_get_ik_solutions(node, robot, example, capsys):
    for q_true in _free_configs(node, robot, 2, seed=5):
        T = robot.fk(torch.as_tensor(q_true)).numpy()  # (2, 4, 4): left_gripper, right_gripper
        left, right = _pose7(T[0]), _pose7(T[1])
        rc, out = _run(example, capsys, ["--left", *map(str, left), "--right", *map(str, right),
                                         "--timeout", "5", "--solutions", "4"])
        assert rc == 0, out
        c = out["compute_ik"]
        assert c["error_code"] == 1 and c["error_name"] == "SUCCESS", c
        assert set(robot.joint_names) <= set(c["joint_state"])  # the full robot state comes back
        _assert_reaches(robot, _q(robot, c["joint_state"]), [T[0], T[1]])
        s = out["get_ik_solutions"]
        assert s["error_code"] == 1, s["message"]
        assert 1 <= len(s["solutions"]) <= 4
        for values in s["solutions"]:  # each the full robot state, by joint name (passive head_pan too)
            assert set(robot.joint_names) | {"head_pan"} <= set(values)
            _assert_reaches(robot, _q(robot, values), [T[0], T[1]])


def test_default_poses_of_the_doc(node, robot, example, capsys):
    rc, out = _run(example, capsys, ["--solutions", "0"])
    assert rc == 0, out
    assert "get_ik_solutions" not in out
    targets = [_target(example.DEFAULT_LEFT), _target(example.DEFAULT_RIGHT)]
    _assert_reaches(robot, _q(robot, out["compute_ik"]["joint_state"]), targets)


def test_seed_from_joint_states_topic(ros_context, node, robot, example, capsys):
    """--joint-states: the seed and every other joint (head_pan) come from the topic."""
    import rclpy
    from sensor_msgs.msg import JointState

    q_true = _free_configs(node, robot, 1, seed=9)[0]
    T = robot.fk(torch.as_tensor(q_true)).numpy()
    pub_node = rclpy.create_node("ikd_two_arm_joint_states", context=ros_context)
    pub = pub_node.create_publisher(JointState, "/ikd_two_arm_test/joint_states", 10)
    msg = JointState(name=list(robot.joint_names) + ["head_pan"], position=[float(v) for v in q_true] + [0.2])
    stop = threading.Event()
    thread = threading.Thread(target=lambda: [pub.publish(msg) for _ in iter(lambda: stop.wait(0.05), True)],
                              daemon=True)
    thread.start()
    try:
        rc, out = _run(example, capsys, ["--left", *map(str, _pose7(T[0])), "--right", *map(str, _pose7(T[1])),
                                         "--joint-states", "/ikd_two_arm_test/joint_states", "--solutions", "2"])
    finally:
        stop.set()
        thread.join(timeout=5)
        pub_node.destroy_node()
    assert rc == 0, out
    js = out["compute_ik"]["joint_state"]
    assert js["head_pan"] == pytest.approx(0.2)
    _assert_reaches(robot, _q(robot, js), [T[0], T[1]])
    solutions = out["get_ik_solutions"]["solutions"]
    assert solutions and all(values["head_pan"] == 0.2 for values in solutions)  # passive: the seed's value


def test_no_node_exits_2(example, capsys):
    rc = example.main(["--node-name", "no_such_ikdiffuser_node", "--wait", "0.5", "--solutions", "0"])
    assert rc == 2
    assert "not available" in capsys.readouterr().err
