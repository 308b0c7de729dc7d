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
            training = card.get("training", {})
            steps = training.get("cumulative", {}).get("steps", training.get("steps"))
            row.description += f"; model {path.name}: {card.get('architecture', {}).get('type')}, {steps} training steps"
            out.append(row)
        else:
            notes.append(f"ikdiffuser: skipped, no model in {path}")
    if "uniform+LM" in args.solvers:
        out.append(UniformPipeline(model, SolverConfig().refine, args.chunk))
    return out


#: The ``--coverage-*`` options: (field of :class:`CoverageConfig`, help); each option is named after its field
#: (``--coverage-<field with dashes>``, but for :data:`COVERAGE_OPTION_NAMES`), dest ``coverage_<name>``, type and
#: default those of ``CoverageConfig()``'s field. ``cluster_m`` has no option: a tenth of ``cluster_rad``.
COVERAGE_OPTIONS: tuple[tuple[str, str], ...] = (
    ("targets", "coverage: targets (protocol 2's seed)"),
    ("gt_restarts", "coverage: uniform starts of our exact LM per target for the ground truth"),
    ("gt_tracik", "coverage: TRAC-IK restarts per target for the ground truth (0: none)"),
    ("num_solutions", "coverage: N, the solutions asked of each solver per target"),
    ("mmd_k", "coverage: the first K of the N solutions go into the MMD (HJCD-IK: 50)"),
    ("mmd_ref", "coverage: ground-truth solutions per target in the MMD (drawn at random)"),
    ("budget", "coverage: seconds per target of the time-budget run"),
    ("cap", "coverage: most seconds per target to find the N solutions"),
    ("cluster_rad", "coverage: cluster radius of the ground truth [rad; lengths: a tenth of it in m]"),
)
#: Options not named after their field.
COVERAGE_OPTION_NAMES = {"num_solutions": "solutions"}


def coverage_dest(field_name: str) -> str:
    """The argparse dest of a :class:`CoverageConfig` field's option (``num_solutions`` -> ``coverage_solutions``)."""
    return "coverage_" + COVERAGE_OPTION_NAMES.get(field_name, field_name)


def coverage_config(args: argparse.Namespace) -> CoverageConfig:
    """The coverage protocol's sizes from the ``--coverage-*`` options (``cluster_m``: a tenth of
    ``--coverage-cluster-rad``, in m)."""
    sizes = {name: getattr(args, coverage_dest(name)) for name, _ in COVERAGE_OPTIONS}
    return CoverageConfig(**sizes, cluster_m=args.coverage_cluster_rad / 10)


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
    from ikdiffuser_ros.robots import robot_config

    cfg = robot_config(name)
    model, xml = cfg.load(), cfg.urdf_text()
    protocols = set(args.protocols)
    notes: list[str] = []
    pipelines = _pipelines(args, model, name, notes)
    peers_1, peers_2 = _peers(args, model, xml, protocols, notes)
    seed = args.seed - SOLVER_SEED_OFFSET  # solvers' random starts never replay the targets' configurations
    one = _one_solution(args, model, pipelines, peers_1, seed) if "one" in protocols else []
    many = _many_solutions(args, model, pipelines, peers_2, seed) if "many" in protocols else []
    out = {
        "n_joints": model.n_joints,
        "end_effectors": model.end_effectors,
        "fingerprint": model.fingerprint(),
        "solvers": {p.name: p.description for p in [*pipelines, *(peers_1 or peers_2)]},
        "notes": notes,
        "one_solution": [asdict(r) for r in one],
        "many": [{**asdict(r), "mean_diversity": r.mean_diversity,
                  "mean_diversity_self_free": r.mean_diversity_self_free} for r in many],
    }
    if "coverage" in protocols:
        out["coverage"] = _coverage(args, model, xml, pipelines, peers_2, seed, notes)
    print(f"[bench] {name}: done", file=sys.stderr)
    return out


def _peers(args: argparse.Namespace, model, xml: str, protocols: set[str], notes: list[str]) -> tuple[list, list]:
    """The peers asked for, built for protocol 1 (timeout: the largest budget) and for protocols 2 and coverage
    (timeout: the main budget) where those run -> (peers_1, peers_2); why a peer is missing and how the peers
    differ go into ``notes``."""
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
    return peers_1, peers_2


def _one_solution(args: argparse.Namespace, model, pipelines: list, peers: list, seed: int) -> list:
    """Protocol 1 on ``args.one_targets`` targets (seed ``args.seed``): one result per solver, every budget [s]
    of ``args.budgets``, the tables' at ``args.main_budget``; ``seed``: the solvers' random starts."""
    main = args.budgets.index(args.main_budget)
    _, targets = random_targets(model, args.one_targets, args.seed)
    one = [one_solution_batched(p, targets, args.budgets, main, seed) for p in pipelines]
    return one + [one_solution_peer(p, model, targets, args.budgets, main, seed) for p in peers]


def _many_solutions(args: argparse.Namespace, model, pipelines: list, peers: list, seed: int) -> list:
    """Protocol 2 on ``args.many_targets`` targets (seed ``args.seed + 1``), ``args.many_budget`` seconds per
    target, at most ``args.max_checks`` FCL checks per target and solver: one result per solver."""
    from ikdiffuser_ros.collision.fcl_checker import CollisionChecker

    _, targets = random_targets(model, args.many_targets, args.seed + 1)
    counter = SolutionCounter(model, CollisionChecker(model), table_and_box(model), args.max_checks, seed)
    many = [many_solutions_batched(p, targets, args.many_budget, counter, seed) for p in pipelines]
    return many + [many_solutions_peer(p, targets, args.many_budget, counter, seed) for p in peers]


def _coverage(args: argparse.Namespace, model, xml: str, pipelines: list, peers: list, seed: int,
              notes: list[str]) -> dict:
    """The coverage protocol (:func:`run_coverage`) on protocol 2's targets (the same seed, as many as asked
    for), TRAC-IK in the ground truth where ``--coverage-gt-tracik`` is not 0 and it is installed."""
    ccfg = coverage_config(args)
    tracik = _tracik_ground_truth(peers, model, xml, args.main_budget, notes) if ccfg.gt_tracik else None
    return run_coverage(model, pipelines, peers, tracik, ccfg, seed, args.seed + 1, progress=not args.no_progress)


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
    _add_selection_options(p)
    _add_protocol_options(p)
    _add_coverage_options(p)
    _add_run_options(p)
    p.set_defaults(func=main)


def _add_selection_options(p: argparse.ArgumentParser) -> None:
    """``--robots``, ``--models``, ``--solvers``, ``--protocols``: what is compared."""
    p.add_argument("--robots", nargs="+", default=None, help="default: every robot with a shipped model")
    p.add_argument("--models", type=Path, default=REPO / "models", help="checkpoint root (models/<robot>)")
    p.add_argument("--solvers", nargs="+", default=DEFAULT_SOLVERS, choices=DEFAULT_SOLVERS)
    p.add_argument("--protocols", nargs="+", default=["one", "many"], choices=PROTOCOLS,
                   help="one: one solution per target; many: every solution within a budget; coverage: MMD to a "
                        "ground-truth solution set and the share of its clusters found (default: one many)")


def _add_protocol_options(p: argparse.ArgumentParser) -> None:
    """The sizes of protocols 1 and 2 (targets, budgets in ms or s, batch rows, FCL checks) and sampler steps."""
    p.add_argument("--one-targets", type=int, default=1000, help="protocol 1: targets")
    p.add_argument("--budgets-ms", type=float, nargs="+", default=[1, 2, 5, 10, 20],
                   help="protocol 1: time budgets per target [ms]")
    p.add_argument("--main-budget-ms", type=float, default=5, help="protocol 1: budget of the tables [ms]")
    p.add_argument("--many-targets", type=int, default=10, help="protocol 2: targets")
    p.add_argument("--many-budget", type=float, default=1.0, help="protocol 2: seconds per target")
    p.add_argument("--chunk", type=int, default=256, help="protocol 2: most rows per batch of the uniform+LM ablation")
    p.add_argument("--max-checks", type=int, default=500, help="protocol 2: FCL checks per target and solver")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the solver's)")


def _add_coverage_options(p: argparse.ArgumentParser) -> None:
    """The ``--coverage-*`` options from :data:`COVERAGE_OPTIONS`, typed and defaulted as ``CoverageConfig()``."""
    defaults = CoverageConfig()
    for name, help_ in COVERAGE_OPTIONS:
        dest = coverage_dest(name)
        default = getattr(defaults, name)
        p.add_argument("--" + dest.replace("_", "-"), dest=dest, type=type(default), default=default, help=help_)


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """Progress bar, seed, device and where the report, the docs section and the plots go."""
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", type=Path, default=None, help="write the JSON report here")
    p.add_argument("--docs", type=Path, default=None, help="rewrite the marked section of this markdown file")
    p.add_argument("--plots", type=Path, default=None, help="write the PNG plots into this folder")


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
