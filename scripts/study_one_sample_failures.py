"""Where one diffusion sample + LM fails (docs/solver.md): raw errors, joints on limits, singular end
configurations, and what rescues the failures.

    python scripts/study_one_sample_failures.py --robot panda --targets 1000
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch

from ikdiffuser_ros.bench.protocols import random_targets, verified
from ikdiffuser_ros.pipeline import IKPipeline
from ikdiffuser_ros.sampling.lm import RefineConfig, refine
from ikdiffuser_ros.solver import SolveBatch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--robot", default="panda")
    parser.add_argument("--targets", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    pl = IKPipeline.from_robot(args.robot, warmup=False, collision=False)
    s, m = pl.solver, pl.robot
    s.loaded.planar_base = None  # raw rows below must be the LM's starts (raw samples get a fitted mobile base)
    _, T = random_targets(m, args.targets, 2**31 - 1 - 17)
    b = SolveBatch.of(T, 1, m.n_joints)
    ref = s.run(b, random_seed=0)
    steps, tail = s.plan_of(True)
    s.config = dataclasses.replace(s.config, steps=steps, tail_steps=tail)
    raw = s.run(b, refine=False, random_seed=0)  # the same samples (the LM-ready plan), unrefined
    ok = verified(m, ref["q"], T)
    fail = (~ok).nonzero().flatten()
    lo, hi = m.limits(torch.float64)
    at = ((ref["q"] - lo).abs() < 1e-6) | ((hi - ref["q"]).abs() < 1e-6)
    print(f"{args.robot}: one sample + LM solves {ok.double().mean():.3f} ({len(fail)} failures)")
    print(f"raw error median, solved / failed: {1000 * raw['position_error'][ok].median():.1f} / "
          f"{1000 * raw['position_error'][fail].median():.1f} mm, {np.degrees(raw['rotation_error'][ok].median()):.1f} / "
          f"{np.degrees(raw['rotation_error'][fail].median()):.1f} deg")
    print(f"rows ending with a joint on a limit, solved / failed: {at.any(-1)[ok].double().mean():.2f} / "
          f"{at.any(-1)[fail].double().mean():.2f}; per joint among the failures {at[fail].sum(0).tolist()}")
    _singular_ends(m, ref["q"], ok, fail, at)
    r = refine(m, raw["q"][fail], T[fail], config=RefineConfig(max_iters=400, patience=100, lambda_max=1e12))
    print(f"the failures' samples with LM 400 iterations / patience 100: {r.converged.double().mean():.2f}")
    g = torch.Generator().manual_seed(1)
    for spread in (0.02, 0.05, 0.1):
        q0 = raw["q"][fail].repeat_interleave(4, 0)
        q0 = torch.minimum(torch.maximum(q0 + spread * (hi - lo) * torch.randn(q0.shape, generator=g, dtype=q0.dtype),
                                         lo), hi)
        r2 = s.run(SolveBatch.of(T[fail], 4, m.n_joints), q0=q0, random_seed=0)
        ok2 = verified(m, r2["q"].view(len(fail), 4, -1), T[fail][:, None].expand(-1, 4, -1, -1, -1)).any(-1)
        print(f"4 perturbed restarts of the same sample (spread {spread}): {ok2.double().mean():.2f}")
    for kick in (0.05, 0.2):  # a second LM from the first one's end, every joint moved by N(0, kick) [rad or m]
        q0 = torch.minimum(torch.maximum(ref["q"][fail] + kick * torch.randn(ref["q"][fail].shape, generator=g,
                                                                              dtype=torch.float64), lo), hi)
        r2 = s.run(SolveBatch.of(T[fail], 1, m.n_joints), q0=q0, random_seed=0)
        print(f"a second LM from the first one's end kicked by {kick}: {verified(m, r2['q'], T[fail]).double().mean():.2f}")
    for step, rounds in ((0.2, 1), (0.4, 3)):
        esc = _null_space_escape(m, ref["q"][fail], T[fail], step, rounds)
        print(f"{rounds} null-space move(s) of {step} away from the limits, each + LM: "
              f"{verified(m, esc, T[fail]).double().mean():.2f}")
    r3 = s.run(SolveBatch.of(T[fail], 4, m.n_joints), random_seed=5)
    ok3 = verified(m, r3["q"].view(len(fail), 4, -1), T[fail][:, None].expand(-1, 4, -1, -1, -1)).any(-1)
    print(f"4 fresh samples: {ok3.double().mean():.2f}")


def _weighted_jacobian(m, q: torch.Tensor) -> torch.Tensor:
    """(M, n) -> (M, 6E, n): the task Jacobian as the LM weighs it (rotation rows x ``RefineConfig.rot_weight``)."""
    _, J = m.fk_and_jacobian(q)
    J = torch.cat([J[..., :3, :], RefineConfig().rot_weight * J[..., 3:, :]], -2)
    return J.reshape(len(q), -1, q.shape[-1])


def _null_space_escape(m, q: torch.Tensor, T: torch.Tensor, step: float, rounds: int,
                       margin: float = 0.2) -> torch.Tensor:
    """Redundancy resolution from the LM's end: ``rounds`` times, move every joint within ``margin`` of
    its range from a limit away from it, projected onto the null space of the (weighted) task
    Jacobian and scaled to a largest joint change of ``step`` [rad or m], then the LM again."""
    lo, hi = m.limits(torch.float64)
    for _ in range(rounds):
        J = _weighted_jacobian(m, q)
        away = torch.relu(margin - (q - lo) / (hi - lo)) - torch.relu(margin - (hi - q) / (hi - lo))
        d = away - (torch.linalg.pinv(J) @ (J @ away.unsqueeze(-1))).squeeze(-1)
        d = step * d / d.abs().amax(-1, keepdim=True).clamp_min(1e-12)
        q = refine(m, torch.minimum(torch.maximum(q + d, lo), hi), T).q
    return q


def _singular_ends(m, q: torch.Tensor, ok: torch.Tensor, fail: torch.Tensor, at: torch.Tensor) -> None:
    """Where the LM stopped: the smallest singular value of the constrained Jacobian (position rows [m/rad],
    rotation rows weighed as the LM weighs them) of the solved rows and of the failures off every limit."""
    J = _weighted_jacobian(m, q)
    sigma = torch.linalg.svdvals(J)[:, min(J.shape[-2], J.shape[-1]) - 1]
    off = fail[~at[fail].any(-1)]
    if len(off):
        print(f"smallest singular value at the end, solved p10 / p50: {sigma[ok].quantile(0.1):.4f} / "
              f"{sigma[ok].median():.4f}; failures off every limit ({len(off)}): {sigma[off].quantile(0.1):.4f} / "
              f"{sigma[off].median():.4f}; share below the solved rows' p1 ({sigma[ok].quantile(0.01):.4f}): "
              f"{(sigma[off] < sigma[ok].quantile(0.01)).double().mean():.2f}")


if __name__ == "__main__":
    main()
