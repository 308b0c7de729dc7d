"""Coverage of the ikdiffuser row by the knobs of its diverse calls (docs/solver.md): the coverage protocol of
``ikdiffuser bench`` (MMD to a ground truth, clusters found) on rows that differ only in
``SolverConfig.restart_spread``, ``SolverConfig.uniform_share``, ``SolverConfig.diverse_steps``,
``PipelineConfig.diverse_pool`` or the order of the answers (farthest point first, or by the ranking key:
``--key-order``), beside uniform+LM.

    python scripts/bench_restart_spread.py --robot panda --targets 15 --spread 0.05 0.15 0.25 0.4
    python scripts/bench_restart_spread.py --robot baxter --targets 8 --uniform-share 0 0.25 0.5 --key-order
    python scripts/bench_restart_spread.py --robot baxter --targets 8 --pool 1 2 3
    python scripts/bench_restart_spread.py --robot panda --targets 20 --diverse-steps 10 6
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from ikdiffuser_ros.bench import coverage_report
from ikdiffuser_ros.bench.coverage import CoverageConfig, run_coverage
from ikdiffuser_ros.bench.pipelines import PriorPipeline, UniformPipeline
from ikdiffuser_ros.pipeline import IKPipeline, PipelineConfig
from ikdiffuser_ros.robots import load_robot
from ikdiffuser_ros.solver import SolverConfig


def _row(model, name: str, key_order: bool = False, pool: float = PipelineConfig.diverse_pool,
         **solver_config) -> PriorPipeline:
    pipeline = IKPipeline.from_robot(model, config=PipelineConfig(diverse_pool=pool),
                                     solver_config=SolverConfig(**solver_config), collision=False, warmup=False)
    if key_order:  # the answers by the ranking key (position error), not farthest point first
        plan = pipeline._plan
        pipeline._plan = lambda query, t0: dataclasses.replace(plan(query, t0), spread_first=False)
    row = PriorPipeline(pipeline)
    row.name = name
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--robot", default="panda")
    parser.add_argument("--targets", type=int, default=15)
    parser.add_argument("--gt-restarts", type=int, default=4000)
    parser.add_argument("--spread", type=float, nargs="+", default=[SolverConfig.restart_spread])
    parser.add_argument("--uniform-share", type=float, nargs="+", default=[SolverConfig.uniform_share])
    parser.add_argument("--pool", type=float, nargs="+", default=[PipelineConfig.diverse_pool])
    parser.add_argument("--diverse-steps", type=int, nargs="+", default=[SolverConfig.diverse_steps],
                        help="DDIM steps of a fully diverse call")
    parser.add_argument("--key-order", action="store_true", help="also a row with the answers by the ranking key "
                        "(the first spread, share and pool)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load_robot(args.robot)
    steps_named = len(args.diverse_steps) > 1
    rows = [_row(model, f"ikdiffuser, spread {s}, uniform {u}, pool {p}" + (f", {k} diverse steps" if steps_named else ""),
                 pool=p, restart_spread=s, uniform_share=u, diverse_steps=k)
            for s in args.spread for u in args.uniform_share for p in args.pool for k in args.diverse_steps]
    if args.key_order:
        s, u = args.spread[0], args.uniform_share[0]
        rows.insert(0, _row(model, f"ikdiffuser, spread {s}, uniform {u}, pool {args.pool[0]}, by key", True,
                            args.pool[0], restart_spread=s, uniform_share=u))
    rows.append(UniformPipeline(model, SolverConfig().refine))
    cfg = CoverageConfig(targets=args.targets, gt_restarts=args.gt_restarts, gt_tracik=0)
    print(coverage_report.table(run_coverage(model, rows, [], None, cfg, seed=1, target_seed=2**31, progress=True)))


if __name__ == "__main__":
    main()
