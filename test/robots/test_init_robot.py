"""``ikdiffuser init-robot`` on example-robot-data robots that are not shipped: the robot YAML (end effectors
and groups from the SRDF when it has them, else the URDF's leaf link, else a clear choice), the collision
SRDF, the sphere file and the training config, all found from the YAML; clear errors for bad input.
``ikdiffuser ship`` argument errors."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ikdiffuser_ros.cli import main as cli_main
from ikdiffuser_ros.init_robot import InitRobotError, init_robot

ROOT = Path(__file__).resolve().parents[2]
ERD = "package://example-robot-data/robots"
UR3 = f"{ERD}/ur_description/urdf/ur3_robot.urdf"
FINGER = f"{ERD}/finger_edu_description/robots/finger_edu.urdf"
FINGER_SRDF = f"{ERD}/finger_edu_description/srdf/finger_edu.srdf"
BOLT, BOLT_SRDF = f"{ERD}/bolt_description/robots/bolt.urdf", f"{ERD}/bolt_description/srdf/bolt.srdf"


@pytest.fixture(scope="module")
def ur3_dir(tmp_path_factory):
    """init-robot on UR3 (no SRDF; the end effector chosen), through the command."""
    out = tmp_path_factory.mktemp("ur3")
    assert cli_main(["init-robot", "--urdf", UR3, "--end-effectors", "tool0", "--out-dir", str(out),
                     "--samples", "500", "--no-progress"]) == 0
    return out


def test_files_written_and_found_from_the_yaml(ur3_dir):
    from ikdiffuser_ros.collision.spheres import read_sphere_file, sphere_file
    from ikdiffuser_ros.kinematics.srdf import parse_srdf
    from ikdiffuser_ros.robots import robot_config, training_config_for
    from ikdiffuser_ros.training.trainer import TrainConfig

    assert sorted(p.name for p in ur3_dir.iterdir()) == [
        "ur3.collisions.srdf", "ur3.spheres.json", "ur3.training.yaml", "ur3.yaml"]
    data = yaml.safe_load((ur3_dir / "ur3.yaml").read_text())
    assert data["urdf"] == UR3 and data["srdf"] == "ur3.collisions.srdf"
    assert data["end_effectors"] == ["tool0"] and data["groups"] == {"arm": ["tool0"]}
    config = robot_config(ur3_dir / "ur3.yaml")
    model = config.load()
    assert model.n_joints == 6 and model.end_effectors == ["tool0"]
    written = parse_srdf((ur3_dir / "ur3.collisions.srdf").read_text())
    assert written.disabled_collisions <= model.srdf.disabled_collisions
    assert len(model.srdf.disabled_collisions) > 5
    # the sphere file is found from the robot's name (what the solver has) and is current for the model
    assert sphere_file(model.name) == ur3_dir / "ur3.spheres.json"
    assert read_sphere_file(sphere_file(model.name), model) is not None
    # ikdiffuser train --robot ur3.yaml uses the training config next to it: the recipe
    assert training_config_for(str(ur3_dir / "ur3.yaml")) == ur3_dir / "ur3.training.yaml"
    own = TrainConfig.from_yaml(ur3_dir / "ur3.training.yaml")
    recipe = TrainConfig.from_yaml(ROOT / "config" / "training" / "recipe.yaml")
    assert own == recipe


def test_existing_files_are_not_overwritten_without_force(ur3_dir, capsys):
    before = (ur3_dir / "ur3.yaml").read_text()
    assert cli_main(["init-robot", "--urdf", UR3, "--end-effectors", "tool0", "--out-dir", str(ur3_dir),
                     "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "ikdiffuser init-robot: error: would overwrite" in err and "--force" in err
    assert (ur3_dir / "ur3.yaml").read_text() == before


def test_several_leaf_links_ask_for_a_choice(tmp_path, capsys):
    assert cli_main(["init-robot", "--urdf", UR3, "--out-dir", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "end effectors are ambiguous" in err and "after joint 'wrist_3_joint': ee_link, tool0" in err
    assert "--end-effectors" in err
    assert list(tmp_path.iterdir()) == []


def test_end_effectors_and_groups_from_the_srdf(tmp_path):
    result = init_robot(FINGER, [FINGER_SRDF], out_dir=tmp_path, samples=300, progress=False, log=lambda _: None)
    assert result.name == "fingeredu" and result.end_effectors == ["finger_tip_link"]
    assert "<end_effector>" in result.end_effector_source
    assert result.srdf_groups == {"leg": ["finger_tip_link"]} and result.config_groups == {}
    data = yaml.safe_load(result.robot_yaml.read_text())
    assert data["srdf"] == [FINGER_SRDF, "fingeredu.collisions.srdf"] and data["groups"] == {}


def test_several_end_effectors_get_a_group_with_all_of_them(tmp_path):
    """bolt's SRDF has a group per leg and all_legs: nothing to add. Without the SRDF: a group per foot + all."""
    with_srdf = init_robot(BOLT, [BOLT_SRDF], out_dir=tmp_path / "a", samples=200, progress=False, log=lambda _: None)
    assert with_srdf.end_effectors == ["FL_FOOT", "FR_FOOT"] and with_srdf.config_groups == {}
    assert with_srdf.srdf_groups["all_legs"] == ["FL_FOOT", "FR_FOOT"]
    bare = init_robot(BOLT, [], name="bolt_bare", end_effectors=["FL_FOOT", "FR_FOOT"], out_dir=tmp_path / "b",
                      samples=200, progress=False, log=lambda _: None)
    assert bare.config_groups == {"FL_FOOT": ["FL_FOOT"], "FR_FOOT": ["FR_FOOT"], "all": ["FL_FOOT", "FR_FOOT"]}
    from ikdiffuser_ros.robots import robot_config

    assert robot_config(bare.robot_yaml).groups["all"] == ("FL_FOOT", "FR_FOOT")


def test_malformed_urdf(tmp_path):
    bad = tmp_path / "bad.urdf"
    bad.write_text("<robot name='x'><link name='a'>")
    with pytest.raises(InitRobotError, match=f"URDF {bad}: malformed URDF"):
        init_robot(str(bad), out_dir=tmp_path / "out", progress=False, log=lambda _: None)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, message", [
    (["--urdf", "/nonexistent/robot.urdf"], "URDF '/nonexistent/robot.urdf': no such file"),
    (["--urdf", "package://no_such_pkg/robot.urdf"], "cannot resolve package 'no_such_pkg'"),
    (["--urdf", UR3, "--srdf", "/nonexistent.srdf"], "SRDF '/nonexistent.srdf': no such file"),
    (["--urdf", UR3, "--end-effectors", "tool_0"], "--end-effectors: 'tool_0' is not a link of"),
    (["--urdf", UR3, "--end-effectors", "tool0", "--name", "my robot"], "--name 'my robot'"),
    (["--urdf", UR3, "--xacro-arg", "novalue"], "--xacro-arg 'novalue': expected NAME=VALUE"),
])
def test_bad_input_is_one_clear_error(tmp_path, capsys, args, message):
    assert cli_main(["init-robot", *args, "--out-dir", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ikdiffuser init-robot: error: ") and message in err, err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_ship_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert cli_main(["ship", str(tmp_path / "nothing"), "--out", str(tmp_path / "model")]) == 2
    err = capsys.readouterr().err
    assert "ikdiffuser ship: error:" in err and "is not a training run" in err
    assert not (tmp_path / "model").exists()


def test_ship_evaluates_on_the_robot_the_run_was_trained_with(ur3_dir):
    from ikdiffuser_ros.training.model_card import robot_of_card

    card = {"robot": {"name": "ur3"}, "training": {"config": {"robot": str(ur3_dir / "ur3.yaml")}}}
    assert robot_of_card(card) == str(ur3_dir / "ur3.yaml")
    assert robot_of_card(card, "other.yaml") == "other.yaml"
    card["training"]["config"]["robot"] = str(ur3_dir / "gone.yaml")
    assert robot_of_card(card) == "ur3"  # the card's name, for a run trained by name or moved away


def test_full_turn_joints_are_named_in_a_note():
    """UR arms' +-2 pi joints: init-robot says they are learnt in one turn; panda has none."""
    from ikdiffuser_ros.init_robot import _full_turn_notes
    from ikdiffuser_ros.robots import load_robot

    (note,) = _full_turn_notes(load_robot("ur5"))
    assert note.startswith("shoulder_pan_joint, shoulder_lift_joint, wrist_1_joint") and "one turn" in note
    assert _full_turn_notes(load_robot("panda")) == []
