"""Restarts near a failed sample (``SolverConfig.rescue_restarts``) against uniform restarts (docs/solver.md).

    python scripts/study_rescue.py panda baxter dual_ur5_mobile ur5

On each shipped model's 1000 held-out targets (the model card's): the share one diffusion sample + LM solves
without restarts, with K restarts near the failed sample (each joint of the arms left off their targets moved by
N(0, spread x its range)), and, for comparison at the same number of LM starts, 1 + K uniform starts.
"""

from __future__ import annotations

import sys

import torch

from ikdiffuser_ros.bench.protocols import verified
from ikdiffuser_ros.kinematics.joint_kinds import uniform_in_limits
from ikdiffuser_ros.model.checkpoint import load_checkpoint
from ikdiffuser_ros.robots import load_robot
from ikdiffuser_ros.solver import IKDiffuserSolver, SolveBatch, SolverConfig
from ikdiffuser_ros.training.model_card import _held_out_targets

#: (restarts, spread) pairs measured
PLANS = ((0, 0.1), (4, 0.05), (4, 0.1), (8, 0.1), (8, 0.2))


def _prior(loaded, robot, T: torch.Tensor, restarts: int, spread: float) -> float:
    solver = IKDiffuserSolver.from_model(loaded, robot, SolverConfig(rescue_restarts=restarts, rescue_spread=spread))
    rows = solver.run(SolveBatch.of(T, 1, robot.n_joints), random_seed=0)
    return verified(robot, rows["q"], T).double().mean().item()


def _uniform(loaded, robot, T: torch.Tensor, starts: int) -> float:
    """The share of targets that one of ``starts`` uniform starts + the same LM solves."""
    solver = IKDiffuserSolver.from_model(loaded, robot)
    lower, upper = robot.limits(torch.float64)
    K = T.shape[0]
    q0 = uniform_in_limits(lower, upper, K * starts, torch.Generator().manual_seed(1), torch.float64)
    rows = solver.run(SolveBatch.of(T, starts, robot.n_joints), q0=q0, random_seed=0)
    ok = verified(robot, rows["q"].view(K, starts, -1), T[:, None].expand(-1, starts, -1, -1, -1))
    return ok.any(-1).double().mean().item()


def main(names: list[str]) -> None:
    torch.set_num_threads(1)
    for name in names:
        robot = load_robot(name)
        loaded = load_checkpoint(f"models/{name}", robot)
        _, T, _, _ = _held_out_targets(robot, 1000)
        prior = [f"K {k} / {s}: {_prior(loaded, robot, T, k, s):.3f}" for k, s in PLANS]
        uniform = [f"x {n}: {_uniform(loaded, robot, T, n):.3f}" for n in (1, 5, 9)]
        print(f"{name}: one sample + LM, restarts near a failed sample {' | '.join(prior)}; "
              f"uniform starts {' | '.join(uniform)}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["panda", "baxter", "dual_ur5_mobile", "ur5"])
