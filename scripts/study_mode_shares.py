"""How the prior shares its samples among a target's IK modes, against the share the training data gives each mode.

    python scripts/study_mode_shares.py --robot ur5 --targets 20

For a 6-joint arm a pose has finitely many solutions (modes). Training rows are uniform joint vectors
(free of self collision), so the data's density of mode i given the pose is, by the coarea formula,
proportional to ``free(q_i) / |det J(q_i)|`` (J the 6 x 6 geometric Jacobian): modes where the arm
moves its tool fast are rare in the data. A prior that fits its data reproduces those shares; uniform
restarts of an LM weight modes by basin size instead. Joints spanning more than a turn are folded into
one (``learnt_box``), so a mode is a solution modulo 2 pi. Prints per robot: modes per target, the
total-variation distance between the data's shares and the prior's (and uniform+LM's), and how many
modes holding at least 1 % of the data the prior never sampled.
"""

from __future__ import annotations

import argparse

import torch

from ikdiffuser_ros.bench.protocols import random_targets, verified
from ikdiffuser_ros.kinematics.joint_kinds import fold_turns, full_turns, joint_kinds, learnt_box, uniform_in_limits, wrap_to_pi
from ikdiffuser_ros.pipeline import IKPipeline
from ikdiffuser_ros.sampling.dedup import unique_mask
from ikdiffuser_ros.solver import SolveBatch
from ikdiffuser_ros.training.model_card import fcl_free


def canonical(robot, q: torch.Tensor) -> torch.Tensor:
    """Solutions (M, n) with full-turn joints folded into one turn and wrapping joints into [-pi, pi)."""
    q = fold_turns(q, learnt_box(robot)[0], full_turns(robot))
    return torch.where(joint_kinds(robot)[1], wrap_to_pi(q), q)


def modes_of(pl, robot, T: torch.Tensor, starts: int, seed: int) -> torch.Tensor:
    """(K, n) distinct solutions of one target ``T`` (1, E, 4, 4) from uniform LM starts, canonical."""
    g = torch.Generator().manual_seed(seed)
    q0 = uniform_in_limits(robot.lower, robot.upper, starts, g)
    rows = pl.solver.run(SolveBatch.of(T, starts, robot.n_joints), q0=q0, random_seed=seed)
    q = canonical(robot, rows["q"][verified(robot, rows["q"], T.expand(starts, -1, -1, -1))])
    return q[unique_mask(q, tol=0.05, wrapping=pl.solver.wrapping)]


def shares(robot, modes: torch.Tensor, q: torch.Tensor, wrapping: torch.Tensor) -> torch.Tensor:
    """(K,) share of the solutions ``q`` (M, n) nearest each mode (max joint difference <= 0.05 rad)."""
    if q.shape[0] == 0:
        return torch.zeros(modes.shape[0], dtype=torch.float64)
    d = canonical(robot, q)[:, None] - modes[None]
    d = torch.where(wrapping, wrap_to_pi(d), d).abs().amax(-1)
    best, idx = d.min(1)
    return torch.bincount(idx[best <= 0.05], minlength=modes.shape[0]).double() / q.shape[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--robot", default="ur5")
    parser.add_argument("--targets", type=int, default=20)
    parser.add_argument("--starts", type=int, default=2000, help="uniform LM starts per target (the modes)")
    parser.add_argument("--samples", type=int, default=1000, help="prior samples + LM per target")
    args = parser.parse_args()
    torch.set_num_threads(1)
    pl = IKPipeline.from_robot(args.robot, warmup=False, collision=False)
    robot, wrapping = pl.robot, pl.solver.wrapping
    _, targets = random_targets(robot, args.targets, 2**31 - 1 - 23)
    tv = {"prior": [], "prior, diverse": [], "uniform+LM": []}
    counts, missed, rare = [], 0, 0
    for k in range(args.targets):
        T = targets[k:k + 1]
        modes = modes_of(pl, robot, T, args.starts, k)
        free = fcl_free(robot, modes)
        weight = 1.0 / torch.linalg.det(robot.jacobian(modes)[:, 0]).abs()
        data = weight * (free.double() if free is not None else 1.0)
        data = data / data.sum()
        n = args.samples
        b = SolveBatch.of(T, n, robot.n_joints)
        found = {"prior": pl.solver.run(b, random_seed=k)["q"],
                 "prior, diverse": pl.solver.run(b, random_seed=k, diversity=1.0)["q"]}
        g = torch.Generator().manual_seed(10_000 + k)
        q0 = uniform_in_limits(robot.lower, robot.upper, n, g)
        found["uniform+LM"] = pl.solver.run(b, q0=q0, random_seed=k)["q"]
        for name, q in found.items():
            s = shares(robot, modes, q[verified(robot, q, T.expand(n, -1, -1, -1))], wrapping)
            tv[name].append(0.5 * (s / s.sum().clamp_min(1e-12) - data).abs().sum().item())
            if name == "prior":
                missed += int(((data >= 0.01) & (s == 0)).sum())
                rare += int((data >= 0.01).sum())
        counts.append(modes.shape[0])
        print(f"target {k}: {modes.shape[0]} modes, data shares {[round(x, 3) for x in sorted(data.tolist(), reverse=True)]}")
    print(f"{args.robot}: {sum(counts) / len(counts):.1f} modes per target (min {min(counts)}, max {max(counts)})")
    for name, v in tv.items():
        print(f"  total variation to the data's mode shares, {name}: {sum(v) / len(v):.3f}")
    print(f"  modes with >= 1 % of the data that {args.samples} prior samples + LM never found: {missed} of {rare}")


if __name__ == "__main__":
    main()
