"""Planning groups (kinematics/groups.py): SRDF groups, robot-config and parameter groups, their joints."""

from __future__ import annotations

import pytest

from ikdiffuser_ros.errors import UnknownGroupError
from ikdiffuser_ros.kinematics.frames import rigid_offsets
from ikdiffuser_ros.kinematics.groups import (TRUNK, build_groups, find_group, independent_chains, trunk_and_branches,
                                            variables_moving)
from ikdiffuser_ros.robots import load_robot


@pytest.fixture(scope="module")
def baxter():
    return load_robot("baxter")  # its SRDF has no usable groups


@pytest.fixture(scope="module")
def dual():
    return load_robot("dual_ur5_mobile")  # the repo's SRDF: arms, torso, whole body (planar base)


def test_srdf_groups_and_their_joints(dual):
    groups = build_groups(dual, {}, {}, rigid_offsets(dual))
    left, body = groups["left_arm"], groups["whole_body"]
    assert left.tips == ("left_tool0",) and left.source == "srdf"
    assert [dual.joint_names[i] for i in left.joints] == [n for n in dual.joint_names if n.startswith("left_")]
    assert set(variables_moving(dual, ["left_tool0"])) >= set(left.joints)  # the tool also moves with base, waist
    assert body.tips == ("left_tool0", "right_tool0") and len(body.joints) == dual.n_joints  # base_joint/x, y, theta


def test_config_and_parameter_groups_add_and_override(baxter):
    tips = rigid_offsets(baxter)
    groups = build_groups(baxter, {"both": ("left_gripper", "right_gripper"), "left": ("left_gripper",)},
                          {"both": ("right_gripper",)}, tips)
    assert groups["both"].tips == ("right_gripper",) and groups["both"].source == "parameter"  # later wins
    assert groups["left"].source == "robot config"
    assert [baxter.joint_names[i] for i in groups["left"].joints] == \
        [n for n in baxter.joint_names if n.startswith("left_")]


class _Warnings(list):
    """A logger stand-in (build_groups takes anything with ``warning`` and ``debug``) that keeps the warnings."""

    def warning(self, message: str) -> None:
        self.append(message)

    def debug(self, message: str) -> None:
        pass


def test_a_group_on_links_that_are_no_tips_is_skipped_with_a_warning(baxter):
    warnings = _Warnings()
    groups = build_groups(baxter, {"bad": ("left_lower_forearm",)}, {}, rigid_offsets(baxter), warnings)
    assert "bad" not in groups and any("not end effectors of the model" in w for w in warnings)


def test_unknown_group_lists_the_known_ones(dual):
    groups = build_groups(dual, {}, {}, rigid_offsets(dual))
    with pytest.raises(UnknownGroupError) as info:
        find_group(groups, "torso")
    assert "left_arm" in str(info.value) and "whole_body" in str(info.value)


def test_independent_chains_split_end_effectors_that_share_no_joint(baxter, dual):
    """baxter's arms share no joint (two chains); dual_ur5_mobile's share the base and torso (one); talos's
    hands share the torso and each foot is alone (three)."""
    joints, ees = independent_chains(baxter)
    assert ees == [0, 1]
    for e, ee in enumerate(baxter.end_effectors):
        assert {joints[j] for j in variables_moving(baxter, [ee])} == {e}
    assert independent_chains(dual) == ([0] * dual.n_joints, [0, 0])
    talos = load_robot("talos")
    joints, ees = independent_chains(talos)
    assert sorted(set(ees)) == [0, 1, 2] and ees[0] == ees[1] and len({ees[1], ees[2], ees[3]}) == 3
    assert sum(g == ees[2] for g in joints) == 6 and sum(g == ees[3] for g in joints) == 6  # a leg each


def test_trunk_and_branches(baxter, dual):
    """A branch per end effector, the joints that move several (a mobile base, a waist, a torso) the trunk:
    baxter as its independent chains; dual_ur5_mobile's base and waist under two arms; talos's torso under
    both hands, a leg per foot; a single arm one branch."""
    assert trunk_and_branches(baxter) == independent_chains(baxter)
    assert trunk_and_branches(dual) == ([TRUNK] * 4 + [0] * 6 + [1] * 6, [0, 1])
    talos = load_robot("talos")
    joints, ees = trunk_and_branches(talos)
    assert ees == [0, 1, 2, 3] and joints[:2] == [TRUNK, TRUNK]
    assert [joints.count(g) for g in range(4)] == [7, 7, 6, 6]
    panda = load_robot("panda")
    assert trunk_and_branches(panda) == ([0] * panda.n_joints, [0])
