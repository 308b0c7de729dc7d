"""The ROS layer only translates: service messages -> IKQuery, IKAnswer -> messages, errors -> codes
through one table (no node needed)."""
from __future__ import annotations

import math

import numpy as np
import pytest

pytestmark = pytest.mark.ros

from builtin_interfaces.msg import Duration  # noqa: E402
from geometry_msgs.msg import PoseStamped  # noqa: E402
from moveit_msgs.msg import JointConstraint, RobotState  # noqa: E402
from moveit_msgs.srv import GetPositionIK  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402

from ikdiffuser_ros import errors  # noqa: E402
from ikdiffuser_ros.kinematics.frames import rigid_offsets  # noqa: E402
from ikdiffuser_ros.kinematics.groups import build_groups  # noqa: E402
from ikdiffuser_ros.msg import IKTarget  # noqa: E402
from ikdiffuser_ros.msg import JointConstraint as IKDJointConstraint  # noqa: E402
from ikdiffuser_ros.query import IKAnswer, Status, TargetAnswer  # noqa: E402
from ikdiffuser_ros.ros import ik_solutions, moveit_bridge  # noqa: E402
from ikdiffuser_ros.ros.conversions import JointStateLayout  # noqa: E402
from ikdiffuser_ros.ros.error_codes import ErrorCode, error_code, status_code  # noqa: E402
from ikdiffuser_ros.ros.params import NodeConfig  # noqa: E402
from ikdiffuser_ros.srv import GetIKSolutions  # noqa: E402


@pytest.fixture(scope="module")
def baxter():
    from ikdiffuser_ros.robots import load_robot

    return load_robot("baxter")


def test_one_table_of_codes():
    cases = [(errors.UnknownFrameError("f", ["base"]), ErrorCode.FRAME_TRANSFORM_FAILURE, ErrorCode.FRAME_TRANSFORM_FAILURE),
             (errors.UnknownLinkError("l", ["a"], "is not a link"), ErrorCode.INVALID_LINK_NAME, ErrorCode.INVALID_LINK_NAME),
             (errors.UnknownGroupError("g", ["arm"]), ErrorCode.INVALID_GROUP_NAME, ErrorCode.INVALID_GROUP_NAME),
             (errors.InvalidRobotStateError("x"), ErrorCode.INVALID_ROBOT_STATE, ErrorCode.INVALID_ROBOT_STATE),
             (errors.InvalidGoalError("x"), ErrorCode.INVALID_GOAL, ErrorCode.INVALID_GOAL),
             (errors.CollisionCheckingUnavailableError("x"), ErrorCode.COLLISION_CHECKING_UNAVAILABLE,
              ErrorCode.NO_IK_SOLUTION),
             (errors.InvalidRequestError("x"), ErrorCode.INVALID_REQUEST, ErrorCode.INVALID_GOAL),
             (errors.CheckpointError("x"), ErrorCode.FAILURE, ErrorCode.FAILURE),
             (KeyError("a bug"), ErrorCode.FAILURE, ErrorCode.FAILURE)]
    for exc, ours, moveit in cases:
        assert error_code(exc) == ours and error_code(exc, moveit=True) == moveit, exc
    assert status_code(Status.SOLVED) == ErrorCode.SUCCESS
    assert status_code(Status.TIMED_OUT) == ErrorCode.TIMED_OUT
    assert status_code(Status.TIMED_OUT, moveit=True) == ErrorCode.NO_IK_SOLUTION
    assert status_code(Status.INVALID, errors.UnknownFrameError("f", [])) == ErrorCode.FRAME_TRANSFORM_FAILURE


def test_get_ik_solutions_request_to_query(baxter):
    layout, cfg = JointStateLayout(baxter), NodeConfig(objective_weights=["joint_limit_margin:0.5", "seed:3"])
    req = GetIKSolutions.Request(num_solutions=0, seed_weight=2.0, avoid_collisions=True, random_seed=-1,
                                 timeout=Duration(sec=99), objective_names=["manipulability"],
                                 objective_weights=[0.1])
    pose = PoseStamped()
    pose.header.frame_id = "torso"
    pose.pose.position.x, pose.pose.orientation.w = 0.4, 1.0
    req.targets = [IKTarget(link_names=["left_hand_link"], poses=[pose], position_only=[True])]
    req.seed_state = JointState(name=["left_s0", "head_pan"], position=[0.3, 0.2])
    q, passive = ik_solutions.query_of(req, layout, cfg, world=None, start=12.5)
    assert q.num_solutions == cfg.default_num_solutions and q.timeout == cfg.max_timeout and q.start == 12.5
    assert q.random_seed is None and q.avoid_collisions
    assert q.objectives == {"joint_limits": 0.5, "manipulability": 0.1, "seed": 2.0}  # the request's seed weight wins
    assert q.max_rounds == cfg.max_rounds  # max_rounds 0: the node's
    assert q.group is None and q.locked == {} and list(q.constraints) == [] and passive == {"head_pan": 0.2}
    assert q.seed[baxter.index_of("left_s0")] == pytest.approx(0.3)
    [t] = q.targets
    assert t.links == ["left_hand_link"] and t.frames == ["torso"] and t.position_only == [True]
    assert np.allclose(t.poses[0], [0.4, 0, 0, 0, 0, 0, 1])
    for bad in (dict(timeout=Duration(sec=-1)), dict(seed_weight=math.nan),
                dict(objective_names=["seed"], objective_weights=[])):
        with pytest.raises(errors.InvalidRequestError):
            ik_solutions.query_of(GetIKSolutions.Request(**bad), layout, cfg, world=None)


def test_get_ik_solutions_query_fields(baxter):
    """group_name, locked_joints, joint_constraints and max_rounds: the core's group, locked, constraints
    (compute_ik's conversion) and max_rounds; passive locked joints set the answers' values."""
    layout, cfg = JointStateLayout(baxter), NodeConfig()
    req = GetIKSolutions.Request(group_name="left_arm", max_rounds=7)
    req.seed_state = JointState(name=["head_pan"], position=[0.2])
    req.locked_joints = JointState(name=["right_s0", "head_pan"], position=[0.4, -0.1])
    req.joint_constraints = [IKDJointConstraint(joint_name="left_w1", position=0.5, tolerance_above=0.1,
                                                tolerance_below=0.2)]
    q, passive = ik_solutions.query_of(req, layout, cfg, world=None)
    assert q.group == "left_arm" and q.max_rounds == 7 and q.locked == {"right_s0": 0.4}
    assert passive == {"head_pan": -0.1}  # locked_joints over seed_state
    [b] = q.constraints
    assert (b.joint, b.lower, b.upper) == ("left_w1", pytest.approx(0.3), pytest.approx(0.6))
    req.max_rounds = cfg.max_rounds + 1  # the node's max_rounds caps it
    assert ik_solutions.query_of(req, layout, cfg, world=None)[0].max_rounds == cfg.max_rounds
    for field, bad, error in (
            ("locked_joints", JointState(name=["no_such_joint"], position=[0.0]), errors.InvalidRobotStateError),
            ("locked_joints", JointState(name=["left_s0"], position=[math.nan]), errors.InvalidRobotStateError),
            ("locked_joints", JointState(name=["left_s0"], position=[]), errors.InvalidRobotStateError),
            ("joint_constraints", [IKDJointConstraint(joint_name="left_s0", tolerance_above=-1.0)],
             errors.InvalidGoalError),
            ("joint_constraints", [IKDJointConstraint(joint_name="left_s0", position=math.inf)],
             errors.InvalidGoalError)):
        with pytest.raises(error):
            ik_solutions.query_of(GetIKSolutions.Request(**{field: bad}), layout, cfg, world=None)


def test_answer_to_get_ik_solutions_response(baxter):
    n = baxter.n_joints
    answer = IKAnswer([TargetAnswer(Status.SOLVED, "ok", np.ones((2, n)), np.zeros(2), np.zeros(2),
                                    np.array([False, True]), np.ones(2, bool)),
                       TargetAnswer(Status.INVALID, "bad", np.zeros((0, n)),
                                    error=errors.UnknownFrameError("f", ["base"]))],
                      list(baxter.joint_names), 0.01)
    layout = JointStateLayout(baxter)
    res = ik_solutions.fill_response(GetIKSolutions.Response(), answer, layout, {"head_pan": 0.2}, "base")
    assert [r.error_code for r in res.results] == [ErrorCode.SUCCESS, ErrorCode.FRAME_TRANSFORM_FAILURE]
    assert res.error_code == ErrorCode.FRAME_TRANSFORM_FAILURE and res.results[0].num_solutions == 2
    assert list(res.results[0].in_collision) == [False, True] and res.results[1].solutions == []
    for js in res.results[0].solutions:  # every joint: the active ones in the solver's order, then the passive ones
        assert list(js.name) == list(baxter.joint_names) + list(layout.passive) and js.header.frame_id == "base"
        values = dict(zip(js.name, js.position))
        assert [values[j] for j in baxter.joint_names] == [1.0] * n and values["head_pan"] == 0.2
        assert all(values[j] == layout.passive[j] for j in layout.passive if j != "head_pan")  # the default
    assert ik_solutions.solutions_array(res.results[0], baxter.joint_names[::-1]).tolist() == [[1.0] * n] * 2
    with pytest.raises(KeyError, match="no_such_joint"):
        ik_solutions.solutions_array(res.results[0], ["no_such_joint"])


def test_service_constants_are_the_code_table():
    """Every ErrorCode is a GetIKSolutions constant of the same value, and no constant is missing from it."""
    constants = {k: v for k, v in vars(GetIKSolutions.Request).items()
                 if k.isupper() and isinstance(v, int) and not k.endswith("__DEFAULT")}  # rosidl: a field's default
    assert constants == {code.name: code.value for code in ErrorCode}


def test_compute_ik_request_to_query(baxter):
    groups = build_groups(baxter, {"both_arms": ("left_gripper", "right_gripper")}, {}, rigid_offsets(baxter))
    layout, cfg = JointStateLayout(baxter), NodeConfig()
    req = GetPositionIK.Request().ik_request
    req.group_name = "both_arms"
    req.ik_link_names = ["left_gripper", "right_gripper"]
    req.pose_stamped_vector = [PoseStamped(), PoseStamped()]
    req.robot_state = RobotState(joint_state=JointState(name=["left_s0", "head_pan"], position=[0.2, 0.1]))
    req.constraints.joint_constraints = [JointConstraint(joint_name="left_w1", position=0.5, tolerance_above=0.1,
                                                         tolerance_below=0.2)]
    req.timeout = Duration(sec=0, nanosec=20_000_000)
    query, passive = moveit_bridge.query_of(req, groups, layout, cfg, world=None)
    assert query.group == "both_arms" and query.timeout == pytest.approx(0.02) and passive == {"head_pan": 0.1}
    assert query.targets[0].links == ["left_gripper", "right_gripper"]
    [b] = query.constraints
    assert (b.joint, b.lower, b.upper) == ("left_w1", pytest.approx(0.3), pytest.approx(0.6))
    req.group_name = "nope"
    with pytest.raises(errors.UnknownGroupError):
        moveit_bridge.query_of(req, groups, layout, cfg, world=None)
    req.group_name, req.ik_link_names = "both_arms", ["left_gripper"]
    with pytest.raises(errors.UnknownLinkError):  # two poses, one link name
        moveit_bridge.query_of(req, groups, layout, cfg, world=None)
