"""The sampler's noise and one sample + LM: stochastic DDIM steps (eta) and the initial noise's temperature
(docs/solver.md, "Stochastic reverse steps" and "A sampling temperature").

    python scripts/study_sampler_noise.py --robots panda baxter --targets 3000 --seed 777 \\
        --plans 3,1,0 3,1,1 3,1,0,0.5 4,15,0 4,15,1

For each shipped model: ``--targets`` FK poses of uniform configurations (``--seed``), one diffusion sample per
target from the compiled sampler with each plan (``steps,tail_steps,eta[,temperature]``, temperature 1 when left
out; the same initial noise for every plan, scaled by the temperature),
the solver's LM from it, verified at 1e-5 m / 1e-4 rad within limits. Prints the share solved and the raw samples'
median position error (worst end effector, a mobile base as sampled, not placed).
"""

from __future__ import annotations

import argparse

import torch

from ikdiffuser_ros.bench.protocols import errors, random_targets, verified
from ikdiffuser_ros.kinematics.joint_kinds import unfold_turns
from ikdiffuser_ros.pipeline import IKPipeline
from ikdiffuser_ros.sampling.sampler import sampling_plan, step_noise
from ikdiffuser_ros.solver import SolveBatch


def one_sample_with(solver, batch: SolveBatch, steps: int, tail: int, eta: float, seed: int,
                    temperature: float = 1.0) -> torch.Tensor:
    """(B, n) raw samples of ``batch`` (one per target) by the compiled sampler with that plan, full turns unfolded."""
    g = torch.Generator().manual_seed(seed)
    x = temperature * torch.randn(batch.B, batch.n, generator=g)
    plan = sampling_plan(solver.loaded.schedule, steps, tail)
    q = solver.native_sampler.sample(x, batch.rows(batch.T), batch.rows(batch.mask), batch.rows(batch.pos_only), plan,
                                     None, eta, step_noise(x, len(plan), "ddim", eta, g)).to(torch.float64)
    if bool(solver.turns.any()):
        lower, upper = solver.robot.limits(torch.float64)
        q = unfold_turns(q, lower, upper, solver.turns, solver._turn_reference(batch, q, 0.0), g)
    return q


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--robots", nargs="+", default=["panda"])
    ap.add_argument("--targets", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=777)
    ap.add_argument("--plans", nargs="+", default=["3,1,0", "3,1,1", "4,15,0", "4,15,1"])
    ap.add_argument("--plot", help="PNG: one sample + LM against the plans' temperatures, a line per robot")
    args = ap.parse_args()
    torch.set_num_threads(1)
    solved: dict[str, list[tuple[float, float]]] = {}
    for robot in args.robots:
        solver = IKPipeline.from_robot(robot, warmup=False, collision=False).solver
        _, T = random_targets(solver.robot, args.targets, args.seed)
        batch = SolveBatch.of(T, 1, solver.robot.n_joints)
        for plan in args.plans:
            steps, tail, eta, tau = (plan.split(",") + ["1"])[:4]
            q = one_sample_with(solver, batch, int(steps), int(tail), float(eta), args.seed, float(tau))
            ok = verified(solver.robot, solver.run(batch, q0=q, random_seed=0)["q"], T)
            solved.setdefault(robot, []).append((float(tau), 100 * ok.double().mean().item()))
            print(f"{robot} DDIM-{steps} + tail-{tail}, eta {eta}, temperature {tau}: one sample + LM "
                  f"{100 * ok.double().mean():.1f} %, "
                  f"raw median {1000 * errors(solver.robot, q, T)[0].median():.1f} mm", flush=True)
    if args.plot:
        steps, tail, eta = args.plans[0].split(",")[:3]
        plot_temperatures(solved, args.plot, f"{args.targets} targets, DDIM-{steps} + tail-{tail}, eta {eta}")


def plot_temperatures(solved: dict[str, list[tuple[float, float]]], out: str, subtitle: str) -> None:
    """One sample + LM [%] against the initial noise's temperature, a line per robot, to the PNG ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ikdiffuser_ros.training.model_card import DEFAULT_TEMPERATURE

    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.axvline(DEFAULT_TEMPERATURE, color="grey", lw=0.8, ls="--", label="the cards' temperature")
    for robot, points in solved.items():
        taus, pct = zip(*sorted(points))
        ax.plot(taus, pct, marker="o", label=robot)
    ax.set(xlabel="temperature of the initial noise (standard deviation)", ylabel="one sample + LM solved [%]",
           title=f"One sample + LM against the sampling temperature\n({subtitle})")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
