#!/usr/bin/env python3
"""Two-arm IK from user code: ikdiffuser_node's ``compute_ik`` (one answer) and ``get_ik_solutions`` (many).

The worked example of docs/moveit.md. MoveIt's srv_kinematics_plugin cannot serve a
multi-arm group (see docs/moveit.md), so a two-arm goal is asked of the node directly:

* ``/<node>/compute_ik`` (``moveit_msgs/srv/GetPositionIK``): ``group_name`` = the two-arm
  group, one pose per hand in ``pose_stamped_vector`` and the hands' links, in the same order,
  in ``ik_link_names``. The answer is one full robot state (every joint).
* ``/<node>/get_ik_solutions`` (``ikdiffuser_ros/srv/GetIKSolutions``): the same two poses as one
  target for the same ``group_name``; up to ``--solutions`` different solutions, each a full robot
  state (``sensor_msgs/JointState``: every joint by name) with its measured errors.

Run it next to the node (Baxter: ``groups`` in config/baxter.yaml defines ``both_arms``):

    ros2 run ikdiffuser_ros ikdiffuser_node --ros-args --params-file config/baxter.yaml
    python3 scripts/two_arm_compute_ik.py                       # the default poses below
    python3 scripts/two_arm_compute_ik.py --left 0.64 0.77 -0.16 -0.230 0.962 0.142 0.047 \\
        --right 0.64 -0.77 -0.16 0.230 0.962 -0.142 0.047 --solutions 0 --json

Needs only rclpy, geometry_msgs, sensor_msgs, moveit_msgs (and ikdiffuser_ros's interfaces for
``--solutions``). Exit status: 0 when compute_ik (and get_ik_solutions, if asked) succeeded,
1 when the node answered with an error, 2 when the node could not be reached in time.
"""
from __future__ import annotations

import argparse
import json
import math
import sys

# Both hands 0.64 m in front of Baxter's base, 0.77 m to each side, pointing down: forward
# kinematics of left (s0, s1, e0, e1, w0, w1, w2) = (-0.3, -0.4, 0.2, 1.2, 0.1, 0.6, 0.0) and the
# mirrored right arm, so reachable and collision free. (x, y, z, qx, qy, qz, qw) in --frame.
DEFAULT_LEFT = (0.637483, 0.766094, -0.159096, -0.230196, 0.961595, 0.141811, 0.047279)
DEFAULT_RIGHT = (0.637483, -0.766094, -0.159096, 0.230196, 0.961595, -0.141811, 0.047279)

SUCCESS = 1
ERROR_NAMES = {1: "SUCCESS", 99999: "FAILURE", -6: "TIMED_OUT", -15: "INVALID_GROUP_NAME",
               -16: "INVALID_GOAL_CONSTRAINTS", -17: "INVALID_ROBOT_STATE", -18: "INVALID_LINK_NAME",
               -21: "FRAME_TRANSFORM_FAILURE", -22: "COLLISION_CHECKING_UNAVAILABLE", -31: "NO_IK_SOLUTION",
               -100: "INVALID_REQUEST"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--node-name", default="ikdiffuser_node",
                   help="name (with namespace, if any) of the ikdiffuser node: its services are /<name>/...")
    p.add_argument("--group", default="both_arms", help="planning group holding both arms")
    p.add_argument("--left-link", default="left_gripper", help="link the --left pose is for")
    p.add_argument("--right-link", default="right_gripper", help="link the --right pose is for")
    p.add_argument("--left", type=float, nargs=7, default=DEFAULT_LEFT, metavar=("X", "Y", "Z", "QX", "QY", "QZ", "QW"),
                   help="pose of --left-link [m, unit quaternion]")
    p.add_argument("--right", type=float, nargs=7, default=DEFAULT_RIGHT,
                   metavar=("X", "Y", "Z", "QX", "QY", "QZ", "QW"), help="pose of --right-link")
    p.add_argument("--frame", default="base",
                   help="frame_id of both poses: the robot's root frame or one of its links ('' = root)")
    p.add_argument("--timeout", type=float, default=2.0,
                   help="IK time budget [s] sent in the requests (sec + nanosec; 0 = the node's default)")
    p.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the node's services to appear")
    p.add_argument("--avoid-collisions", action=argparse.BooleanOptionalAction, default=True,
                   help="only collision-free answers (self collision and the planning scene the node follows)")
    p.add_argument("--joint-states", default="", metavar="TOPIC",
                   help="seed from one sensor_msgs/JointState on TOPIC (e.g. /joint_states); default: no seed "
                        "(the node then starts from the robot's default state, not the current one)")
    p.add_argument("--solutions", type=int, default=8,
                   help="also ask get_ik_solutions for up to this many solutions (0: skip)")
    p.add_argument("--random-seed", type=int, default=0, help="get_ik_solutions random seed (-1: fresh randomness)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    return p.parse_args(argv)


def pose_stamped(values, frame: str):
    from geometry_msgs.msg import PoseStamped

    msg = PoseStamped()
    msg.header.frame_id = frame
    p = msg.pose
    p.position.x, p.position.y, p.position.z = (float(v) for v in values[:3])
    p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w = (float(v) for v in values[3:])
    return msg


def duration(seconds: float):
    from builtin_interfaces.msg import Duration

    sec, nanosec = divmod(int(round(max(seconds, 0.0) * 1e9)), 1_000_000_000)
    return Duration(sec=sec, nanosec=nanosec)


def compute_ik_request(args, seed=None):
    """GetPositionIK request for both hands (``seed``: a sensor_msgs/JointState, or None)."""
    from moveit_msgs.srv import GetPositionIK

    req = GetPositionIK.Request()
    ik = req.ik_request
    ik.group_name = args.group
    ik.pose_stamped_vector = [pose_stamped(args.left, args.frame), pose_stamped(args.right, args.frame)]
    ik.ik_link_names = [args.left_link, args.right_link]  # same order as pose_stamped_vector
    ik.avoid_collisions = bool(args.avoid_collisions)
    ik.timeout = duration(args.timeout)
    if seed is not None:
        ik.robot_state.joint_state = seed  # seed of the group's joints + value of every other joint
    return req


def get_ik_solutions_request(args, seed=None):
    """GetIKSolutions request: the same two poses as one target, up to ``args.solutions`` answers."""
    from ikdiffuser_ros.msg import IKTarget
    from ikdiffuser_ros.srv import GetIKSolutions

    req = GetIKSolutions.Request(num_solutions=args.solutions, avoid_collisions=bool(args.avoid_collisions),
                                 random_seed=args.random_seed, timeout=duration(args.timeout), group_name=args.group)
    req.targets = [IKTarget(link_names=[args.left_link, args.right_link],
                            poses=[pose_stamped(args.left, args.frame), pose_stamped(args.right, args.frame)])]
    if seed is not None:
        # the joints outside the group stay at the seed; ranks the solutions by distance to it (and pulls them towards it)
        req.seed_state, req.seed_weight = seed, 0.1
    return req


def _call(node, executor, srv_type, name: str, request, wait: float, timeout: float):
    from ikdiffuser_ros.ros.service_io import client_qos

    client = node.create_client(srv_type, name, qos_profile=client_qos())
    try:
        if not client.wait_for_service(timeout_sec=wait):
            raise TimeoutError(f"service {name} not available after {wait:g} s (is the node running? --node-name?)")
        future = client.call_async(request)
        # the node caps any budget at its max_timeout (10 s by default) and may queue the request
        executor.spin_until_future_complete(future, timeout_sec=timeout + 30.0)
        if not future.done():
            raise TimeoutError(f"no answer from {name} within {timeout + 30.0:g} s")
        return future.result()
    finally:
        node.destroy_client(client)


def _seed_from_topic(node, topic: str, wait: float):
    from rclpy.wait_for_message import wait_for_message
    from sensor_msgs.msg import JointState

    ok, msg = wait_for_message(JointState, node, topic, time_to_wait=wait)
    if not ok:
        raise TimeoutError(f"no sensor_msgs/JointState on {topic} within {wait:g} s")
    return JointState(name=list(msg.name), position=list(msg.position))


def run(args, node, executor) -> dict:
    """Both calls; returns a JSON-ready summary (raises TimeoutError when the node is not reachable)."""
    from moveit_msgs.srv import GetPositionIK

    base = "/" + args.node_name.strip("/")
    seed = _seed_from_topic(node, args.joint_states, args.wait) if args.joint_states else None
    res = _call(node, executor, GetPositionIK, f"{base}/compute_ik", compute_ik_request(args, seed),
                args.wait, args.timeout)
    code = int(res.error_code.val)
    js = res.solution.joint_state
    out = {"group": args.group, "links": [args.left_link, args.right_link],
           "compute_ik": {"error_code": code, "error_name": ERROR_NAMES.get(code, str(code)),
                          "message": getattr(res.error_code, "message", ""),  # moveit_msgs >= 2.4
                          "joint_state": dict(zip(js.name, (float(v) for v in js.position))),
                          "multi_dof_joints": list(res.solution.multi_dof_joint_state.joint_names)}}
    if args.solutions > 0:
        from ikdiffuser_ros.srv import GetIKSolutions

        sres = _call(node, executor, GetIKSolutions, f"{base}/get_ik_solutions",
                     get_ik_solutions_request(args, seed), args.wait, args.timeout)
        target = sres.results[0] if sres.results else None
        # each solution a sensor_msgs/JointState of every joint: here {joint name: value}, as compute_ik's
        solutions = [dict(zip(js.name, (float(v) for v in js.position))) for js in target.solutions] if target else []
        out["get_ik_solutions"] = {
            "error_code": int(sres.error_code), "error_name": ERROR_NAMES.get(int(sres.error_code), ""),
            "message": sres.message, "solutions": solutions,
            "position_errors": list(target.position_errors) if target else [],
            "rotation_errors": list(target.rotation_errors) if target else [], "solve_time": sres.solve_time}
    return out


def _print_text(out: dict) -> None:
    c = out["compute_ik"]
    print(f"compute_ik {out['group']} {out['links']}: {c['error_name']} ({c['error_code']})"
          + (f": {c['message']}" if c["message"] else ""))
    for name, value in c["joint_state"].items():
        print(f"  {name:24s} {value: .6f}")
    if c["multi_dof_joints"]:
        print(f"  (and multi-DOF joints {c['multi_dof_joints']}: see the response's multi_dof_joint_state)")
    s = out.get("get_ik_solutions")
    if s is not None:
        print(f"get_ik_solutions: {s['error_name'] or s['error_code']}, {len(s['solutions'])} solutions in "
              f"{s['solve_time']:.3f} s" + (f": {s['message']}" if s["message"] else ""))
        if s["solutions"]:
            print(f"  joint order: {' '.join(s['solutions'][0])}")
        for k, values in enumerate(s["solutions"]):
            print(f"  #{k}: position error {s['position_errors'][k] * 1000:.4f} mm, rotation error "
                  f"{math.degrees(s['rotation_errors'][k]):.4f} deg; " + " ".join(f"{v: .3f}" for v in values.values()))


def main(argv: list[str] | None = None) -> int:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.utilities import remove_ros_args

    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(remove_ros_args(["two_arm_compute_ik", *argv])[1:])
    # an own Context: main() also works inside a process that already called rclpy.init()
    context = rclpy.Context()
    rclpy.init(args=["two_arm_compute_ik", *argv], context=context)
    node = rclpy.create_node("two_arm_compute_ik", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        out = run(args, node, executor)
    except TimeoutError as exc:
        print(f"two_arm_compute_ik: {exc}", file=sys.stderr)
        return 2
    finally:
        executor.shutdown()
        node.destroy_node()
        context.try_shutdown()
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        _print_text(out)
    ok = out["compute_ik"]["error_code"] == SUCCESS
    if "get_ik_solutions" in out:
        ok = ok and out["get_ik_solutions"]["error_code"] == SUCCESS
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
