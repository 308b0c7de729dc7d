"""One sample + LM on the model cards' held-out targets under LM settings: which stopping rule rescues failures.

    python scripts/study_lm_stopping.py --robots baxter panda \
        --variants max_iters=80,progress_ratio=0.9 max_iters=300,patience=60 max_iters=300,progress_ratio=0.99

One diffusion sample per target (the card's LM-ready plan, as ``ikdiffuser ship`` evaluates), then the solver's LM
with each :class:`RefineConfig` variant (fields over the defaults) from the *same* samples. Prints per variant the
share verified (1e-5 m / 1e-4 rad, within limits) and the mean LM iterations of the solved and the failed rows (the
failed rows' iterations are what a request pays before its next round).
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from ikdiffuser_ros.bench.protocols import verified
from ikdiffuser_ros.model.checkpoint import load_checkpoint
from ikdiffuser_ros.robots import load_robot
from ikdiffuser_ros.sampling.lm import RefineConfig
from ikdiffuser_ros.solver import IKDiffuserSolver, SolveBatch
from ikdiffuser_ros.training.model_card import _held_out_targets


def parse_variant(text: str) -> dict:
    """``"max_iters=300,progress_ratio=0.99"`` -> fields of :class:`RefineConfig`, typed as its defaults."""
    defaults = RefineConfig()
    fields = dict(kv.split("=") for kv in text.split(",") if kv)
    return {k: type(getattr(defaults, k))(v) for k, v in fields.items()}


def study(robot_name: str, variants: list[str], num_targets: int) -> None:
    """Print one line per variant for one robot's shipped model."""
    robot = load_robot(robot_name)
    _, T, _, _ = _held_out_targets(robot, num_targets)
    solver = IKDiffuserSolver.from_model(load_checkpoint(f"models/{robot_name}", robot), robot)
    batch = SolveBatch.of(T, 1, robot.n_joints)
    raw = batch.with_locked(solver._sample(batch, None, "ddim", None, None, 0, None, {}, True, 0.0, True, None))
    for text in variants:
        refine = dataclasses.replace(RefineConfig(), **parse_variant(text))
        solver.config = dataclasses.replace(solver.config, refine=refine)
        res = solver._refine(batch, raw, None, None, {}, None)
        ok, iters = verified(robot, res.q, T), res.iterations.double()
        failed = f"{float(iters[~ok].mean()):.0f}" if (~ok).any() else "-"
        print(f"{robot_name} {text or 'defaults'}: {100 * float(ok.double().mean()):.1f} %, iterations solved "
              f"{float(iters[ok].mean()):.1f}, failed {failed}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--robots", nargs="+", default=["baxter", "panda"])
    p.add_argument("--variants", nargs="+", default=["", "max_iters=80,progress_ratio=0.9"],
                   help="comma-separated RefineConfig fields over the defaults ('' = the defaults)")
    p.add_argument("--targets", type=int, default=1000)
    args = p.parse_args()
    torch.set_num_threads(1)
    for name in args.robots:
        study(name, args.variants, args.targets)


if __name__ == "__main__":
    main()
