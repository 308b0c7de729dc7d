"""Session-wide test setup.

- Each pytest session gets its own ROS_DOMAIN_ID (unless one is set), so
  parallel runs on one host don't see each other's nodes. Domain ids 20..99
  stay clear of the ids Linux's ephemeral port range collides with (> 101).
- With a colcon install tree on PYTHONPATH (scripts/ros_env.sh), the rosidl
  generated sub-packages ikdiffuser_ros.msg / ikdiffuser_ros.srv live only in
  install/; the source tree (on sys.path as cwd under `python -m pytest`, or via
  `pip install -e .`) does not have them. Merge both locations into the
  package's __path__ so either import order works and new source files are
  visible before the next rebuild.

Fixtures used by the tests of several folders live here: the robots, one torch thread
(``one_torch_thread`` per test, ``one_torch_thread_session`` from first use to the end of the
session), ``make_loaded`` (an untrained tiny LoadedModel), ``panda_solver`` (a solver on a tiny
briefly-trained denoiser) and ``pk_panda_fk`` (an independent FK). Helper functions shared by
several folders are in ``solvertools.py``: pytest's default (prepend) import mode puts this folder,
which has no ``__init__.py``, on sys.path when it imports this conftest.
"""
from __future__ import annotations

import contextlib
import os
import pkgutil
from pathlib import Path

import pytest

os.environ.setdefault("ROS_DOMAIN_ID", str(os.getpid() % 80 + 20))

REPO_ROOT = Path(__file__).resolve().parents[1]


def _merge_ikdiffuser_ros_path() -> None:
    try:
        import ikdiffuser_ros
    except Exception:  # the package's own tests will report the real error
        return
    path = getattr(ikdiffuser_ros, "__path__", None)
    if not isinstance(path, list):
        return
    merged = pkgutil.extend_path(path, "ikdiffuser_ros")
    src = str(REPO_ROOT / "ikdiffuser_ros")
    if src not in merged and os.path.isdir(src):
        merged.insert(0, src)
    path[:] = merged


_merge_ikdiffuser_ros_path()


@pytest.fixture(scope="session")
def panda():
    """The panda RobotModel, loaded once per session."""
    from ikdiffuser_ros.robots import load_robot

    return load_robot("panda")


@pytest.fixture(scope="session")
def baxter():
    """The baxter (both arms) RobotModel, loaded once per session."""
    from ikdiffuser_ros.robots import load_robot

    return load_robot("baxter")


@contextlib.contextmanager
def _one_torch_thread():
    """One torch intra-op thread inside the block, the previous count restored after it.

    These tests use small batched linear algebra: on a shared 2-core machine one intra-op thread
    is ~10x faster than two fighting for cores.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test (restored after it)."""
    with _one_torch_thread():
        yield


@pytest.fixture(scope="session")
def one_torch_thread_session():
    """One torch thread from the first test that uses it to the end of the session (restored then).

    Session-scoped, so that it is in place before the module- and session-scoped fixtures that
    solve or train (``panda_solver``) when a folder's autouse fixture asks for it.
    """
    with _one_torch_thread():
        yield


def make_loaded(robot, seed: int = 0, num_train_steps: int = 20):
    """An untrained tiny LoadedModel for ``robot`` (random weights, normalizer fitted on FK samples)."""
    import torch

    from ikdiffuser_ros.data.generate import sample_fk
    from ikdiffuser_ros.model.checkpoint import LoadedModel
    from ikdiffuser_ros.model.denoiser import DenoiserConfig, IKDenoiser
    from ikdiffuser_ros.model.normalizer import Normalizer
    from ikdiffuser_ros.model.schedule import NoiseSchedule, ScheduleConfig

    torch.manual_seed(seed)
    n, E = len(robot.joint_names), len(robot.end_effectors)
    model = IKDenoiser(DenoiserConfig(n, E, d_model=32, n_heads=2, n_layers=1, ff_mult=2)).eval()
    pos = sample_fk(robot, 2000, torch.Generator().manual_seed(seed))[1]
    normalizer = Normalizer.fit(robot.lower, robot.upper, pos)
    return LoadedModel(model, normalizer, NoiseSchedule(ScheduleConfig(num_train_steps=num_train_steps)), {}, robot)


@pytest.fixture(name="make_loaded")
def _make_loaded_fixture():
    """:func:`make_loaded`, ``(robot, seed=0, num_train_steps=20) -> LoadedModel``."""
    return make_loaded


@pytest.fixture(scope="session")
def panda_solver(panda, one_torch_thread_session):
    """An IKDiffuserSolver for the panda on a tiny briefly-trained denoiser (trained single-threaded)."""
    from ikdiffuser_ros.solver import IKDiffuserSolver
    from solvertools import tiny_loaded_model

    return IKDiffuserSolver.from_model(tiny_loaded_model(panda), panda)


@pytest.fixture(scope="session")
def pk_panda_fk():
    """Independent FK of the panda TCP from pytorch_kinematics (float32 chain), or skip.

    Returns ``fk(q) -> T``: q (B, 7) float64 joint positions [rad] -> (B, 4, 4) float64 base->TCP
    transforms [m].
    """
    pk = pytest.importorskip("pytorch_kinematics")
    import io
    import warnings

    import torch

    from ikdiffuser_ros.robots import robot_config

    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        chain = pk.build_serial_chain_from_urdf(robot_config("panda").urdf_text(), "panda_hand_tcp")
    chain = chain.to(dtype=torch.float64)

    def fk(q: torch.Tensor) -> torch.Tensor:
        return chain.forward_kinematics(q).get_matrix()

    return fk
