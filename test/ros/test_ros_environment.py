"""Smoke tests of the ROS 2 environment built by scripts/setup.sh: a real rclpy
service round trip with our GetIKSolutions interface, and the (real or test-only)
moveit_msgs definitions."""
from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.ros


def _spin_until(executor, future, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not future.done() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
    assert future.done(), f"no response within {timeout_s} s"


def test_get_ik_solutions_round_trip(ros_context, ros_executor):
    pytest.importorskip("ikdiffuser_ros.srv", reason="interfaces not built: run `make setup`")
    import rclpy
    from builtin_interfaces.msg import Duration
    from geometry_msgs.msg import PoseStamped

    from sensor_msgs.msg import JointState

    from ikdiffuser_ros.msg import IKTarget, IKTargetResult, JointConstraint
    from ikdiffuser_ros.srv import GetIKSolutions

    server = rclpy.create_node("ikd_test_server")
    client_node = rclpy.create_node("ikd_test_client")
    ros_executor.add_node(server)
    ros_executor.add_node(client_node)
    seen = []

    def handle(request, response):
        seen.append(request)
        response.error_code = GetIKSolutions.Request.SUCCESS
        response.message = "ok"
        for target in request.targets:
            n = request.num_solutions
            result = IKTargetResult(error_code=GetIKSolutions.Request.SUCCESS, num_solutions=n)
            result.solutions = [JointState(name=["j1", "j2"], position=[0.2 * i, 0.2 * i + 0.1]) for i in range(n)]
            result.position_errors = [0.001] * n
            result.rotation_errors = [0.002] * n
            result.in_collision = [False] * n
            response.results.append(result)
        response.solve_time = 0.5
        return response

    server.create_service(GetIKSolutions, "get_ik_solutions", handle)
    client = client_node.create_client(GetIKSolutions, "get_ik_solutions")
    assert client.wait_for_service(timeout_sec=10.0)

    pose = PoseStamped()
    pose.header.frame_id = "base"
    pose.pose.position.x = 0.4
    pose.pose.orientation.w = 1.0
    request = GetIKSolutions.Request(
        targets=[IKTarget(link_names=["tool0"], poses=[pose], position_only=[False])] * 2,
        num_solutions=3,
        seed_weight=0.25,
        objective_names=["manipulability"],
        objective_weights=[1.0],
        timeout=Duration(sec=1, nanosec=500),
        random_seed=7,
        group_name="arm",
        locked_joints=JointState(name=["j2"], position=[0.5]),
        joint_constraints=[JointConstraint(joint_name="j1", position=0.1, tolerance_above=0.2, tolerance_below=0.3)],
        max_rounds=4,
    )
    future = client.call_async(request)
    _spin_until(ros_executor, future)
    response = future.result()

    assert len(seen) == 1
    got = seen[0]
    assert got.num_solutions == 3 and got.random_seed == 7 and got.seed_weight == 0.25
    assert got.targets[1].link_names == ["tool0"]
    assert got.targets[0].poses[0].pose.position.x == pytest.approx(0.4)
    assert got.timeout.nanosec == 500
    assert got.group_name == "arm" and got.max_rounds == 4
    assert list(got.locked_joints.name) == ["j2"] and list(got.locked_joints.position) == [0.5]
    [jc] = got.joint_constraints
    assert (jc.joint_name, jc.position, jc.tolerance_above, jc.tolerance_below) == ("j1", 0.1, 0.2, 0.3)
    assert response.error_code == GetIKSolutions.Request.SUCCESS == 1
    assert len(response.results) == 2
    sol = response.results[0].solutions
    assert [list(js.name) for js in sol] == [["j1", "j2"]] * 3
    assert [v for js in sol for v in js.position] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    assert response.results[1].num_solutions == 3
    assert GetIKSolutions.Request.NO_IK_SOLUTION == -31


def test_moveit_msgs_definitions():
    pytest.importorskip("moveit_msgs.srv", reason="moveit_msgs not built: run `make setup`")
    from moveit_msgs.msg import MoveItErrorCodes, PositionIKRequest, RobotState
    from moveit_msgs.srv import GetPositionIK

    assert MoveItErrorCodes.NO_IK_SOLUTION == -31
    assert MoveItErrorCodes.SUCCESS == 1
    assert MoveItErrorCodes.TIMED_OUT == -6
    assert list(PositionIKRequest.get_fields_and_field_types()) == [
        "group_name",
        "robot_state",
        "constraints",
        "avoid_collisions",
        "ik_link_name",
        "pose_stamped",
        "ik_link_names",
        "pose_stamped_vector",
        "timeout",
    ]
    assert list(RobotState.get_fields_and_field_types()) == [
        "joint_state",
        "multi_dof_joint_state",
        "attached_collision_objects",
        "is_diff",
    ]
    response = GetPositionIK.Response()
    assert isinstance(response.solution, RobotState)
    assert isinstance(response.error_code, MoveItErrorCodes)
