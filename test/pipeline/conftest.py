"""Pipeline tests: the shipped baxter and dual_ur5_mobile models with the exact collision checker, one torch thread."""

from __future__ import annotations

from pathlib import Path

import pytest

MODELS = Path(__file__).resolve().parents[2] / "models"


@pytest.fixture(scope="session", autouse=True)
def _one_thread(one_torch_thread_session):
    """One torch thread for the whole session (timings comparable to the node's)."""


def _pipeline(robot_name: str, **config):
    from ikdiffuser_ros.collision.fcl_checker import CollisionChecker
    from ikdiffuser_ros.kinematics.frames import rigid_offsets
    from ikdiffuser_ros.kinematics.groups import build_groups
    from ikdiffuser_ros.pipeline import IKPipeline, PipelineConfig
    from ikdiffuser_ros.robots import load_robot, robot_config
    from ikdiffuser_ros.solver import IKDiffuserSolver

    robot = load_robot(robot_name)
    solver = IKDiffuserSolver.from_checkpoint(MODELS / robot_name, robot)
    groups = build_groups(robot, robot_config(robot_name).groups or {}, {}, rigid_offsets(robot))
    pipeline = IKPipeline(solver, CollisionChecker(robot), PipelineConfig(**config), groups)
    pipeline.warmup()
    return pipeline


@pytest.fixture(scope="session")
def baxter_pipeline():
    return _pipeline("baxter")


@pytest.fixture(scope="session")
def dual_pipeline():
    return _pipeline("dual_ur5_mobile")
