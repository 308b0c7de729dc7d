"""``ikdiffuser bench-request``: one target per IK call with a few ms of budget, as robot stacks and
MoveIt call IK (issue 15), IKDiffuser and the peers side by side on the same targets, in one run.

Targets: FK poses of configurations drawn uniformly within the limits (seed ``2**31 - 1`` by
default, never used in training; :func:`~ikdiffuser_ros.bench.protocols.random_targets`), every
end effector constrained. Each solver gets *one target per call*, the budget as its timeout:

* ``ikdiffuser``: the node's pipeline (:func:`_our_pipeline`), warmed up once, then one
  ``IKPipeline.answer`` per target: one :class:`IKTarget` (every end effector), ``num_solutions=1``,
  ``timeout`` = the budget, ``random_seed`` = the target's index;
* peers (:mod:`ikdiffuser_ros.bench.peers`): one :func:`~ikdiffuser_ros.bench.peers.restart_until`
  per target with the budget as its deadline: every attempt, the first one included, starts from a
  uniform random configuration; TRAC-IK is built with the budget as its own timeout; the
  serial-chain peers solve multi-arm targets arm after arm. Peers that are not installed are
  skipped with a note.

Latency: ``time.perf_counter()`` around the call (what a caller waits for). *Success*: the first
returned configuration passes :func:`~ikdiffuser_ros.bench.protocols.verified` (float64 FK within
1e-5 m / 1e-4 rad at every end effector, within limits), whatever the solver claimed, whenever it
came; *in budget*: a success that came within the budget.

Extra rows, ikdiffuser only ("n/a" while :class:`IKQuery` lacks the feature):

* *seed that solves*: ``seed`` = the configuration whose FK made the target; success = verified
  and within 1e-6 (rad or m) of the seed in every joint;
* *local mode*: ``seed`` = that configuration + uniform noise of max-norm 0.1 (clamped into the
  limits), ``consistency_limits=0.3``, 5 ms; success = verified and within 0.3 of the seed in every
  joint (continuous joints modulo 2 pi);
* *1 target x 32 solutions* in 10 ms: verified solutions per call and the distinct ones among them
  (> 0.05 rad / 5 mm apart in some joint), median / 10th percentile; its success = 32 verified.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ikdiffuser_ros.bench import report as rep
from ikdiffuser_ros.bench.fk import _machine
from ikdiffuser_ros.bench.ik import REPO, SOLVER_SEED_OFFSET, _command, _versions, shipped_robots
from ikdiffuser_ros.bench.peer_registry import PEERS, build_peers
from ikdiffuser_ros.bench.peers import restart_until
from ikdiffuser_ros.bench.protocols import DEFAULT_SEED, random_targets, verified
from ikdiffuser_ros.kinematics.joint_kinds import joint_kinds, wrap_to_pi
from ikdiffuser_ros.kinematics.robot_model import RobotModel
from ikdiffuser_ros.query import IKQuery, IKTarget
from ikdiffuser_ros.sampling.dedup import joint_tolerances, unique_mask

BEGIN, END = "<!-- bench-request:begin -->", "<!-- bench-request:end -->"
OURS = "ikdiffuser"
SOLVERS = [OURS, *PEERS]
SEED_ROW, LOCAL_ROW, MANY_ROW = "ikdiffuser: seed that solves", "ikdiffuser: local mode", "ikdiffuser: 32 solutions"
#: seed that solves: an answer this close to the seed in every joint is the seed [rad or m].
SEED_TOL = 1e-6
#: local mode: max-norm of the seed's noise, the query's consistency limit [rad or m], budget [s].
LOCAL_NOISE, CONSISTENCY, LOCAL_BUDGET = 0.1, 0.3, 0.005
#: 1 target x many solutions: solutions asked for, budget [s].
MANY_SOLUTIONS, MANY_BUDGET = 32, 0.01


@dataclass
class Cell:
    """One row at one budget [s], over all targets: shares in [0, 1], latencies [s]."""

    budget: float
    success: float
    in_budget: float
    latency_median: float
    latency_p95: float
    #: 1 target x 32 solutions only: verified solutions per call and the distinct ones among them,
    #: median and 10th percentile.
    distinct_median: float | None = None
    distinct_p10: float | None = None
    valid_median: float | None = None
    valid_p10: float | None = None


@dataclass
class Row:
    """A solver, or an extra ikdiffuser mode: one cell per budget it ran, or why it could not run."""

    solver: str
    cells: list[Cell] = field(default_factory=list)
    unavailable: str = ""


def _cell(budget: float, ok: np.ndarray, latency: np.ndarray, counts: tuple | None = None) -> Cell:
    """ok (N,) bool, latency (N,) [s], counts (valid (N,), distinct (N,)) or None -> the cell at ``budget`` [s]."""
    cell = Cell(budget, float(ok.mean()), float((ok & (latency <= budget)).mean()),
                float(np.median(latency)), float(np.percentile(latency, 95)))
    if counts is not None:
        valid, distinct = counts
        cell.valid_median, cell.valid_p10 = float(np.median(valid)), float(np.percentile(valid, 10))
        cell.distinct_median, cell.distinct_p10 = float(np.median(distinct)), float(np.percentile(distinct, 10))
    return cell


def _progress(items: Iterable, desc: str) -> Iterable:
    """A tqdm bar over ``items`` on a terminal (stderr), the bare items otherwise."""
    from tqdm import tqdm

    return tqdm(items, desc=desc, leave=False, disable=not sys.stderr.isatty())


# ---------------------------------------------------------------------------- ikdiffuser
def _our_pipeline(name: str, models_dir: Path):
    """The pipeline the node runs for robot ``name`` (``IKPipeline.from_robot``, the model in ``models_dir``/<name>
    when there is one, else the search path's) -> (pipeline, one-line description)."""
    from ikdiffuser_ros.pipeline import IKPipeline

    path = models_dir / name if (models_dir / name / "card.json").is_file() else None
    pipeline = IKPipeline.from_robot(name, path)
    card = pipeline.solver.loaded.card if isinstance(pipeline.solver.loaded.card, dict) else {}
    return pipeline, ("IKPipeline.answer, one IKQuery per call (1 target, num_solutions 1, timeout = the budget); "
                      f"IKPipeline.from_robot({name!r}): model {card.get('architecture', {}).get('type')}, "
                      f"{card.get('training', {}).get('steps')} training steps; "
                      f"{'FCL checker' if pipeline.checker is not None else 'no collision checker'}")


def _answers(pipeline, targets: np.ndarray, budget: float, desc: str, num: int = 1,
             seeds: np.ndarray | None = None, **fields) -> tuple[list[np.ndarray], np.ndarray]:
    """One ``pipeline.answer`` per target: targets (N, E, 4, 4), budget [s], seeds (N, n) or None,
    ``fields``: more :class:`IKQuery` fields -> (the returned q (k, n) per target, latency (N,) [s])."""
    ees = list(pipeline.robot.end_effectors)
    qs, latency = [], np.zeros(len(targets))
    for i in _progress(range(len(targets)), desc):
        query = IKQuery([IKTarget(ees, list(targets[i]))], num_solutions=num, timeout=budget, random_seed=i,
                        seed=None if seeds is None else seeds[i], **fields)
        start = time.perf_counter()
        answer = pipeline.answer(query)
        latency[i] = time.perf_counter() - start
        qs.append(answer.targets[0].q)
    return qs, latency


def _first_verified(model: RobotModel, qs: list[np.ndarray], targets: np.ndarray) -> np.ndarray:
    """(N,) bool: each target's first returned configuration verifies (no answer: False)."""
    return np.array([q.shape[0] > 0 and bool(verified(model, torch.from_numpy(q[0]), torch.from_numpy(T)))
                     for q, T in zip(qs, targets)])


def _deviation(model: RobotModel, qs: list[np.ndarray], seeds: np.ndarray) -> np.ndarray:
    """(N,) largest |q - seed| over the joints of each first answer [rad or m], continuous joints
    modulo 2 pi (inf: no answer); seeds (N, n)."""
    wrapping = joint_kinds(model)[1].numpy()
    out = np.full(len(qs), np.inf)
    for i, (q, seed) in enumerate(zip(qs, seeds)):
        if q.shape[0]:
            d = q[0] - seed
            out[i] = np.abs(np.where(wrapping, wrap_to_pi(d), d)).max()
    return out


def _counts(model: RobotModel, qs: list[np.ndarray], targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(valid (N,), distinct (N,)): verified solutions per target, and those > 0.05 rad / 5 mm apart in some joint."""
    tol, wrapping = joint_tolerances(model), joint_kinds(model)[1]
    valid, distinct = np.zeros(len(qs), dtype=int), np.zeros(len(qs), dtype=int)
    for i, (q, T) in enumerate(zip(qs, targets)):
        if q.shape[0]:
            q = torch.from_numpy(q)
            good = q[verified(model, q, torch.from_numpy(T).expand(q.shape[0], *T.shape))]
            valid[i] = good.shape[0]
            distinct[i] = int(unique_mask(good, None, tol, wrapping).sum()) if good.shape[0] else 0
    return valid, distinct


def _local_row(pipeline, model: RobotModel, q_true: np.ndarray, targets: np.ndarray, seed: int) -> Row:
    """Local mode: seeds near the solving configurations q_true (N, n), ``consistency_limits``."""
    row = Row(LOCAL_ROW)
    if "consistency_limits" not in {f.name for f in dataclasses.fields(IKQuery)}:
        row.unavailable = "IKQuery has no consistency_limits field yet"
        return row
    noise = np.random.default_rng(seed).uniform(-LOCAL_NOISE, LOCAL_NOISE, q_true.shape)
    seeds = np.clip(q_true + noise, model.lower.numpy(), model.upper.numpy())
    qs, latency = _answers(pipeline, targets, LOCAL_BUDGET, LOCAL_ROW, seeds=seeds, consistency_limits=CONSISTENCY)
    ok = _first_verified(model, qs, targets) & (_deviation(model, qs, seeds) <= CONSISTENCY + 1e-9)
    row.cells.append(_cell(LOCAL_BUDGET, ok, latency))
    return row


def ours_rows(pipeline, model: RobotModel, q_true: np.ndarray, targets: np.ndarray, budgets: list[float],
              seed: int) -> list[Row]:
    """The ikdiffuser row and its extra rows; q_true (N, n) made targets (N, E, 4, 4), budgets [s]."""
    plain, near = Row(OURS), Row(SEED_ROW)
    for b in budgets:
        qs, latency = _answers(pipeline, targets, b, f"{OURS} @ {b * 1e3:g} ms")
        plain.cells.append(_cell(b, _first_verified(model, qs, targets), latency))
        qs, latency = _answers(pipeline, targets, b, f"{SEED_ROW} @ {b * 1e3:g} ms", seeds=q_true)
        ok = _first_verified(model, qs, targets) & (_deviation(model, qs, q_true) <= SEED_TOL)
        near.cells.append(_cell(b, ok, latency))
    qs, latency = _answers(pipeline, targets, MANY_BUDGET, MANY_ROW, num=MANY_SOLUTIONS)
    valid, distinct = _counts(model, qs, targets)
    many = Row(MANY_ROW, [_cell(MANY_BUDGET, valid >= MANY_SOLUTIONS, latency, (valid, distinct))])
    return [plain, near, _local_row(pipeline, model, q_true, targets, seed), many]


# ---------------------------------------------------------------------------- peers
def _peer_cell(peer, model: RobotModel, targets: np.ndarray, budget: float, seed: int) -> Cell:
    """One :func:`restart_until` per target (N, E, 4, 4) with ``budget`` [s] as its deadline."""
    rng = np.random.default_rng(seed)
    ok, latency = np.zeros(len(targets), dtype=bool), np.zeros(len(targets))
    for i in _progress(range(len(targets)), f"{peer.name} @ {budget * 1e3:g} ms"):
        start = time.perf_counter()
        q = restart_until(peer, targets[i], rng, start + budget)
        latency[i] = time.perf_counter() - start
        ok[i] = q is not None and bool(verified(model, torch.from_numpy(q), torch.from_numpy(targets[i])))
    return _cell(budget, ok, latency)


def peer_rows(names: list[str], model: RobotModel, urdf_xml: str, targets: np.ndarray, budgets: list[float],
              seed: int) -> tuple[list[Row], dict[str, str], list[str]]:
    """One row per peer that builds (built again per budget [s]: TRAC-IK's timeout is the budget)
    -> (rows, {peer: description}, notes on the skipped ones)."""
    rows: dict[str, Row] = {}
    descriptions: dict[str, str] = {}
    notes: list[str] = []
    for b in budgets:
        peers, notes = build_peers(names, model, urdf_xml, b)
        for peer in peers:
            rows.setdefault(peer.name, Row(peer.name)).cells.append(_peer_cell(peer, model, targets, b, seed))
            descriptions[peer.name] = peer.description
    return list(rows.values()), descriptions, notes


def _peer_notes(model: RobotModel, peers: list[str]) -> list[str]:
    """How the peers that ran on ``model`` were used, for the docs."""
    notes = []
    if len(model.end_effectors) > 1 and any(p != "pink" for p in peers):
        notes.append("serial-chain peers (TRAC-IK, rtb, KDL) solve the arms one after another; pink solves all "
                     "end effectors in one whole-body QP")
    if "trac_ik" in peers:
        notes.append("TRAC-IK is built once per budget with that budget as its own timeout (its line above names "
                     "the last one) and runs two threads per call (KDL and NLopt in parallel); the others one")
    return notes


# ---------------------------------------------------------------------------- the run
def _ours(args: argparse.Namespace, name: str, model: RobotModel, q_true: np.ndarray, targets: np.ndarray,
          seed: int) -> tuple[list[Row], dict[str, str], list[str]]:
    """ikdiffuser's rows, {name: description} and notes (skipped, with a note, without a model)."""
    from ikdiffuser_ros.pipeline import IKPipeline

    if not hasattr(IKPipeline, "from_robot") and not (args.models / name / "card.json").is_file():
        return [], {}, [f"{OURS}: skipped, no model in {args.models / name}"]
    pipeline, description = _our_pipeline(name, args.models)
    pipeline.warmup()
    return ours_rows(pipeline, model, q_true, targets, args.budgets, seed), {OURS: description}, []


def bench_robot(args: argparse.Namespace, name: str) -> dict:
    """Every row on one robot -> its part of the JSON report."""
    from ikdiffuser_ros.robots import robot_config

    cfg = robot_config(name)
    model = cfg.load()
    q_true, targets = (t.numpy() for t in random_targets(model, args.targets, args.seed))
    seed = args.seed - SOLVER_SEED_OFFSET  # the solvers' random starts never replay the targets' configurations
    rows, solvers, notes = [], {}, []
    if OURS in args.solvers:
        rows, solvers, notes = _ours(args, name, model, q_true, targets, seed)
    peer_names = [p for p in args.solvers if p in PEERS]
    more, descriptions, peer_notes = peer_rows(peer_names, model, cfg.urdf_text(), targets, args.budgets, seed)
    notes += peer_notes + _peer_notes(model, [r.solver for r in more])
    print(f"[bench-request] {name}: done", file=sys.stderr)
    return {"n_joints": model.n_joints, "end_effectors": model.end_effectors, "fingerprint": model.fingerprint(),
            "solvers": {**solvers, **descriptions}, "notes": notes, "rows": [asdict(r) for r in rows + more]}


def run(args: argparse.Namespace) -> dict:
    """The JSON report: ``{"settings": ..., "robots": {name: bench_robot(...)}}``."""
    torch.manual_seed(0)
    robots = args.robots or shipped_robots(args.models)
    settings = {
        "command": _command("bench-request"),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{_machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start",
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "versions": _versions(),
        "seed": args.seed, "targets": args.targets, "budgets_s": args.budgets, "seed_tolerance": SEED_TOL,
        "local": {"noise": LOCAL_NOISE, "consistency_limits": CONSISTENCY, "budget_s": LOCAL_BUDGET},
        "many": {"num_solutions": MANY_SOLUTIONS, "budget_s": MANY_BUDGET},
    }
    return {"settings": settings, "robots": {name: bench_robot(args, name) for name in robots}}


# ---------------------------------------------------------------------------- report
def _cell_text(cell: dict | None, key: str) -> str:
    """``success % (median ms / p95 ms)`` of ``cell[key]``; the 32-solution row's success cell:
    ``valid median / p10, distinct median / p10 (...)``; "-" where the row did not run at that budget."""
    if cell is None:
        return "-"
    ms = f"({cell['latency_median'] * 1e3:.1f} / {cell['latency_p95'] * 1e3:.1f})"
    if cell["distinct_median"] is not None and key == "success":
        valid = f"{cell['valid_median']:.0f} / {cell['valid_p10']:.0f} valid, " if cell.get("valid_median") is not None else ""
        return f"{valid}{cell['distinct_median']:.0f} / {cell['distinct_p10']:.0f} distinct {ms}"
    return f"{100 * cell[key]:.0f} % {ms}"


def table(robot: dict, key: str) -> str:
    """Markdown: one line per row, one column per budget, cells of ``key`` ("success" or "in_budget")."""
    budgets = sorted({c["budget"] for r in robot["rows"] for c in r["cells"]})
    head = ["solver"] + [f"{b * 1e3:g} ms" for b in budgets]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * len(budgets) + "|"]
    for r in robot["rows"]:
        cells = {c["budget"]: c for c in r["cells"]}
        texts = ["n/a" if r["unavailable"] else _cell_text(cells.get(b), key) for b in budgets]
        lines.append("| " + " | ".join([r["solver"], *texts]) + " |")
    return "\n".join(lines)


def _plot_robot(name: str, robot: dict, path: Path) -> Path:
    """Success [%] against the budget [ms], one line per row that ran at several budgets (dotted: in budget)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    for r in (r for r in robot["rows"] if len(r["cells"]) > 1):
        budgets_ms = [c["budget"] * 1e3 for c in r["cells"]]
        (line,) = ax.plot(budgets_ms, [100 * c["success"] for c in r["cells"]],
                          "-o" if r["solver"].startswith(OURS) else "--.", label=r["solver"])
        ax.plot(budgets_ms, [100 * c["in_budget"] for c in r["cells"]], ":", color=line.get_color(), lw=1)
    ax.set(xscale="log", xlabel="time budget per call [ms]", ylabel="success [%] (1e-5 m, 1e-4 rad)", ylim=(0, 101),
           title=f"{name}: one target per call (dotted: answered within the budget)")
    ax.title.set_fontsize(9)
    budgets_ms = sorted({c["budget"] * 1e3 for r in robot["rows"] if len(r["cells"]) > 1 for c in r["cells"]})
    ax.set_xticks(budgets_ms, [f"{b:g}" for b in budgets_ms])
    ax.minorticks_off()
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_name(robot: str) -> str:
    """File name of a robot's PNG."""
    return f"bench_request_{robot}.png"


def plot(report: dict, out_dir: Path) -> list[Path]:
    """Write one PNG per robot into ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    out_dir.mkdir(parents=True, exist_ok=True)
    return [_plot_robot(name, robot, out_dir / plot_name(name)) for name, robot in report["robots"].items()]


def markdown(report: dict, img_prefix: str | None = None) -> str:
    """The docs section: settings, then per robot the two tables, the plot (when ``img_prefix``), the solvers,
    why rows are n/a, notes."""
    s = report["settings"]
    parts = [
        f"Command: `{s['command']}` ({s['date']}, {s['machine']}, torch {s['torch']} with "
        f"{s['torch_threads']} thread(s); peers: {', '.join(f'{k} {v}' for k, v in s['versions'].items())}).",
        "",
        f"{s['targets']} targets per robot (FK of uniform configurations, seed {s['seed']}), one per call. Cells: "
        f"success % (latency median / p95 [ms]); success = the first answer verifies (1e-5 m, 1e-4 rad, limits). "
        f"32 solutions: verified solutions per call and the distinct ones among them, median / p10 (its success: 32 verified).",
        "",
    ]
    for name, robot in report["robots"].items():
        parts += [f"### {name} ({robot['n_joints']} joints, end effectors {', '.join(robot['end_effectors'])})", "",
                  "Verified answers, whenever they came:", "", table(robot, "success"), "",
                  "Verified answers that came within the budget:", "", table(robot, "in_budget"), ""]
        if img_prefix is not None:
            parts += [f"![{name}: success vs budget]({img_prefix}{plot_name(name)})", ""]
        parts += [f"- {k}: {v}" for k, v in robot["solvers"].items()]
        parts += [f"- {r['solver']}: n/a, {r['unavailable']}" for r in robot["rows"] if r["unavailable"]]
        parts += [f"- note: {n}" for n in robot["notes"]] + [""]
    return "\n".join(parts)


def register(subparsers) -> None:
    """Add ``bench-request`` to the ``ikdiffuser`` command."""
    p = subparsers.add_parser("bench-request", help="one target per IK call with a few ms: IKDiffuser vs the peers",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--robots", nargs="+", default=None, help="default: every robot with a shipped model")
    p.add_argument("--models", type=Path, default=REPO / "models", help="checkpoint root (models/<robot>)")
    p.add_argument("--targets", type=int, default=200, help="targets per robot")
    p.add_argument("--budgets-ms", type=float, nargs="+", default=[1, 2, 5, 20], help="time budgets per call [ms]")
    p.add_argument("--solvers", nargs="+", default=SOLVERS, choices=SOLVERS)
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the targets")
    p.add_argument("--json", type=Path, default=None, help="write the JSON report here")
    p.add_argument("--docs", type=Path, default=None, help="rewrite the marked section of this markdown file")
    p.add_argument("--plots", type=Path, default=None, help="write a PNG per robot into this folder")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    args.budgets = sorted(b / 1e3 for b in args.budgets_ms)
    report = run(args)
    prefix = None
    if args.plots:
        plot(report, args.plots)
        base = args.docs.parent if args.docs else Path.cwd()
        prefix = Path(os.path.relpath(args.plots, base)).as_posix() + "/"
    text = markdown(report, prefix)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    if args.docs:
        rep.replace_section(args.docs, text, BEGIN, END)
    return 0
