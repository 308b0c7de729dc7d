"""Fixtures for the solver tests: robots, a solver on a tiny briefly-trained denoiser, an independent FK."""

from __future__ import annotations

import pytest
import torch

from solvertools import tiny_loaded_model


@pytest.fixture(scope="session")
def panda_solver(panda):
    from ikdiffuser_ros.solver import IKDiffuserSolver

    return IKDiffuserSolver.from_model(tiny_loaded_model(panda), panda)


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """These tests use small batched linear algebra: on a shared 2-core machine one intra-op thread
    is ~10x faster than two fighting for cores. Session-scoped so that it is in place before the
    session-scoped solver fixture trains its tiny model; restored when the session ends."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def pk_panda_fk():
    """Independent FK of the panda TCP from pytorch_kinematics (float32 chain), or skip."""
    pk = pytest.importorskip("pytorch_kinematics")
    import contextlib
    import io
    import warnings

    from ikdiffuser_ros.robots import robot_config

    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        chain = pk.build_serial_chain_from_urdf(robot_config("panda").urdf_text(), "panda_hand_tcp")
    chain = chain.to(dtype=torch.float64)

    def fk(q: torch.Tensor) -> torch.Tensor:
        return chain.forward_kinematics(q).get_matrix()

    return fk
