"""`ikdiffuser train` for any robot defaults to the recipe of the shipped models; robot training
configs name only what differs from it (`extends: recipe.yaml`)."""

import argparse
from pathlib import Path

import pytest
import torch
import yaml

from ikdiffuser_ros.model.checkpoint import load_checkpoint
from ikdiffuser_ros.robots import load_robot
from ikdiffuser_ros.training.trainer import TrainConfig, _model_and_ema, config_from_args

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted(p.name for p in (ROOT / "models").iterdir() if (p / "card.json").is_file())


def _args(robot: str, config=None) -> argparse.Namespace:
    return argparse.Namespace(robot=robot, config=config, data=None, out=None, max_steps=None, max_minutes=1.0,
                              device=None, seed=None, threads=None, init_from=None, precision=None, lr=None)


def test_a_robot_without_its_own_config_gets_the_recipe(tmp_path):
    robot_yaml = tmp_path / "my_arm.yaml"
    robot_yaml.write_text((ROOT / "config" / "robots" / "panda.yaml").read_text())
    config = config_from_args(_args(str(robot_yaml)))
    recipe = TrainConfig.from_yaml(ROOT / "config" / "training" / "recipe.yaml")
    assert (config.model["type"], config.model["fk_feedback"], config.reject_self_collision, config.collision_filter) == \
        ("IKMLPDenoiser", True, True, "fcl")
    assert config.model == recipe.model and config.max_minutes == 1.0 and config.out_dir == "runs/my_arm"


def test_robot_configs_extend_the_recipe_and_override_only_what_differs():
    recipe = yaml.safe_load((ROOT / "config" / "training" / "recipe.yaml").read_text())
    for path in sorted((ROOT / "config" / "training").glob("*.yaml")):
        if path.name == "recipe.yaml":
            continue
        own = yaml.safe_load(path.read_text())
        assert own.pop("extends") == "recipe.yaml", path.name
        assert own.pop("robot") == path.stem
        assert not {k: v for k, v in own.items() if recipe.get(k) == v}, f"{path.name} restates the recipe"
        assert TrainConfig.from_yaml(path).model["type"] == "IKMLPDenoiser"


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_model_continues_with_its_training_config(name):
    """`ikdiffuser train --robot R --resume-from models/R` builds the shipped network: its training config
    (or the recipe) gives the card's architecture, chains included."""
    robot = load_robot(name)
    config = config_from_args(_args(name))
    model, _ = _model_and_ema(config, robot, torch.device("cpu"))
    assert load_checkpoint(ROOT / "models" / name, robot).denoiser.config == model.config


def test_a_multi_arm_robot_gets_the_factorized_network_and_a_single_arm_the_dense_one():
    """The recipe's ``factorize``: one branch of units per end effector's own joints where there are several."""
    for name, factorized in (("pr2", True), ("ur5", False)):
        robot = load_robot(name)
        model, _ = _model_and_ema(config_from_args(_args(name)), robot, torch.device("cpu"))
        assert model.config.factorize is factorized, name
