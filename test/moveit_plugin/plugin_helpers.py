"""Running ``plugin_check`` (moveit_plugin/test/plugin_check.cpp) against an ``ikdiffuser_node`` process.

Shared by the plugin's tests (test_plugin.py: Baxter; test_plugin_whole_body.py: dual_ur5_mobile) and,
as a script, the measures of docs/moveit.md:

    source scripts/ros_env.sh
    python test/moveit_plugin/plugin_helpers.py --robot baxter --group both_arms --targets 200 --timeout 1
    python test/moveit_plugin/plugin_helpers.py --robot dual_ur5_mobile --group whole_body --targets 200 --timeout 1

``plugin_check`` builds a ``moveit::core::RobotModel`` from the robot's URDF and the SRDF below, loads the
plugin with ``pluginlib::ClassLoader<kinematics::KinematicsBase>("moveit_core", ...)`` as MoveIt's
kinematics_plugin_loader does, and prints one JSON line per check.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "test" / "ros"))
from ik_helpers import installed_executable, shipped_model_for, stop_process, train_tiny  # noqa: E402

ENV_SH = REPO / "moveit_ws" / "env.sh"
CHECK = REPO / "moveit_ws" / "install" / "ikdiffuser_kinematics_plugin" / "lib" / "ikdiffuser_kinematics_plugin" \
    / "plugin_check"
NOT_BUILT = ("the MoveIt kinematics plugin is not built: `make setup` builds it only where ../shared/moveit_src "
             "(rclcpp and moveit_core sources) exists, see docs/building.md")
COMMUNICATION_FAILURE = -25


@dataclass(frozen=True)
class Robot:
    """A robot as plugin_check and the node see it."""

    name: str
    #: the SRDF MoveIt's RobotModel is built from (its groups are the node's too)
    srdf: Path
    #: the tips of multi-tip groups (kinematics_solver_ik_links: MoveIt since Iron gives a solver one tip)
    ik_links: dict[str, list[str]] = field(default_factory=dict)

    def urdf(self, folder: Path) -> Path:
        """The URDF file (a robot config's xacro expanded into ``folder``)."""
        from ikdiffuser_ros.resources import example_robot_data_share
        from ikdiffuser_ros.robots import robot_config

        if self.name == "baxter":  # the node's description too (example-robot-data)
            return example_robot_data_share() / "robots" / "baxter_description" / "urdf" / "baxter.urdf"
        path = folder / f"{self.name}.urdf"
        if not path.is_file():
            path.write_text(robot_config(self.name).urdf_text())
        return path


ROBOTS = {
    # example-robot-data's baxter SRDF has only whole_body: test/moveit_plugin/baxter_arms.srdf has the arms,
    # as config/robots/baxter.yaml names them for the node
    "baxter": Robot("baxter", Path(__file__).with_name("baxter_arms.srdf"),
                    {"both_arms": ["left_gripper", "right_gripper"]}),
    # Baxter on a floating virtual joint (no shipped robot has one): the roundtrip check only, no node
    "baxter_floating": Robot("baxter", Path(__file__).with_name("baxter_floating.srdf")),
    # a planar mobile base (the SRDF's virtual joint base_joint), a waist and two UR5 arms
    "dual_ur5_mobile": Robot("dual_ur5_mobile", REPO / "config" / "srdf" / "dual_ur5_mobile.srdf",
                             {g: ["left_tool0", "right_tool0"] for g in ("both_arms", "torso_and_arms", "whole_body")}),
}


def run_check(robot: str, check: str, targets: int, timeout: float, folder: Path, arg: int = 0,
              group: str = "both_arms", server: str = "/ikd_plugin_test_node",
              params: dict[str, object] | None = None) -> dict:
    """One plugin_check run (its own process, with moveit_ws/env.sh): its JSON line, and its stderr as 'log'.
    ``params``: more of the group's plugin parameters (``num_solutions``...)."""
    from ikdiffuser_ros.resources import example_robot_data_share

    r = ROBOTS[robot]
    prefix = f"robot_description_kinematics.{group}"
    values: dict[str, object] = {"ikdiffuser_node": server, **(params or {})}
    if group in r.ik_links:
        values["kinematics_solver_ik_links"] = "[" + ",".join(r.ik_links[group]) + "]"
    cmd = [str(CHECK), str(r.urdf(folder)), str(r.srdf), group, check, str(targets), str(timeout), str(arg),
           "--ros-args", *sum((["-p", f"{prefix}.{k}:={v}"] for k, v in values.items()), [])]
    # package:// meshes of the URDF: example-robot-data's ament index entry is in the wheel's cmeel.prefix
    env = dict(os.environ, AMENT_PREFIX_PATH=f"{example_robot_data_share().parents[1]}:{os.environ.get('AMENT_PREFIX_PATH', '')}")
    proc = subprocess.run(["bash", "-c", f'. "{ENV_SH}" && exec "$@"', "plugin_check", *cmd], capture_output=True,
                          text=True, timeout=600, env=env)
    assert proc.returncode == 0, f"plugin_check {check} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-4000:]}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["log"] = proc.stderr
    return result


def assert_solved_as_directly(r: dict, max_added_ms: float = 2.0) -> None:
    """A ``solve`` check's result: the node solved every target through a direct compute_ik call, the plugin
    as many, each verified by MoveIt's FK, and the plugin added at most ``max_added_ms`` per call, the median of
    each target's two calls' difference (made back to back, in alternating order: a spell of load on the machine
    moves both; the difference of the two medians moved with it, 2.98 ms once under two training jobs)."""
    assert r["direct_solved"] == r["targets"], r
    assert r["plugin_solved"] == r["direct_solved"], r
    assert r["verified"] == r["plugin_solved"], r
    added = statistics.median(p - d for p, d in zip(r["plugin_ms"], r["direct_ms"]))
    assert added < max_added_ms, f"plugin adds {added:.2f} ms per call (median) over a direct call"


@contextlib.contextmanager
def node_process(robot: str, name: str, folder: Path) -> Iterator[subprocess.Popen]:
    """ikdiffuser_node for ``robot`` (its robot config: groups, limits; the shipped checkpoint, else a tiny
    one trained into ``folder``) as a process named ``name``; its output in ``folder``/<name>.log."""
    params = dict(robot=robot, robot_description_timeout=0.0, follow_planning_scene=False, max_timeout=10.0)
    if not shipped_model_for(robot):
        params["model_path"] = str(train_tiny(robot, folder / f"tiny_{robot}"))
    args = sum((["-p", f"{k}:={v}"] for k, v in params.items()), [])
    with open(folder / f"{name}.log", "w") as out:
        proc = subprocess.Popen([sys.executable, str(installed_executable()), "--ros-args", "-r", f"__node:={name}",
                                 *args], stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        stop_process(proc)


def main() -> None:
    """The measures of docs/moveit.md: plugin vs direct compute_ik (success, median latency), and a
    callback rejecting half of all solutions."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--robot", default="baxter", choices=sorted(ROBOTS))
    ap.add_argument("--group", default="both_arms")
    ap.add_argument("--targets", type=int, default=200)
    ap.add_argument("--timeout", type=float, default=1.0, help="IK budget per call [s]")
    ap.add_argument("--num-solutions", type=int, default=8, help="the plugin's num_solutions (the half check)")
    a = ap.parse_args()
    if not CHECK.is_file():
        sys.exit(NOT_BUILT)
    os.environ.setdefault("ROS_DOMAIN_ID", str(os.getpid() % 80 + 20))
    name = "ikd_plugin_measure_node"
    with tempfile.TemporaryDirectory() as tmp, node_process(a.robot, name, Path(tmp)):
        common = dict(folder=Path(tmp), group=a.group, server=f"/{name}")
        s = run_check(a.robot, "solve", a.targets, a.timeout, **common)
        added = [p - d for p, d in zip(s["plugin_ms"], s["direct_ms"])]
        print(f"{a.robot} {a.group}, {a.targets} held-out targets, {a.timeout} s budget:")
        print(f"  solved: plugin {s['plugin_solved']}, direct compute_ik {s['direct_solved']}; verified by MoveIt's FK"
              f" {s['verified']} (max {s['max_position_error'] * 1e3:.4f} mm, {s['max_rotation_error']:.2e} rad)")
        print(f"  median latency: plugin {statistics.median(s['plugin_ms']):.2f} ms, direct"
              f" {statistics.median(s['direct_ms']):.2f} ms; plugin - direct: difference of medians"
              f" {statistics.median(s['plugin_ms']) - statistics.median(s['direct_ms']):+.3f} ms, median of paired"
              f" differences {statistics.median(added):+.3f} ms")
        h = run_check(a.robot, "half", a.targets, a.timeout, params={"num_solutions": a.num_solutions}, **common)
        print(f"  callback rejecting half of all solutions (num_solutions {a.num_solutions}): {h['solved']}/{h['targets']}"
              f" solved, {h['requests']} requests, median {statistics.median(h['ms']):.1f} ms per call")


if __name__ == "__main__":
    main()
