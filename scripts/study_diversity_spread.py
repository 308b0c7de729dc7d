"""Where the peers' larger diversity comes from: per joint, how far apart a 1 s harvest's distinct solutions are.

    python scripts/study_diversity_spread.py --robot baxter --targets 5 --solvers kdl trac_ik rtb_ik_LM

Runs protocol 2 of ``ikdiffuser bench`` (the same targets, 1 s per target, verified, de-duplicated at 0.05 rad /
5 mm) for the shipped model and the peers named, then prints per solver: the distinct solutions per target, the
diversity (mean pairwise joint distance, as the bench), the share of solutions with a joint within 2 % of its range
from a limit and the diversity of the others, and per joint the mean |q_i - q_j| over pairs and the range
[min, max] the solutions span (averaged over the targets). Equal ranges with a smaller mean |q_i - q_j| mean the
same part of the solution set, covered with more solutions toward its middle.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ikdiffuser_ros.bench import ik as bench
from ikdiffuser_ros.bench.protocols import DEFAULT_SEED, diversity, random_targets, restart_answers, verified
from ikdiffuser_ros.kinematics.joint_kinds import joint_kinds
from ikdiffuser_ros.robots import robot_config
from ikdiffuser_ros.sampling.dedup import joint_tolerances, unique_mask

NEAR_LIMIT = 0.02  #: share of a joint's range within which a solution counts as on its limit


def harvests(robot: str, targets: torch.Tensor, solvers: list[str], budget: float) -> dict[str, list[torch.Tensor]]:
    """Each solver's distinct verified solutions per target, (M, n) each: the shipped model through the bench's
    pipeline row, each peer by random restarts until the budget [s]."""
    cfg = robot_config(robot)
    model = cfg.load()
    args = argparse.Namespace(solvers=["ikdiffuser", *solvers], models=bench.REPO / "models", one_targets=10,
                              steps=None, device="cpu", chunk=256, budgets=[0.005], main_budget=0.005)
    rows = bench._pipelines(args, model, robot, []) + bench._peers(args, model, cfg.urdf_text(), {"many"}, [])[1]
    tol, wrapping = joint_tolerances(model), joint_kinds(model)[1]
    out = {}
    for row in rows:
        out[row.name] = []
        for i, T in enumerate(targets):
            found = row.all_solutions(T, budget, 7 + 1000 * i) if hasattr(row, "all_solutions") else \
                restart_answers(row, T.numpy(), np.random.default_rng(i), time.perf_counter() + budget)
            good = found[verified(model, found, T.expand(found.shape[0], *T.shape))] if found.shape[0] else found
            out[row.name].append(good[unique_mask(good, None, tol, wrapping)] if good.shape[0] else good)
    return out


def report(model, sets: dict[str, list[torch.Tensor]]) -> None:
    """Print the spread per solver and per joint (see the module docstring)."""
    lower, upper = model.lower.double(), model.upper.double()
    print("joints:", " ".join(model.joint_names))
    for name, per_target in sets.items():
        kept = [q for q in per_target if q.shape[0] > 1]
        margin = [(torch.minimum(q - lower, upper - q) / (upper - lower)).min(1).values for q in kept]
        near = np.mean([float((m < NEAR_LIMIT).double().mean()) for m in margin])
        off = np.nanmean([diversity(q[m >= NEAR_LIMIT]) for q, m in zip(kept, margin)])
        pairs = torch.stack([(q[:, None] - q[None]).abs().sum((0, 1)) / (q.shape[0] * (q.shape[0] - 1)) for q in kept])
        spans = torch.stack([torch.stack([q.min(0).values, q.max(0).values]) for q in kept]).mean(0)
        print(f"{name}: {np.mean([q.shape[0] for q in per_target]):.0f} distinct per target, diversity "
              f"{np.nanmean([diversity(q) for q in kept]):.2f}, on a limit {100 * near:.0f} %, diversity of the "
              f"others {off:.2f}")
        print("  mean |dq| per joint:", " ".join(f"{x:.2f}" for x in pairs.mean(0).tolist()))
        print("  mean span per joint:", " ".join(f"{a:+.2f}..{b:+.2f}" for a, b in spans.T.tolist()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--robot", default="baxter")
    p.add_argument("--targets", type=int, default=5)
    p.add_argument("--budget", type=float, default=1.0, help="seconds per target")
    p.add_argument("--solvers", nargs="*", default=["kdl", "trac_ik", "rtb_ik_LM"])
    args = p.parse_args()
    torch.set_num_threads(1)
    model = robot_config(args.robot).load()
    _, targets = random_targets(model, args.targets, DEFAULT_SEED + 1)  # protocol 2's targets
    report(model, harvests(args.robot, targets, args.solvers, args.budget))


if __name__ == "__main__":
    main()
