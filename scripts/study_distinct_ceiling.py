"""How many distinct solutions a target has at the bench's resolution: the ceiling of "distinct solutions per
second" in ``ikdiffuser bench``'s many-solutions protocol (docs/benchmarks.md, issue 19).

Protocol 2's targets (the first ``--targets`` of seed 2^31, as ``ikdiffuser bench`` draws them), and for each
``--starts`` uniform starts of the solver's LM in growing pools; the verified solutions of each pool are
counted distinct as the bench counts them (0.05 rad / 5 mm in some joint, greedy leader clustering, in start
order). A solver that finds D distinct solutions of a target within the 1 s of the protocol can at most
reach ``ceiling / D`` times that, however fast it is.

    python scripts/study_distinct_ceiling.py --robot panda --targets 5 --starts 2000 8000 32000
"""

from __future__ import annotations

import argparse

import torch

from ikdiffuser_ros.bench.pipelines import UniformPipeline
from ikdiffuser_ros.bench.protocols import DEFAULT_SEED, random_targets, verified
from ikdiffuser_ros.kinematics.joint_kinds import joint_kinds
from ikdiffuser_ros.robots import load_robot
from ikdiffuser_ros.sampling.dedup import joint_tolerances, unique_mask
from ikdiffuser_ros.solver import SolverConfig


def distinct_by_pool(model, lm: UniformPipeline, target: torch.Tensor, pools: list[int], chunk: int = 2000
                     ) -> list[tuple[int, int]]:
    """(E, 4, 4) target -> [(verified, distinct)] of the first ``pools[k]`` uniform starts, for each k."""
    tol, wrap = joint_tolerances(model), joint_kinds(model)[1]
    found, out, seed = [], [], 0
    for size in pools:
        while sum(len(f) for f in found) < size:
            q, _ = lm.rows(target[None], chunk, None, seed)
            seed += 1
            found.append(q[0])
        q = torch.cat(found)[:size]
        good = q[verified(model, q, target[None].expand(size, -1, -1, -1))]
        out.append((len(good), int(unique_mask(good, None, tol, wrap).sum()) if len(good) else 0))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--robot", default="panda")
    parser.add_argument("--targets", type=int, default=5)
    parser.add_argument("--starts", type=int, nargs="+", default=[2000, 8000, 32000])
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load_robot(args.robot)
    lm = UniformPipeline(model, SolverConfig().refine, max_chunk=2000)
    _, targets = random_targets(model, args.targets, DEFAULT_SEED + 1)
    rows = [distinct_by_pool(model, lm, t, sorted(args.starts)) for t in targets]
    print("| target | " + " | ".join(f"{s} starts: verified, distinct" for s in sorted(args.starts)) + " |")
    print("|---|" + "---:|" * len(args.starts))
    for i, r in enumerate(rows):
        print(f"| {i} | " + " | ".join(f"{v}, {d}" for v, d in r) + " |")
    means = [sum(r[k][1] for r in rows) / len(rows) for k in range(len(args.starts))]
    print("| mean distinct | " + " | ".join(f"{m:.1f}" for m in means) + " |")


if __name__ == "__main__":
    main()
