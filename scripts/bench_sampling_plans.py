#!/usr/bin/env python3
"""How many network passes the LM needs: raw error, one-sample success and cost per sampling plan.

For each shipped robot and plan (DDIM steps + low-noise tail passes), on held-out targets (FK of
uniform configurations, seed 2**31 - 1): one sample per target from the compiled sampler, then the
solver's LM (compiled). Reports the raw median position error [mm], one-sample success (1e-5 m /
1e-4 rad by float64 FK, within limits), and the cost per row [us] of sampling in a batch and of
one 1-row call. docs/training.md ("Few passes") records the output.

    source scripts/ros_env.sh && OMP_NUM_THREADS=1 python scripts/bench_sampling_plans.py \\
        [--robots panda baxter dual_ur5_mobile talos] [--targets 1000] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ikdiffuser_ros import native
from ikdiffuser_ros.bench.protocols import DEFAULT_SEED, random_targets, verified
from ikdiffuser_ros.model.checkpoint import load_checkpoint
from ikdiffuser_ros.robots import load_robot
from ikdiffuser_ros.sampling.sampler import sampling_plan

ROOT = Path(__file__).resolve().parents[1]
PLANS = [(4, 15), (4, 2), (3, 1), (4, 0), (2, 2), (1, 1)]


def measure(name: str, targets: int, plans) -> list[dict]:
    """One row per plan for robot ``name``."""
    robot = load_robot(name)
    kin = native.NativeKinematics(robot)
    loaded = load_checkpoint(ROOT / "models" / name, robot)
    sampler = native.NativeSampler(loaded, kin)
    _, T = random_targets(robot, targets, DEFAULT_SEED)
    mask = torch.ones(targets, len(robot.end_effectors), dtype=torch.bool)
    x = torch.randn(targets, robot.n_joints, generator=torch.Generator().manual_seed(0))
    rows = []
    for steps, tail in plans:
        plan = sampling_plan(loaded.schedule, steps, tail)
        t0 = time.perf_counter()
        q = sampler.sample(x, T, mask, torch.zeros_like(mask), plan).double()
        batch_us = (time.perf_counter() - t0) / targets * 1e6
        t0 = time.perf_counter()
        for i in range(min(100, targets)):
            sampler.sample(x[i:i + 1], T[i:i + 1], mask[i:i + 1], torch.zeros_like(mask[i:i + 1]), plan)
        one_us = (time.perf_counter() - t0) / min(100, targets) * 1e6
        raw = (robot.fk(q)[..., :3, 3] - T[..., :3, 3]).norm(dim=-1).amax(-1)
        res = kin.refine(q, T)
        rows.append(dict(robot=name, steps=steps, tail=tail, passes=len(plan),
                         raw_median_mm=float(raw.median() * 1000),
                         one_sample_success=float(verified(robot, res.q, T).double().mean()),
                         sample_us_per_row_batch=batch_us, sample_us_one_row=one_us))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def table(rows: list[dict]) -> str:
    out = ["| robot | plan | passes | raw median [mm] | 1 sample + LM success | sampling, batch [us/row] | "
           "sampling, 1 row [us] |", "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        out.append(f"| {r['robot']} | DDIM-{r['steps']} + tail-{r['tail']} | {r['passes']} | "
                   f"{r['raw_median_mm']:.1f} | {100 * r['one_sample_success']:.1f} % | "
                   f"{r['sample_us_per_row_batch']:.0f} | {r['sample_us_one_row']:.0f} |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--robots", nargs="+", default=["panda", "baxter", "dual_ur5_mobile", "talos"])
    ap.add_argument("--targets", type=int, default=1000)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if not native.available():
        raise SystemExit(native.unavailable_reason)
    torch.set_num_threads(1)
    rows = [r for name in args.robots for r in measure(name, args.targets, PLANS)]
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
