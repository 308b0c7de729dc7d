"""``ikdiffuser bench``: IKDiffuser against KDL and pytorch_kinematics on the same targets.

Protocol (all solvers, one process, one set of targets):

* Targets are FK poses of configurations drawn uniformly within the limits
  with ``--seed`` (the training data use seeds below 1e6; the default here is
  ``2**31 - 1``, never seen in training). Every end effector is constrained.
* **accuracy** (``--num-targets``, default 500): each solver gets up to
  ``--time-budget`` seconds per target (default 1 s) to return solutions;
  success = at least one solution with position error <= 1e-5 m and rotation
  error <= 1e-4 rad. Errors (median, p95) are over every solution a solver
  returns (KDL / pytorch_kinematics return their final iterate, one per target).
* **1 x 1000**: one target, 1000 solutions (KDL: 1000 random restarts;
  pytorch_kinematics: 1000 batched retries) over ``--diversity-targets``
  targets: wall time, distinct successful solutions per second (distinct =
  differing by more than 0.05 rad / 5 mm in some joint), diversity (mean
  pairwise joint-space L2 distance among the successful solutions).
* **1000 x 1**: 1000 targets, one solution each: wall time and success rate.
* self-collision-free rate of the successful solutions (exact FCL checks on
  the URDF collision meshes, SRDF disabled pairs honoured; up to 200 each).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ikdiffuser_ros.kinematics.robot_model import RobotModel
from ikdiffuser_ros.kinematics.transforms import pose_errors
from ikdiffuser_ros.sampling.refine import count_distinct, joint_kinds, joint_tolerances

POS_TOL, ROT_TOL = 1e-5, 1e-4
DEFAULT_SEED = 2**31 - 1


@dataclass
class SolverReport:
    """One row of the benchmark table."""

    solver: str
    success_rate: float = float("nan")
    median_pos_err_mm: float = float("nan")
    p95_pos_err_mm: float = float("nan")
    median_rot_err_deg: float = float("nan")
    p95_rot_err_deg: float = float("nan")
    time_per_target_s: float = float("nan")
    time_1x1000_s: float = float("nan")
    distinct_per_s: float = float("nan")
    diversity: float = float("nan")
    time_1000x1_s: float = float("nan")
    success_1000x1: float = float("nan")
    self_collision_free: float = float("nan")
    notes: list[str] = field(default_factory=list)


def random_targets(model: RobotModel, num: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(q (num, n), targets (num, E, 4, 4)) float64, FK of uniform configurations."""
    g = torch.Generator().manual_seed(seed)
    q = model.lower + (model.upper - model.lower) * torch.rand(num, model.n_joints, generator=g, dtype=torch.float64)
    return q, model.fk(q)


def errors(model: RobotModel, q: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """q (..., n), targets (..., E, 4, 4) -> worst position [m] and rotation [rad] error over EEs, (...)."""
    pos, rot = pose_errors(model.fk(q), targets)
    return pos.amax(-1), rot.amax(-1)


def succeeded(model: RobotModel, q: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """q (..., n), targets (..., E, 4, 4) -> (...) bool: within POS_TOL and ROT_TOL at every EE."""
    pos, rot = errors(model, q, targets)
    return (pos <= POS_TOL) & (rot <= ROT_TOL)


def diversity(q: torch.Tensor) -> float:
    """Mean pairwise joint-space L2 distance among (M, n) solutions (nan if M < 2)."""
    if q.shape[0] < 2:
        return float("nan")
    d = torch.cdist(q, q)
    return float(d.sum() / (q.shape[0] * (q.shape[0] - 1)))


def _stats(report: SolverReport, pos: torch.Tensor, rot: torch.Tensor) -> None:
    pos, rot = pos.flatten().double(), rot.flatten().double()
    report.median_pos_err_mm = float(pos.median() * 1e3)
    report.p95_pos_err_mm = float(pos.quantile(0.95) * 1e3)
    report.median_rot_err_deg = float(rot.median().rad2deg())
    report.p95_rot_err_deg = float(rot.quantile(0.95).rad2deg())


class Bench:
    """Runs every solver on the same targets and fills one :class:`SolverReport` each."""

    def __init__(self, model: RobotModel, args: argparse.Namespace) -> None:
        self.model, self.args = model, args
        self.distinct_tol = joint_tolerances(model)  # 0.05 rad / 5 mm per joint
        self.wrapping = joint_kinds(model)[1]
        _, self.targets = random_targets(model, args.num_targets, args.seed)
        _, self.div_targets = random_targets(model, args.diversity_targets, args.seed + 1)
        _, self.many_targets = random_targets(model, args.many_targets, args.seed + 2)
        self.checker = self._collision_checker()

    def _collision_checker(self):
        try:
            from ikdiffuser_ros.collision.fcl_checker import CollisionChecker

            return CollisionChecker(self.model)
        except Exception:  # noqa: BLE001 - optional metric
            return None

    def _collision_free(self, q: torch.Tensor) -> float:
        if self.checker is None or q.shape[0] == 0:
            return float("nan")
        q = q[:200]
        report = self.checker.check(q)
        return float(1.0 - torch.as_tensor(report.self_collision, dtype=torch.float64).mean())

    def _successful(self, sols: list[torch.Tensor], targets: torch.Tensor) -> list[torch.Tensor]:
        """Keep, for each target i, the rows of sols[i] (M_i, n) that reach targets[i]."""
        return [s[succeeded(self.model, s, targets[i : i + 1])] if s.shape[0] else s for i, s in enumerate(sols)]

    def _distinct_stats(self, report: SolverReport, sols: list[torch.Tensor], wall: float) -> None:
        distinct = [int(count_distinct(s, tol=self.distinct_tol, wrapping=self.wrapping)) for s in sols]
        report.time_1x1000_s = wall / len(sols)
        report.distinct_per_s = sum(distinct) / wall
        report.diversity = float(np.nanmean([diversity(s) for s in sols]))

    # ------------------------------------------------------------------ IKDiffuser
    def run_ikdiffuser(self, solver, refine: bool) -> SolverReport:
        name = "ikdiffuser" if refine else "ikdiffuser_raw"
        report = SolverReport(name)
        a, t = self.args, self.targets
        solve = lambda targets, n, seed: solver.solve(  # noqa: E731
            targets, num_solutions=n, refine=refine, random_seed=seed, steps=a.steps
        )
        solve(t[:2], 4, 0)  # warm-up (allocator, first-call overheads)
        start = time.perf_counter()
        res = solve(t, a.num_solutions, a.seed)
        wall = time.perf_counter() - start
        report.time_per_target_s = wall / t.shape[0]
        pos, rot = errors(self.model, res.q, t[:, None])
        ok = (pos <= POS_TOL) & (rot <= ROT_TOL)
        report.success_rate = float(ok.any(-1).double().mean())
        _stats(report, pos, rot)
        report.self_collision_free = self._collision_free(res.q[ok])
        sols, start = [], time.perf_counter()
        for i in range(self.div_targets.shape[0]):
            r = solve(self.div_targets[i : i + 1], a.diversity_solutions, a.seed + 10 + i)
            sols.append(r.q[0])
        wall = time.perf_counter() - start
        self._distinct_stats(report, self._successful(sols, self.div_targets), wall)
        start = time.perf_counter()
        res = solve(self.many_targets, 1, a.seed + 3)
        report.time_1000x1_s = time.perf_counter() - start
        report.success_1000x1 = float(succeeded(self.model, res.q[:, 0], self.many_targets).double().mean())
        return report

    # ------------------------------------------------------------------ KDL
    def run_kdl(self) -> SolverReport:
        from ikdiffuser_ros.bench.peers import KDLPeer

        report = SolverReport("kdl")
        peer = KDLPeer(self.model)
        rng = np.random.default_rng(self.args.seed)
        budget = self.args.time_budget

        def solve_targets(targets: torch.Tensor) -> tuple[torch.Tensor, float]:
            out = torch.full((targets.shape[0], self.model.n_joints), float("nan"), dtype=torch.float64)
            start = time.perf_counter()
            for i, T in enumerate(targets.numpy()):
                q = peer.solve_one(T, rng, time.perf_counter() + budget)
                if q is not None:
                    out[i] = torch.from_numpy(q)
            return out, time.perf_counter() - start

        q, wall = solve_targets(self.targets)
        report.time_per_target_s = wall / self.targets.shape[0]
        found = ~q.isnan().any(-1)
        pos, rot = errors(self.model, q[found], self.targets[found])
        ok = (pos <= POS_TOL) & (rot <= ROT_TOL)
        report.success_rate = float(ok.sum()) / self.targets.shape[0]
        _stats(report, pos, rot)
        report.self_collision_free = self._collision_free(q[found][ok])
        report.notes.append(f"NR_JL, eps 1e-6, 100 iterations, random restarts within {budget} s per target")
        sols, start = [], time.perf_counter()
        for T in self.div_targets.numpy():
            found_q = []
            for _ in range(self.args.diversity_solutions):
                q1 = peer.solve_one(T, rng, float("inf"), max_attempts=1)
                if q1 is not None:
                    found_q.append(torch.from_numpy(q1))
            sols.append(torch.stack(found_q) if found_q else torch.zeros(0, self.model.n_joints))
        wall = time.perf_counter() - start
        self._distinct_stats(report, self._successful(sols, self.div_targets), wall)
        q, wall = solve_targets(self.many_targets)
        report.time_1000x1_s = wall
        found = ~q.isnan().any(-1)
        ok = succeeded(self.model, q[found], self.many_targets[found])
        report.success_1000x1 = float(ok.sum()) / self.many_targets.shape[0]
        return report

    # ------------------------------------------------------------------ pytorch_kinematics
    def run_pytorch_kinematics(self, urdf_xml: str) -> SolverReport:
        from ikdiffuser_ros.bench.peers import PytorchKinematicsPeer

        report = SolverReport("pytorch_kinematics")
        g = torch.Generator().manual_seed(self.args.seed)
        peer = PytorchKinematicsPeer(self.model, urdf_xml, num_retries=self.args.num_solutions)
        start = time.perf_counter()
        q, _ = peer.solve_batch(self.targets, g)
        wall = time.perf_counter() - start
        report.time_per_target_s = wall / self.targets.shape[0]
        pos, rot = errors(self.model, q, self.targets)
        ok = (pos <= POS_TOL) & (rot <= ROT_TOL)
        report.success_rate = float(ok.double().mean())
        _stats(report, pos, rot)
        report.self_collision_free = self._collision_free(q[ok])
        report.notes.append(f"PseudoInverseIK, {self.args.num_solutions} retries, 100 iterations, best retry")
        sols, start = [], time.perf_counter()
        for i in range(self.div_targets.shape[0]):
            sols.append(peer.solve_many(self.div_targets[i], self.args.diversity_solutions, g))
        wall = time.perf_counter() - start
        self._distinct_stats(report, self._successful(sols, self.div_targets), wall)
        report.notes.append("1x1000: one problem with 1000 retries per arm (see peers.solve_many)")
        start = time.perf_counter()
        q, _ = peer.solve_batch(self.many_targets, g)
        report.time_1000x1_s = time.perf_counter() - start
        report.success_1000x1 = float(succeeded(self.model, q, self.many_targets).double().mean())
        return report


COLUMNS = [
    ("solver", "solver", "{}"),
    ("success_rate", "success", "{:.1%}"),
    ("median_pos_err_mm", "pos err med [mm]", "{:.3g}"),
    ("p95_pos_err_mm", "pos err p95 [mm]", "{:.3g}"),
    ("median_rot_err_deg", "rot err med [deg]", "{:.3g}"),
    ("p95_rot_err_deg", "rot err p95 [deg]", "{:.3g}"),
    ("time_per_target_s", "time/target [s]", "{:.4f}"),
    ("time_1x1000_s", "1x1000 [s]", "{:.3f}"),
    ("distinct_per_s", "distinct sol/s", "{:.1f}"),
    ("diversity", "diversity [rad]", "{:.2f}"),
    ("time_1000x1_s", "1000x1 [s]", "{:.3f}"),
    ("success_1000x1", "1000x1 success", "{:.1%}"),
    ("self_collision_free", "self-coll-free", "{:.1%}"),
]


def markdown_table(reports: list[SolverReport]) -> str:
    lines = ["| " + " | ".join(h for _, h, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in reports:
        cells = []
        for key, _, fmt in COLUMNS:
            value = getattr(r, key)
            cells.append("n/a" if isinstance(value, float) and np.isnan(value) else fmt.format(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict:
    from ikdiffuser_ros.robots import robot_config
    from ikdiffuser_ros.solver import IKDiffuserSolver

    torch.manual_seed(0)
    cfg = robot_config(args.robot)
    model = cfg.load()
    bench = Bench(model, args)
    checkpoint = args.checkpoint or str(Path(__file__).resolve().parents[2] / "models" / cfg.name)
    reports: list[SolverReport] = []
    solvers = args.solvers
    if {"ikdiffuser_raw", "ikdiffuser"} & set(solvers):
        solver = IKDiffuserSolver.from_checkpoint(checkpoint, robot=model, device=args.device)
        if "ikdiffuser_raw" in solvers:
            reports.append(bench.run_ikdiffuser(solver, refine=False))
        if "ikdiffuser" in solvers:
            reports.append(bench.run_ikdiffuser(solver, refine=True))
    if "kdl" in solvers:
        reports.append(bench.run_kdl())
    if "pytorch_kinematics" in solvers:
        reports.append(bench.run_pytorch_kinematics(cfg.urdf_text()))
    return {
        "robot": cfg.name,
        "fingerprint": model.fingerprint(),
        "checkpoint": checkpoint,
        "num_targets": args.num_targets,
        "num_solutions": args.num_solutions,
        "diversity_targets": args.diversity_targets,
        "diversity_solutions": args.diversity_solutions,
        "many_targets": args.many_targets,
        "seed": args.seed,
        "time_budget_s": args.time_budget,
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "reports": [asdict(r) for r in reports],
    }


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="IK accuracy/diversity/speed vs KDL and pytorch_kinematics")
    p.add_argument("--robot", required=True)
    p.add_argument("--checkpoint", default=None, help="checkpoint dir (default models/<robot>)")
    p.add_argument("--solvers", nargs="+", default=["ikdiffuser_raw", "ikdiffuser", "kdl", "pytorch_kinematics"])
    p.add_argument("--num-targets", type=int, default=500)
    p.add_argument("--num-solutions", type=int, default=32, help="samples (or retries) per target")
    p.add_argument("--diversity-targets", type=int, default=3)
    p.add_argument("--diversity-solutions", type=int, default=1000, help="solutions per target in the 1 x 1000 run")
    p.add_argument("--many-targets", type=int, default=1000, help="targets in the 1000 x 1 run")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the checkpoint's)")
    p.add_argument("--time-budget", type=float, default=1.0, help="seconds per target for KDL restarts")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default=None, help="also write the JSON here")
    p.add_argument("--markdown", default=None, help="also write the table here")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    result = run(args)
    reports = [SolverReport(**r) for r in result["reports"]]
    table = markdown_table(reports)
    text = json.dumps(result, indent=2)
    print(text)
    print()
    print(table)
    if args.json:
        Path(args.json).write_text(text + "\n")
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    return 0
