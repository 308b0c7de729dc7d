"""Multi-DOF joint variable names (kinematics/joint_names.py): built and parsed in one place, agreeing
with RobotModel, joint_kinds and the planning groups; no other module parses them as strings."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from ikdiffuser_ros.kinematics import joint_names as jn
from ikdiffuser_ros.kinematics.groups import active_variables
from ikdiffuser_ros.kinematics.joint_kinds import joint_kinds
from ikdiffuser_ros.kinematics.robot_model import RobotModel

PACKAGE = Path(__file__).resolve().parents[2] / "ikdiffuser_ros"
#: String handling of the naming: axis suffix literals, ``startswith(joint + "/")``, splitting at or replacing "/".
NAME_PARSING = re.compile(r'"(theta|yaw|pitch|roll)"|/\{suffix\}|_SUFFIXES\b|\+ "/"\)|rpartition\("/"\)'
                          r'|rsplit\("/"|replace\("/"|"/" (not )?in ')

FLOATING_URDF = """<robot name="f"><link name="w"/><link name="body"/><link name="tip"/>
  <joint name="fl" type="floating"><parent link="w"/><child link="body"/></joint>
  <joint name="j1" type="revolute"><parent link="body"/><child link="tip"/><axis xyz="0 0 1"/>
    <limit lower="-1" upper="1" effort="1" velocity="1"/></joint></robot>"""


@pytest.mark.parametrize("joint_type, suffixes", [("planar", ["x", "y", "theta"]),
                                                  ("floating", ["x", "y", "z", "yaw", "pitch", "roll"]),
                                                  ("revolute", []), ("fixed", [])])
def test_axes_of_each_joint_type(joint_type, suffixes):
    assert [v.suffix for v in jn.axes(joint_type)] == suffixes


@pytest.mark.parametrize("var", jn.PLANAR + jn.FLOATING)
def test_variable_name_and_split_round_trip(var):
    name = jn.variable_name("base_joint", var.suffix)
    assert name == f"base_joint/{var.suffix}"
    assert jn.split(name) == ("base_joint", var)
    assert jn.joint_of(name) == "base_joint" and jn.axis_of(name) is var


@pytest.mark.parametrize("name", ["left_s0", "ns/elbow", "/x", "base/"])
def test_single_dof_names_are_not_split(name):
    assert jn.split(name) == (name, None)


def test_translations_are_prismatic_and_full_turn_angles_wrap():
    kinds = {v.suffix: (v.prismatic, v.wraps) for v in jn.PLANAR + jn.FLOATING}
    assert kinds == {"x": (True, False), "y": (True, False), "z": (True, False), "theta": (False, True),
                     "yaw": (False, True), "pitch": (False, False), "roll": (False, True)}


@pytest.mark.parametrize("name, flat", [("base/x", "base_x"), ("base/theta", "base_theta"), ("fl/yaw", "fl_yaw"),
                                        ("left_s0", "left_s0"), ("ns/elbow", "ns/elbow")])
def test_flat_name_of_a_variable(name, flat):
    assert jn.flat_name(name) == flat


def test_variables_of_a_joint():
    names = ["base/x", "base/y", "base/theta", "j1", "j1b", "ns/j2"]
    assert jn.variables_of("base", names) == ["base/x", "base/y", "base/theta"]
    assert jn.variables_of("j1", names) == ["j1"]
    assert jn.variables_of("ns/j2", names) == ["ns/j2"]


def test_robot_model_names_its_multi_dof_variables_with_joint_names():
    model = RobotModel.from_urdf(FLOATING_URDF, end_effectors=["tip"])
    assert model.joint_names == [jn.variable_name("fl", v.suffix) for v in jn.FLOATING] + ["j1"]
    prismatic, wrapping = joint_kinds(model)
    for i, name in enumerate(model.joint_names[:6]):
        var = jn.axis_of(name)
        assert bool(prismatic[i]) == var.prismatic and bool(wrapping[i]) == var.wraps, name
        full_turn = (float(model.lower[i]), float(model.upper[i])) == (-math.pi, math.pi)
        assert var.prismatic or full_turn == var.wraps, name
    assert active_variables(model, ["fl"]) == tuple(range(6))
    assert active_variables(model, ["j1", "fl"]) == tuple(range(7))


def test_mobile_robot_base_variables():
    from ikdiffuser_ros.robots import load_robot

    model = load_robot("mobile_baxter")
    vj = model.virtual_joint
    base = [jn.variable_name(vj.name, v.suffix) for v in jn.axes(vj.type)]
    assert base and set(base) <= set(model.joint_names)
    assert active_variables(model, [vj.name]) == tuple(model.index_of(n) for n in base)


def test_no_other_module_parses_the_names():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel == "kinematics/joint_names.py":
            continue
        offenders += [f"{rel}:{i}: {line.strip()}" for i, line in enumerate(path.read_text().splitlines(), 1)
                      if NAME_PARSING.search(line)]
    assert not offenders, "parse multi-DOF variable names with kinematics/joint_names.py:\n" + "\n".join(offenders)


def test_planar_indices_find_whole_planar_joints_only():
    names = ["arm", "base/x", "base/y", "base/theta", "fl/x", "fl/y", "fl/z", "fl/yaw", "fl/pitch", "fl/roll", "half/x"]
    assert jn.planar_indices(names) == [(1, 2, 3)]
    assert jn.planar_indices(["b/theta", "b/y", "b/x"]) == [(2, 1, 0)]
    assert jn.planar_indices(["base/x", "base/y"]) == []
