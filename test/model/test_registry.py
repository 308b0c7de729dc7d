"""The checkpoint search path (model/registry.py): $IKDIFFUSER_MODEL_PATH, then the user folder
($XDG_DATA_HOME/ikdiffuser/models), then the package's models/; a robot's checkpoint is the first whose
card fingerprint matches, so a model shipped into the user folder is found from any directory."""
from __future__ import annotations

import shutil

import pytest

from ikdiffuser_ros.errors import CheckpointError
from ikdiffuser_ros.model.registry import checkpoint_roots, find_checkpoint, user_models_dir
from ikdiffuser_ros.resources import package_share


def test_search_order(tmp_path, monkeypatch):
    env_a, env_b, data = tmp_path / "a", tmp_path / "b", tmp_path / "data"
    for folder in (env_a, env_b, data / "ikdiffuser" / "models"):
        folder.mkdir(parents=True)
    monkeypatch.setenv("IKDIFFUSER_MODEL_PATH", f"{env_a}:{tmp_path / 'missing'}:{env_b}")
    monkeypatch.setenv("XDG_DATA_HOME", str(data))
    assert user_models_dir() == data / "ikdiffuser" / "models"
    roots = checkpoint_roots()
    assert roots[:4] == [env_a, env_b, data / "ikdiffuser" / "models", package_share() / "models"]


def test_user_default_folder_without_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert user_models_dir() == tmp_path / ".local" / "share" / "ikdiffuser" / "models"


def test_a_model_in_the_user_folder_is_found_first(tmp_path, monkeypatch, panda):
    monkeypatch.delenv("IKDIFFUSER_MODEL_PATH", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    mine = tmp_path / "ikdiffuser" / "models" / "my_panda"
    mine.mkdir(parents=True)
    shutil.copy(package_share() / "models" / "panda" / "card.json", mine)
    monkeypatch.chdir(tmp_path)
    assert find_checkpoint(panda) == mine


def test_no_match_says_where_to_put_one(tmp_path, monkeypatch):
    from ikdiffuser_ros.robots import load_robot

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    (tmp_path / "robot.yaml").write_text(
        "urdf: package://example-robot-data/robots/ur_description/urdf/ur3_robot.urdf\nend_effectors: [tool0]\n")
    with pytest.raises(CheckpointError) as info:
        find_checkpoint(load_robot(tmp_path / "robot.yaml"))
    message = str(info.value)
    assert "no checkpoint for robot 'robot'" in message and str(user_models_dir()) in message
    assert "ikdiffuser ship" in message
