#!/usr/bin/env python3
"""Batched throughput of the pipeline: many targets per query (issue 15's "kept" check).

1000 held-out targets (FK of uniform configurations, seed 2**31 - 1) answered in queries of 250
targets x 1 solution each (``IKPipeline.answer``, default budget 5 s per query), one torch thread.
Reports success (float64 FK within 1e-5 m / 1e-4 rad, within limits) and wall time per target.

    source scripts/ros_env.sh && OMP_NUM_THREADS=1 python scripts/bench_batched.py [--robots ...]
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from ikdiffuser_ros import IKPipeline, IKQuery, IKTarget
from ikdiffuser_ros.bench.protocols import DEFAULT_SEED, random_targets, verified


def measure(name: str, targets: int, per_query: int, timeout: float) -> dict:
    pipeline = IKPipeline.from_robot(name)
    robot = pipeline.robot
    _, T = random_targets(robot, targets, DEFAULT_SEED)
    ees = list(robot.end_effectors)
    ok, t0 = 0, time.perf_counter()
    for start in range(0, targets, per_query):
        chunk = T[start:start + per_query]
        answer = pipeline.answer(IKQuery([IKTarget(ees, list(Ti.numpy())) for Ti in chunk], num_solutions=1,
                                         timeout=timeout, random_seed=start))
        for Ti, t in zip(chunk, answer.targets):
            ok += bool(len(t.q)) and bool(verified(robot, torch.as_tensor(t.q[:1]), Ti[None]).all())
    wall = time.perf_counter() - t0
    return dict(robot=name, targets=targets, per_query=per_query, timeout_s=timeout, success=ok / targets,
                ms_per_target=wall / targets * 1e3)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--robots", nargs="+", default=["panda", "baxter", "dual_ur5_mobile", "talos"])
    ap.add_argument("--targets", type=int, default=1000)
    ap.add_argument("--per-query", type=int, default=250)
    ap.add_argument("--timeout", type=float, default=5.0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = [measure(r, args.targets, args.per_query, args.timeout) for r in args.robots]
    print(json.dumps(rows, indent=2))
    print("| robot | success | ms per target |\n| --- | ---: | ---: |")
    for r in rows:
        print(f"| {r['robot']} | {100 * r['success']:.1f} % | {r['ms_per_target']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
