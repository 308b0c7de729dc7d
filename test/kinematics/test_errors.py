"""Bad descriptions and inputs raise ValueError (RobotDescriptionError) naming the culprit."""

from __future__ import annotations

import pytest
import torch

from ikdiffuser_ros.errors import RobotDescriptionError
from ikdiffuser_ros.kinematics.robot_model import RobotModel


def urdf(body: str, name: str = "toy") -> str:
    return f'<robot name="{name}">{body}</robot>'


def link(name: str) -> str:
    return f'<link name="{name}"/>'


def joint(name: str, parent: str, child: str, jtype: str = "revolute", extra: str | None = None) -> str:
    if extra is None:
        extra = '<axis xyz="0 0 1"/><limit lower="-1" upper="1" effort="1" velocity="1"/>'
    return (f'<joint name="{name}" type="{jtype}"><parent link="{parent}"/><child link="{child}"/>'
            f'{extra}</joint>')


GOOD = urdf(link("base") + link("l1") + link("tip") + joint("j1", "base", "l1") + joint("j2", "l1", "tip"))


def raises_naming(*needles, fn, exc=RobotDescriptionError):
    with pytest.raises(exc) as info:
        fn()
    assert isinstance(info.value, ValueError)
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))


def test_good_toy_builds():
    model = RobotModel.from_urdf(GOOD, end_effectors=["tip"])
    assert model.joint_names == ["j1", "j2"]


BAD_URDFS = {
    "malformed xml": ("<robot name='x'><link name='a'></robot>", ["malformed URDF XML", "line 1"]),
    "root not robot": ('<model name="x"><link name="a"/></model>', ["<model>", "<robot>"]),
    "missing link": (urdf(link("base") + joint("j_bad", "base", "ghost_link")), ["j_bad", "ghost_link"]),
    "two parents": (urdf(link("base") + link("a") + link("b")
                         + joint("ja", "base", "b") + joint("jb", "a", "b") + joint("jc", "base", "a")),
                    ["'b'", "ja", "jb"]),
    "cycle": (urdf(link("base") + link("c1") + link("c2")
                   + joint("jc1", "c2", "c1") + joint("jc2", "c1", "c2")), ["c1", "c2"]),
    "two roots": (urdf(link("root_a") + link("root_b") + link("x") + joint("j", "root_a", "x")),
                  ["root_a", "root_b"]),
    "unknown type": (urdf(link("base") + link("a") + joint("j_sph", "base", "a", "spherical")),
                     ["j_sph", "spherical"]),
    "revolute without limit": (urdf(link("base") + link("a") + joint("j_nolim", "base", "a", extra='<axis xyz="0 0 1"/>')),
                               ["j_nolim", "limit"]),
    "mimic of unknown joint": (urdf(link("base") + link("a") + joint(
        "j_mim", "base", "a", extra='<axis xyz="0 0 1"/><limit lower="-1" upper="1"/><mimic joint="j_nobody"/>')),
        ["j_mim", "j_nobody"]),
    "bad origin": (urdf(link("base") + link("a") + joint(
        "j_orig", "base", "a", extra='<origin xyz="0 zero 0"/><axis xyz="0 0 1"/><limit lower="-1" upper="1"/>')),
        ["j_orig", "origin"]),
}


@pytest.mark.parametrize("case", list(BAD_URDFS))
def test_bad_urdf(case):
    xml, needles = BAD_URDFS[case]
    raises_naming(*needles, fn=lambda: RobotModel.from_urdf(xml, end_effectors=["base"]))


def test_unknown_end_effector():
    raises_naming("no_such_link", fn=lambda: RobotModel.from_urdf(GOOD, end_effectors=["no_such_link"]))


def test_unknown_link_in_fk_links():
    model = RobotModel.from_urdf(GOOD, end_effectors=["tip"])
    raises_naming("not_a_link", fn=lambda: model.fk_links(torch.zeros(2), ["tip", "not_a_link"]))


def test_joint_limits_override_of_unknown_joint():
    raises_naming("j_unknown", fn=lambda: RobotModel.from_urdf(GOOD, end_effectors=["tip"],
                                                               joint_limits={"j_unknown": [-1, 1]}))


def test_joint_limits_override_bad_range():
    raises_naming("j1", fn=lambda: RobotModel.from_urdf(GOOD, end_effectors=["tip"], joint_limits={"j1": [1, -1]}))


def test_locked_joint_unknown():
    raises_naming("j_locked", fn=lambda: RobotModel.from_urdf(GOOD, end_effectors=["tip"], locked_joints=["j_locked"]))


def test_xacro_error_names_file_and_problem(tmp_path):
    path = tmp_path / "broken_robot.urdf.xacro"
    path.write_text('<robot name="b" xmlns:xacro="http://www.ros.org/wiki/xacro">'
                    '<link name="${undefined_property_xyz}"/></robot>')
    raises_naming("broken_robot.urdf.xacro", "undefined_property_xyz",
                  fn=lambda: RobotModel.from_files(path, end_effectors=["x"]))


def test_missing_file(tmp_path):
    raises_naming("nowhere.urdf", fn=lambda: RobotModel.from_files(tmp_path / "nowhere.urdf", end_effectors=["x"]))


@pytest.mark.parametrize("shape", [(3,), (4, 1), (2, 3, 5), (0,)])
def test_bad_q_shape(shape):
    model = RobotModel.from_urdf(GOOD, end_effectors=["tip"])
    for fn in (model.fk, model.jacobian, model.fk_and_jacobian):
        raises_naming("2", str(tuple(shape)), fn=lambda: fn(torch.zeros(shape)), exc=ValueError)


def test_scalar_q():
    model = RobotModel.from_urdf(GOOD, end_effectors=["tip"])
    raises_naming("2", "()", fn=lambda: model.fk(torch.tensor(0.5)), exc=ValueError)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_integer_q_is_rejected(dtype):
    """Integer joint values would cast the kinematic constants to integers (silently wrong)."""
    model = RobotModel.from_urdf(GOOD, end_effectors=["tip"])
    for fn in (model.fk, model.fk_and_jacobian, lambda q: model.fk_links(q, ["l1"])):
        raises_naming(str(dtype), fn=lambda: fn(torch.zeros(3, 2, dtype=dtype)), exc=ValueError)
