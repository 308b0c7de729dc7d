"""Coverage of the ikdiffuser row by the spread of its perturbed restarts (docs/solver.md): the coverage
protocol of ``ikdiffuser bench`` (MMD to a ground truth, clusters found) on rows that differ only in
``SolverConfig.restart_spread``, beside uniform+LM.

    python scripts/bench_restart_spread.py --robot panda --targets 15 --spread 0.05 0.15 0.25 0.4
"""

from __future__ import annotations

import argparse

import torch

from ikdiffuser_ros.bench import coverage_report
from ikdiffuser_ros.bench.coverage import CoverageConfig, run_coverage
from ikdiffuser_ros.bench.pipelines import PriorPipeline, UniformPipeline
from ikdiffuser_ros.pipeline import IKPipeline
from ikdiffuser_ros.robots import load_robot
from ikdiffuser_ros.solver import SolverConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--robot", default="panda")
    parser.add_argument("--targets", type=int, default=15)
    parser.add_argument("--gt-restarts", type=int, default=4000)
    parser.add_argument("--spread", type=float, nargs="+", default=[0.05, 0.15, 0.25, 0.4])
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load_robot(args.robot)
    rows = []
    for spread in args.spread:
        row = PriorPipeline(IKPipeline.from_robot(model, solver_config=SolverConfig(restart_spread=spread),
                                                  collision=False, warmup=False))
        row.name = f"ikdiffuser, spread {spread}"
        rows.append(row)
    rows.append(UniformPipeline(model, SolverConfig().refine))
    cfg = CoverageConfig(targets=args.targets, gt_restarts=args.gt_restarts, gt_tracik=0)
    print(coverage_report.table(run_coverage(model, rows, [], None, cfg, seed=1, target_seed=2**31, progress=True)))


if __name__ == "__main__":
    main()
