"""The MoveIt kinematics plugin (moveit_plugin/) through MoveIt's own code paths, against a running node.

``plugin_check`` (moveit_plugin/test/plugin_check.cpp, built with the plugin by ``make setup`` when
../shared/moveit_src exists) builds a ``moveit::core::RobotModel`` from Baxter's URDF and
baxter_arms.srdf (left_arm, right_arm and the two-tip both_arms group), loads the plugin with
``pluginlib::ClassLoader<kinematics::KinematicsBase>("moveit_core", ...)`` as MoveIt's
kinematics_plugin_loader does, and prints one JSON line per check. An ``ikdiffuser_node`` for Baxter
(the shipped checkpoint, else a tiny one trained here) runs as its own process.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "test" / "ros"))
from ik_helpers import installed_executable, shipped_model_for, train_tiny  # noqa: E402

pytestmark = pytest.mark.ros

ENV_SH = REPO / "moveit_ws" / "env.sh"
CHECK = REPO / "moveit_ws" / "install" / "ikdiffuser_kinematics_plugin" / "lib" / "ikdiffuser_kinematics_plugin" \
    / "plugin_check"
SRDF = Path(__file__).with_name("baxter_arms.srdf")
NODE = "ikd_plugin_test_node"
# MoveIt (Iron and later) gives a solver one tip, the group's last link: two-tip groups list theirs.
IK_LINKS = {"both_arms": "[left_gripper,right_gripper]"}
COMMUNICATION_FAILURE = -25

if not CHECK.is_file():
    pytest.skip("the MoveIt kinematics plugin is not built: `make setup` builds it only where ../shared/moveit_src "
                "(rclcpp and moveit_core sources) exists, see docs/building.md", allow_module_level=True)


def _urdf() -> Path:
    from ikdiffuser_ros.resources import example_robot_data_share

    return example_robot_data_share() / "robots" / "baxter_description" / "urdf" / "baxter.urdf"


def run_check(check: str, targets: int, timeout: float, arg: int = 0, group: str = "both_arms",
              server: str = f"/{NODE}") -> dict:
    """One plugin_check run (its own process, with moveit_ws/env.sh): its JSON line, and its stderr as 'log'."""
    from ikdiffuser_ros.resources import example_robot_data_share

    prefix = f"robot_description_kinematics.{group}"
    cmd = [str(CHECK), str(_urdf()), str(SRDF), group, check, str(targets), str(timeout), str(arg),
           "--ros-args", "-p", f"{prefix}.ikdiffuser_node:={server}"]
    if group in IK_LINKS:
        cmd += ["-p", f"{prefix}.kinematics_solver_ik_links:={IK_LINKS[group]}"]
    # package:// meshes of the URDF: example-robot-data's ament index entry is in the wheel's cmeel.prefix
    env = dict(os.environ, AMENT_PREFIX_PATH=f"{example_robot_data_share().parents[1]}:{os.environ.get('AMENT_PREFIX_PATH', '')}")
    proc = subprocess.run(["bash", "-c", f'. "{ENV_SH}" && exec "$@"', "plugin_check", *cmd], capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0, f"plugin_check {check} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-4000:]}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["log"] = proc.stderr
    return result


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """ikdiffuser_node for Baxter as a process; groups left_arm/right_arm/both_arms from config/robots/baxter.yaml."""
    params = dict(robot="baxter", robot_description_timeout=0.0, follow_planning_scene=False, max_timeout=10.0)
    if not shipped_model_for("baxter"):
        params["model_path"] = str(train_tiny("baxter", tmp_path_factory.getbasetemp() / "tiny_baxter"))
    args = [f"{k}:={v}" for k, v in params.items()]
    log = tmp_path_factory.getbasetemp() / "plugin_test_node.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(installed_executable()), "--ros-args", "-r", f"__node:={NODE}",
                                 *sum((["-p", a] for a in args), [])], stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_two_tip_targets_solved_and_verified_by_moveit_fk(node):
    """Held-out both_arms targets: the plugin (compute_ik, no callback) solves what a direct compute_ik call
    with the same request solves, verified by MoveIt's FK, and adds little latency."""
    r = run_check("solve", 30, 1.0)
    assert r["direct_solved"] == r["targets"]
    assert r["plugin_solved"] == r["direct_solved"]
    assert r["verified"] == r["plugin_solved"], r
    overhead = statistics.median(r["plugin_ms"]) - statistics.median(r["direct_ms"])
    assert overhead < 2.0, f"plugin adds {overhead:.2f} ms median over a direct call"


def test_callback_rejecting_first_solutions_gets_a_later_one_in_one_request(node):
    r = run_check("reject", 20, 1.0, arg=3)
    assert r["solved"] == r["targets"]
    assert r["last_accepted"] == r["solved"], "the 4th candidate (the first the callback accepts) is returned"
    assert r["callback_calls"] == 4 * r["solved"]
    assert r["requests"] == r["targets"], "one get_ik_solutions request per searchPositionIK"
    assert r["verified"] == r["solved"]


def test_callback_rejecting_half_the_solutions(node):
    r = run_check("half", 40, 1.0)
    assert r["solved"] >= 0.95 * r["targets"], r
    assert r["requests"] == r["targets"]
    assert r["verified"] == r["solved"]


@pytest.mark.parametrize("timeout", [0.02, 0.1])
def test_timeout_honoured(node, timeout):
    """Unreachable targets use the whole budget: the answer comes within it + 20 ms, through get_ik_solutions
    and compute_ik alike."""
    r = run_check("timeout", 10, timeout)
    late = max(r["ms"]) - r["timeout_ms"]
    assert late <= 20.0, f"{late:.1f} ms late: {r['ms']}"
    assert all(code != 1 for code in r["codes"])


def test_seed_returned_when_it_solves(node):
    r = run_check("seed", 10, 1.0)
    assert r["solved"] == r["targets"]
    assert r["compute_ik_max_dev"] < 1e-6 and r["get_ik_solutions_max_dev"] < 1e-6, r


def test_set_from_ik_with_the_group(node):
    r = run_check("setfromik", 10, 1.0)
    assert r["solved"] == r["targets"] and r["verified"] == r["solved"]
    assert r["callbacks"] >= r["solved"], "MoveIt's validity callback reached the plugin"


def test_single_arm_chain(node):
    r = run_check("reject", 10, 1.0, arg=1, group="left_arm")
    assert r["solved"] == r["targets"] and r["verified"] == r["solved"]
    assert r["requests"] == r["targets"]


def test_node_down_is_a_clear_failure_within_the_timeout():
    t0 = time.monotonic()
    r = run_check("down", 2, 0.2, server="/no_ikdiffuser_node_here")
    assert time.monotonic() - t0 < 60
    assert r["codes"] == [COMMUNICATION_FAILURE] * 2
    assert max(r["ms"]) <= 200 + 20
    assert "/no_ikdiffuser_node_here/get_ik_solutions is not available: is ikdiffuser_node running?" in r["log"]


def test_ik_inside_a_callback_of_the_host_node(node):
    """IK called from a callback of the host node's executor, as move_group's /compute_ik does: the plugin's
    client is spun by its own executor, so there is no deadlock (moveit/moveit2#3633)."""
    r = run_check("in_callback", 5, 1.0)
    assert r["solved"] == r["targets"]
