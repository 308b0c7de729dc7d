"""What users run, two versions of the pipeline in one process: an older ``ikdiffuser_ros/pipeline.py`` against the
working tree's, or the working tree's with two checkpoints (``--models``: a run against the shipped model, before
``ikdiffuser ship`` replaces it), the same queries interleaved per target (the order alternating), so both see the
same machine.

    OMP_NUM_THREADS=1 python scripts/ab_pipeline.py --old <commit> --robot baxter --targets 60 \\
        --cases 1x1@2 1x8@5 1x32@10 16x1@10 64x1@20 16x4@20 4x32@50
    OMP_NUM_THREADS=1 python scripts/ab_pipeline.py --models models/ur5 runs/ur5 --robot ur5 --targets 300 \\
        --cases 1x1@2 1x1@5 1x32@10

A case ``BxN@T`` asks N solutions for each of B targets within T ms (FK poses of uniform configurations). Prints
per case and version: the share of queries whose every target got N verified solutions in time, the share of targets
that got N, the median of the fewest any target got, the answer's median and p95 time [ms], and the share of
answers that came after the budget (and the latest, past it). The older modules
run against the working tree's others (solver, LM, kinematics): compare pipeline changes only. ``--old`` may also be
an older ``pipeline.py`` alone (``git show <commit>:ikdiffuser_ros/pipeline.py > /tmp/old.py``).
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ikdiffuser_ros.bench.protocols import DEFAULT_SEED, random_targets, verified
from ikdiffuser_ros.pipeline import IKPipeline
from ikdiffuser_ros.query import IKQuery, IKTarget
from ikdiffuser_ros.robots import robot_config


#: Modules an older pipeline is loaded with from its commit, in import order (a module the commit lacks is skipped).
OLD_MODULES = ("sampling/dedup", "pool_ranking", "call_costs", "pipeline")


def load_old(old: str):
    """The older pipeline module, imported beside the working tree's: ``old`` a ``pipeline.py`` file (run against
    the working tree's other modules), or a commit, whose OLD_MODULES are loaded with each other (while they load,
    their names in ``sys.modules`` point at the old ones; the working tree's modules keep theirs)."""
    if Path(old).is_file():
        return _load_module("ikdiffuser_ros._old_pipeline", Path(old))
    folder, saved, module = Path(tempfile.mkdtemp(prefix="old_pipeline_")), {}, None
    try:
        for name in OLD_MODULES:
            shown = subprocess.run(["git", "show", f"{old}:ikdiffuser_ros/{name}.py"], capture_output=True, text=True)
            if shown.returncode:
                continue
            path = folder / (name.replace("/", "_") + ".py")
            path.write_text(shown.stdout)
            dotted = "ikdiffuser_ros." + name.replace("/", ".")
            saved[dotted] = sys.modules.get(dotted)
            module = sys.modules[dotted] = _load_module("ikdiffuser_ros._old_" + name.replace("/", "_"), path)
    finally:
        for dotted, kept in saved.items():
            sys.modules[dotted] = kept
    return module


def _load_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def parse_case(text: str) -> tuple[int, int, float]:
    """``"16x4@20"`` -> (16 targets, 4 solutions, 0.020 s)."""
    head, ms = text.split("@")
    targets, num = head.split("x")
    return int(targets), int(num), float(ms) / 1e3


def run_case(pipeline, model, T: np.ndarray, num: int, budget: float, seed: int,
             report_collisions: bool = False) -> tuple[int, float, float]:
    """One query -> (fewest verified solutions of a target, seconds, share of targets with ``num``)."""
    ees = list(model.end_effectors)
    query = IKQuery([IKTarget(ees, list(t)) for t in T], num_solutions=num, timeout=budget, random_seed=seed,
                    report_collisions=report_collisions)
    t0 = time.perf_counter()
    answer = pipeline.answer(query)
    seconds = time.perf_counter() - t0
    good = []
    for target, pose in zip(answer.targets, T):
        q = torch.from_numpy(target.q)
        good.append(int(verified(model, q, torch.from_numpy(pose).expand(len(q), *pose.shape)).sum()) if len(q) else 0)
    return min(good), seconds, float(np.mean([g >= num for g in good]))


def _pipelines(args: argparse.Namespace) -> dict:
    """The two versions by name: ``old`` and ``new`` pipelines, or the two ``--models`` folders'."""
    if args.models:
        return {path: IKPipeline.from_robot(args.robot, path) for path in args.models}
    return {"old": load_old(args.old).IKPipeline.from_robot(args.robot), "new": IKPipeline.from_robot(args.robot)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--old", help="an older ikdiffuser_ros/pipeline.py, or a commit (its pipeline with its "
                                     "de-duplication, ranking and cost modules)")
    which.add_argument("--models", nargs=2, metavar=("A", "B"), help="two checkpoint folders, the same pipeline")
    p.add_argument("--robot", default="baxter")
    p.add_argument("--targets", type=int, default=60, help="queries per case")
    p.add_argument("--cases", nargs="+", default=["1x1@2", "1x8@5", "1x32@10", "16x4@20"])
    p.add_argument("--report-collisions", action="store_true",
                   help="every answer's collisions checked and reported, as the node's get_ik_solutions asks")
    args = p.parse_args()
    torch.set_num_threads(1)
    cases = [parse_case(c) for c in args.cases]
    model = robot_config(args.robot).load()
    most = max(b for b, _, _ in cases)
    _, T = (t.numpy() for t in random_targets(model, args.targets * most, DEFAULT_SEED))
    pipes = _pipelines(args)
    res = {(k, c): [] for k in pipes for c in cases}
    for i in range(args.targets):
        for case in cases:
            for k in list(pipes)[::1 if i % 2 else -1]:
                res[k, case].append(run_case(pipes[k], model, T[most * i: most * i + case[0]], case[1], case[2], i,
                                             args.report_collisions))
    for case in cases:
        for k in pipes:
            fewest, seconds, share = (np.array(x) for x in zip(*res[k, case]))
            print(f"{args.robot} {k} {case[0]}x{case[1]} in {1e3 * case[2]:g} ms: all in time "
                  f"{100 * np.mean((fewest >= case[1]) & (seconds <= case[2])):.0f} %, targets served "
                  f"{100 * share.mean():.0f} %, fewest median {np.median(fewest):.0f}, ms median "
                  f"{1e3 * np.median(seconds):.2f} p95 {1e3 * np.percentile(seconds, 95):.2f}, late "
                  f"{100 * np.mean(seconds > case[2]):.0f} % (max {1e3 * (seconds.max() - case[2]):+.2f} ms)", flush=True)


if __name__ == "__main__":
    main()
