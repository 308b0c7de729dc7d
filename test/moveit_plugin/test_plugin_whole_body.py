"""The MoveIt kinematics plugin on a mobile base: dual_ur5_mobile (config/robots/dual_ur5_mobile.yaml), two
UR5 arms and a waist on a planar base joint (the SRDF's virtual joint base_joint, variables base_joint/x,
/y, /theta), with the SRDF config/srdf/dual_ur5_mobile.srdf (whole_body = base_joint + torso_and_arms).

The plugin serves whole_body: MoveIt's variable vector of the group holds the planar joint's x, y, theta;
the plugin sends them to the node as a multi_dof_joint_state transform (compute_ik) or as base_joint/x, /y,
/theta variables (get_ik_solutions) and reads them back from the answer. Every solution is checked by
MoveIt's own FK (RobotState). Held-out states draw the base's x, y in [-1, 1] m, the node's limits.
"""
from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from plugin_helpers import CHECK, NOT_BUILT, assert_solved_as_directly, run_check  # noqa: E402

pytestmark = pytest.mark.ros

ROBOT, NODE = "dual_ur5_mobile", "ikd_plugin_mobile_node"  # the node fixture's (conftest.py)

if not CHECK.is_file():
    pytest.skip(NOT_BUILT, allow_module_level=True)

run_check = partial(run_check, ROBOT, server=f"/{NODE}", group="whole_body")


def test_whole_body_targets_solved_and_verified_by_moveit_fk(node, folder):
    """Held-out two-tip targets of the whole body (base, waist, both arms: 16 variables): the plugin solves
    what a direct compute_ik call with the same request solves, verified by MoveIt's FK."""
    r = run_check("solve", 30, 1.0, folder)
    assert "16 variables" in r["log"], r["log"][-2000:]
    assert_solved_as_directly(r)


def test_whole_body_callback_walks_get_ik_solutions(node, folder):
    """With a validity callback: one get_ik_solutions request, the base read back from each solution's
    base_joint/x, /y, /theta; the 3rd solution returned, verified by MoveIt's FK."""
    r = run_check("reject", 10, 1.0, folder, arg=2)
    assert r["solved"] == r["targets"]
    assert r["last_accepted"] == r["solved"]
    assert r["requests"] == r["targets"]
    assert r["verified"] == r["solved"], r


def test_whole_body_seed_returned_when_it_solves(node, folder):
    """A seed that solves the poses comes back exactly, base included, through both requests."""
    r = run_check("seed", 5, 1.0, folder)
    assert r["solved"] == r["targets"]
    assert r["compute_ik_max_dev"] < 1e-6 and r["get_ik_solutions_max_dev"] < 1e-6, r


def test_set_from_ik_with_the_whole_body(node, folder):
    r = run_check("setfromik", 10, 1.0, folder)
    assert r["solved"] == r["targets"] and r["verified"] == r["solved"], r
    assert r["callbacks"] >= r["solved"]


def test_set_from_ik_arms_on_a_moved_base(node, folder):
    """torso_and_arms from a state whose base (outside the group) is somewhere random: the plugin sends the
    caller's state, the base as a multi_dof_joint_state transform, which the node accepts (it refuses an
    unknown or malformed joint with INVALID_ROBOT_STATE); the answer, verified by MoveIt's FK at that state.
    The poses are in the group's base frame (torso_link), so the base's value itself does not change them:
    it matters to the node's collision checks (avoid_collisions)."""
    r = run_check("setfromik", 10, 1.0, folder, group="torso_and_arms")
    assert r["solved"] == r["targets"] and r["verified"] == r["solved"], r


def test_arms_group_with_a_callback_gets_many_solutions_of_its_group(node, folder):
    """torso_and_arms (the base outside the group) with a validity callback: one get_ik_solutions request
    naming the group (only its joints move), so the callback walks several solutions."""
    r = run_check("reject", 10, 1.0, folder, arg=2, group="torso_and_arms")
    assert r["solved"] == r["targets"]
    assert r["last_accepted"] == r["solved"], "the 3rd solution (the first the callback accepts) is returned"
    assert r["requests"] == r["targets"]
    assert r["verified"] == r["solved"], r


def test_consistency_limits_through_both_requests(node, folder):
    """MoveIt's consistency limits (0.3 around a seed near the target's state, base x, y, theta included) go to
    the node as joint constraints, through compute_ik (no callback) and get_ik_solutions (a callback): every
    variable of every answer within its limit."""
    r = run_check("consistency", 10, 1.0, folder, arg=30)
    assert r["solved"] == [r["targets"]] * 2, r
    assert r["within"] == r["solved"], r
    assert r["verified"] == 2 * r["targets"], r


def test_planar_joint_conversions_round_trip(folder):
    """The planar base at random x, y, theta through both wire forms comes back as the same transform, theta in
    [-pi, pi] (no node needed)."""
    r = run_check("roundtrip", 50, 1.0, folder)
    assert r["joints"] == 50
    assert r["max_translation_error"] < 1e-12 and r["max_rotation_error"] < 1e-9, r
    assert r["canonical"], r
