"""``ikdiffuser bench``: IKDiffuser against the IK solvers users would pick instead.

Solvers (all on the same targets, in one process; protocols in
:mod:`ikdiffuser_ros.bench.protocols`):

* ``ikdiffuser``: the shipped model of each robot (``models/<robot>``) through
  ``IKDiffuserSolver`` (:mod:`ikdiffuser_ros.bench.pipelines`);
* ``uniform+LM``: the same pipeline from uniform random starts (the ablation of the prior);
* peers (:mod:`ikdiffuser_ros.bench.peers`, optional, ``requirements/bench.txt``): ``trac_ik``
  (pytracik), ``rtb_ik_LM`` (robotics-toolbox), ``pink`` (whole-body QP), ``kdl`` (python3-pykdl).
  A peer that is not installed is skipped with a note.

Protocols (``--protocols``, default ``one many``): ``one`` (one solution per target within a budget),
``many`` (every solution within a budget per target), ``coverage`` (MMD to a ground-truth solution set
and the share of its clusters found; :mod:`ikdiffuser_ros.bench.coverage`, sized by ``--coverage-*``).

Robots: by default every ``config/robots/<name>.yaml`` with a shipped model in ``models/<name>``.
``--docs`` rewrites the marked sections of docs/benchmarks.md (one per protocol family run),
``--plots`` writes the PNGs.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from ikdiffuser_ros.bench import coverage_report as cov_rep
from ikdiffuser_ros.bench import report as rep
from ikdiffuser_ros.bench.coverage import CoverageConfig, run_coverage
from ikdiffuser_ros.bench.fk import _machine
from ikdiffuser_ros.bench.peer_registry import PEERS, build_peers
from ikdiffuser_ros.bench.pipelines import PriorPipeline, UniformPipeline
from ikdiffuser_ros.bench.protocols import (DEFAULT_SEED, SolutionCounter, many_solutions_batched,
                                            many_solutions_peer, one_solution_batched, one_solution_peer,
                                            random_targets, table_and_box)

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SOLVERS = ["ikdiffuser", "uniform+LM", *PEERS]
PROTOCOLS = ["one", "many", "coverage"]
#: Seeds of the solvers' random starts are the target seed minus this (the runs add < 1e6 to them).
SOLVER_SEED_OFFSET = 10**6
PEER_PACKAGES = ["pytracik", "roboticstoolbox-python", "pin", "pin-pink", "daqp"]


def shipped_robots(models_dir: Path) -> list[str]:
    """Robots with a config in config/robots and a model card in ``models_dir``/<name>."""
    from ikdiffuser_ros.robots import available_robots

    return [r for r in available_robots() if (models_dir / r / "card.json").is_file()]


def _versions() -> dict[str, str]:
    """Installed versions of the peer packages (PyPI, and Debian's python3-pykdl)."""
    out = {}
    for pkg in PEER_PACKAGES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    try:
        kdl = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "python3-pykdl"], capture_output=True,
                             text=True, timeout=10)
        if kdl.returncode == 0 and kdl.stdout:
            out["python3-pykdl"] = kdl.stdout
    except (OSError, subprocess.SubprocessError):
        pass
    return out


#: most solutions per target of the ikdiffuser row's protocol-2 query (it stops when it has them all)
MANY_SOLUTIONS = 4096


def _pipelines(args: argparse.Namespace, model, name: str, notes: list[str]) -> list:
    """The batched rows asked for: the shipped model through :class:`IKPipeline` (if there is one) and the
    uniform ablation."""
    from ikdiffuser_ros.model.checkpoint import read_card
    from ikdiffuser_ros.pipeline import IKPipeline, PipelineConfig
    from ikdiffuser_ros.solver import SolverConfig

    out = []
    if "ikdiffuser" in args.solvers:
        path = args.models / name
        if (path / "card.json").is_file():
            config = PipelineConfig(max_targets=max(PipelineConfig.max_targets, args.one_targets),
                                    max_num_solutions=MANY_SOLUTIONS, steps=args.steps)
            row = PriorPipeline(IKPipeline.from_robot(model, path, args.device, config, collision=False))
            card = read_card(path)
            row.description += (f"; model {path.name}: {card.get('architecture', {}).get('type')}, "
                                f"{card.get('training', {}).get('steps')} training steps")
            out.append(row)
        else:
            notes.append(f"ikdiffuser: skipped, no model in {path}")
    if "uniform+LM" in args.solvers:
        out.append(UniformPipeline(model, SolverConfig().refine, args.chunk))
    return out


def coverage_config(args: argparse.Namespace) -> CoverageConfig:
    """The coverage protocol's sizes from the ``--coverage-*`` options."""
    return CoverageConfig(targets=args.coverage_targets, gt_restarts=args.coverage_gt_restarts,
                          gt_tracik=args.coverage_gt_tracik, num_solutions=args.coverage_solutions,
                          mmd_k=args.coverage_mmd_k, mmd_ref=args.coverage_mmd_ref, budget=args.coverage_budget,
                          cap=args.coverage_cap, cluster_rad=args.coverage_cluster_rad,
                          cluster_m=args.coverage_cluster_rad / 10)


def _tracik_ground_truth(peers: list, model, xml: str, budget: float, notes: list[str]):
    """The TRAC-IK peer of the coverage ground truth (the bench's own when it runs, else one of its own; None
    when pytracik is not installed or cannot model the robot)."""
    peer = next((p for p in peers if p.name == "trac_ik"), None)
    if peer is None:
        built, why = build_peers(["trac_ik"], model, xml, budget)
        peer = built[0] if built else None
        notes += [f"coverage ground truth without TRAC-IK: {w}" for w in why]
    return peer


def bench_robot(args: argparse.Namespace, name: str) -> dict:
    """The protocols asked for on one robot -> its part of the JSON report."""
    from ikdiffuser_ros.collision.fcl_checker import CollisionChecker
    from ikdiffuser_ros.robots import robot_config

    cfg = robot_config(name)
    model, xml = cfg.load(), cfg.urdf_text()
    protocols = set(args.protocols)
    notes: list[str] = []
    pipelines = _pipelines(args, model, name, notes)
    peer_names = [p for p in args.solvers if p in PEERS]
    peers_1, notes_1 = build_peers(peer_names, model, xml, max(args.budgets)) if "one" in protocols else ([], [])
    peers_2, notes_2 = build_peers(peer_names, model, xml, args.main_budget) \
        if protocols & {"many", "coverage"} else ([], [])
    notes += notes_1 or notes_2
    peers = peers_1 or peers_2
    if len(model.end_effectors) > 1 and any(p.name != "pink" for p in peers):
        notes.append("serial-chain peers (TRAC-IK, rtb, KDL) solve the arms one after another; pink solves all "
                     "end effectors in one whole-body QP")
    if any(p.name == "trac_ik" for p in peers):
        notes.append("TRAC-IK runs two threads per call (KDL and NLopt in parallel); the others one")
    main = args.budgets.index(args.main_budget)
    seed = args.seed - SOLVER_SEED_OFFSET  # solvers' random starts never replay the targets' configurations
    one, many = [], []
    if "one" in protocols:
        _, targets_1 = random_targets(model, args.one_targets, args.seed)
        one = [one_solution_batched(p, targets_1, args.budgets, main, seed) for p in pipelines]
        one += [one_solution_peer(p, model, targets_1, args.budgets, main, seed) for p in peers_1]
    if "many" in protocols:
        _, targets_2 = random_targets(model, args.many_targets, args.seed + 1)
        counter = SolutionCounter(model, CollisionChecker(model), table_and_box(model), args.max_checks, seed)
        many = [many_solutions_batched(p, targets_2, args.many_budget, counter, seed) for p in pipelines]
        many += [many_solutions_peer(p, targets_2, args.many_budget, counter, seed) for p in peers_2]
    out = {
        "n_joints": model.n_joints,
        "end_effectors": model.end_effectors,
        "fingerprint": model.fingerprint(),
        "solvers": {p.name: p.description for p in [*pipelines, *peers]},
        "notes": notes,
        "one_solution": [asdict(r) for r in one],
        "many": [{**asdict(r), "mean_diversity": r.mean_diversity} for r in many],
    }
    if "coverage" in protocols:
        ccfg = coverage_config(args)
        tracik = _tracik_ground_truth(peers_2, model, xml, args.main_budget, notes) if ccfg.gt_tracik else None
        # the coverage targets are protocol 2's (the same seed, as many as asked for)
        out["coverage"] = run_coverage(model, pipelines, peers_2, tracik, ccfg, seed, args.seed + 1,
                                       progress=not args.no_progress)
    print(f"[bench] {name}: done", file=sys.stderr)
    return out


def _command(subcommand: str = "bench") -> str:
    """The command line of this run, for the docs."""
    if Path(sys.argv[0]).name == "ikdiffuser":
        return " ".join(["ikdiffuser", *sys.argv[1:]])
    return f"ikdiffuser {subcommand} (called from Python)"


def run(args: argparse.Namespace) -> dict:
    """The JSON report of the whole comparison (see :mod:`ikdiffuser_ros.bench.report`)."""
    torch.manual_seed(0)
    robots = args.robots or shipped_robots(args.models)
    settings = {
        "command": _command(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{_machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start",
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "versions": _versions(),
        "seed": args.seed, "one_targets": args.one_targets, "budgets_s": args.budgets,
        "main_budget_s": args.main_budget, "many_targets": args.many_targets, "many_budget_s": args.many_budget,
        "chunk": args.chunk, "max_checks": args.max_checks, "steps": args.steps, "protocols": args.protocols,
    }
    if "coverage" in args.protocols:
        settings["coverage"] = coverage_config(args).__dict__
    return {"settings": settings, "robots": {name: bench_robot(args, name) for name in robots}}


def register(subparsers) -> None:
    """Add ``bench`` to the ``ikdiffuser`` command."""
    p = subparsers.add_parser("bench", help="IK vs TRAC-IK, robotics-toolbox, pink and KDL on the same targets",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--robots", nargs="+", default=None, help="default: every robot with a shipped model")
    p.add_argument("--models", type=Path, default=REPO / "models", help="checkpoint root (models/<robot>)")
    p.add_argument("--solvers", nargs="+", default=DEFAULT_SOLVERS, choices=DEFAULT_SOLVERS)
    p.add_argument("--protocols", nargs="+", default=["one", "many"], choices=PROTOCOLS,
                   help="one: one solution per target; many: every solution within a budget; coverage: MMD to a "
                        "ground-truth solution set and the share of its clusters found (default: one many)")
    p.add_argument("--one-targets", type=int, default=1000, help="protocol 1: targets")
    p.add_argument("--budgets-ms", type=float, nargs="+", default=[1, 2, 5, 10, 20],
                   help="protocol 1: time budgets per target [ms]")
    p.add_argument("--main-budget-ms", type=float, default=5, help="protocol 1: budget of the tables [ms]")
    p.add_argument("--many-targets", type=int, default=10, help="protocol 2: targets")
    p.add_argument("--many-budget", type=float, default=1.0, help="protocol 2: seconds per target")
    p.add_argument("--chunk", type=int, default=256, help="protocol 2: most rows per batch of the uniform+LM ablation")
    p.add_argument("--max-checks", type=int, default=500, help="protocol 2: FCL checks per target and solver")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the solver's)")
    c = CoverageConfig()
    p.add_argument("--coverage-targets", type=int, default=c.targets, help="coverage: targets (protocol 2's seed)")
    p.add_argument("--coverage-gt-restarts", type=int, default=c.gt_restarts,
                   help="coverage: uniform starts of our exact LM per target for the ground truth")
    p.add_argument("--coverage-gt-tracik", type=int, default=c.gt_tracik,
                   help="coverage: TRAC-IK restarts per target for the ground truth (0: none)")
    p.add_argument("--coverage-solutions", type=int, default=c.num_solutions,
                   help="coverage: N, the solutions asked of each solver per target")
    p.add_argument("--coverage-mmd-k", type=int, default=c.mmd_k,
                   help="coverage: the first K of the N solutions go into the MMD (HJCD-IK: 50)")
    p.add_argument("--coverage-mmd-ref", type=int, default=c.mmd_ref,
                   help="coverage: ground-truth solutions per target in the MMD (drawn at random)")
    p.add_argument("--coverage-budget", type=float, default=c.budget,
                   help="coverage: seconds per target of the time-budget run")
    p.add_argument("--coverage-cap", type=float, default=c.cap,
                   help="coverage: most seconds per target to find the N solutions")
    p.add_argument("--coverage-cluster-rad", type=float, default=c.cluster_rad,
                   help="coverage: cluster radius of the ground truth [rad; lengths: a tenth of it in m]")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", type=Path, default=None, help="write the JSON report here")
    p.add_argument("--docs", type=Path, default=None, help="rewrite the marked section of this markdown file")
    p.add_argument("--plots", type=Path, default=None, help="write the PNG plots into this folder")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    args.budgets = [b / 1e3 for b in args.budgets_ms]
    args.main_budget = args.main_budget_ms / 1e3
    if args.main_budget not in args.budgets:
        args.budgets = sorted([*args.budgets, args.main_budget])
    result = run(args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    if {"one", "many"} & set(args.protocols):
        text = rep.markdown(result)
        print(text)
        if args.plots:
            rep.plot(result, args.plots)
        if args.docs:
            rep.replace_section(args.docs, text)
    if "coverage" in args.protocols:
        text = cov_rep.markdown(result)
        print(json.dumps(cov_rep.summary_json(result), indent=1))
        print(text)
        if args.plots:
            cov_rep.plot(result, args.plots)
        if args.docs:
            rep.replace_section(args.docs, text, cov_rep.BEGIN, cov_rep.END)
    return 0
