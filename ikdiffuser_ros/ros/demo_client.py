"""End-to-end demo of ikdiffuser_node (run by ``make demo`` / scripts/demo.sh).

1. starts the installed ``ikdiffuser_node`` (a subprocess, config/baxter.yaml);
2. publishes a planning scene: a table in front of Baxter and a box on it;
3. calls ``~/get_ik_solutions`` (both arms, left only, right only; 32 solutions each),
   without and with ``avoid_collisions``, and ``~/compute_ik`` for ``left_arm``;
4. prints a summary (solutions, errors, collision-free count, latency) and writes a PNG
   of the both-arms solutions with the scene (viz/render.py) to ``runs/demo/demo_baxter_scene.png``
   (``runs/`` is git-ignored, so a demo leaves the checkout unmodified).

    python -m ikdiffuser_ros.ros.demo_client [--model-path DIR] [--png PATH] [--no-node]

Exit status 0 when every call answered as expected.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # rclpy and the messages are imported when the demo runs
    from moveit_msgs.msg import CollisionObject, PlanningScene
    from rclpy.client import Client
    from rclpy.executors import Executor
    from rclpy.node import Node

    from ikdiffuser_ros.kinematics.robot_model import RobotModel
    from ikdiffuser_ros.msg import IKTargetResult

NODE = "ikdiffuser_node"
#: Where the demo's picture goes by default, relative to the repository root (git-ignored).
DEMO_PNG = "runs/demo/demo_baxter_scene.png"


def _down_pose(x: float, y: float, z: float) -> np.ndarray:
    """Gripper pointing down (its z axis along -z of the base), fingers across y."""
    T = np.eye(4)
    T[:3, :3] = np.diag([1.0, -1.0, -1.0])
    T[:3, 3] = (x, y, z)
    return T


def _box(oid: str, xyz: Sequence[float], size: Sequence[float], frame: str = "base") -> CollisionObject:
    """moveit_msgs/CollisionObject (ADD): a box of full extents ``size`` [m] centred at ``xyz`` [m] in ``frame``."""
    from geometry_msgs.msg import Pose
    from moveit_msgs.msg import CollisionObject
    from shape_msgs.msg import SolidPrimitive

    obj = CollisionObject()
    obj.id = oid
    obj.header.frame_id = frame
    obj.pose.orientation.w = 1.0
    obj.pose.position.x, obj.pose.position.y, obj.pose.position.z = (float(v) for v in xyz)
    obj.primitives = [SolidPrimitive(type=SolidPrimitive.BOX, dimensions=[float(v) for v in size])]
    p = Pose()
    p.orientation.w = 1.0
    obj.primitive_poses = [p]
    obj.operation = CollisionObject.ADD
    return obj


def _scene() -> PlanningScene:
    """The demo's planning scene diff: a table in front of Baxter and a box on it (base frame)."""
    from moveit_msgs.msg import PlanningScene

    scene = PlanningScene(is_diff=True)
    scene.world.collision_objects = [
        _box("table", (0.85, 0.0, -0.45), (0.7, 1.6, 0.05)),  # top at z = -0.425 m
        _box("box", (0.75, 0.0, -0.3), (0.2, 0.2, 0.25)),  # on the table, between the two targets
    ]
    return scene


def _installed_node() -> list[str]:
    root = Path(os.environ.get("IKDIFFUSER_ROOT", Path(__file__).resolve().parents[2]))
    exe = root / "install" / "ikdiffuser_ros" / "lib" / "ikdiffuser_ros" / "ikdiffuser_node"
    if not exe.is_file():
        raise SystemExit(f"demo: {exe} not found; run `make setup` first")
    return [sys.executable, str(exe)]


def _fmt_result(r: IKTargetResult) -> str:
    """One line for a target's result: solutions, median/max errors [mm, deg], collision-free count."""
    if r.num_solutions == 0:
        return f"code {r.error_code}: {r.message}"
    pe = np.asarray(r.position_errors) * 1000
    re = np.degrees(np.asarray(r.rotation_errors))
    free = int(np.sum(~np.asarray(r.in_collision, dtype=bool)))
    return (f"{r.num_solutions:3d} solutions, pos err median {np.median(pe):.3f} mm (max {pe.max():.3f}), "
            f"rot err median {np.median(re):.3f} deg (max {re.max():.3f}), collision free {free}/{r.num_solutions}")


def main(argv: list[str] | None = None) -> int:
    """Run the demo (see the module docstring); the exit status."""
    args = _parse_args(argv)
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from ikdiffuser_ros.robots import load_robot
    from ikdiffuser_ros.ros.service_io import client_qos
    from ikdiffuser_ros.srv import GetIKSolutions

    root = Path(os.environ.get("IKDIFFUSER_ROOT", Path(__file__).resolve().parents[2]))
    proc = None if args.no_node else _start_node(args, root)
    rclpy.init()
    node = rclpy.create_node("ikdiffuser_demo_client")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        ik = node.create_client(GetIKSolutions, f"/{NODE}/get_ik_solutions", qos_profile=client_qos())
        if not _wait_for_node(executor, ik, proc):
            return 1
        scene = _publish_scene(node, executor)
        robot = load_robot("baxter")
        left, right = _down_pose(0.75, 0.3, -0.15), _down_pose(0.75, -0.3, -0.15)
        answers, ok = _get_ik_solutions(executor, ik, left, right, args.num_solutions)
        ok &= _compute_ik(node, executor, left)
        _picture(robot, scene, answers, left, right, root, args.png)
        print("\ndemo: " + ("OK" if ok else "some calls failed"))
        return 0 if ok else 1
    finally:
        _shutdown(executor, node, proc)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-path", default="", help="checkpoint folder (default: the node's models/ lookup)")
    ap.add_argument("--params-file", default="", help="node parameters (default config/baxter.yaml)")
    ap.add_argument("--png", default=DEMO_PNG,
                    help="PNG of the both-arms solutions (a relative path is taken from the repository root)")
    ap.add_argument("--no-node", action="store_true", help="use an already running ikdiffuser_node")
    ap.add_argument("--num-solutions", type=int, default=32)
    return ap.parse_args(argv)


def _start_node(args: argparse.Namespace, root: Path) -> subprocess.Popen:
    """Start the installed node on ``--params-file`` (default config/baxter.yaml) and ``--model-path``."""
    params_file = args.params_file or str(root / "config" / "baxter.yaml")
    cmd = _installed_node() + ["--ros-args", "--params-file", params_file, "-p", "robot_description_timeout:=0.0"]
    if args.model_path:
        cmd += ["-p", f"model_path:={args.model_path}"]
    print(f"demo: starting {' '.join(cmd[1:2])} with {params_file}", flush=True)
    return subprocess.Popen(cmd)


def _call(executor: Executor, client: Client, request: object, timeout: float = 60.0) -> tuple[object, float]:
    """(response, round trip [s]) of one service call, spinning ``executor``; RuntimeError after ``timeout`` s."""
    t0 = time.monotonic()
    future = client.call_async(request)
    while not future.done() and time.monotonic() - t0 < timeout:
        executor.spin_once(timeout_sec=0.01)
    if not future.done():
        raise RuntimeError(f"no answer from {client.srv_name} within {timeout} s")
    return future.result(), time.monotonic() - t0


def _wait_for_node(executor: Executor, ik: Client, proc: subprocess.Popen | None) -> bool:
    """Wait (at most 120 s) for the get_ik_solutions service; False (and why, on stderr) if it never came."""
    t0 = time.monotonic()
    while not ik.service_is_ready():
        executor.spin_once(timeout_sec=0.1)
        if proc is not None and proc.poll() is not None:
            print(f"demo: the node exited with status {proc.returncode}", file=sys.stderr)
            return False
        if time.monotonic() - t0 > 120:
            print("demo: the node did not come up within 120 s", file=sys.stderr)
            return False
    print(f"demo: node ready after {time.monotonic() - t0:.1f} s")
    return True


def _publish_scene(node: Node, executor: Executor) -> PlanningScene:
    """Publish :func:`_scene` on /planning_scene (three times, once a subscriber is there); returns it."""
    from moveit_msgs.msg import PlanningScene

    pub = node.create_publisher(PlanningScene, "/planning_scene", 10)
    scene = _scene()
    t0 = time.monotonic()
    while pub.get_subscription_count() == 0 and time.monotonic() - t0 < 10:
        executor.spin_once(timeout_sec=0.05)
    for _ in range(3):
        pub.publish(scene)
        executor.spin_once(timeout_sec=0.1)
    time.sleep(0.5)
    print("demo: planning scene published: table (top at z=-0.425 m) and a 0.2 x 0.2 x 0.25 m box on it")
    return scene


def _pose_stamped(T: np.ndarray):
    """(4, 4) pose [m] in Baxter's ``base`` frame -> PoseStamped."""
    from geometry_msgs.msg import PoseStamped

    from ikdiffuser_ros.ros.conversions import matrix_to_pose

    msg = PoseStamped()
    msg.header.frame_id = "base"
    msg.pose = matrix_to_pose(T)
    return msg


def _get_ik_solutions(executor: Executor, ik: Client, left: np.ndarray, right: np.ndarray,
                      num_solutions: int) -> tuple[dict, bool]:
    """get_ik_solutions for both arms, left, right, without and with avoid_collisions, then the latency
    of 1 target x 32 solutions; prints a summary. Returns ({avoid_collisions: response}, all solved)."""
    from ikdiffuser_ros.msg import IKTarget
    from ikdiffuser_ros.srv import GetIKSolutions

    left_ps, right_ps = _pose_stamped(left), _pose_stamped(right)
    targets = [IKTarget(link_names=["left_gripper", "right_gripper"], poses=[left_ps, right_ps]),
               IKTarget(link_names=["left_gripper"], poses=[left_ps]),
               IKTarget(link_names=["right_gripper"], poses=[right_ps])]
    names = ["both arms", "left arm", "right arm"]
    answers, ok = {}, True
    for avoid in (False, True):
        req = GetIKSolutions.Request(targets=targets, num_solutions=num_solutions, random_seed=0,
                                     avoid_collisions=avoid)
        res, latency = _call(executor, ik, req)
        answers[avoid] = res
        print(f"\nget_ik_solutions, avoid_collisions={avoid}: code {res.error_code} ({res.message}); "
              f"round trip {latency * 1000:.0f} ms, solver {res.solve_time * 1000:.0f} ms")
        for name, r in zip(names, res.results):
            print(f"  {name:9s}: {_fmt_result(r)}")
        ok &= res.error_code == 1

    # latency of the benchmark case: 1 target x 32 solutions
    one = GetIKSolutions.Request(targets=targets[1:2], num_solutions=32, random_seed=0)
    lat = [_call(executor, ik, one)[1] for _ in range(10)]
    print(f"\n1 target x 32 solutions: median round trip {statistics.median(lat) * 1000:.0f} ms over 10 calls")
    return answers, ok


def _compute_ik(node: Node, executor: Executor, left: np.ndarray) -> bool:
    """compute_ik for left_arm with avoid_collisions (skipped, True, without moveit_msgs' GetPositionIK)."""
    try:
        from moveit_msgs.srv import GetPositionIK
    except ImportError:
        return True
    from ikdiffuser_ros.ros.service_io import client_qos

    cik = node.create_client(GetPositionIK, f"/{NODE}/compute_ik", qos_profile=client_qos())
    cik.wait_for_service(timeout_sec=10)
    req = GetPositionIK.Request()
    req.ik_request.group_name = "left_arm"
    req.ik_request.pose_stamped = _pose_stamped(left)
    req.ik_request.avoid_collisions = True
    res, latency = _call(executor, cik, req)
    js = res.solution.joint_state
    arm = {n: round(p, 3) for n, p in zip(js.name, js.position) if n.startswith("left_")}
    print(f"\ncompute_ik left_arm (avoid_collisions): code {res.error_code.val} in {latency * 1000:.0f} ms"
          f"{': ' + str(arm) if res.error_code.val == 1 else ''}")
    return res.error_code.val == 1


def _picture(robot: RobotModel, scene: PlanningScene, answers: dict, left: np.ndarray, right: np.ndarray, root: Path,
             png: str) -> None:
    """PNG of the both-arms solutions (collision-free ones if any) with the scene (viz/render.py)."""
    best = answers[True].results[0] if answers[True].results[0].num_solutions else answers[False].results[0]
    if not best.num_solutions:
        return
    try:
        from ikdiffuser_ros.ros.ik_solutions import solutions_array
        from ikdiffuser_ros.ros.scene_monitor import SceneMonitor
        from ikdiffuser_ros.viz.render import render_solutions

        mirror = SceneMonitor(robot)
        mirror.apply_planning_scene(scene)
        q = solutions_array(best, robot.joint_names)  # each solution a JointState: its values by joint name
        out = render_solutions(robot, q, np.stack([left, right]), root / png if not Path(png).is_absolute() else png,
                               title=f"baxter: {len(q)} collision-free IK solutions (both arms)",
                               world=mirror.snapshot(), failed=np.asarray(best.in_collision, dtype=bool))
        print(f"\ndemo: wrote {out}")
    except ImportError as exc:
        print(f"\ndemo: no PNG (renderer unavailable: {exc})")


def _shutdown(executor: Executor, node: Node, proc: subprocess.Popen | None) -> None:
    """Stop the client and (SIGINT, then kill after 20 s) the node this demo started."""
    import rclpy

    executor.shutdown()
    node.destroy_node()
    rclpy.try_shutdown()
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    sys.exit(main())
