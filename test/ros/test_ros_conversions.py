"""Pure conversions of the ROS layer: poses, quaternions, joint states, collision objects,
the planning-scene mirror and parameter validation (message objects, no node)."""
from __future__ import annotations

import math
import threading

import numpy as np
import pytest

pytestmark = pytest.mark.ros

from geometry_msgs.msg import Pose  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402

from ikdiffuser_ros.errors import IKDiffuserError, InvalidRequestError  # noqa: E402
from ikdiffuser_ros.ros.conversions import (  # noqa: E402
    JointStateLayout, duration_to_seconds, matrix_to_pose, pose_to_matrix, transform_to_matrix,
)
from ikdiffuser_ros.ros.error_codes import ErrorCode, error_code  # noqa: E402
from ikdiffuser_ros.ros.params import NodeConfig, parse_groups, validate, validate_all  # noqa: E402


@pytest.fixture(scope="module")
def baxter():
    from ikdiffuser_ros.robots import load_robot

    return load_robot("baxter")


def _pose(x=0.1, y=0.2, z=0.3, q=(0.0, 0.0, 0.0, 1.0)):
    p = Pose()
    p.position.x, p.position.y, p.position.z = x, y, z
    p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w = q
    return p


def test_pose_round_trip():
    T = pose_to_matrix(_pose(q=(0.0, 0.0, math.sin(0.3), math.cos(0.3))))
    assert np.allclose(T[:3, 3], [0.1, 0.2, 0.3])
    assert np.allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3))
    assert np.allclose(pose_to_matrix(matrix_to_pose(T)), T)


def test_near_unit_quaternion_is_normalized():
    T = pose_to_matrix(_pose(q=(0.0, 0.0, 0.0, 1.05)))
    assert np.allclose(T[:3, :3], np.eye(3))


@pytest.mark.parametrize("q", [(0, 0, 0, 0), (0, 0, 0, 2.0), (0.5, 0.5, 0.5, 0.1), (math.nan, 0, 0, 1), (0, 0, 0, math.inf)])
def test_bad_quaternions_are_rejected(q):
    with pytest.raises(IKDiffuserError) as info:
        pose_to_matrix(_pose(q=q))
    assert error_code(info.value) == ErrorCode.INVALID_GOAL
    assert "quaternion" in str(info.value)


@pytest.mark.parametrize("xyz", [(math.nan, 0, 0), (0, math.inf, 0), (0, 0, -math.inf)])
def test_non_finite_positions_are_rejected(xyz):
    with pytest.raises(IKDiffuserError) as info:
        pose_to_matrix(_pose(*xyz))
    assert error_code(info.value) == ErrorCode.INVALID_GOAL


def test_joint_state_layout(baxter):
    layout = JointStateLayout(baxter)
    js = JointState(name=["left_s0", "head_pan"], position=[0.3, 0.1])
    q, passive, _ = layout.from_joint_state(js)
    assert q[baxter.index_of("left_s0")] == pytest.approx(0.3)
    assert passive == {"head_pan": pytest.approx(0.1)}
    for bad, code in [(JointState(name=["nope"], position=[0.0]), ErrorCode.INVALID_ROBOT_STATE),
                      (JointState(name=["left_s0"], position=[]), ErrorCode.INVALID_ROBOT_STATE),
                      (JointState(name=["left_s0"], position=[math.nan]), ErrorCode.INVALID_ROBOT_STATE)]:
        with pytest.raises(IKDiffuserError) as info:
            layout.from_joint_state(bad)
        assert error_code(info.value) == code
    js_out, _ = layout.to_joint_state(q, passive)
    assert set(baxter.joint_names) <= set(js_out.name) and "head_pan" in js_out.name


FLOATING_URDF = """<robot name="f"><link name="w"/><link name="body"/><link name="tip"/>
  <joint name="fl" type="floating"><parent link="w"/><child link="body"/></joint>
  <joint name="j1" type="revolute"><parent link="body"/><child link="tip"/><axis xyz="0 0 1"/>
    <limit lower="-1" upper="1" effort="1" velocity="1"/></joint></robot>"""


def test_multi_dof_joints_round_trip_through_their_transforms():
    """A floating joint's six variables -> one MultiDOFJointState transform (translation, then
    Rz(yaw) Ry(pitch) Rx(roll)) -> the same values; single-DOF joints go in the JointState."""
    import torch

    from ikdiffuser_ros.kinematics.robot_model import RobotModel
    from ikdiffuser_ros.kinematics.transforms import euler_zyx_to_matrix

    model = RobotModel.from_urdf(FLOATING_URDF, end_effectors=["tip"])
    layout = JointStateLayout(model)
    assert layout.multi_dof == {"fl": ["fl/x", "fl/y", "fl/z", "fl/yaw", "fl/pitch", "fl/roll"]}
    q = np.array([0.1, -0.2, 0.3, 2.5, -0.4, -3.0, 0.5])
    js, mdof = layout.to_joint_state(q)
    assert list(js.name) == ["j1"] and list(mdof.joint_names) == ["fl"]
    T = transform_to_matrix(mdof.transforms[0])
    assert np.allclose(T[:3, 3], q[:3])
    R = euler_zyx_to_matrix(*(torch.tensor(a, dtype=torch.float64) for a in q[3:6])).numpy()
    assert np.allclose(T[:3, :3], R)
    assert np.allclose(layout.from_multi_dof(mdof, layout.default.copy())[:6], q[:6])


def test_duration():
    from builtin_interfaces.msg import Duration

    assert duration_to_seconds(Duration(sec=1, nanosec=500_000_000)) == pytest.approx(1.5)
    assert duration_to_seconds(Duration(sec=-1, nanosec=0)) < 0


def test_budget_window_counts_from_the_solve_and_ends_within_the_cap_of_the_arrival():
    from ikdiffuser_ros.ros.conversions import budget_window

    assert budget_window(2.0, 10.0, None, None) == (None, 2.0)  # a direct call: the pipeline's clock
    assert budget_window(2.0, 10.0, 100.0, None) == (100.0, 2.0)
    assert budget_window(2.0, 10.0, 100.0, 99.0) == (99.0, 3.0)  # waited 1 s: still 2 s of solving
    assert budget_window(10.0, 10.0, 100.0, 97.0) == (97.0, 10.0)  # waited 3 s: ends 10 s after arrival


# ---------------------------------------------------------------------- scene mirror
def _box(oid, xyz, size=(0.2, 0.2, 0.2), frame="", op=0):
    from moveit_msgs.msg import CollisionObject
    from shape_msgs.msg import SolidPrimitive

    obj = CollisionObject()
    obj.id = oid
    obj.header.frame_id = frame
    obj.pose.orientation.w = 1.0
    obj.pose.position.x, obj.pose.position.y, obj.pose.position.z = xyz
    obj.primitives = [SolidPrimitive(type=SolidPrimitive.BOX, dimensions=list(size))]
    obj.primitive_poses = [_pose(0, 0, 0)]
    obj.operation = bytes([op]) if isinstance(CollisionObject().operation, bytes) else op
    return obj


def test_scene_monitor_objects_and_snapshots(baxter):
    from moveit_msgs.msg import AttachedCollisionObject, PlanningScene

    from ikdiffuser_ros.ros.scene_monitor import SceneMonitor

    scene = SceneMonitor(baxter)
    scene.apply_collision_object(_box("table", (0.8, 0.0, -0.3), (1.0, 1.0, 0.05)))
    snap = scene.snapshot()
    assert snap.object_ids() == ["table"]
    assert np.allclose(snap.get("table").shapes[0].pose[:3, 3], [0.8, 0.0, -0.3])
    # a cylinder stamped in a link frame is placed by FK
    from moveit_msgs.msg import CollisionObject
    from shape_msgs.msg import SolidPrimitive

    cyl = _box("cyl", (0.0, 0.0, 0.1), frame="torso")
    cyl.primitives = [SolidPrimitive(type=SolidPrimitive.CYLINDER, dimensions=[0.2, 0.05])]
    scene.apply_collision_object(cyl)
    T_torso = baxter.fk_links(baxter.default_positions(), ["torso"])[0].numpy()
    assert np.allclose(scene.snapshot().get("cyl").shapes[0].pose[:3, 3], (T_torso @ [0, 0, 0.1, 1])[:3])
    assert snap.object_ids() == ["table"], "an old snapshot must not change"
    # a bad message is refused and changes nothing
    with pytest.raises(IKDiffuserError):
        scene.apply_collision_object(_box("bad", (0, 0, 0), frame="no_such_frame"))
    assert scene.object_ids() == ["cyl", "table"]
    # attach the table-less box to the left gripper, then detach it back into the world
    att = AttachedCollisionObject(link_name="left_gripper", touch_links=["left_hand_link"])
    att.object = _box("held", (0.0, 0.0, 0.05), (0.04, 0.04, 0.04), frame="left_gripper")
    scene.apply_attached_collision_object(att)
    w = scene.snapshot()
    assert [a.object.id for a in w.attached] == ["held"] and w.attached[0].touch_links == {"left_hand_link"}
    assert np.allclose(w.attached[0].object.shapes[0].pose[:3, 3], [0, 0, 0.05])
    detach = AttachedCollisionObject(link_name="left_gripper")
    detach.object.id = "held"
    detach.object.operation = bytes([1]) if isinstance(CollisionObject().operation, bytes) else 1
    scene.apply_attached_collision_object(detach)
    assert "held" in scene.object_ids() and not scene.snapshot().attached
    # REMOVE, then a full scene replaces everything; a diff adds; the ACM is mirrored
    remove = _box("cyl", (0, 0, 0), op=1)
    scene.apply_collision_object(remove)
    assert "cyl" not in scene.object_ids()
    full = PlanningScene(is_diff=False)
    full.world.collision_objects = [_box("a", (1.0, 0, 0))]
    full.allowed_collision_matrix.entry_names = ["a", "torso"]
    from moveit_msgs.msg import AllowedCollisionEntry

    full.allowed_collision_matrix.entry_values = [AllowedCollisionEntry(enabled=[False, True]),
                                                  AllowedCollisionEntry(enabled=[True, False])]
    scene.apply_planning_scene(full)
    assert scene.object_ids() == ["a"]
    assert scene.snapshot().acm.allowed("a", "torso")
    diff = PlanningScene(is_diff=True)
    diff.world.collision_objects = [_box("b", (1.0, 1.0, 0))]
    scene.apply_planning_scene(diff)
    assert scene.object_ids() == ["a", "b"] and scene.snapshot().acm.allowed("a", "torso")


@pytest.mark.parametrize("kind, dims, words", [
    (1, [1e300, 1e300, 1e300], ("absurd size", "box x 1e+300")),
    (2, [1e308], ("absurd size", "sphere radius 1e+308")),
    (3, [1e300, 0.1], ("absurd size", "cylinder height 1e+300, radius 0.1")),
    (4, [0.1, 2e4], ("absurd size", "cone height 0.1, radius 20000", "10000 m limit")),
])
def test_scene_monitor_refuses_absurd_sizes_naming_the_object(baxter, kind, dims, words):
    """A huge primitive around the robot: refused alone (nothing changes) and skipped inside a
    PlanningScene (a warning names it, the rest applies)."""
    from moveit_msgs.msg import PlanningScene
    from shape_msgs.msg import SolidPrimitive

    from ikdiffuser_ros.ros.scene_monitor import SceneMonitor

    scene = SceneMonitor(baxter)
    huge = _box("huge", (0, 0, 0))
    huge.primitives = [SolidPrimitive(type=kind, dimensions=dims)]
    with pytest.raises(InvalidRequestError) as info:
        scene.apply_collision_object(huge)
    assert "'huge'" in str(info.value) and all(w in str(info.value) for w in words), str(info.value)
    full = PlanningScene(is_diff=True)
    full.world.collision_objects = [huge, _box("fine", (1.0, 0, 0))]
    notes = scene.apply_planning_scene(full)
    assert scene.object_ids() == ["fine"]
    assert len(notes) == 1 and "'huge'" in notes[0] and "absurd size" in notes[0], notes


def test_scene_monitor_refuses_a_move_to_absurd_coordinates(baxter):
    """MOVE re-poses an object: the new pose is validated like a new object's (the object stays put)."""
    from ikdiffuser_ros.ros.scene_monitor import MOVE, SceneMonitor

    scene = SceneMonitor(baxter)
    scene.apply_collision_object(_box("box", (1.0, 0, 0)))
    for x in (2e4, 1e300):
        with pytest.raises(InvalidRequestError, match="'box'.*absurd coordinates"):
            scene.apply_collision_object(_box("box", (x, 0, 0), op=MOVE))
    assert np.allclose(scene.snapshot().get("box").shapes[0].pose[:3, 3], (1.0, 0, 0))
    scene.apply_collision_object(_box("box", (1.5, 0, 0), op=MOVE))
    assert np.allclose(scene.snapshot().get("box").shapes[0].pose[:3, 3], (1.5, 0, 0))


def test_scene_monitor_concurrent_updates(baxter):
    """Snapshots taken while another thread updates are always consistent Worlds."""
    from ikdiffuser_ros.ros.scene_monitor import SceneMonitor

    scene = SceneMonitor(baxter)
    stop = threading.Event()
    errors = []

    def writer():
        i = 0
        while not stop.is_set():
            scene.apply_collision_object(_box(f"o{i % 5}", (1.0 + 0.01 * i, 0, 0)))
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        for _ in range(200):
            w = scene.snapshot()
            ids = w.object_ids()
            if len(ids) != len(set(ids)) or any(len(o.shapes) != 1 for o in w.objects):
                errors.append(ids)
    finally:
        stop.set()
        t.join()
    assert not errors


# ---------------------------------------------------------------------- parameters
def test_parameter_validation():
    assert validate("default_num_solutions", 32) is None
    assert "outside" in validate("default_num_solutions", 0)
    assert "outside" in validate("position_tolerance", -1.0)
    assert "finite" in validate("rotation_tolerance", math.nan)
    assert "must be a" in validate("max_batch_size", "big")
    assert "cpu, cuda" in validate("device", "tpu")
    assert validate("device", "cuda:1") is None
    assert "one of" in validate("sampler", "euler")
    assert "expected" in validate("groups", ["left_arm"])
    assert parse_groups(["both:l, r", "left:l"]) == {"both": ("l", "r"), "left": ("l",)}
    cfg = NodeConfig(default_num_solutions=600, max_num_solutions=512)
    assert "exceeds" in validate_all(cfg)
    assert validate_all(NodeConfig()) is None
    for name in NodeConfig.names():
        assert NodeConfig.meta(name)["description"], name
    assert validate("objective_weights", ["joint_limit_margin:0.5", "seed:1"]) is None
    for bad, words in ((["speed:1"], "unknown objective 'speed'"), (["seed"], "expected '<name>:<weight>'"),
                       (["seed:-1"], "weight >= 0"), (["seed:nan"], "finite"), (["user:1"], "cost_fn")):
        assert words in validate("objective_weights", bad), bad
    cfg = NodeConfig(objective_weights=["joint_limit_margin:0.5", "seed:2"])
    assert cfg.default_objectives(has_seed=True) == {"joint_limits": 0.5, "seed": 2.0}
    assert cfg.default_objectives(has_seed=False) == {"joint_limits": 0.5}


def test_core_settings_have_one_default_in_the_core():
    """A node parameter that sets a core setting takes the core's default; the node's defaults give the core's
    configs unchanged, and a changed parameter reaches the core under the core's name."""
    from dataclasses import fields

    from ikdiffuser_ros.pipeline import PipelineConfig
    from ikdiffuser_ros.query import IKQuery
    from ikdiffuser_ros.ros.params import CORE_DEFAULTS
    from ikdiffuser_ros.solver import SolverConfig

    core = {f.name: f.metadata["core"] for f in fields(NodeConfig) if f.metadata["core"]}
    assert {"max_targets", "sampler_steps", "position_tolerance", "max_rounds", "weight_collision"} <= set(core)
    for name, (where, attr) in core.items():
        value = CORE_DEFAULTS[where][attr] if where == "query" else getattr(CORE_DEFAULTS[where], attr)
        assert getattr(NodeConfig(), name) == (0 if value is None else value), name
    assert NodeConfig().pipeline_config() == PipelineConfig()
    assert NodeConfig().solver_config(SolverConfig()) == SolverConfig()
    assert NodeConfig().max_rounds == IKQuery([]).max_rounds
    changed = NodeConfig(sampler_steps=6, max_batch_size=99, position_tolerance=1e-4)
    assert changed.pipeline_config().steps == 6 and changed.pipeline_config().max_batch_size == 99
    assert changed.solver_config(SolverConfig()).refine.pos_tol == 1e-4


def test_error_codes_match_the_interfaces():
    """ErrorCode mirrors GetIKSolutions' constants and MoveItErrorCodes' values."""
    from ikdiffuser_ros.srv import GetIKSolutions

    for code in ErrorCode:
        if hasattr(GetIKSolutions.Request, code.name):
            assert getattr(GetIKSolutions.Request, code.name) == code.value, code.name
    assert {c.name for c in ErrorCode} - {"INVALID_GROUP_NAME"} <= {
        n for n in dir(GetIKSolutions.Request) if n.isupper()}
    moveit = pytest.importorskip("moveit_msgs.msg")
    for name, value in [("SUCCESS", 1), ("INVALID_GROUP_NAME", -15), ("INVALID_GOAL_CONSTRAINTS", -16),
                        ("INVALID_ROBOT_STATE", -17), ("INVALID_LINK_NAME", -18), ("FRAME_TRANSFORM_FAILURE", -21),
                        ("COLLISION_CHECKING_UNAVAILABLE", -22), ("NO_IK_SOLUTION", -31), ("TIMED_OUT", -6)]:
        assert getattr(moveit.MoveItErrorCodes, name) == value
