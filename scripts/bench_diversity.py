"""Distinct solutions and their spread through the pipeline, by diversity and restart spread (docs/solver.md).

Each held-out target gets one IKQuery asking for 4096 solutions within 1 s; distinct = 0.05 rad / 5 mm
apart, spread = mean pairwise joint distance of the distinct ones.

    python scripts/bench_diversity.py --robot panda --targets 8 --diversity 0 1 --spread 0.05 0.15
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from ikdiffuser_ros.bench.protocols import diversity, random_targets
from ikdiffuser_ros.kinematics.joint_kinds import joint_kinds
from ikdiffuser_ros.pipeline import IKPipeline, PipelineConfig
from ikdiffuser_ros.query import IKQuery, IKTarget
from ikdiffuser_ros.sampling.dedup import joint_tolerances, unique_mask
from ikdiffuser_ros.solver import SolverConfig


def run(pl: IKPipeline, targets: torch.Tensor, d: float, budget: float) -> tuple[float, float, float]:
    """(valid, distinct, mean pairwise distance [rad]) per target, averaged."""
    m = pl.robot
    tol, wrap = joint_tolerances(m), joint_kinds(m)[1]
    rows = []
    for k, T in enumerate(targets):
        query = IKQuery([IKTarget(list(m.end_effectors), list(T.numpy()))], num_solutions=4096, timeout=budget,
                        random_seed=k, diversity=d)
        [a] = pl.answer(query).targets
        q = torch.as_tensor(a.q[a.valid])
        reps = q[unique_mask(q, None, tol, wrap)] if len(q) else q
        rows.append((len(q), len(reps), diversity(reps)))
    a = np.array(rows)
    return a[:, 0].mean(), a[:, 1].mean(), float(np.nanmean(a[:, 2]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--robot", default="panda")
    parser.add_argument("--targets", type=int, default=8)
    parser.add_argument("--budget", type=float, default=1.0, help="seconds per target")
    parser.add_argument("--diversity", type=float, nargs="+", default=[0.0, 1.0])
    parser.add_argument("--spread", type=float, nargs="+", default=[SolverConfig.restart_spread])
    args = parser.parse_args()
    torch.set_num_threads(1)
    for spread in args.spread:
        pl = IKPipeline.from_robot(args.robot, config=PipelineConfig(max_num_solutions=4096),
                                   solver_config=SolverConfig(restart_spread=spread), collision=False)
        _, targets = random_targets(pl.robot, args.targets, 2**31 - 2)
        for d in args.diversity:
            valid, distinct, spread_rad = run(pl, targets, d, args.budget)
            print(f"{args.robot} restart_spread {spread} diversity {d}: valid {valid:.0f}, distinct {distinct:.0f}, "
                  f"mean pairwise {spread_rad:.2f} rad", flush=True)


if __name__ == "__main__":
    main()
