"""Pipeline tests: the shipped baxter and dual_ur5_mobile models with the exact collision checker, one torch thread."""

from __future__ import annotations

from pathlib import Path

import pytest

MODELS = Path(__file__).resolve().parents[2] / "models"


@pytest.fixture(scope="session", autouse=True)
def _one_thread(one_torch_thread_session):
    """One torch thread for the whole session (timings comparable to the node's)."""


def _pipeline(robot_name: str, **config):
    from ikdiffuser_ros.pipeline import IKPipeline, PipelineConfig

    return IKPipeline.from_robot(robot_name, MODELS / robot_name, config=PipelineConfig(**config))


@pytest.fixture(scope="session")
def baxter_pipeline():
    return _pipeline("baxter")


@pytest.fixture(scope="session")
def dual_pipeline():
    return _pipeline("dual_ur5_mobile")
