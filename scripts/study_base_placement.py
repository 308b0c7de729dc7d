"""What placing a mobile robot's planar base in closed form does to its samples (docs/solver.md).

    python scripts/study_base_placement.py mobile_baxter dual_ur5_mobile

On the model card's 1000 held-out targets of each shipped model: the raw error (worst end effector, each end
effector's median) of plain DDIM-20 and of the card's sampler, with ``place_base`` off and on; and the share one
sample + LM solves when the LM starts from the sample as it is (what the solver does) and from the sample with its
base placed first.
"""

from __future__ import annotations

import sys

import torch

from ikdiffuser_ros.bench.protocols import verified
from ikdiffuser_ros.kinematics.transforms import pose_errors
from ikdiffuser_ros.model.checkpoint import load_checkpoint
from ikdiffuser_ros.robots import load_robot
from ikdiffuser_ros.sampling.sampler import default_sampling, sample
from ikdiffuser_ros.solver import IKDiffuserSolver, SolveBatch
from ikdiffuser_ros.training.model_card import _held_out_targets


def _errors(robot, q: torch.Tensor, T: torch.Tensor) -> str:
    dp, dr = pose_errors(robot.fk(q.double()), T)
    worst = 1000 * dp.amax(-1)
    per_ee = [round(x, 1) for x in (1000 * dp.median(0).values).tolist()]
    return (f"median {worst.median():.1f} mm, p90 {worst.quantile(0.9):.1f} mm, per end effector {per_ee} mm, "
            f"rotation {dr.amax(-1).median().rad2deg():.2f} deg")


def _one_sample(loaded, robot, T: torch.Tensor, placed_first: bool) -> float:
    solver = IKDiffuserSolver.from_model(loaded, robot)
    if placed_first:  # the LM's starts (the LM-ready samples) through the raw samples' placement
        sample_rows = solver._sample
        solver._sample = lambda batch, *a, **k: solver._place_base(sample_rows(batch, *a, **k), batch.rows(batch.T),
                                                                   batch)
    rows = solver.run(SolveBatch.of(T, 1, robot.n_joints), random_seed=0)
    return verified(robot, rows["q"], T).double().mean().item()


def main(names: list[str]) -> None:
    torch.set_num_threads(1)
    for name in names:
        robot = load_robot(name)
        loaded = load_checkpoint(f"models/{name}", robot)
        _, T, pos, rot6d = _held_out_targets(robot, 1000)
        for label, plan in (("DDIM-20", (20, 0)), ("card", default_sampling(loaded))):
            for place in (False, True):
                q = sample(loaded, pos, rot6d, num_solutions=1, steps=plan[0], tail_steps=plan[1], place_base=place,
                           generator=torch.Generator().manual_seed(0))[:, 0]
                print(f"{name} {label} {plan}, base {'placed' if place else 'as sampled'}: {_errors(robot, q, T)}")
        for placed_first in (False, True):
            print(f"{name} one sample + LM, base {'placed first' if placed_first else 'as sampled'}: "
                  f"{_one_sample(loaded, robot, T, placed_first):.3f}")


if __name__ == "__main__":
    main(sys.argv[1:] or ["mobile_baxter", "dual_ur5_mobile"])
