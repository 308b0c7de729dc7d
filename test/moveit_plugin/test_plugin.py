"""The MoveIt kinematics plugin (moveit_plugin/) through MoveIt's own code paths, against a running node: Baxter.

``plugin_check`` (moveit_plugin/test/plugin_check.cpp, built with the plugin by ``make setup`` when
../shared/moveit_src exists) builds a ``moveit::core::RobotModel`` from Baxter's URDF and
baxter_arms.srdf (left_arm, right_arm and the two-tip both_arms group), loads the plugin with
``pluginlib::ClassLoader<kinematics::KinematicsBase>("moveit_core", ...)`` as MoveIt's
kinematics_plugin_loader does, and prints one JSON line per check (plugin_helpers.py). An
``ikdiffuser_node`` for Baxter (the shipped checkpoint, else a tiny one trained here) runs as its own
process. A mobile base (planar joint): test_plugin_whole_body.py.
"""
from __future__ import annotations

import sys
import time
from functools import partial
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from plugin_helpers import CHECK, COMMUNICATION_FAILURE, NOT_BUILT, assert_solved_as_directly, run_check  # noqa: E402

pytestmark = pytest.mark.ros

ROBOT, NODE = "baxter", "ikd_plugin_test_node"  # the node fixture's (conftest.py)

if not CHECK.is_file():
    pytest.skip(NOT_BUILT, allow_module_level=True)

run_check = partial(run_check, ROBOT, server=f"/{NODE}")


def test_two_tip_targets_solved_and_verified_by_moveit_fk(node, folder):
    """Held-out both_arms targets: the plugin (compute_ik, no callback) solves what a direct compute_ik call
    with the same request solves, verified by MoveIt's FK, and adds little latency."""
    r = run_check("solve", 30, 1.0, folder)
    assert_solved_as_directly(r)


def test_callback_rejecting_first_solutions_gets_a_later_one_in_one_request(node, folder):
    r = run_check("reject", 20, 1.0, folder, arg=3)
    assert r["solved"] == r["targets"]
    assert r["last_accepted"] == r["solved"], "the 4th candidate (the first the callback accepts) is returned"
    assert r["callback_calls"] == 4 * r["solved"]
    assert r["requests"] == r["targets"], "one get_ik_solutions request per searchPositionIK"
    assert r["verified"] == r["solved"]


def test_callback_rejecting_half_the_solutions(node, folder):
    """A validity callback that rejects half of all solutions (those whose joint values hash odd): with
    num_solutions 16, at least 99 % of the targets are solved, each in one get_ik_solutions request."""
    r = run_check("half", 100, 1.0, folder, params={"num_solutions": 16})
    assert r["solved"] >= 0.99 * r["targets"], r
    assert r["requests"] == r["targets"]
    assert r["verified"] == r["solved"]
    assert r["last_accepted"] == r["solved"]


@pytest.mark.parametrize("timeout", [0.02, 0.1])
def test_timeout_honoured(node, timeout, folder):
    """Unreachable targets use the whole budget: the answer comes within it + 20 ms, through get_ik_solutions
    and compute_ik alike."""
    r = run_check("timeout", 10, timeout, folder)
    late = max(r["ms"]) - r["timeout_ms"]
    assert late <= 20.0, f"{late:.1f} ms late: {r['ms']}"
    assert all(code != 1 for code in r["codes"])


def test_seed_returned_when_it_solves(node, folder):
    r = run_check("seed", 10, 1.0, folder)
    assert r["solved"] == r["targets"]
    assert r["compute_ik_max_dev"] < 1e-6 and r["get_ik_solutions_max_dev"] < 1e-6, r


def test_set_from_ik_with_the_group(node, folder):
    r = run_check("setfromik", 10, 1.0, folder)
    assert r["solved"] == r["targets"] and r["verified"] == r["solved"]
    assert r["callbacks"] >= r["solved"], "MoveIt's validity callback reached the plugin"


def test_single_arm_chain(node, folder):
    r = run_check("reject", 10, 1.0, folder, arg=1, group="left_arm")
    assert r["solved"] == r["targets"] and r["verified"] == r["solved"]
    assert r["requests"] == r["targets"]


def test_node_down_is_a_clear_failure_within_the_timeout(folder):
    t0 = time.monotonic()
    r = run_check("down", 2, 0.2, folder, server="/no_ikdiffuser_node_here")
    assert time.monotonic() - t0 < 60
    assert r["codes"] == [COMMUNICATION_FAILURE] * 2
    assert max(r["ms"]) <= 200 + 20
    assert "/no_ikdiffuser_node_here/get_ik_solutions is not available: is ikdiffuser_node running?" in r["log"]


def test_ik_inside_a_callback_of_the_host_node(node, folder):
    """IK called from a callback of the host node's executor, as move_group's /compute_ik does: the plugin's
    client is spun by its own executor, so there is no deadlock (moveit/moveit2#3633)."""
    r = run_check("in_callback", 5, 1.0, folder)
    assert r["solved"] == r["targets"]


def test_floating_joint_conversions_round_trip(folder):
    """A floating joint (Baxter on a floating virtual joint; no node needed): MoveIt's trans_x..rot_w through
    compute_ik's multi_dof_joint_state transform and through the node's /x../roll variables come back as the
    same transform, the quaternion with rot_w >= 0."""
    from plugin_helpers import run_check as run

    r = run("baxter_floating", "roundtrip", 50, 1.0, folder, group="floating_left_arm", server="/no_node_needed")
    assert r["joints"] == 50
    assert r["max_translation_error"] < 1e-12 and r["max_rotation_error"] < 1e-9, r
    assert r["canonical"], r
