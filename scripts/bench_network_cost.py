#!/usr/bin/env python3
"""What a checkpoint's network costs per request: the compiled sampler's wall time for one row with the
LM-ready plan (what a one-target request pays) and for 32 rows with the card's plan (a 32-solution
request), for several checkpoints of one robot side by side (e.g. a dense and a factorized network).

Times are medians (and 10th percentiles) of ``--repeats`` calls [ms], one torch thread, after 20 warm-up
calls; targets are FK poses of uniform configurations (seed 2**31 - 1), every end effector constrained.
docs/training.md ("Cause 4") records the output.

    source scripts/ros_env.sh && OMP_NUM_THREADS=1 python scripts/bench_network_cost.py --robot baxter \\
        models/baxter runs/bx384 [--repeats 300]
"""
from __future__ import annotations

import argparse
import time

import torch

from ikdiffuser_ros import native
from ikdiffuser_ros.bench.protocols import DEFAULT_SEED, random_targets
from ikdiffuser_ros.model.checkpoint import load_checkpoint
from ikdiffuser_ros.training.model_card import REFINED_STEPS, REFINED_TAIL_STEPS
from ikdiffuser_ros.robots import load_robot
from ikdiffuser_ros.sampling.sampler import default_sampling, sampling_plan


def _time(call, repeats: int) -> tuple[float, float]:
    """(median, 10th percentile) wall time of ``call()`` [ms] over ``repeats`` calls after 20 warm-ups."""
    for _ in range(20):
        call()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        ts.append(time.perf_counter() - t0)
    ts.sort()
    return 1e3 * ts[len(ts) // 2], 1e3 * ts[len(ts) // 10]


def measure(robot, checkpoint: str, repeats: int) -> dict:
    """Sampler wall times [ms] of ``checkpoint``: one row with the LM-ready plan, 32 rows with the card's."""
    loaded = load_checkpoint(checkpoint, robot)
    sampler = native.NativeSampler(loaded, native.NativeKinematics(robot))
    _, T = random_targets(robot, 32, DEFAULT_SEED)
    E = len(robot.end_effectors)
    x = torch.randn(32, robot.n_joints, generator=torch.Generator().manual_seed(0))
    mask, pos_only = torch.ones(32, E, dtype=torch.bool), torch.zeros(32, E, dtype=torch.bool)
    card_plan = sampling_plan(loaded.schedule, *default_sampling(loaded))
    lm_plan = sampling_plan(loaded.schedule, REFINED_STEPS, REFINED_TAIL_STEPS)
    one = _time(lambda: sampler.sample(x[:1], T[:1], mask[:1], pos_only[:1], lm_plan), repeats)
    many = _time(lambda: sampler.sample(x, T, mask, pos_only, card_plan), repeats)
    a = loaded.card["architecture"]
    return {"checkpoint": checkpoint, "width": a["d_model"], "factorize": bool(a.get("factorize")),
            "parameters": sum(p.numel() for p in loaded.denoiser.parameters()),
            "one_row_ms": one, "rows_32_ms": many, "lm_plan": len(lm_plan), "card_plan": len(card_plan)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoints", nargs="+", help="checkpoint folders of --robot")
    ap.add_argument("--robot", required=True, help="robot name or YAML")
    ap.add_argument("--repeats", type=int, default=300)
    args = ap.parse_args()
    torch.set_num_threads(1)
    robot = load_robot(args.robot)
    print("| checkpoint | network | parameters | 1 row, LM-ready plan [ms] | 32 rows, card's plan [ms] |")
    print("|---|---|---:|---:|---:|")
    for ckpt in args.checkpoints:
        r = measure(robot, ckpt, args.repeats)
        net = f"{'factorized' if r['factorize'] else 'dense'} {r['width']}"
        print(f"| {ckpt} | {net} | {r['parameters']:,} | {r['one_row_ms'][0]:.3f} ({r['one_row_ms'][1]:.3f}), "
              f"{r['lm_plan']} passes | {r['rows_32_ms'][0]:.2f} ({r['rows_32_ms'][1]:.2f}), {r['card_plan']} passes |")


if __name__ == "__main__":
    main()
