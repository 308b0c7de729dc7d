"""Poses in frames outside the robot (issue 20, "Frames via tf2"), through a real node (panda) and real tf2:
a ``world -> panda_link0`` transform published by a tf2_ros StaticTransformBroadcaster on /tf_static,
a ``world -> odom`` one by a TransformBroadcaster on /tf at a stamp (odom's lookups chain both); GetIKSolutions and compute_ik
targets in those frames are solved as the same poses in the root frame (FK here, to 1e-5 m); a frame
with no transform, or a stamp older than the buffer, gives FRAME_TRANSFORM_FAILURE with tf2's reason
within the request's budget; the ``fixed_frame_transforms`` parameter serves frames tf2 does not have."""
from __future__ import annotations

import time

import numpy as np
import pytest

pytestmark = pytest.mark.ros

tf2_ros = pytest.importorskip("tf2_ros", reason="tf2 not built: run `make setup` (../shared/ros_src/geometry2)")
pytest.importorskip("moveit_msgs.srv", reason="moveit_msgs not built: run `make setup`")

import rclpy  # noqa: E402
import torch  # noqa: E402
from builtin_interfaces.msg import Duration, Time  # noqa: E402
from geometry_msgs.msg import TransformStamped  # noqa: E402
from moveit_msgs.srv import GetPositionFK, GetPositionIK  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402

from ik_helpers import NodeRunner, pose_stamped, reachable_poses, shipped_model_for, spin_until, train_tiny  # noqa: E402

from ikdiffuser_ros.errors import UnknownFrameError  # noqa: E402
from ikdiffuser_ros.msg import IKTarget  # noqa: E402
from ikdiffuser_ros.ros import tf_frames  # noqa: E402
from ikdiffuser_ros.ros.conversions import matrix_to_quaternion  # noqa: E402
from ikdiffuser_ros.srv import GetIKSolutions  # noqa: E402

NODE, ROOT, EE = "ikd_tf_node", "panda_link0", "panda_hand_tcp"
CODES = GetIKSolutions.Request
POS_TOL = 1e-5  # m, FK of the answers against the pose mapped through the transform


def _T(xyz, rpy) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("xyz", rpy).as_matrix()
    T[:3, 3] = xyz
    return T


T_WORLD_ROOT = _T((0.4, -1.2, 0.75), (0.1, -0.2, 2.0))  # where the robot stands in world
T_WORLD_ODOM = _T((-2.0, 0.5, 0.0), (0.0, 0.0, -0.7))  # on /tf: odom's root pose goes through world
T_ODOM_ROOT = np.linalg.inv(T_WORLD_ODOM) @ T_WORLD_ROOT
T_TABLE_ROOT = _T((0.3, 0.2, -0.8), (0.0, 0.3, 1.0))  # given by fixed_frame_transforms only


def _transform(parent: str, child: str, T: np.ndarray, stamp=None) -> TransformStamped:
    t = TransformStamped()
    t.header.frame_id, t.child_frame_id = parent, child
    if stamp is not None:
        t.header.stamp = stamp
    t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = (float(v) for v in T[:3, 3])
    q = matrix_to_quaternion(T[:3, :3])
    t.transform.rotation.x, t.transform.rotation.y, t.transform.rotation.z, t.transform.rotation.w = q
    return t


def _fixed_entry(frame: str, T_frame_root: np.ndarray) -> str:
    return " ".join([frame, *(repr(float(v)) for v in (*T_frame_root[:3, 3], *matrix_to_quaternion(T_frame_root[:3, :3])))])


def _set(node, name: str, value) -> None:
    """A node parameter (through rclpy when params.py declares it, else straight into the live config)."""
    from rclpy.parameter import Parameter

    if node.has_parameter(name):
        kind = Parameter.Type.STRING_ARRAY if isinstance(value, list) else Parameter.Type.from_parameter_value(value)
        [result] = node.set_parameters([Parameter(name, kind, value)])
        assert result.successful, result.reason
    else:
        setattr(node.config, name, value)


@pytest.fixture(scope="module")
def env(ros_context, tmp_path_factory):
    """(node, client node's call function, the /tf stamp of odom) with world on /tf_static and odom on /tf."""
    params = dict(robot="panda", robot_description_timeout=0.0, follow_planning_scene=False, publish_markers=False,
                  position_tolerance=1e-6, rotation_tolerance=1e-5, default_timeout=10.0, moveit_default_timeout=10.0)
    if not shipped_model_for("panda"):
        params["model_path"] = str(train_tiny("panda", tmp_path_factory.getbasetemp() / "tiny_panda"))
    runner = NodeRunner(ros_context, params, name=NODE)
    client = rclpy.create_node("ikd_tf_client", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(client)
    static = tf2_ros.StaticTransformBroadcaster(client)
    static.sendTransform(_transform("world", ROOT, T_WORLD_ROOT))
    stamp = client.get_clock().now().to_msg()
    dynamic = tf2_ros.TransformBroadcaster(client)
    ik = client.create_client(GetIKSolutions, f"/{NODE}/get_ik_solutions")
    compute = client.create_client(GetPositionIK, f"/{NODE}/compute_ik")
    assert ik.wait_for_service(timeout_sec=20.0) and compute.wait_for_service(timeout_sec=20.0)
    buffer = runner.node.tf_frames.buffer
    deadline = time.monotonic() + 10.0
    while not (buffer.can_transform_core(ROOT, "world", Time())[0]
               and buffer.can_transform_core(ROOT, "odom", stamp)[0]):
        dynamic.sendTransform(_transform("world", "odom", T_WORLD_ODOM, stamp))
        executor.spin_once(timeout_sec=0.05)
        assert time.monotonic() < deadline, "the node's tf2 buffer did not get world and odom"

    def call(client_, request, timeout=30.0):
        return spin_until(executor, client_.call_async(request), timeout)

    try:
        yield runner.node, call, ik, compute, stamp
    finally:
        executor.shutdown()
        client.destroy_node()
        runner.close()


def _ik_request(frame: str, T_frame_ee: np.ndarray, stamp=None, num: int = 4, timeout_s: float = 0.0):
    ps = pose_stamped(T_frame_ee, frame)
    if stamp is not None:
        ps.header.stamp = stamp
    req = GetIKSolutions.Request(num_solutions=num, random_seed=3)
    req.targets = [IKTarget(link_names=[EE], poses=[ps])]
    req.timeout = Duration(sec=int(timeout_s), nanosec=int(round((timeout_s % 1) * 1e9)))
    return req


def _solutions(robot, response, result) -> np.ndarray:
    """(k, n) joint values of a GetIKSolutions result (solutions as JointStates, or the flat positions)."""
    if hasattr(result, "solutions"):
        return np.array([[dict(zip(js.name, js.position))[n] for n in robot.joint_names] for js in result.solutions])
    return np.asarray(result.positions).reshape(-1, len(response.joint_names))


def _assert_meets(robot, q: np.ndarray, T_root_ee: np.ndarray) -> None:
    T = robot.fk_links(torch.as_tensor(np.atleast_2d(q)), [EE])[:, 0].numpy()
    pos = np.linalg.norm(T[:, :3, 3] - T_root_ee[:3, 3], axis=-1)
    rot = np.linalg.norm(T[:, :3, :3] - T_root_ee[:3, :3], axis=(-2, -1))
    assert len(q) > 0 and pos.max() <= POS_TOL and rot.max() <= 1e-4, (pos, rot)


@pytest.fixture(scope="module")
def target(env):
    """A reachable pose of the tcp in the root frame."""
    node = env[0]
    _, T = reachable_poses(node.robot, seed=7)
    return T[0, 0]


def test_get_ik_solutions_in_world_and_odom(env, target):
    node, call, ik, _, stamp = env
    for frame, T_frame_root, at in (("world", T_WORLD_ROOT, None), ("/world", T_WORLD_ROOT, stamp),
                                    ("odom", T_ODOM_ROOT, stamp), ("odom", T_ODOM_ROOT, None)):
        res = call(ik, _ik_request(frame, T_frame_root @ target, at))
        assert res.error_code == CODES.SUCCESS, (frame, at, res.message)
        _assert_meets(node.robot, _solutions(node.robot, res, res.results[0]), target)


def test_compute_ik_in_world(env, target):
    node, call, _, compute, stamp = env
    req = GetPositionIK.Request()
    req.ik_request.group_name = "arm"
    req.ik_request.pose_stamped = pose_stamped(T_WORLD_ROOT @ target, "world")
    req.ik_request.pose_stamped.header.stamp = stamp
    res = call(compute, req)
    assert res.error_code.val == 1, res.error_code
    js = res.solution.joint_state
    values = dict(zip(js.name, js.position))
    _assert_meets(node.robot, np.array([values[n] for n in node.robot.joint_names]), target)
    # the vector form, one entry in odom at the stamp /tf carries
    req.ik_request.pose_stamped_vector = [pose_stamped(T_ODOM_ROOT @ target, "odom")]
    req.ik_request.pose_stamped_vector[0].header.stamp = stamp
    req.ik_request.pose_stamped.header.frame_id = "nowhere"  # ignored: the vector's entry is the pose
    res = call(compute, req)
    assert res.error_code.val == 1, res.error_code


def test_compute_fk_in_world(env, ros_context, ros_executor):
    """compute_fk with header.frame_id world (on /tf_static): the poses are the root-frame FK mapped into world;
    a frame nobody publishes is FRAME_TRANSFORM_FAILURE (-21)."""
    node = env[0]
    robot = node.robot
    client = rclpy.create_node("ikd_tf_fk_client", context=ros_context)
    ros_executor.add_node(client)
    fk = client.create_client(GetPositionFK, f"/{NODE}/compute_fk")
    assert fk.wait_for_service(timeout_sec=20.0)
    q = robot.default_positions().numpy() + 0.1
    req = GetPositionFK.Request(fk_link_names=["panda_hand_tcp", "panda_link4"])
    req.header.frame_id = "world"
    req.robot_state.joint_state.name, req.robot_state.joint_state.position = list(robot.joint_names), list(q)
    res = spin_until(ros_executor, fk.call_async(req), 20.0)
    assert res.error_code.val == 1, res.error_code
    T_root = robot.fk_links(torch.as_tensor(q), ["panda_hand_tcp", "panda_link4"]).numpy()
    for ps, T in zip(res.pose_stamped, T_root):
        p = ps.pose.position
        assert ps.header.frame_id == "world"
        assert np.allclose([p.x, p.y, p.z], (T_WORLD_ROOT @ T)[:3, 3], atol=1e-9)
    req.header.frame_id = "nowhere"
    res = spin_until(ros_executor, fk.call_async(req), 20.0)
    assert res.error_code.val == -21 and "nowhere" in res.error_code.message


def test_missing_frame_and_old_stamp_fail_within_budget(env, target):
    node, call, ik, compute, stamp = env
    # one target in a frame nobody publishes, one in world: only the first fails, saying why
    req = _ik_request("nowhere", target)
    req.targets.append(_ik_request("world", T_WORLD_ROOT @ target).targets[0])
    t0 = time.monotonic()
    res = call(ik, req)
    assert time.monotonic() - t0 < 2.0
    assert [r.error_code for r in res.results] == [CODES.FRAME_TRANSFORM_FAILURE, CODES.SUCCESS], res.message
    assert res.error_code == CODES.FRAME_TRANSFORM_FAILURE and res.results[0].num_solutions == 0
    msg = res.results[0].message
    assert "no transform from 'nowhere' to 'panda_link0'" in msg and "tf2:" in msg and "fixed_frame_transforms" in msg
    _assert_meets(node.robot, _solutions(node.robot, res, res.results[1]), target)
    # older than the buffer holds odom (/tf keeps 10 s): too old, at once
    old = type(stamp)(sec=stamp.sec - 100, nanosec=stamp.nanosec)
    res = call(ik, _ik_request("odom", T_ODOM_ROOT @ target, old))
    assert res.error_code == CODES.FRAME_TRANSFORM_FAILURE
    msg = res.results[0].message
    assert "extrapolation" in msg.lower() and f"at stamp {old.sec}." in msg, msg
    # compute_ik: the same code (MoveIt's FRAME_TRANSFORM_FAILURE)
    req = GetPositionIK.Request()
    req.ik_request.group_name = "arm"
    req.ik_request.pose_stamped = pose_stamped(target, "nowhere")
    res = call(compute, req)
    assert res.error_code.val == -21, res.error_code
    if hasattr(res.error_code, "message"):  # moveit_msgs >= 2.4
        assert "no transform from 'nowhere'" in res.error_code.message
    # the wait for a transform ends with the request's budget, whatever tf_timeout says
    _set(node, tf_frames.TIMEOUT_PARAM, 5.0)
    try:
        t0 = time.monotonic()
        res = call(ik, _ik_request("nowhere", target, timeout_s=0.3))
        elapsed = time.monotonic() - t0
    finally:
        _set(node, tf_frames.TIMEOUT_PARAM, tf_frames.DEFAULT_TF_TIMEOUT)
    assert res.error_code == CODES.FRAME_TRANSFORM_FAILURE, res.message
    assert 0.25 <= elapsed <= 0.8, elapsed
    assert "after waiting 0.2" in res.results[0].message or "after waiting 0.3" in res.results[0].message


def test_fixed_frame_transforms(env, target):
    node, call, ik, compute, _ = env
    # table: only the parameter knows it; world: tf2 has it, so the parameter's (wrong) entry is not used
    _set(node, tf_frames.FIXED_PARAM, [_fixed_entry("table", T_TABLE_ROOT), _fixed_entry("world", _T((9, 9, 9), (0, 0, 0)))])
    try:
        res = call(ik, _ik_request("table", T_TABLE_ROOT @ target))
        assert res.error_code == CODES.SUCCESS, res.message
        _assert_meets(node.robot, _solutions(node.robot, res, res.results[0]), target)
        res = call(ik, _ik_request("world", T_WORLD_ROOT @ target))
        assert res.error_code == CODES.SUCCESS, res.message
        _assert_meets(node.robot, _solutions(node.robot, res, res.results[0]), target)
        req = GetPositionIK.Request()
        req.ik_request.group_name = "arm"
        req.ik_request.pose_stamped = pose_stamped(T_TABLE_ROOT @ target, "table")
        res = call(compute, req)
        assert res.error_code.val == 1, res.error_code
    finally:
        _set(node, tf_frames.FIXED_PARAM, [])


# ---------------------------------------------------------------------- without a node
def test_parse_fixed_transforms():
    T = tf_frames.parse_fixed_transforms([_fixed_entry("table", T_TABLE_ROOT), "/map 1 2 3 0 0 0 1"], ROOT)
    assert set(T) == {"table", "map"}
    assert np.allclose(T["table"], np.linalg.inv(T_TABLE_ROOT), atol=1e-12)
    assert np.allclose(T["map"][:3, 3], (-1, -2, -3))
    for bad, why in ((["table 1 2 3"], "FRAME x y z"), (["table 1 2 3 0 0 0 x"], "numbers"),
                     (["table 0 0 0 0 0 0 0"], "quaternion"), ([f"{ROOT} 0 0 0 0 0 0 1"], "root frame"),
                     (["a 0 0 0 0 0 0 1", "a 1 0 0 0 0 0 1"], "twice")):
        with pytest.raises(ValueError, match=why):
            tf_frames.parse_fixed_transforms(bad, ROOT)


def test_without_tf2_fixed_transforms_only(monkeypatch):
    """tf2 not importable: the fixed transforms still serve, other frames fail saying why, one log line."""
    from types import SimpleNamespace

    logged = []
    logger = SimpleNamespace(warning=lambda msg, **_: logged.append(msg))
    monkeypatch.setattr(tf_frames, "tf2_ros", None)
    monkeypatch.setattr(tf_frames, "TF2_MISSING", "ModuleNotFoundError: No module named 'tf2_ros'")
    cfg = SimpleNamespace(fixed_frame_transforms=["map 1 0 0 0 0 0 1"])
    frames = tf_frames.TfFrames(SimpleNamespace(get_logger=lambda: logger), cfg, ROOT)
    assert len(logged) == 1 and "tf2 not importable" in logged[0]
    assert np.allclose(frames.external_frames({"map"})["map"][:3, 3], (-1, 0, 0))
    with pytest.raises(UnknownFrameError, match="no transform from 'world' to 'panda_link0'.*tf2 is not available"):
        frames.external_frames({"world"})
    # a bad value set at run time: a warning, the last good value stays; at start-up: refused
    cfg.fixed_frame_transforms = ["map 1 0 0"]
    assert np.allclose(frames.external_frames({"map"})["map"][:3, 3], (-1, 0, 0))
    assert len(logged) == 2 and "keeping the previous fixed_frame_transforms" in logged[1]
    with pytest.raises(ValueError, match="FRAME x y z"):
        tf_frames.TfFrames(SimpleNamespace(get_logger=lambda: logger), cfg, ROOT)
    # a failed frame fails the targets that name it, through the core's per-target check
    ext = tf_frames.ExternalFrames({"map": np.eye(4)}, {"world": UnknownFrameError("world", [])})
    assert set(ext) == {"map", "world"} and len(ext) == 2 and "world" in ext
    with pytest.raises(UnknownFrameError):
        ext["world"]
