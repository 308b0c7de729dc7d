"""Fixtures of the model tests: small robots, an untrained tiny LoadedModel."""

from __future__ import annotations

import pytest
import torch

from ikdiffuser_ros.model.checkpoint import LoadedModel
from ikdiffuser_ros.model.denoiser import DenoiserConfig, IKDenoiser
from ikdiffuser_ros.model.normalizer import Normalizer
from ikdiffuser_ros.model.schedule import NoiseSchedule, ScheduleConfig


def make_loaded(robot, seed: int = 0, num_train_steps: int = 20) -> LoadedModel:
    """An untrained tiny model for ``robot`` (random weights, normalizer fitted on FK samples)."""
    from ikdiffuser_ros.data.generate import sample_fk

    torch.manual_seed(seed)
    n, E = len(robot.joint_names), len(robot.end_effectors)
    model = IKDenoiser(DenoiserConfig(n, E, d_model=32, n_heads=2, n_layers=1, ff_mult=2)).eval()
    pos = sample_fk(robot, 2000, torch.Generator().manual_seed(seed))[1]
    normalizer = Normalizer.fit(robot.lower, robot.upper, pos)
    return LoadedModel(model, normalizer, NoiseSchedule(ScheduleConfig(num_train_steps=num_train_steps)), {}, robot)


@pytest.fixture(autouse=True)
def _single_thread():
    """Small tensors: one intra-op thread is faster and avoids oversubscribing a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(name="make_loaded")
def _make_loaded_fixture():
    return make_loaded
