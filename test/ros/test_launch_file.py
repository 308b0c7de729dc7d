"""launch/ikdiffuser.launch.py is valid Python defining generate_launch_description, and with the
real launch/launch_ros it builds a description declaring the documented arguments (running it is
in test_launch_process.py)."""
from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

LAUNCH = Path(__file__).resolve().parents[2] / "launch" / "ikdiffuser.launch.py"


def test_launch_file_parses_and_defines_generate_launch_description():
    tree = ast.parse(LAUNCH.read_text())
    names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in names


def test_launch_description_declares_its_arguments():
    reason = "launch_ros not installed: `make setup` installs it when ../shared/wheels/launch exists"
    pytest.importorskip("launch", reason=reason)
    pytest.importorskip("launch_ros.actions", reason=reason)
    spec = importlib.util.spec_from_file_location("ikdiffuser_launch", LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    arguments = {a.name: a.default_value for a in module.generate_launch_description().get_launch_arguments()}
    assert set(arguments) == {"robot", "params_file", "device", "model_path", "namespace", "node_name", "log_level",
                              "use_sim_time"}
    assert all(default is not None for default in arguments.values())  # all optional
