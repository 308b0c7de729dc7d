#!/usr/bin/env python3
"""Distinct valid solutions per CPU-second: the learned prior against uniform starts, same LM.

20 held-out targets (FK of uniform configurations, seed 2**31 - 1) x 1000 LM starts each, one torch
thread, the compiled sampler and LM: (a) the prior's LM-ready plan (DDIM-3 + tail-1), one sample per
row; (b) the prior with perturbed restarts (250 samples x 4 starts, as the pipeline does for many
solutions); (c) uniform starts within the limits. Valid = float64 FK within 1e-5 m / 1e-4 rad and
within limits; distinct = > 0.05 rad / 5 mm apart in some joint.

    source scripts/ros_env.sh && OMP_NUM_THREADS=1 python scripts/bench_prior_vs_uniform.py [--robots ...]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from ikdiffuser_ros import native
from ikdiffuser_ros.bench.protocols import DEFAULT_SEED, random_targets, verified
from ikdiffuser_ros.kinematics.joint_kinds import joint_kinds, uniform_in_limits
from ikdiffuser_ros.model.checkpoint import load_checkpoint
from ikdiffuser_ros.robots import load_robot
from ikdiffuser_ros.sampling.dedup import joint_tolerances, unique_mask
from ikdiffuser_ros.sampling.sampler import sampling_plan
from ikdiffuser_ros.solver import SolverConfig

ROOT = Path(__file__).resolve().parents[1]
ROWS, TARGETS = 1000, 20


def _starts(kind: str, robot, sampler, plan, T: torch.Tensor, b: int) -> torch.Tensor:
    """(ROWS, n) LM starts for target T (E, 4, 4)."""
    n, E = robot.n_joints, T.shape[0]
    if kind == "uniform+LM":
        g = torch.Generator().manual_seed(b)
        return uniform_in_limits(robot.lower, robot.upper, ROWS, g)
    k = ROWS if kind == "prior" else ROWS // 4
    x = torch.randn(k, n, generator=torch.Generator().manual_seed(b))
    mask = torch.ones(k, E, dtype=torch.bool)
    q = sampler.sample(x, T.expand(k, E, 4, 4).contiguous(), mask, torch.zeros_like(mask), plan).double()
    if kind == "prior":
        return q
    q = q.repeat_interleave(ROWS // k, 0)
    noise = torch.randn(q.shape, generator=torch.Generator().manual_seed(10_000 + b), dtype=torch.float64)
    noise = noise * SolverConfig().restart_spread * (robot.upper - robot.lower)
    noise[:: ROWS // k] = 0
    return torch.minimum(torch.maximum(q + noise, robot.lower), robot.upper)


def measure(name: str) -> None:
    robot = load_robot(name)
    kin = native.NativeKinematics(robot)
    loaded = load_checkpoint(ROOT / "models" / name, robot)
    sampler, plan = native.NativeSampler(loaded, kin), sampling_plan(loaded.schedule, 3, 1)
    _, T = random_targets(robot, TARGETS, DEFAULT_SEED)
    tol, wrap = joint_tolerances(robot), joint_kinds(robot)[1]
    for kind in ("prior", "prior + perturbed restarts", "uniform+LM"):
        valid = distinct = 0
        t0 = time.process_time()
        for b in range(TARGETS):
            Tb = T[b].expand(ROWS, *T[b].shape).contiguous()
            q = kin.refine(_starts(kind, robot, sampler, plan, T[b], b), Tb).q
            ok = verified(robot, q, Tb)
            valid += int(ok.sum())
            distinct += int(unique_mask(q[ok], None, tol, wrap).sum())
        cpu = time.process_time() - t0
        print(f"| {name} | {kind} | {valid / TARGETS:.0f} | {distinct / TARGETS:.0f} | {distinct / cpu:.0f} |", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--robots", nargs="+", default=["panda", "baxter", "dual_ur5_mobile", "talos"])
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"| robot | starts | valid of {ROWS} | distinct | distinct valid per CPU-second |\n| --- | --- | ---: | ---: | ---: |")
    for name in args.robots:
        measure(name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
