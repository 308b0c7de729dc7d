"""The robot-config schema (ikdiffuser_ros/robots.py): unknown keys, wrong types and bad ranges are
refused at read time with the file, the key and what is allowed; names that are not links or joints of
the URDF at load time, with the closest one. Companion files (spheres, training config) of a robot YAML
outside config/robots are the ones next to it."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ikdiffuser_ros.robots import (ROBOT_KEYS, RobotConfig, RobotConfigError, available_robots, robot_config,
                                   training_config_for)

ROOT = Path(__file__).resolve().parents[2]
UR3 = "package://example-robot-data/robots/ur_description/urdf/ur3_robot.urdf"


def write(tmp_path: Path, text: str, name: str = "my_arm.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def ur3_yaml(tmp_path: Path, **extra) -> Path:
    return write(tmp_path, yaml.safe_dump({"urdf": UR3, "end_effectors": ["tool0"], **extra}))


def test_every_shipped_robot_config_passes_the_schema():
    for name in available_robots():
        config = robot_config(name)
        assert config.name == name and config.in_package
        assert config.sphere_file == ROOT / "config" / "spheres" / f"{name}.json"


@pytest.mark.parametrize("typo, closest", [("joint_limit", "joint_limits"), ("locked_joint", "locked_joints"),
                                           ("end_effector", "end_effectors"), ("srfd", "srdf")])
def test_unknown_key_names_file_key_closest_and_allowed_keys(tmp_path, typo, closest):
    path = write(tmp_path, f"urdf: {UR3}\n{typo}: []\n")
    with pytest.raises(RobotConfigError) as info:
        robot_config(path)
    message = str(info.value)
    assert str(path) in message and f"unknown key {typo!r}" in message
    assert f"did you mean {closest!r}?" in message
    assert "allowed keys: " + ", ".join(ROBOT_KEYS) in message


@pytest.mark.parametrize("text, expected", [
    ("- urdf: a\n", "expected a mapping of keys"),
    ("name: x\n", "lacks 'urdf'"),
    ("urdf: [a, b]\n", "urdf: expected a file"),
    ("urdf: /nonexistent/robot.urdf\n", "urdf: '/nonexistent/robot.urdf' is not a file"),
    ("urdf: missing.urdf\n", "is not a file"),
    ("urdf: package://no_such_package/robot.urdf\n", "cannot resolve package 'no_such_package'"),
    (f"urdf: {UR3}\nname: 3\n", "name: 3 is not a name"),
    (f"urdf: {UR3}\nname: my robot\n", "is not a name"),
    (f"urdf: {UR3}\nsrdf: 5\n", "srdf: expected a file or a list of files"),
    (f"urdf: {UR3}\nsrdf: /nonexistent.srdf\n", "srdf: '/nonexistent.srdf' is not a file"),
    (f"urdf: {UR3}\nend_effectors: tool0\n", "end_effectors: expected a list of names"),
    (f"urdf: {UR3}\nend_effectors: [tool0, tool0]\n", "end_effectors: listed twice: ['tool0']"),
    (f"urdf: {UR3}\nlocked_joints: {{a: 1}}\n", "locked_joints: expected a list of names"),
    (f"urdf: {UR3}\ngroups: [tool0]\n", "groups: expected a mapping of group name -> [links]"),
    (f"urdf: {UR3}\ngroups: {{arm: tool0}}\n", "groups: arm: expected a list of names"),
    (f"urdf: {UR3}\nxacro_args: {{a: [1]}}\n", "xacro_args: a: expected a string or number"),
    (f"urdf: {UR3}\njoint_limits: {{elbow_joint: 1.0}}\n", "joint_limits: elbow_joint: expected [lower, upper]"),
    (f"urdf: {UR3}\njoint_limits: {{elbow_joint: [-pi, pi]}}\n", "two finite numbers in rad or m"),
    (f"urdf: {UR3}\njoint_limits: {{elbow_joint: [0, .inf]}}\n", "two finite numbers"),
    (f"urdf: {UR3}\njoint_limits: {{elbow_joint: [true, 1]}}\n", "two finite numbers"),
    (f"urdf: {UR3}\njoint_limits: {{elbow_joint: [1, 1]}}\n", "elbow_joint: lower 1 is not below upper 1"),
    (f"urdf: {UR3}\njoint_limits: {{elbow_joint: [1, 2, 3]}}\n", "expected [lower, upper]"),
    ("urdf: [unclosed\n", "cannot read robot config"),
])
def test_bad_values_are_refused_when_read(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(RobotConfigError) as info:
        robot_config(path)
    assert str(path) in str(info.value) and expected in str(info.value), str(info.value)


@pytest.mark.parametrize("extra, expected", [
    ({"end_effectors": ["tool1"]}, "end_effectors: 'tool1' is not a link of ur3_robot.urdf (did you mean 'tool0'?)"),
    ({"groups": {"arm": ["tool_0"]}}, "groups: arm: 'tool_0' is not a link of ur3_robot.urdf (did you mean 'tool0'?)"),
    ({"groups": {"arm": ["forearm_link"]}}, "groups: arm: 'forearm_link' is neither an end effector nor rigidly "
                                            "attached to one"),
    ({"locked_joints": ["elbow"]}, "locked_joints: 'elbow' is not a joint of ur3_robot.urdf "
                                   "(did you mean 'elbow_joint'?)"),
    ({"joint_limits": {"elbow_jiont": [0, 1]}}, "joint_limits: 'elbow_jiont' is not a joint of ur3_robot.urdf "
                                                "(did you mean 'elbow_joint'?)"),
    ({"joint_limits": {"ee_fixed_joint": [0, 1]}}, "joint_limits names 'ee_fixed_joint', which is not an active joint"),
])
def test_names_that_are_not_in_the_urdf_are_refused_when_loaded(tmp_path, extra, expected):
    path = ur3_yaml(tmp_path, **extra)
    config = robot_config(path)  # reading does not parse the URDF
    with pytest.raises(RobotConfigError) as info:
        config.load()
    assert str(path) in str(info.value) and expected in str(info.value), str(info.value)


def test_a_good_config_loads_with_its_overrides(tmp_path):
    path = ur3_yaml(tmp_path, name="ur3_test", joint_limits={"elbow_joint": [-1.5, 1.5]},
                    groups={"arm": ["tool0"], "flange": ["ee_link"]})
    config = robot_config(path)
    model = config.load()
    assert model.name == "ur3_test" and model.end_effectors == ["tool0"]
    i = model.joint_names.index("elbow_joint")
    assert (float(model.lower[i]), float(model.upper[i])) == (-1.5, 1.5)
    assert config.groups == {"arm": ("tool0",), "flange": ("ee_link",)}


def test_companion_files_of_a_yaml_outside_config_robots_are_next_to_it(tmp_path):
    from ikdiffuser_ros.collision.spheres import sphere_file

    path = ur3_yaml(tmp_path, name="ur3_companions")
    config = robot_config(path)
    assert not config.in_package
    assert config.sphere_file == tmp_path / "my_arm.spheres.json"
    assert config.training_config == tmp_path / "my_arm.training.yaml"
    assert sphere_file("ur3_companions") == tmp_path / "my_arm.spheres.json"  # found from the name alone
    # the training config: the robot's own when it exists, else the recipe
    recipe = ROOT / "config" / "training" / "recipe.yaml"
    assert training_config_for(str(path)) == recipe
    (tmp_path / "my_arm.training.yaml").write_text("extends: package://ikdiffuser_ros/config/training/recipe.yaml\n")
    assert training_config_for(str(path)) == tmp_path / "my_arm.training.yaml"
    assert training_config_for("baxter") == ROOT / "config" / "training" / "baxter.yaml"
    assert training_config_for("pr2") == recipe


def test_a_package_config_read_by_path_keeps_the_package_companions():
    config = RobotConfig.from_yaml(ROOT / "config" / "robots" / "baxter.yaml")
    assert config.in_package and config.sphere_file == ROOT / "config" / "spheres" / "baxter.json"
    assert config.training_config == ROOT / "config" / "training" / "baxter.yaml"


def test_unknown_robot_name_suggests_the_closest(tmp_path):
    with pytest.raises(RobotConfigError, match=r"unknown robot 'baxtr' \(did you mean 'baxter'\?\)"):
        robot_config("baxtr")
    with pytest.raises(RobotConfigError, match="does not exist"):
        robot_config(tmp_path / "none.yaml")
