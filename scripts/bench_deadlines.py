"""How late IKPipeline.answer comes back against its budget (docs/benchmarks.md, "Deadlines").

    python scripts/bench_deadlines.py [--robot baxter] [--repeats 10] [--json out.json]

Cases are issue 8's: 10 ms / 100 ms / 500 ms budgets with large queries, with and without
avoid_collisions, and a 5000-object scene with a 1 s budget. Prints one JSON object and a table:
the answer's lateness (time - budget) in ms, median / p95 / max over the repeats, and the
solutions returned. One torch thread (as the node).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ikdiffuser_ros.collision.world import Shape, World, WorldObject
from ikdiffuser_ros.pipeline import IKPipeline
from ikdiffuser_ros.query import IKQuery, IKTarget

#: (budget [s], targets, solutions per target, avoid_collisions, scene objects)
CASES = [(0.010, 1, 500, False, 0), (0.010, 1, 500, True, 0), (0.100, 8, 512, False, 0),
         (0.500, 64, 64, False, 0), (0.500, 16, 64, True, 0), (1.000, 4, 32, True, 5000)]


def far_boxes(count: int) -> World | None:
    """``count`` 5 cm boxes in a block beside the robot (none touches it)."""
    if not count:
        return None
    objects = []
    for i in range(count):
        T = np.eye(4)
        T[:3, 3] = (1.5 + (i % 50) * 0.1, -2.5 + (i // 50) * 0.05, -0.5 + (i % 7) * 0.2)
        objects.append(WorldObject(f"box_{i}", [Shape.box((0.05, 0.05, 0.05), T)]))
    return World(objects=objects)


def targets(robot, k: int, seed: int) -> list[IKTarget]:
    g = torch.Generator().manual_seed(seed)
    q = robot.default_positions() + 0.6 * (torch.rand(k, robot.n_joints, generator=g, dtype=torch.float64) - 0.5) * 2
    T = robot.fk(torch.minimum(torch.maximum(q, robot.lower), robot.upper)).numpy()
    return [IKTarget(list(robot.end_effectors), list(T[i])) for i in range(k)]


def run_case(pipeline: IKPipeline, case, repeats: int) -> dict:
    budget, k, num, avoid, objects = case
    late, solved = [], []
    for r in range(repeats):
        world = far_boxes(objects)  # a new scene each time: its collision objects are built within the budget
        query = IKQuery(targets(pipeline.robot, k, seed=r), num_solutions=num, avoid_collisions=avoid, world=world,
                        timeout=budget, random_seed=r)
        t0 = time.monotonic()
        answer = pipeline.answer(query)
        late.append(1000 * (time.monotonic() - t0 - budget))
        solved.append(sum(len(t.q) for t in answer.targets))
    return dict(budget_ms=1000 * budget, targets=k, num_solutions=num, avoid_collisions=avoid, scene_objects=objects,
                late_ms={"median": float(np.median(late)), "p95": float(np.percentile(late, 95)), "max": max(late)},
                solutions_median=float(np.median(solved)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--robot", default="baxter")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    pipeline = IKPipeline.from_robot(args.robot)
    rows = [run_case(pipeline, case, args.repeats) for case in tqdm(CASES, desc="deadline cases")]
    out = dict(robot=args.robot, repeats=args.repeats, cases=rows)
    print(json.dumps(out, indent=1))
    print("| budget | query | late median / p95 / max [ms] | solutions (median) |\n| --- | --- | --- | --- |")
    for r in rows:
        what = (f"{r['targets']} x {r['num_solutions']}" + (", avoid_collisions" if r["avoid_collisions"] else "")
                + (f", {r['scene_objects']} objects" if r["scene_objects"] else ""))
        lm = r["late_ms"]
        print(f"| {r['budget_ms']:.0f} ms | {what} | {lm['median']:.1f} / {lm['p95']:.1f} / {lm['max']:.1f} | "
              f"{r['solutions_median']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
