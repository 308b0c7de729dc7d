"""Uniform restarts under a tight budget (docs/solver.md): 1 target x 32 solutions within 10 ms through
``IKPipeline.answer``, with the uniform restarts of ``SolverConfig.uniform_share`` (``--shares``) forced into
every solver call (the pipeline uses them only with a generous budget) and the queries interleaved, so the
rows share the machine's load.

    python scripts/bench_uniform_tight.py --robots panda baxter --targets 200 --shares 0 0.25
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ikdiffuser_ros.bench.protocols import random_targets
from ikdiffuser_ros.pipeline import IKPipeline
from ikdiffuser_ros.query import IKQuery, IKTarget
from ikdiffuser_ros.sampling.dedup import count_distinct, joint_tolerances
from ikdiffuser_ros.solver import SolverConfig


def _call(pipeline: IKPipeline, T: np.ndarray, seed: int, timeout: float) -> tuple[float, int, int]:
    """(seconds, valid, distinct valid at 0.05 rad / 5 mm) of one 1 x 32 query."""
    m = pipeline.robot
    query = IKQuery([IKTarget(list(m.end_effectors), list(T))], num_solutions=32, timeout=timeout, random_seed=seed)
    t = time.perf_counter()
    a = pipeline.answer(query).targets[0]
    took = time.perf_counter() - t
    q = torch.as_tensor(a.q[a.valid])
    distinct = int(count_distinct(q[None], tol=joint_tolerances(m), wrapping=pipeline.solver.wrapping)[0]) if len(q) else 0
    return took, len(q), distinct


def _forced(pipeline: IKPipeline) -> IKPipeline:
    """``pipeline`` whose solver calls all take uniform restarts (``run(..., uniform=True)``)."""
    run = pipeline.solver.run
    pipeline.solver.run = lambda *a, **kw: run(*a, **{**kw, "uniform": True})
    return pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--robots", nargs="+", default=["panda", "baxter"])
    parser.add_argument("--targets", type=int, default=200)
    parser.add_argument("--shares", type=float, nargs="+", default=[0.0, 0.25])
    parser.add_argument("--timeout", type=float, default=0.010)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| robot | uniform share | median ms | valid per call (median) | distinct (median / p10) | 32 valid in time |")
    print("|---|---:|---:|---:|---:|---:|")
    for robot in args.robots:
        rows = {u: _forced(IKPipeline.from_robot(robot, solver_config=SolverConfig(uniform_share=u), collision=False))
                for u in args.shares}
        _, T = random_targets(rows[args.shares[0]].robot, args.targets, 2**31 - 1)
        res = {u: [] for u in rows}
        for i in range(args.targets):
            for u, pl in rows.items():
                res[u].append(_call(pl, T[i].numpy(), i, args.timeout))
        for u, r in res.items():
            r = np.array(r)
            print(f"| {robot} | {u} | {1e3 * np.median(r[:, 0]):.2f} | {np.median(r[:, 1]):.1f} | "
                  f"{np.median(r[:, 2]):.1f} / {np.percentile(r[:, 2], 10):.0f} | "
                  f"{100 * np.mean((r[:, 1] >= 32) & (r[:, 0] <= args.timeout)):.0f} % |")


if __name__ == "__main__":
    main()
