"""GetIKSolutions with the query's full meaning, through a real node on dual_ur5_mobile (two UR5 arms on a
waist joint and a planar base, 16 variables): ``group_name``, ``locked_joints``, ``joint_constraints`` and
``max_rounds``, answered as full joint states.

Every answer is checked by an independent forward kinematics: pytorch_kinematics (float64, the URDF
text) composed with the SRDF's planar base built by hand (test/kinematics/kinref.py), fed with the
values read by name out of each solution's ``sensor_msgs/JointState``; every pose is met within
1e-5 m / 1e-4 rad (the node's default tolerances).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.ros

import torch  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402

from ik_helpers import pose_stamped, served  # noqa: E402
from ikdiffuser_ros.msg import IKTarget, JointConstraint  # noqa: E402
from ikdiffuser_ros.srv import GetIKSolutions  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kinematics"))  # the independent FK
from kinref import pk_serial_chain, planar_T, rotation_error  # noqa: E402

ROBOT, NODE = "dual_ur5_mobile", "ikd_query_node"
CODES = GetIKSolutions.Request
POS_TOL, ROT_TOL = 1e-5, 1e-4
BASE = ("base_joint/x", "base_joint/y", "base_joint/theta")
TOOLS = ("left_tool0", "right_tool0")


@pytest.fixture(scope="module")
def setup(ros_context, tmp_path_factory):
    """(node, call) with ``call(request) -> response`` over the real service."""
    with served(ros_context, ROBOT, NODE, GetIKSolutions, "get_ik_solutions", tmp_path_factory.getbasetemp(), 120.0,
                default_timeout=20.0, max_timeout=30.0) as node_and_call:
        yield node_and_call


@pytest.fixture(scope="module")
def reference():
    """Independent FK: ``fk(values: {joint: value}, link) -> (4, 4)`` in odom (pytorch_kinematics from the
    URDF text for base_footprint -> link, after the planar base x, y, theta)."""
    from ikdiffuser_ros.robots import robot_config

    xml = robot_config(ROBOT).urdf_text()
    chains = {link: pk_serial_chain(xml, link) for link in TOOLS}

    def fk(values: dict, link: str) -> np.ndarray:
        chain = chains[link]
        q = torch.tensor([[values[name] for name in chain.get_joint_parameter_names()]], dtype=torch.float64)
        T_base = planar_T(*(torch.tensor([values[v]], dtype=torch.float64) for v in BASE))
        return (T_base @ chain.forward_kinematics(q).get_matrix())[0].numpy()

    return fk


def _config(robot, seed: int) -> np.ndarray:
    """A configuration in the middle half of every joint range."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = robot.limits()
    return (lo + (hi - lo) * (0.25 + 0.5 * torch.rand(robot.n_joints, generator=g, dtype=torch.float64))).numpy()


def _state(robot, q: np.ndarray) -> JointState:
    return JointState(name=list(robot.joint_names), position=[float(v) for v in q])


def _request(targets: dict, num_solutions: int, **fields) -> GetIKSolutions.Request:
    """One target: ``{link: (4, 4) pose in odom}``."""
    req = GetIKSolutions.Request(num_solutions=num_solutions, random_seed=fields.pop("random_seed", 3))
    req.targets = [IKTarget(link_names=list(targets), poses=[pose_stamped(T, "odom") for T in targets.values()])]
    for k, v in fields.items():
        setattr(req, k, v)
    return req


def _solutions(robot, response, reference, targets: dict, n: int) -> list[dict]:
    """The first result's solutions as {joint: value}; each a full JointState meeting every target by the
    independent FK."""
    assert response.error_code == CODES.SUCCESS, response.message
    [result] = response.results
    assert result.num_solutions == len(result.solutions) == n, (result.num_solutions, result.message)
    out = []
    for js in result.solutions:
        assert list(js.name) == robot.joint_names and len(js.position) == len(js.name)
        assert js.header.frame_id == "odom"
        values = dict(zip(js.name, js.position))
        for link, T in targets.items():
            T_fk = reference(values, link)
            assert np.linalg.norm(T_fk[:3, 3] - T[:3, 3]) <= POS_TOL, link
            assert rotation_error(torch.from_numpy(T_fk[:3, :3]), torch.from_numpy(T[:3, :3])).item() <= ROT_TOL
        out.append(values)
    return out


def test_group_holds_every_other_joint_at_the_seed(setup, reference):
    """torso_and_arms with both tools' poses: 64 solutions, the planar base exactly at the seed."""
    node, call = setup
    robot = node.robot
    group = node.pipeline.groups["torso_and_arms"]
    seed = _config(robot, 1)
    goal = seed.copy()
    moving = list(group.joints)
    goal[moving] = _config(robot, 2)[moving]
    values = dict(zip(robot.joint_names, goal))
    targets = {link: reference(values, link) for link in TOOLS}
    res = call(_request(targets, 64, group_name="torso_and_arms", seed_state=_state(robot, seed)))
    held = [name for i, name in enumerate(robot.joint_names) if i not in set(moving)]
    assert set(held) == set(BASE)
    for sol in _solutions(robot, res, reference, targets, 64):
        assert [sol[name] for name in held] == [seed[robot.index_of(name)] for name in held]  # exactly


def test_group_tip_without_a_pose_keeps_its_pose(setup, reference):
    """both_arms, a pose for the left tool only: the right tool stays where the seed has it (its arm may
    move), the base and waist stay exactly at the seed."""
    node, call = setup
    robot = node.robot
    seed = _config(robot, 3)
    goal = seed.copy()
    left = [robot.index_of(n) for n in robot.joint_names if n.startswith("left_")]
    goal[left] = _config(robot, 4)[left]
    targets = {"left_tool0": reference(dict(zip(robot.joint_names, goal)), "left_tool0")}
    T_right = reference(dict(zip(robot.joint_names, seed)), "right_tool0")
    res = call(_request(targets, 16, group_name="both_arms", seed_state=_state(robot, seed)))
    for sol in _solutions(robot, res, reference, {**targets, "right_tool0": T_right}, 16):
        assert [sol[n] for n in (*BASE, "waist_joint")] == [seed[robot.index_of(n)] for n in (*BASE, "waist_joint")]


def test_locked_joints_hold_exactly(setup, reference):
    """No group: every joint may move except the locked ones (the base's theta, the waist, a shoulder),
    which hold their locked values (not the seed's) exactly."""
    node, call = setup
    robot = node.robot
    goal = _config(robot, 5)
    locked = {"base_joint/theta": float(goal[robot.index_of("base_joint/theta")]),
              "waist_joint": float(goal[robot.index_of("waist_joint")]),
              "left_shoulder_pan_joint": float(goal[robot.index_of("left_shoulder_pan_joint")])}
    values = dict(zip(robot.joint_names, goal))
    targets = {link: reference(values, link) for link in TOOLS}
    res = call(_request(targets, 16, locked_joints=JointState(name=list(locked), position=list(locked.values()))))
    for sol in _solutions(robot, res, reference, targets, 16):
        assert {name: sol[name] for name in locked} == locked


def test_joint_constraints_hold(setup, reference):
    """No group, no seed: every solution lies within the bounds (position - below .. position + above)."""
    node, call = setup
    robot = node.robot
    values = dict(zip(robot.joint_names, _config(robot, 6)))
    targets = {"left_tool0": reference(values, "left_tool0")}
    bounds = {"base_joint/x": 0.05, "waist_joint": 0.1}
    constraints = [JointConstraint(joint_name=name, position=float(values[name]), tolerance_above=tol,
                                   tolerance_below=tol / 2) for name, tol in bounds.items()]
    res = call(_request(targets, 16, joint_constraints=constraints))
    for sol in _solutions(robot, res, reference, targets, 16):
        for name, tol in bounds.items():
            assert values[name] - tol / 2 - 1e-9 <= sol[name] <= values[name] + tol + 1e-9, name


def test_max_rounds_reaches_the_query(setup, reference, monkeypatch):
    """max_rounds 0 = the node's parameter, else the request's, capped at the parameter."""
    node, call = setup
    robot = node.robot
    seen = []
    answer = node.pipeline.answer
    monkeypatch.setattr(node.pipeline, "answer", lambda query: (seen.append(query), answer(query))[1])
    values = dict(zip(robot.joint_names, _config(robot, 7)))
    targets = {"left_tool0": reference(values, "left_tool0")}
    for sent, got in ((3, 3), (0, node.config.max_rounds), (node.config.max_rounds + 50, node.config.max_rounds)):
        res = call(_request(targets, 4, max_rounds=sent))
        assert res.error_code == CODES.SUCCESS, res.message
        assert seen[-1].max_rounds == got, sent


def test_free_yaw_tolerance_spreads_the_yaw(setup, reference):
    """A left-tool target with tolerances 0 0 0 0 0 inf: every solution meets the position and the tool's
    z axis (independent FK), and the yaw about it spreads over the free range."""
    node, call = setup
    robot = node.robot
    values = dict(zip(robot.joint_names, _config(robot, 11)))
    T = reference(values, "left_tool0")
    req = _request({"left_tool0": T}, 16)
    req.targets[0].tolerances = [0.0, 0.0, 0.0, 0.0, 0.0, float("inf")]
    res = call(req)
    assert res.error_code == CODES.SUCCESS, res.message
    [result] = res.results
    assert result.num_solutions == 16
    yaw = []
    for js in result.solutions:
        T_fk = reference(dict(zip(js.name, js.position)), "left_tool0")
        assert np.linalg.norm(T_fk[:3, 3] - T[:3, 3]) <= POS_TOL
        assert np.arccos(np.clip(T_fk[:3, 2] @ T[:3, 2], -1, 1)) <= ROT_TOL * 1.01  # the tool axis
        yaw.append(np.arctan2(T[:3, 1] @ T_fk[:3, 0], T[:3, 0] @ T_fk[:3, 0]))  # the tool's x axis about z
    assert np.ptp(yaw) > 1.5, yaw


@pytest.mark.parametrize("case,code", [
    ("unknown_group", CODES.INVALID_GROUP_NAME),
    ("link_not_a_tip_of_the_group", CODES.INVALID_LINK_NAME),
    ("unknown_locked_joint", CODES.INVALID_ROBOT_STATE),
    ("nan_locked_joint", CODES.INVALID_ROBOT_STATE),
    ("locked_length_mismatch", CODES.INVALID_ROBOT_STATE),
    ("unknown_constraint_joint", CODES.INVALID_GOAL),
    ("negative_constraint_tolerance", CODES.INVALID_GOAL),
    ("nan_constraint", CODES.INVALID_GOAL),
    ("tolerances_not_six_per_link", CODES.INVALID_GOAL),
    ("negative_tolerance", CODES.INVALID_GOAL),
])
def test_bad_query_fields_get_error_codes(setup, reference, case, code):
    node, call = setup
    robot = node.robot
    values = dict(zip(robot.joint_names, _config(robot, 8)))
    req = _request({"left_tool0": reference(values, "left_tool0")}, 4)
    if case == "unknown_group":
        req.group_name = "no_such_group"
    elif case == "link_not_a_tip_of_the_group":
        req.group_name = "right_arm"
    elif case == "unknown_locked_joint":
        req.locked_joints = JointState(name=["no_such_joint"], position=[0.0])
    elif case == "nan_locked_joint":
        req.locked_joints = JointState(name=["waist_joint"], position=[float("nan")])
    elif case == "locked_length_mismatch":
        req.locked_joints = JointState(name=["waist_joint", "base_joint/x"], position=[0.0])
    elif case == "unknown_constraint_joint":
        req.joint_constraints = [JointConstraint(joint_name="nope", tolerance_above=0.1, tolerance_below=0.1)]
    elif case == "negative_constraint_tolerance":
        req.joint_constraints = [JointConstraint(joint_name="waist_joint", tolerance_above=-0.1)]
    elif case == "nan_constraint":
        req.joint_constraints = [JointConstraint(joint_name="waist_joint", position=float("nan"))]
    elif case == "tolerances_not_six_per_link":
        req.targets[0].tolerances = [0.0, 0.0, 0.0]
    elif case == "negative_tolerance":
        req.targets[0].tolerances = [0.0, 0.0, 0.0, 0.0, 0.0, -1.0]
    t0 = time.monotonic()
    res = call(req)
    assert res.error_code == code, res.message
    assert res.message and time.monotonic() - t0 < 5.0
    assert all(r.num_solutions == 0 and not r.solutions for r in res.results)
