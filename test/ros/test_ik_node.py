"""ikdiffuser_node in-process: real rclpy services called by real clients.

One node (baxter, a tiny checkpoint trained at test time) is started for the
module, spun by a MultiThreadedExecutor in a background thread, as ``main()``
does; a GetPlanningScene server standing in for move_group is up before it
starts, so the node's start-up scene request is exercised too.
"""
from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest

pytestmark = pytest.mark.ros

import rclpy  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402

from ik_helpers import NodeRunner, pose_stamped, spin_until, train_tiny  # noqa: E402

moveit_msgs = pytest.importorskip("moveit_msgs.srv", reason="moveit_msgs not built: run `make setup`")

from builtin_interfaces.msg import Duration  # noqa: E402
from moveit_msgs.msg import CollisionObject, JointConstraint, PlanningScene  # noqa: E402
from moveit_msgs.srv import GetPlanningScene, GetPositionIK  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from shape_msgs.msg import SolidPrimitive  # noqa: E402

from ikdiffuser_ros.msg import IKTarget  # noqa: E402
from ikdiffuser_ros.ros.ik_solutions import solutions_array  # noqa: E402
from ikdiffuser_ros.srv import GetIKSolutions  # noqa: E402

NODE = "ikd_test_node"
CODES = GetIKSolutions.Request
POS_TOL, ROT_TOL = 0.005, 0.02


@pytest.fixture(scope="module")
def tiny_baxter(tmp_path_factory):
    return train_tiny("baxter", tmp_path_factory.getbasetemp() / "tiny_baxter")


@pytest.fixture(scope="module")
def setup(ros_context, tiny_baxter):
    """(runner, client helper) with a fake move_group GetPlanningScene server."""
    fake = rclpy.create_node("fake_move_group", context=ros_context)

    def scene_cb(request, response):
        response.scene.world.collision_objects = [_box("startup_box", (3.0, 3.0, 3.0))]
        return response

    fake.create_service(GetPlanningScene, "/get_planning_scene", scene_cb)
    fake_exec = SingleThreadedExecutor(context=ros_context)
    fake_exec.add_node(fake)
    stop = threading.Event()
    fake_thread = threading.Thread(target=lambda: [fake_exec.spin_once(0.05) for _ in iter(stop.is_set, True)],
                                   daemon=True)
    fake_thread.start()
    runner = NodeRunner(ros_context, dict(robot="baxter", robot_description_timeout=0.0,
                                          model_path=str(tiny_baxter), default_timeout=30.0,
                                          moveit_default_timeout=3.0),
                        name=NODE)
    client = Client(ros_context)
    try:
        yield runner, client
    finally:
        client.close()
        runner.close()
        stop.set()
        fake_thread.join(timeout=5)
        fake_exec.shutdown()
        fake.destroy_node()


class Client:
    def __init__(self, context, name="ikd_test_client"):
        self.node = rclpy.create_node(name, context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.ik = self.node.create_client(GetIKSolutions, f"/{NODE}/get_ik_solutions")
        self.compute = self.node.create_client(GetPositionIK, f"/{NODE}/compute_ik")
        self.solve = self.node.create_client(GetPositionIK, f"/{NODE}/solve_ik")
        for c in (self.ik, self.compute, self.solve):
            assert c.wait_for_service(timeout_sec=20.0)

    def call(self, client, request, timeout=60.0):
        return spin_until(self.executor, client.call_async(request), timeout)

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()


def _box(oid, xyz, size=(0.1, 0.1, 0.1), op=CollisionObject.ADD):
    obj = CollisionObject()
    obj.id = oid
    obj.header.frame_id = "base"
    obj.pose.orientation.w = 1.0
    obj.pose.position.x, obj.pose.position.y, obj.pose.position.z = (float(v) for v in xyz)
    obj.primitives = [SolidPrimitive(type=SolidPrimitive.BOX, dimensions=list(size))]
    from geometry_msgs.msg import Pose

    p = Pose()
    p.orientation.w = 1.0
    obj.primitive_poses = [p]
    obj.operation = op
    return obj


# ---------------------------------------------------------------------- targets
@pytest.fixture(scope="module")
def free_config(setup):
    """A collision-free baxter configuration (both arms) and its end-effector poses."""
    import torch

    runner, _ = setup
    robot, checker = runner.node.robot, runner.node.pipeline.checker
    g = torch.Generator().manual_seed(11)
    lo, hi = robot.limits()
    # moderate configurations: the middle half of each joint range
    q = lo + (hi - lo) * (0.25 + 0.5 * torch.rand(64, robot.n_joints, generator=g, dtype=torch.float64))
    free = ~checker.check(q).in_collision if checker is not None else np.ones(64, bool)
    q = q[int(np.flatnonzero(free)[0])].numpy()
    return q, robot.fk(torch.as_tensor(q)).numpy()


def _request(targets, **kw):
    req = GetIKSolutions.Request(num_solutions=kw.pop("num_solutions", 16), random_seed=kw.pop("random_seed", 1))
    req.targets = targets
    for k, v in kw.items():
        setattr(req, k, v)
    return req


def _target(links, poses, position_only=()):
    return IKTarget(link_names=list(links), poses=list(poses), position_only=list(position_only))


def _check_solutions(robot, response, result, T_targets: dict, collisions_reported: bool = True):
    """Every returned solution is a full JointState (the active joints in the solver's order, then the
    passive ones) and reaches its targets (FK computed here, independently); ``in_collision`` has one
    flag per solution, or none when the request asked for no collision report."""
    import torch

    for js in result.solutions:
        assert list(js.name[:robot.n_joints]) == robot.joint_names and "head_pan" in js.name
        assert len(js.position) == len(js.name) and js.header.frame_id == robot.root_frame
    q = solutions_array(result, robot.joint_names)
    assert len(q) == result.num_solutions > 0
    assert len(result.position_errors) == len(result.rotation_errors) == len(q)
    assert len(result.in_collision) == (len(q) if collisions_reported else 0)
    lo, hi = robot.lower.numpy(), robot.upper.numpy()
    assert np.all(q >= lo - 1e-6) and np.all(q <= hi + 1e-6)
    links = list(T_targets)
    T = robot.fk_links(torch.as_tensor(q), links).numpy()
    for k, link in enumerate(links):
        err = np.linalg.norm(T[:, k, :3, 3] - T_targets[link][:3, 3], axis=-1)
        assert np.all(err <= POS_TOL + 1e-6), err
    assert max(result.position_errors) <= POS_TOL and max(result.rotation_errors) <= ROT_TOL


# ---------------------------------------------------------------------- GetIKSolutions
def test_both_arms_and_left_only(setup, free_config):
    runner, client = setup
    robot = runner.node.robot
    _, T = free_config
    req = _request([_target(robot.end_effectors, [pose_stamped(T[0]), pose_stamped(T[1])]),
                    _target(["left_gripper"], [pose_stamped(T[0])])], num_solutions=16)
    t0 = time.monotonic()
    res = client.call(client.ik, req)
    elapsed = time.monotonic() - t0
    assert res.error_code == CODES.SUCCESS, res.message
    assert len(res.results) == 2 and res.solve_time <= elapsed
    _check_solutions(robot, res, res.results[0], {"left_gripper": T[0], "right_gripper": T[1]})
    _check_solutions(robot, res, res.results[1], {"left_gripper": T[0]})
    assert all(r.error_code == CODES.SUCCESS for r in res.results)


def test_same_seed_same_answer(setup, free_config):
    _, client = setup
    _, T = free_config
    req = _request([_target(["left_gripper"], [pose_stamped(T[0])])], num_solutions=8, random_seed=42)
    a = client.call(client.ik, req)
    b = client.call(client.ik, req)
    assert a.error_code == b.error_code == CODES.SUCCESS
    assert a.results[0].solutions == b.results[0].solutions
    req.random_seed = 43
    c = client.call(client.ik, req)
    assert c.results[0].solutions != a.results[0].solutions


def test_flat_solutions_are_the_joint_states_as_one_array(setup, free_config):
    """flat_solutions: the same solutions (same seed) as one (N x n) array of the active joints, no JointStates."""
    runner, client = setup
    robot = runner.node.robot
    _, T = free_config
    req = _request([_target(robot.end_effectors, [pose_stamped(T[0]), pose_stamped(T[1])]),
                    _target(["left_gripper"], [pose_stamped(T[0])])], num_solutions=8, random_seed=5)
    states = client.call(client.ik, req)
    req.flat_solutions = True
    flat = client.call(client.ik, req)
    assert states.error_code == flat.error_code == CODES.SUCCESS, flat.message
    for a, b in zip(states.results, flat.results):
        assert len(b.solutions) == 0 and list(b.joint_names) == robot.joint_names
        assert len(b.positions) == b.num_solutions * robot.n_joints and b.num_solutions == a.num_solutions
        assert np.array_equal(solutions_array(b, robot.joint_names), solutions_array(a, robot.joint_names))
        assert list(b.position_errors) == list(a.position_errors) and list(b.in_collision) == list(a.in_collision)
    _check_solutions(robot, flat, flat.results[0], {"left_gripper": T[0], "right_gripper": T[1]})
    with pytest.raises(KeyError, match="head_pan"):  # passive joints are not in the array
        solutions_array(flat.results[0], ["head_pan"])


def test_position_only_and_link_frames(setup, free_config):
    runner, client = setup
    robot = runner.node.robot
    _, T = free_config
    # the left target expressed in the torso frame (placed by FK at the default state; torso is fixed)
    import torch

    T_torso = robot.fk_links(robot.default_positions(), ["torso"])[0].numpy()
    rotated = T[0].copy()
    rotated[:3, :3] = np.eye(3)  # orientation ignored: position only
    req = _request([_target(["left_gripper"], [pose_stamped(np.linalg.inv(T_torso) @ T[0], "torso")]),
                    _target(["left_gripper"], [pose_stamped(rotated)], [True])])
    res = client.call(client.ik, req)
    assert res.error_code == CODES.SUCCESS, res.message
    _check_solutions(robot, res, res.results[0], {"left_gripper": T[0]})
    q = solutions_array(res.results[1], robot.joint_names)
    pos = robot.fk(torch.as_tensor(q)).numpy()[:, 0, :3, 3]
    assert np.all(np.linalg.norm(pos - T[0, :3, 3], axis=-1) <= POS_TOL + 1e-6)
    # a frame rigidly attached to the end effector (left_hand_link) is accepted as a target link
    T_hand = robot.fk_links(torch.as_tensor(free_config[0]), ["left_hand_link"])[0].numpy()
    res = client.call(client.ik, _request([_target(["left_hand_link"], [pose_stamped(T_hand)])]))
    assert res.error_code == CODES.SUCCESS, res.message
    _check_solutions(robot, res, res.results[0], {"left_hand_link": T_hand})


def test_seed_state_pulls_solutions(setup, free_config):
    runner, client = setup
    robot = runner.node.robot
    q_star, T = free_config
    seed = JointState(name=list(robot.joint_names), position=[float(v) for v in q_star])
    req = _request([_target(["left_gripper"], [pose_stamped(T[0])])], num_solutions=8, seed_state=seed,
                   seed_weight=1.0)
    res = client.call(client.ik, req)
    assert res.error_code == CODES.SUCCESS, res.message
    q = solutions_array(res.results[0], robot.joint_names)
    d = np.linalg.norm(q - q_star, axis=-1)
    assert d[0] <= 1e-6, "the seed solves the pose: it comes back first, as it is"
    # the documented order: distinct solutions by distance to the seed, then repeats (within the
    # node's dedup tolerance of an earlier one)
    repeat = np.array([any(np.abs(q[i] - q[j]).max() <= 1e-3 for j in range(i)) for i in range(len(q))])
    assert not repeat.any() or repeat[np.argmax(repeat):].all(), "repeats come after every distinct solution"
    assert np.all(np.diff(d[~repeat]) >= -1e-9), f"distinct solutions are ordered by distance to the seed: {d.tolist()}"


def test_group_locked_and_passive_joints(setup, free_config):
    """group_name left_arm: the right arm stays exactly at seed_state; a passive joint in locked_joints
    (head_pan) is reported at its locked value, not the seed's, in every answer."""
    runner, client = setup
    robot = runner.node.robot
    q_star, T = free_config
    right = [robot.index_of(n) for n in robot.joint_names if n.startswith("right_")]
    q_seed = q_star.copy()
    q_seed[right] = ((robot.lower + robot.upper) / 2).numpy()[right]  # not what a free right arm would do
    seed = JointState(name=list(robot.joint_names) + ["head_pan"], position=[float(v) for v in q_seed] + [0.1])
    req = _request([_target(["left_gripper"], [pose_stamped(T[0])])], num_solutions=8, group_name="left_arm",
                   seed_state=seed, locked_joints=JointState(name=["head_pan"], position=[0.3]))
    res = client.call(client.ik, req)
    assert res.error_code == CODES.SUCCESS, res.message
    _check_solutions(robot, res, res.results[0], {"left_gripper": T[0]})
    q = solutions_array(res.results[0], robot.joint_names)
    assert (q[:, right] == q_seed[right]).all()
    assert all(dict(zip(js.name, js.position))["head_pan"] == 0.3 for js in res.results[0].solutions)


# ---------------------------------------------------------------------- robustness (§6)
def _pose_with(T, x=None, q=None):
    msg = pose_stamped(T)
    if x is not None:
        msg.pose.position.x = x
    if q is not None:
        o = msg.pose.orientation
        o.x, o.y, o.z, o.w = q
    return msg


@pytest.mark.parametrize("case,code", [
    ("nan_position", CODES.INVALID_GOAL),
    ("inf_position", CODES.INVALID_GOAL),
    ("zero_quaternion", CODES.INVALID_GOAL),
    ("far_quaternion", CODES.INVALID_GOAL),
    ("nan_quaternion", CODES.INVALID_GOAL),
    ("unknown_link", CODES.INVALID_LINK_NAME),
    ("not_an_end_effector", CODES.INVALID_LINK_NAME),
    ("unknown_frame", CODES.FRAME_TRANSFORM_FAILURE),
    ("length_mismatch", CODES.INVALID_GOAL),
    ("position_only_mismatch", CODES.INVALID_GOAL),
    ("no_links", CODES.INVALID_GOAL),
    ("twice_same_ee", CODES.INVALID_GOAL),
    ("empty_request", CODES.INVALID_REQUEST),
    ("too_many_targets", CODES.INVALID_REQUEST),
    ("too_many_solutions", CODES.INVALID_REQUEST),
    ("negative_timeout", CODES.INVALID_REQUEST),
    ("unknown_seed_joint", CODES.INVALID_ROBOT_STATE),
    ("nan_seed_joint", CODES.INVALID_ROBOT_STATE),
    ("unknown_objective", CODES.INVALID_REQUEST),
    ("objective_length_mismatch", CODES.INVALID_REQUEST),
    ("negative_seed_weight", CODES.INVALID_REQUEST),
    ("seed_objective_without_seed", CODES.INVALID_REQUEST),
    ("unknown_group", CODES.INVALID_GROUP_NAME),
    ("unknown_locked_joint", CODES.INVALID_ROBOT_STATE),
    ("unknown_constraint_joint", CODES.INVALID_GOAL),
])
def test_bad_requests_get_error_codes(setup, free_config, case, code):
    runner, client = setup
    _, T = free_config
    good = _target(["left_gripper"], [pose_stamped(T[0])])
    req = _request([good], num_solutions=4)
    targets = {
        "nan_position": _target(["left_gripper"], [_pose_with(T[0], x=math.nan)]),
        "inf_position": _target(["left_gripper"], [_pose_with(T[0], x=math.inf)]),
        "zero_quaternion": _target(["left_gripper"], [_pose_with(T[0], q=(0.0, 0.0, 0.0, 0.0))]),
        "far_quaternion": _target(["left_gripper"], [_pose_with(T[0], q=(0.0, 0.0, 0.0, 1.5))]),
        "nan_quaternion": _target(["left_gripper"], [_pose_with(T[0], q=(math.nan, 0.0, 0.0, 1.0))]),
        "unknown_link": _target(["no_such_link"], [pose_stamped(T[0])]),
        "not_an_end_effector": _target(["left_upper_shoulder"], [pose_stamped(T[0])]),
        "unknown_frame": _target(["left_gripper"], [pose_stamped(T[0], "no_such_frame")]),
        "length_mismatch": _target(["left_gripper", "right_gripper"], [pose_stamped(T[0])]),
        "position_only_mismatch": _target(["left_gripper"], [pose_stamped(T[0])], [True, False]),
        "no_links": _target([], []),
        "twice_same_ee": _target(["left_gripper", "left_hand_link"], [pose_stamped(T[0]), pose_stamped(T[0])]),
    }
    if case in targets:
        req.targets = [targets[case]]
    elif case == "empty_request":
        req.targets = []
    elif case == "too_many_targets":
        req.targets = [good] * (runner.node.config.max_targets + 1)
    elif case == "too_many_solutions":
        req.num_solutions = runner.node.config.max_num_solutions + 1
    elif case == "negative_timeout":
        req.timeout = Duration(sec=-1, nanosec=0)
    elif case == "unknown_seed_joint":
        req.seed_state = JointState(name=["left_s0", "no_such_joint"], position=[0.0, 0.0])
    elif case == "nan_seed_joint":
        req.seed_state = JointState(name=["left_s0"], position=[math.nan])
    elif case == "unknown_objective":
        req.objective_names, req.objective_weights = ["happiness"], [1.0]
    elif case == "objective_length_mismatch":
        req.objective_names, req.objective_weights = ["manipulability"], []
    elif case == "negative_seed_weight":
        req.seed_weight = -1.0
    elif case == "seed_objective_without_seed":
        req.objective_names, req.objective_weights = ["seed"], [1.0]
    elif case == "unknown_group":
        req.group_name = "no_such_group"
    elif case == "unknown_locked_joint":
        req.locked_joints = JointState(name=["no_such_joint"], position=[0.0])
    elif case == "unknown_constraint_joint":
        from ikdiffuser_ros.msg import JointConstraint as IKDJointConstraint

        req.joint_constraints = [IKDJointConstraint(joint_name="nope", tolerance_above=0.1, tolerance_below=0.1)]
    res = client.call(client.ik, req)
    assert res.error_code == code, res.message
    assert res.message
    if case in targets:
        assert res.results[0].error_code == code and res.results[0].message
        assert res.results[0].num_solutions == 0
    mismatch = {"length_mismatch": "2 link names but 1 poses", "position_only_mismatch":
                "1 link names but 2 position_only flags"}
    if case in mismatch:  # the fields of the IKTarget message, none it does not have (frames)
        assert mismatch[case] in res.message and "frames" not in res.message, res.message
    # ... and the node keeps serving
    ok = client.call(client.ik, _request([good], num_solutions=4))
    assert ok.error_code == CODES.SUCCESS, ok.message


def test_near_unit_quaternion_is_normalized(setup, free_config):
    runner, client = setup
    _, T = free_config
    msg = pose_stamped(T[0])
    o = msg.pose.orientation
    o.x, o.y, o.z, o.w = (1.03 * v for v in (o.x, o.y, o.z, o.w))
    res = client.call(client.ik, _request([_target(["left_gripper"], [msg])], num_solutions=4))
    assert res.error_code == CODES.SUCCESS, res.message
    _check_solutions(runner.node.robot, res, res.results[0], {"left_gripper": T[0]})


def test_one_bad_target_does_not_spoil_the_others(setup, free_config):
    _, client = setup
    _, T = free_config
    req = _request([_target(["left_gripper"], [pose_stamped(T[0])]),
                    _target(["left_gripper"], [_pose_with(T[0], x=math.nan)])], num_solutions=4)
    res = client.call(client.ik, req)
    assert res.error_code == CODES.INVALID_GOAL
    assert res.results[0].error_code == CODES.SUCCESS and res.results[0].num_solutions > 0
    assert res.results[1].error_code == CODES.INVALID_GOAL


def test_unreachable_target(setup, free_config):
    _, client = setup
    _, T = free_config
    far = T[0].copy()
    far[:3, 3] = (4.0, 0.0, 0.0)
    res = client.call(client.ik, _request([_target(["left_gripper"], [pose_stamped(far)])], num_solutions=4,
                                          timeout=Duration(sec=0, nanosec=300_000_000)))
    assert res.error_code == CODES.NO_IK_SOLUTION, res.message
    assert res.results[0].num_solutions == 0 and "no IK solution" in res.results[0].message


def test_timeout_is_honoured(setup, free_config):
    _, client = setup
    _, T = free_config
    req = _request([_target(["left_gripper"], [pose_stamped(T[0])])] * 3, num_solutions=4,
                   timeout=Duration(sec=0, nanosec=1))
    t0 = time.monotonic()
    res = client.call(client.ik, req)
    assert res.error_code == CODES.TIMED_OUT, res.message
    assert all(r.error_code == CODES.TIMED_OUT and r.num_solutions == 0 for r in res.results)
    assert time.monotonic() - t0 < 2.0


def test_return_failed_solutions(setup, free_config):
    """With return_failed_solutions (a live parameter) an unreachable target still gets its candidates,
    flagged by their errors, after NO_IK_SOLUTION."""
    from rclpy.parameter import Parameter

    runner, client = setup
    _, T = free_config
    far = T[0].copy()
    far[:3, 3] = (4.0, 0.0, 0.0)
    runner.node.set_parameters([Parameter("return_failed_solutions", value=True)])
    try:
        res = client.call(client.ik, _request([_target(["left_gripper"], [pose_stamped(far)])], num_solutions=4,
                                              timeout=Duration(sec=0, nanosec=300_000_000)))
        assert res.error_code == CODES.NO_IK_SOLUTION
        r = res.results[0]
        assert r.num_solutions == 4 and min(r.position_errors) > 1.0
    finally:
        runner.node.set_parameters([Parameter("return_failed_solutions", value=False)])


def test_ten_concurrent_clients(setup, ros_context, free_config):
    """Ten clients (own nodes, own threads) call at once; each gets the right answer for its own target."""
    import torch

    runner, _ = setup
    robot = runner.node.robot
    g = torch.Generator().manual_seed(5)
    lo, hi = robot.limits()
    qs = lo + (hi - lo) * (0.25 + 0.5 * torch.rand(10, robot.n_joints, generator=g, dtype=torch.float64))
    Ts = robot.fk(qs).numpy()
    results = [None] * 10
    errors = []

    def worker(i):
        try:
            c = Client(ros_context, name=f"ikd_concurrent_{i}")
            try:
                req = _request([_target(["left_gripper"], [pose_stamped(Ts[i, 0])])], num_solutions=4,
                               random_seed=i)
                results[i] = c.call(c.ik, req, timeout=120.0)
            finally:
                c.close()
        except Exception as exc:  # noqa: BLE001
            errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert not errors, errors
    for i, res in enumerate(results):
        assert res is not None and res.error_code == CODES.SUCCESS, (i, res and res.message)
        _check_solutions(robot, res, res.results[0], {"left_gripper": Ts[i, 0]})


# ---------------------------------------------------------------------- planning scene & collisions
def _publisher(ros_context, msg_type, topic):
    node = rclpy.create_node(f"ikd_scene_pub_{abs(hash(topic)) % 10000}", context=ros_context)
    return node, node.create_publisher(msg_type, topic, 100)


def _wait(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_startup_scene_from_get_planning_scene(setup):
    runner, _ = setup
    assert _wait(lambda: "startup_box" in runner.node.scene.object_ids(), 10.0)


def test_avoid_collisions_removes_colliding_solutions(setup, ros_context, free_config):
    import torch

    runner, client = setup
    robot = runner.node.robot
    _, T = free_config
    req = _request([_target(["left_gripper"], [pose_stamped(T[0])])], num_solutions=16, random_seed=7)
    before = client.call(client.ik, req)
    assert before.error_code == CODES.SUCCESS, before.message
    q = solutions_array(before.results[0], robot.joint_names)
    free = [i for i, c in enumerate(before.results[0].in_collision) if not c]
    assert free, "need a collision-free solution to start from"
    # a box around the elbow of one collision-free solution
    elbow = robot.fk_links(torch.as_tensor(q[free[0]]), ["left_lower_elbow"])[0].numpy()[:3, 3]
    node, pub = _publisher(ros_context, PlanningScene, "/planning_scene")
    try:
        scene = PlanningScene(is_diff=True)
        scene.world.collision_objects = [_box("elbow_box", elbow, (0.12, 0.12, 0.12))]
        assert _wait(lambda: (pub.publish(scene), "elbow_box" in runner.node.scene.object_ids())[1], 10.0)
        flagged = client.call(client.ik, req)  # same seed, no avoidance: same solutions, now flagged
        assert flagged.results[0].solutions == before.results[0].solutions
        assert flagged.results[0].in_collision[free[0]]
        req.avoid_collisions = True
        avoided = client.call(client.ik, req)
        assert avoided.error_code == CODES.SUCCESS, avoided.message
        r = avoided.results[0]
        assert r.num_solutions > 0 and not any(r.in_collision)
        qa = solutions_array(r, robot.joint_names)
        checker = runner.node.pipeline.checker
        assert not checker.check(qa, runner.node.scene.snapshot()).in_collision.any()
        _check_solutions(robot, avoided, r, {"left_gripper": T[0]})
    finally:
        remove = PlanningScene(is_diff=True)
        remove.world.collision_objects = [_box("elbow_box", (0, 0, 0), op=CollisionObject.REMOVE)]
        _wait(lambda: (pub.publish(remove), "elbow_box" not in runner.node.scene.object_ids())[1], 10.0)
        node.destroy_node()


def test_box_on_the_target_means_no_collision_free_solution(setup, ros_context, free_config):
    runner, client = setup
    _, T = free_config
    node, pub = _publisher(ros_context, CollisionObject, "/collision_object")
    try:
        box = _box("target_box", T[0, :3, 3], (0.3, 0.3, 0.3))
        assert _wait(lambda: (pub.publish(box), "target_box" in runner.node.scene.object_ids())[1], 10.0)
        req = _request([_target(["left_gripper"], [pose_stamped(T[0])])], num_solutions=4,
                       timeout=Duration(sec=1, nanosec=0))
        assert req.report_collisions  # the message's default
        flagged = client.call(client.ik, req)
        assert flagged.error_code == CODES.SUCCESS and all(flagged.results[0].in_collision)
        req.report_collisions = False  # not checked, not flagged: the same kind of answer, in_collision empty
        unflagged = client.call(client.ik, req)
        assert unflagged.error_code == CODES.SUCCESS and unflagged.results[0].num_solutions == 4
        assert len(unflagged.results[0].in_collision) == 0
        _check_solutions(runner.node.robot, unflagged, unflagged.results[0], {"left_gripper": T[0]},
                         collisions_reported=False)
        req.avoid_collisions = True
        res = client.call(client.ik, req)
        assert res.error_code == CODES.NO_IK_SOLUTION and "collision free" in res.results[0].message
    finally:
        _wait(lambda: (pub.publish(_box("target_box", (0, 0, 0), op=CollisionObject.REMOVE)),
                       "target_box" not in runner.node.scene.object_ids())[1], 10.0)
        node.destroy_node()


def test_scene_updates_during_solves(setup, ros_context, free_config):
    """Scene messages stream in while requests are solved: answers stay right, the mirror ends consistent."""
    runner, client = setup
    _, T = free_config
    node, pub = _publisher(ros_context, PlanningScene, "/monitored_planning_scene")
    stop = threading.Event()

    def stream():
        i = 0
        while not stop.is_set():
            scene = PlanningScene(is_diff=True)
            scene.world.collision_objects = [_box(f"far_{i % 7}", (5.0 + 0.01 * i, 5.0, 0.0))]
            pub.publish(scene)
            i += 1
            time.sleep(0.002)

    t = threading.Thread(target=stream)
    t.start()
    try:
        req = _request([_target(["left_gripper"], [pose_stamped(T[0])])], num_solutions=8, random_seed=3)
        answers = [client.call(client.ik, req) for _ in range(4)]
    finally:
        stop.set()
        t.join()
    assert all(a.error_code == CODES.SUCCESS for a in answers)
    assert len({solutions_array(a.results[0], runner.node.robot.joint_names).tobytes() for a in answers}) == 1
    assert _wait(lambda: {f"far_{k}" for k in range(7)} <= set(runner.node.scene.object_ids()), 10.0)
    full = PlanningScene(is_diff=False)  # a full scene replaces the world
    assert _wait(lambda: (pub.publish(full), runner.node.scene.object_ids() == [])[1], 10.0)
    node.destroy_node()


# ---------------------------------------------------------------------- compute_ik / solve_ik
def _ik_request(**fields):
    req = GetPositionIK.Request()
    for k, v in fields.items():
        setattr(req.ik_request, k, v)
    return req


def _solution_q(robot, response):
    js = response.solution.joint_state
    values = dict(zip(js.name, js.position))
    return np.array([values[n] for n in robot.joint_names]), values


def test_compute_ik_single_tip(setup, free_config):
    import torch

    runner, client = setup
    robot = runner.node.robot
    q_star, T = free_config
    state = JointState(name=list(robot.joint_names) + ["head_pan"], position=[0.0] * robot.n_joints + [0.2])
    for service in (client.compute, client.solve):
        res = client.call(service, _ik_request(group_name="left_arm", pose_stamped=pose_stamped(T[0]),
                                               robot_state=_robot_state(state)))
        assert res.error_code.val == 1, getattr(res.error_code, "message", "")
        q, values = _solution_q(robot, res)
        assert values["head_pan"] == pytest.approx(0.2)  # other joints copied from robot_state
        right = [robot.index_of(n) for n in robot.joint_names if n.startswith("right_")]
        assert np.allclose(q[right], 0.0)
        T_sol = robot.fk(torch.as_tensor(q)).numpy()
        assert np.linalg.norm(T_sol[0, :3, 3] - T[0, :3, 3]) <= POS_TOL


def _robot_state(js):
    from moveit_msgs.msg import RobotState

    return RobotState(joint_state=js)


def test_compute_ik_multi_tip_and_vector_forms(setup, free_config):
    import torch

    runner, client = setup
    robot = runner.node.robot
    _, T = free_config
    res = client.call(client.compute, _ik_request(
        group_name="both_arms", pose_stamped_vector=[pose_stamped(T[0]), pose_stamped(T[1])],
        ik_link_names=["left_gripper", "right_gripper"]))
    assert res.error_code.val == 1, getattr(res.error_code, "message", "")
    q, _ = _solution_q(robot, res)
    T_sol = robot.fk(torch.as_tensor(q)).numpy()
    assert np.all(np.linalg.norm(T_sol[:, :3, 3] - T[:, :3, 3], axis=-1) <= POS_TOL)
    # one-element vector: the single-pose path with ik_link_names[0]
    res = client.call(client.compute, _ik_request(group_name="right_arm", pose_stamped_vector=[pose_stamped(T[1])],
                                                  ik_link_names=["right_gripper"]))
    assert res.error_code.val == 1


def test_compute_ik_joint_constraints(setup, free_config):
    runner, client = setup
    robot = runner.node.robot
    q_star, T = free_config
    i = robot.index_of("left_s0")
    jc = JointConstraint(joint_name="left_s0", position=float(q_star[i]), tolerance_above=0.3,
                         tolerance_below=0.3, weight=1.0)
    req = _ik_request(group_name="left_arm", pose_stamped=pose_stamped(T[0]))
    req.ik_request.constraints.joint_constraints = [jc]
    res = client.call(client.compute, req)
    assert res.error_code.val == 1, getattr(res.error_code, "message", "")
    q, _ = _solution_q(robot, res)
    assert abs(q[i] - q_star[i]) <= 0.3 + 1e-9


@pytest.mark.parametrize("case,code", [
    ("unknown_group", -15), ("vector_length_mismatch", -18), ("unknown_link", -18), ("wrong_group_tip", -18),
    ("unknown_frame", -21), ("unreachable", -31), ("nan_pose", -16), ("unknown_state_joint", -17),
    ("unknown_constraint_joint", -16),
])
def test_compute_ik_errors(setup, free_config, case, code):
    _, client = setup
    _, T = free_config
    far = T[0].copy()
    far[:3, 3] = (4.0, 0.0, 0.0)
    fields = dict(group_name="left_arm", pose_stamped=pose_stamped(T[0]))
    if case == "unknown_group":
        fields["group_name"] = "no_such_group"
    elif case == "vector_length_mismatch":
        fields.update(group_name="both_arms", pose_stamped_vector=[pose_stamped(T[0]), pose_stamped(T[1])],
                      ik_link_names=["left_gripper"])
    elif case == "unknown_link":
        fields["ik_link_name"] = "no_such_link"
    elif case == "wrong_group_tip":
        fields["ik_link_name"] = "right_gripper"
    elif case == "unknown_frame":
        fields["pose_stamped"] = pose_stamped(T[0], "no_such_frame")
    elif case == "unreachable":
        fields.update(pose_stamped=pose_stamped(far), timeout=Duration(sec=0, nanosec=200_000_000))
    elif case == "nan_pose":
        fields["pose_stamped"] = _pose_with(T[0], x=math.nan)
    elif case == "unknown_state_joint":
        fields["robot_state"] = _robot_state(JointState(name=["no_such_joint"], position=[0.0]))
    req = _ik_request(**fields)
    if case == "unknown_constraint_joint":
        req.ik_request.constraints.joint_constraints = [JointConstraint(joint_name="nope", tolerance_above=0.1,
                                                                        tolerance_below=0.1)]
    t0 = time.monotonic()
    res = client.call(client.compute, req)
    assert res.error_code.val == code, getattr(res.error_code, "message", "")
    assert len(res.solution.joint_state.name) == 0
    if case == "unreachable":  # the nanosecond timeout is honoured (move_group would ignore it)
        assert time.monotonic() - t0 < 2.0


def test_parameters_refuse_bad_values(setup, free_config):
    """Bad values are refused with a reason, read-only ones at run time; an accepted tolerance is what the next
    request solves with (the node rebuilds its configs after a change, not for every request)."""
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    runner, client = setup
    _, T = free_config
    c = client.node.create_client(SetParameters, f"/{NODE}/set_parameters")
    assert c.wait_for_service(timeout_sec=10)
    req = SetParameters.Request(parameters=[Parameter("default_num_solutions", value=0).to_parameter_msg(),
                                            Parameter("device", value="cuda").to_parameter_msg(),
                                            Parameter("position_tolerance", value=0.002).to_parameter_msg()])
    res = client.call(c, req)
    assert not res.results[0].successful and res.results[0].reason
    assert not res.results[1].successful  # read-only at run time
    assert res.results[2].successful
    assert runner.node.config.position_tolerance == pytest.approx(0.002)
    assert client.call(client.ik, _request([_target(["left_gripper"], [pose_stamped(T[0])])], num_solutions=1)).results
    assert runner.node.solver.config.refine.pos_tol == pytest.approx(0.002)
    res = client.call(c, SetParameters.Request(parameters=[
        Parameter("position_tolerance", value=0.005).to_parameter_msg()]))
    assert res.results[0].successful


def test_markers_published(setup, ros_context, free_config):
    from visualization_msgs.msg import MarkerArray

    runner, client = setup
    _, T = free_config
    from moveit_msgs.msg import DisplayRobotState

    got, shown = [], []
    sub_node = rclpy.create_node("ikd_marker_listener", context=ros_context)
    sub_node.create_subscription(MarkerArray, f"/{NODE}/solutions", got.append, 1)
    sub_node.create_subscription(DisplayRobotState, f"/{NODE}/display_robot_state", shown.append, 1)
    ex = SingleThreadedExecutor(context=ros_context)
    ex.add_node(sub_node)
    try:
        deadline = time.monotonic() + 10
        while (runner.node._markers.get_subscription_count() == 0
               or runner.node._display.get_subscription_count() == 0) and time.monotonic() < deadline:
            ex.spin_once(timeout_sec=0.05)
        res = client.call(client.ik, _request([_target(["left_gripper"], [pose_stamped(T[0])])], num_solutions=4))
        assert res.error_code == CODES.SUCCESS
        deadline = time.monotonic() + 10
        while not (got and shown) and time.monotonic() < deadline:
            ex.spin_once(timeout_sec=0.05)
        assert shown and set(runner.node.robot.joint_names) <= set(shown[-1].state.joint_state.name)
        assert got and len(got[-1].markers) >= 2 and got[-1].markers[1].points
        assert got[-1].markers[0].action == got[-1].markers[0].DELETEALL
        got.clear(), shown.clear()  # an answer with flat solutions is drawn the same way
        res = client.call(client.ik, _request([_target(["left_gripper"], [pose_stamped(T[0])])], num_solutions=4,
                                              flat_solutions=True))
        assert res.error_code == CODES.SUCCESS and not res.results[0].solutions
        deadline = time.monotonic() + 10
        while not (got and shown) and time.monotonic() < deadline:
            ex.spin_once(timeout_sec=0.05)
        assert shown and set(runner.node.robot.joint_names) <= set(shown[-1].state.joint_state.name)
        assert got and len(got[-1].markers) >= 2 and got[-1].markers[1].points
    finally:
        ex.shutdown()
        sub_node.destroy_node()
