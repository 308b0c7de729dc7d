"""Restarts near a failed sample against uniform restarts (docs/solver.md, "Restarts near a failed sample").

    python scripts/study_rescue.py panda baxter dual_ur5_mobile ur5

On each shipped model's 1000 held-out targets (the model card's): the share one diffusion sample + LM solves, then
with K restarts of each failed row near its sample (the joints that move the end effectors still off their targets
from the sample plus N(0, spread x the joint's learnt range), the other joints where the LM left them; the row is
solved if one restart is), and, at the same number of LM starts, 1 + K uniform starts. (The solver ran these
restarts for calls of up to 4 rows per target in commit 05e9286; they were taken out because one-target requests
answered less often within 5 ms, docs/solver.md.)
"""

from __future__ import annotations

import dataclasses
import sys

import torch

from ikdiffuser_ros.bench.protocols import verified
from ikdiffuser_ros.kinematics.groups import variables_moving
from ikdiffuser_ros.kinematics.joint_kinds import project_to_limits, uniform_in_limits
from ikdiffuser_ros.kinematics.transforms import pose_errors
from ikdiffuser_ros.model.checkpoint import load_checkpoint
from ikdiffuser_ros.robots import load_robot
from ikdiffuser_ros.solver import IKDiffuserSolver, SolveBatch
from ikdiffuser_ros.training.model_card import _held_out_targets

#: (restarts, spread) pairs measured
PLANS = ((4, 0.05), (4, 0.1), (8, 0.1), (8, 0.2))


def _restart_starts(solver, raw: torch.Tensor, ended: torch.Tensor, T: torch.Tensor, K: int, spread: float,
                    g: torch.Generator) -> torch.Tensor:
    """(F * K, n) starts for F failed rows: their samples ``raw`` (F, n) perturbed on the joints of the end
    effectors the LM left ``ended`` (F, n) off their targets ``T`` (F, E, 4, 4), the other joints as it left them."""
    robot = solver.robot
    dp, dr = pose_errors(robot.fk(ended), T)
    off = (dp > 1e-5) | (dr > 1e-4)  # (F, E)
    moves = torch.zeros(len(robot.end_effectors), robot.n_joints, dtype=torch.bool)
    for e, link in enumerate(robot.end_effectors):
        moves[e, list(variables_moving(robot, [link]))] = True
    moved = (off[:, :, None] & moves[None]).any(1) | ~off.any(-1, keepdim=True)
    noise = torch.randn(len(raw) * K, robot.n_joints, generator=g, dtype=torch.float64)
    starts = torch.where(moved, raw, ended).repeat_interleave(K, 0)
    starts = starts + noise * moved.repeat_interleave(K, 0) * spread * (solver.box_upper - solver.box_lower)
    lower, upper = robot.limits(torch.float64)
    return project_to_limits(starts, lower, upper, solver.wrapping)


def _prior_rows(loaded, robot, T: torch.Tensor) -> list[str]:
    solver = IKDiffuserSolver.from_model(loaded, robot)
    batch = SolveBatch.of(T, 1, robot.n_joints)
    ref = solver.run(batch, random_seed=0)
    loaded.planar_base = None  # the raw rows below must be the LM's starts (the LM-ready plan, base as sampled)
    steps, tail = solver.plan_of(True)
    solver.config = dataclasses.replace(solver.config, steps=steps, tail_steps=tail)
    raw = solver.run(batch, refine=False, random_seed=0)["q"]
    ok = verified(robot, ref["q"], T)
    fail = (~ok).nonzero().flatten()
    out = [f"one sample + LM {ok.double().mean():.3f}"]
    for K, spread in PLANS:
        starts = _restart_starts(solver, raw[fail], ref["q"][fail], T[fail], K, spread, torch.Generator().manual_seed(2))
        again = solver.run(SolveBatch.of(T[fail], K, robot.n_joints), q0=starts, random_seed=0)
        rescued = verified(robot, again["q"].view(len(fail), K, -1), T[fail][:, None].expand(-1, K, -1, -1, -1)).any(-1)
        out.append(f"+ {K} restarts / {spread}: {(ok.sum() + rescued.sum()).item() / len(T):.3f}")
    return out


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
        uniform = [f"x {n}: {_uniform(loaded, robot, T, n):.3f}" for n in (1, 5, 9)]
        print(f"{name}: {' | '.join(_prior_rows(loaded, robot, T))}; uniform starts {' | '.join(uniform)}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["panda", "baxter", "dual_ur5_mobile", "ur5"])
