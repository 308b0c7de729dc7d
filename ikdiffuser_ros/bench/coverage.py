"""Coverage of the solution set: ``ikdiffuser bench --protocols coverage``.

How much of each target's solution set a solver finds, measured as the field measures it
(docs/benchmarks.md, "Coverage of the solution set", says what is followed and where):

* **Ground truth per target** (:func:`ground_truth`): ``gt_restarts`` uniform starts of our exact LM
  (:class:`~ikdiffuser_ros.bench.pipelines.UniformPipeline`, float64) and ``gt_tracik`` random
  restarts of TRAC-IK when it is installed, every answer verified by our float64 FK
  (:func:`~ikdiffuser_ros.bench.protocols.verified`), pooled. Its *distinct* solutions are those
  more than 0.05 rad / 5 mm apart in some joint (:func:`~ikdiffuser_ros.sampling.dedup.unique_mask`
  with :func:`~ikdiffuser_ros.sampling.dedup.joint_tolerances`); its *clusters* are a coarser greedy
  leader clustering of those (``cluster_rad`` / ``cluster_m``, 0.5 rad / 5 cm by default), because
  the 0.05 rad count of a redundant arm keeps growing with the restarts (points along a self-motion
  manifold) while the coarse count levels off within a few thousand (``clusters_half``: the count from
  the first half of the LM restarts alone says how close to level it is).
* **Per solver**, on the same targets, in one run: asked for ``num_solutions`` (N) solutions per
  target (the ikdiffuser row: one :class:`IKQuery` for N; uniform+LM and the peers: random restarts
  until N answers; ``cap`` seconds at most), and separately run for ``budget`` seconds per target
  keeping every answer (protocol 2's harvest). Reported per target, then averaged:

  - **MMD** to the ground truth (:func:`mmd2`, HJCD-IK's ``compute_mmd.py`` reimplemented): the first
    ``mmd_k`` (50) verified solutions of the N run against ``mmd_ref`` (500) verified ground-truth
    restarts drawn at random; inverse multi-quadric kernel ``(|x - y|^2 + c^2)^-1/2`` averaged over
    the bandwidths ``c = m * (0.2, 0.5, 1, 2, 5)`` with ``m`` the median pairwise distance of the two
    sets pooled; unbiased MMD^2, clipped at 0; MMD = sqrt(mean MMD^2 over the targets);
  - **coverage**: the share of the ground-truth clusters with a verified solution within the cluster
    radius of their leader (:func:`found_clusters`), among the N solutions and within the budget;
  - **outside**: the share of the N solutions within no cluster's radius (solutions the ground
    truth missed: a check on the ground truth, not a fault of the solver);
  - **diversity** (protocol 2's): mean pairwise joint-space distance of the distinct solutions.

  Per arm on multi-arm robots (:func:`scopes`): the same on the joints moving each end effector
  (:func:`~ikdiffuser_ros.kinematics.groups.variables_moving`; a shared torso or base belongs to
  every arm it moves), ground truth projected and re-clustered.

Joint values are compared raw (radians and metres in one vector, as the field does), wrapping joints
wrapped to [-pi, pi) first.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch

from ikdiffuser_ros.bench.protocols import diversity, random_targets, restart_answers, verified
from ikdiffuser_ros.kinematics.groups import variables_moving
from ikdiffuser_ros.kinematics.joint_kinds import joint_kinds, wrap_to_pi
from ikdiffuser_ros.kinematics.robot_model import RobotModel
from ikdiffuser_ros.sampling.dedup import joint_tolerances, unique_mask

#: HJCD-IK compute_mmd.py: IMQ exponent and bandwidth multipliers of the median pairwise distance.
IMQ_BETA = 0.5
IMQ_SCALES = (0.2, 0.5, 1.0, 2.0, 5.0)
#: uniform+LM ground-truth starts per LM call (the half-way cluster count is taken between calls)
GT_CHUNK = 2000
#: rows per block when comparing solutions with cluster leaders
_BLOCK = 512


@dataclass
class CoverageConfig:
    """Sizes of the coverage protocol (``ikdiffuser bench --coverage-*``)."""

    targets: int = 10
    gt_restarts: int = 4000
    gt_tracik: int = 200
    num_solutions: int = 100
    mmd_k: int = 50
    mmd_ref: int = 500
    budget: float = 0.1
    cap: float = 2.0
    cluster_rad: float = 0.5
    cluster_m: float = 0.05


# ---------------------------------------------------------------------------- MMD (HJCD-IK's compute_mmd.py)
def median_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """Median pairwise Euclidean distance among the rows of x and y pooled (1.0 when undefined)."""
    z = torch.cat([x, y]).double()
    d = torch.cdist(z, z)
    iu = torch.triu_indices(len(z), len(z), 1)
    vals = d[iu[0], iu[1]]
    if vals.numel() == 0:
        return 1.0
    # sqrt of numpy's median of the squared distances (the mean of the middle two for an even count)
    med = float(np.sqrt(np.median(vals.square().numpy())))
    return med if math.isfinite(med) and med > 0 else 1.0


def imq_kernel(x: torch.Tensor, y: torch.Tensor, bandwidths: list[float], beta: float = IMQ_BETA) -> torch.Tensor:
    """(M, n), (K, n) -> (M, K): ``mean_c (|x - y|^2 + c^2)^-beta`` over ``bandwidths``."""
    d2 = torch.cdist(x.double(), y.double()).square()
    return torch.stack([(d2 + c * c).pow(-beta) for c in bandwidths]).mean(0)


def mmd2(x: torch.Tensor, y: torch.Tensor, scales: tuple[float, ...] = IMQ_SCALES, beta: float = IMQ_BETA) -> float:
    """Unbiased MMD^2 between the rows of x (reference) and y (compared), IMQ kernel over the bandwidths
    ``median_distance(x, y) * scales``, clipped at 0 (Gretton et al.; HJCD-IK's ``compute_mmd_ikflow``).
    NaN when either set has fewer than 2 rows."""
    m, n = x.shape[0], y.shape[0]
    if m < 2 or n < 2:
        return float("nan")
    med = median_distance(x, y)
    cs = [max(med * s, 1e-12) for s in scales]
    kxx, kyy, kxy = imq_kernel(x, x, cs, beta), imq_kernel(y, y, cs, beta), imq_kernel(x, y, cs, beta)
    xx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    yy = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return max(float(xx + yy - 2 * kxy.mean()), 0.0)


def mean_mmd(values: list[float]) -> tuple[float, float, int]:
    """Per-target MMD^2 values -> (mean MMD^2, its square root, targets scored); NaNs are skipped
    (HJCD-IK's run_mmd.py: a target where a set has < 2 rows is left out)."""
    ok = [v for v in values if not math.isnan(v)]
    if not ok:
        return float("nan"), float("nan"), 0
    mean = float(np.mean(ok))
    return mean, math.sqrt(max(mean, 0.0)), len(ok)


# ---------------------------------------------------------------------------- clusters
def _within(a: torch.Tensor, b: torch.Tensor, tol: torch.Tensor, wrap: torch.Tensor) -> torch.Tensor:
    """(M, n), (C, n) -> (M, C) bool: every joint within ``tol`` (wrap-aware)."""
    out = torch.zeros(a.shape[0], b.shape[0], dtype=torch.bool)
    if a.shape[0] == 0 or b.shape[0] == 0:
        return out
    for s in range(0, a.shape[0], _BLOCK):
        diff = a[s:s + _BLOCK, None, :] - b[None, :, :]
        if bool(wrap.any()):
            diff = torch.where(wrap, wrap_to_pi(diff), diff)
        out[s:s + _BLOCK] = (diff.abs() <= tol).all(-1)
    return out


def found_clusters(solutions: torch.Tensor, leaders: torch.Tensor, tol: torch.Tensor,
                   wrap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(found (C,) bool: a solution lies within ``tol`` of the leader in every joint, inside (M,) bool:
    the solution lies within ``tol`` of some leader)."""
    close = _within(solutions, leaders, tol, wrap)
    return close.any(0), close.any(1)


def distinct(q: torch.Tensor, tol: torch.Tensor, wrap: torch.Tensor) -> torch.Tensor:
    """Greedy leader representatives of q (M, n) at ``tol`` (:func:`unique_mask`)."""
    return q[unique_mask(q, None, tol, wrap)] if q.shape[0] else q


# ---------------------------------------------------------------------------- scopes (whole robot, arms)
def scopes(model: RobotModel) -> dict[str, list[int]]:
    """``{"all": every joint}`` plus, with more than one end effector, each end effector's moving joints."""
    out = {"all": list(range(model.n_joints))}
    if len(model.end_effectors) > 1:
        for ee in model.end_effectors:
            out[ee] = list(variables_moving(model, [ee]))
    return out


# ---------------------------------------------------------------------------- ground truth
@dataclass
class GroundTruth:
    """One target's ground truth: ``samples`` (verified restarts, every one), ``reps`` (their distinct
    representatives at 0.05 rad / 5 mm), ``reps_half`` (those of the first half of the LM restarts)."""

    samples: torch.Tensor
    reps: torch.Tensor
    reps_half: torch.Tensor
    verified_lm: int
    verified_tracik: int
    seconds: float


def ground_truth(model: RobotModel, target: torch.Tensor, lm, tracik, cfg: CoverageConfig, seed: int,
                 fine: torch.Tensor, wrap: torch.Tensor) -> GroundTruth:
    """Pooled verified restarts of the exact LM (``lm``: a :class:`UniformPipeline`) and of ``tracik``
    (a peer or None) on one target (E, 4, 4)."""
    start = time.perf_counter()
    parts, reps, n_lm, half = [], [], 0, None
    chunks = max(1, math.ceil(cfg.gt_restarts / GT_CHUNK))
    for k in range(chunks):
        rows = min(GT_CHUNK, cfg.gt_restarts - k * GT_CHUNK) if cfg.gt_restarts else 0
        if rows <= 0:
            break
        q, ok = lm.rows(target[None], rows, None, seed + k)
        q = _verified(model, q[0][ok[0]], target)
        n_lm += q.shape[0]
        parts.append(q)
        reps.append(distinct(q, fine, wrap))
        if k + 1 == max(1, chunks // 2):  # the first half of the LM chunks (rounded down, at least one)
            half = distinct(torch.cat(reps), fine, wrap)
    n_tr = 0
    if tracik is not None and cfg.gt_tracik > 0:
        rng = np.random.default_rng(seed)
        answers = _restart_n(tracik, target, rng, cfg.gt_tracik)
        q = _verified(model, answers, target)
        n_tr = q.shape[0]
        parts.append(q)
        reps.append(distinct(q, fine, wrap))
    samples = _wrapped(torch.cat(parts) if parts else torch.zeros(0, model.n_joints, dtype=torch.float64), wrap)
    all_reps = distinct(_wrapped(torch.cat(reps), wrap), fine, wrap) if reps else samples
    half = all_reps if half is None else _wrapped(half, wrap)
    return GroundTruth(samples, all_reps, half, n_lm, n_tr, time.perf_counter() - start)


def _restart_n(peer, target: torch.Tensor, rng: np.random.Generator, attempts: int) -> torch.Tensor:
    """``attempts`` uniform restarts of ``peer`` (each to its own timeout) -> its answers (M, n)."""
    lower, upper = peer.model.lower.numpy(), peer.model.upper.numpy()
    T = target.numpy()
    found = []
    for _ in range(attempts):
        q = peer.attempt(T, lower + (upper - lower) * rng.random(lower.shape[0]), math.inf)
        if q is not None:
            found.append(torch.from_numpy(q))
    return torch.stack(found) if found else torch.zeros(0, lower.shape[0], dtype=torch.float64)


def _verified(model: RobotModel, q: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The rows of q (M, n) that pass the bench's float64 check against one target (E, 4, 4)."""
    if q.shape[0] == 0:
        return q.reshape(0, model.n_joints).double()
    q = q.double()
    return q[verified(model, q, target.expand(q.shape[0], *target.shape))]


def _wrapped(q: torch.Tensor, wrap: torch.Tensor) -> torch.Tensor:
    return torch.where(wrap, wrap_to_pi(q), q) if bool(wrap.any()) and q.numel() else q


# ---------------------------------------------------------------------------- the solvers' runs
def n_solutions_batched(pipeline, target: torch.Tensor, num: int, cap: float, seed: int) -> torch.Tensor:
    """A batched row asked for ``num`` solutions of one target within ``cap`` seconds -> its answers (M, n).
    ikdiffuser: one :class:`IKQuery` (its rounds stop when it has ``num`` valid ones); uniform+LM:
    batches of uniform starts until ``num`` converge."""
    if hasattr(pipeline, "pipeline"):  # PriorPipeline: the product's own call
        from ikdiffuser_ros.bench.pipelines import MAX_ROUNDS
        from ikdiffuser_ros.query import IKQuery, IKTarget

        query = IKQuery([IKTarget(list(pipeline.model.end_effectors), list(target.numpy()))], num_solutions=num,
                        timeout=cap, max_rounds=MAX_ROUNDS, random_seed=seed)
        [answer] = pipeline.pipeline.answer(query).targets
        return torch.from_numpy(answer.q[answer.valid][:num])
    deadline = time.monotonic() + cap
    found, count, rows, round_ = [], 0, 0, 0
    while count < num and time.monotonic() < deadline:
        rate = (count + 1) / (rows + 2)
        chunk = int(min(pipeline.max_chunk, max(16, math.ceil(1.2 * (num - count) / rate))))
        q, ok = pipeline.rows(target[None], chunk, deadline, seed + round_)
        found.append(q[0][ok[0]])
        count, rows, round_ = count + int(ok.sum()), rows + chunk, round_ + 1
    out = torch.cat(found) if found else torch.zeros(0, pipeline.model.n_joints, dtype=torch.float64)
    return out[:num]


def n_solutions_peer(peer, target: torch.Tensor, num: int, cap: float, rng: np.random.Generator) -> torch.Tensor:
    """A restart-based peer: uniform restarts until ``num`` answers or ``cap`` seconds -> (M, n)."""
    return restart_answers(peer, target.numpy(), rng, time.perf_counter() + cap, most=num)


def harvest_peer(peer, target: torch.Tensor, budget: float, rng: np.random.Generator) -> torch.Tensor:
    """Every answer of uniform restarts of ``peer`` within ``budget`` seconds -> (M, n)."""
    return restart_answers(peer, target.numpy(), rng, time.perf_counter() + budget)


# ---------------------------------------------------------------------------- scoring
@dataclass
class ScopeScores:
    """Per-target numbers of one solver on one scope (lists over the targets)."""

    mmd2: list[float] = field(default_factory=list)
    coverage_n: list[float] = field(default_factory=list)
    coverage_budget: list[float] = field(default_factory=list)
    outside_n: list[float] = field(default_factory=list)
    distinct_n: list[int] = field(default_factory=list)
    distinct_budget: list[int] = field(default_factory=list)
    diversity_n: list[float] = field(default_factory=list)
    diversity_budget: list[float] = field(default_factory=list)


@dataclass
class SolverCoverage:
    """One solver's coverage run: per-target counts and times, and :class:`ScopeScores` per scope."""

    solver: str
    seconds_n: list[float] = field(default_factory=list)
    answers_n: list[int] = field(default_factory=list)
    verified_n: list[int] = field(default_factory=list)
    seconds_budget: list[float] = field(default_factory=list)
    verified_budget: list[int] = field(default_factory=list)
    scopes: dict[str, ScopeScores] = field(default_factory=dict)


@dataclass
class TargetTruth:
    """The ground truth of one target projected on one scope."""

    samples: torch.Tensor
    reps: torch.Tensor
    leaders: torch.Tensor
    clusters_half: int


class Scorer:
    """Scores a solver's answers on one target against that target's ground truth, per scope."""

    def __init__(self, model: RobotModel, cfg: CoverageConfig, seed: int) -> None:
        self.model, self.cfg = model, cfg
        self.fine = joint_tolerances(model)
        self.coarse = joint_tolerances(model, cfg.cluster_rad, cfg.cluster_m)
        self.wrap = joint_kinds(model)[1]
        self.scopes = scopes(model)
        self.gen = torch.Generator().manual_seed(seed)

    def truths(self, gt: GroundTruth) -> dict[str, TargetTruth]:
        """The ground truth on each scope: samples (at most ``mmd_ref``, drawn at random), distinct
        representatives and cluster leaders re-derived on the scope's joints."""
        pick = torch.randperm(gt.samples.shape[0], generator=self.gen)[: self.cfg.mmd_ref]
        out = {}
        for name, cols in self.scopes.items():
            fine, coarse, wrap = self.fine[cols], self.coarse[cols], self.wrap[cols]
            reps = distinct(gt.reps[:, cols], fine, wrap)
            half = distinct(distinct(gt.reps_half[:, cols], fine, wrap), coarse, wrap)
            out[name] = TargetTruth(gt.samples[pick][:, cols], reps, distinct(reps, coarse, wrap), half.shape[0])
        return out

    def score(self, result: SolverCoverage, truths: dict[str, TargetTruth], q_n: torch.Tensor,
              q_budget: torch.Tensor) -> None:
        """Fold one target's verified N-run (M, n) and budget harvest (H, n) into ``result``."""
        q_n, q_budget = _wrapped(q_n, self.wrap), _wrapped(q_budget, self.wrap)
        for name, cols in self.scopes.items():
            s = result.scopes.setdefault(name, ScopeScores())
            truth, fine, coarse, wrap = truths[name], self.fine[cols], self.coarse[cols], self.wrap[cols]
            a, b = q_n[:, cols], q_budget[:, cols]
            s.mmd2.append(mmd2(truth.samples, a[: self.cfg.mmd_k]))
            found, inside = found_clusters(a, truth.leaders, coarse, wrap)
            n_clusters = max(truth.leaders.shape[0], 1)
            s.coverage_n.append(float(found.sum()) / n_clusters if truth.leaders.shape[0] else float("nan"))
            s.outside_n.append(float((~inside).double().mean()) if a.shape[0] else float("nan"))
            found_b, _ = found_clusters(b, truth.leaders, coarse, wrap)
            s.coverage_budget.append(float(found_b.sum()) / n_clusters if truth.leaders.shape[0] else float("nan"))
            reps_a, reps_b = distinct(a, fine, wrap), distinct(b, fine, wrap)
            s.distinct_n.append(int(reps_a.shape[0]))
            s.distinct_budget.append(int(reps_b.shape[0]))
            s.diversity_n.append(diversity(reps_a))
            s.diversity_budget.append(diversity(reps_b))


# ---------------------------------------------------------------------------- the protocol
def run_coverage(model: RobotModel, pipelines: list, peers: list, tracik, cfg: CoverageConfig, seed: int,
                 target_seed: int, progress: bool = True) -> dict:
    """The coverage protocol on one robot -> its JSON part. ``pipelines``: batched rows (ikdiffuser,
    uniform+LM); ``peers``: restart-based peers; ``tracik``: a TRAC-IK peer for the ground truth or None.
    The ground truth's LM is a :class:`UniformPipeline` of its own (``gt_lm`` in the pipelines, or new)."""
    _, targets = random_targets(model, cfg.targets, target_seed)
    lm = _ground_truth_lm(model, pipelines)
    scorer = Scorer(model, cfg, seed)
    results = [SolverCoverage(p.name) for p in [*pipelines, *peers]]
    rngs = [np.random.default_rng(seed + k) for k in range(len(peers))]
    for p in pipelines:  # warm-up (first calls build plans and caches)
        n_solutions_batched(p, targets[0], 2, 1.0, seed)
    gt_info = _empty_ground_truth_info(scorer.scopes)
    bar = _bar(progress, cfg.targets * (1 + len(results)), model.name)
    for i, T in enumerate(targets):
        gt = ground_truth(model, T, lm, tracik, cfg, seed - 2 * 10**6 + 1000 * i, scorer.fine, scorer.wrap)
        truths = scorer.truths(gt)
        _record_ground_truth(gt_info, gt, truths)
        _step(bar)
        for k, row in enumerate([*pipelines, *peers]):
            rng = rngs[k - len(pipelines)] if k >= len(pipelines) else None
            q_n, q_b = _timed(*_solver_runs(row, k < len(pipelines), T, cfg, seed + 1000 * i, rng), results[k])
            _score_answers(model, scorer, results[k], truths, T, q_n, q_b)
            _step(bar)
    if bar is not None:
        bar.close()
    return {"settings": _settings(cfg, tracik), "scopes": scorer.scopes, "ground_truth": gt_info,
            "solvers": [_as_dict(r) for r in results]}


def _ground_truth_lm(model: RobotModel, pipelines: list):
    """The ground truth's exact LM: the uniform+LM row among ``pipelines`` if there is one, else a new
    :class:`UniformPipeline` with the solver's default refinement."""
    from ikdiffuser_ros.bench.pipelines import UniformPipeline
    from ikdiffuser_ros.solver import SolverConfig

    return next((p for p in pipelines if isinstance(p, UniformPipeline)), None) or \
        UniformPipeline(model, SolverConfig().refine)


def _empty_ground_truth_info(scope_names: Iterable[str]) -> dict:
    """The report's ``ground_truth`` part before the first target: per-target lists (counts, seconds), the
    cluster counts as ``{scope: []}``."""
    return {"verified_lm": [], "verified_tracik": [], "distinct": [], "seconds": [],
            "clusters": {s: [] for s in scope_names}, "clusters_half": {s: [] for s in scope_names}}


def _record_ground_truth(gt_info: dict, gt: GroundTruth, truths: dict[str, TargetTruth]) -> None:
    """Append one target's ground-truth sizes (verified restarts, distinct, seconds, clusters per scope)."""
    gt_info["verified_lm"].append(gt.verified_lm)
    gt_info["verified_tracik"].append(gt.verified_tracik)
    gt_info["distinct"].append(int(gt.reps.shape[0]))
    gt_info["seconds"].append(gt.seconds)
    for s, truth in truths.items():
        gt_info["clusters"][s].append(int(truth.leaders.shape[0]))
        gt_info["clusters_half"][s].append(truth.clusters_half)


def _solver_runs(row, batched: bool, target: torch.Tensor, cfg: CoverageConfig, seed: int,
                 rng: np.random.Generator | None) -> tuple[Callable[[], torch.Tensor], Callable[[], torch.Tensor]]:
    """One solver's two runs on one target (E, 4, 4), as calls without arguments: the N run (``num_solutions``
    within ``cap`` seconds) and the ``budget`` harvest. A batched row seeds them ``seed + 1`` and ``seed + 500``
    (the harvest's rounds never replay the N run's); a restart-based peer draws both from its ``rng``."""
    if batched:
        return (partial(n_solutions_batched, row, target, cfg.num_solutions, cfg.cap, seed + 1),
                partial(row.all_solutions, target, cfg.budget, seed + 500))
    return (partial(n_solutions_peer, row, target, cfg.num_solutions, cfg.cap, rng),
            partial(harvest_peer, row, target, cfg.budget, rng))


def _timed(run_n: Callable[[], torch.Tensor], run_budget: Callable[[], torch.Tensor],
           result: SolverCoverage) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the N run, then the budget run -> their answers, (M, n) and (H, n), unverified; their wall times [s]
    go into ``result.seconds_n`` and ``result.seconds_budget``."""
    start = time.perf_counter()
    q_n = run_n()
    result.seconds_n.append(time.perf_counter() - start)
    start = time.perf_counter()
    q_b = run_budget()
    result.seconds_budget.append(time.perf_counter() - start)
    return q_n, q_b


def _score_answers(model: RobotModel, scorer: Scorer, result: SolverCoverage, truths: dict[str, TargetTruth],
                   target: torch.Tensor, q_n: torch.Tensor, q_b: torch.Tensor) -> None:
    """Count one target's answers of the N run (M, n) and of the budget run (H, n), verify them against the
    target (E, 4, 4) and score the verified ones on every scope into ``result``."""
    result.answers_n.append(int(q_n.shape[0]))
    q_n, q_b = _verified(model, q_n, target), _verified(model, q_b, target)
    result.verified_n.append(int(q_n.shape[0]))
    result.verified_budget.append(int(q_b.shape[0]))
    scorer.score(result, truths, q_n, q_b)


def _settings(cfg: CoverageConfig, tracik) -> dict:
    """The report's ``settings``: the sizes, the MMD kernel's exponent and scales, whether TRAC-IK joined the
    ground truth."""
    return {**cfg.__dict__, "imq_beta": IMQ_BETA, "imq_scales": list(IMQ_SCALES),
            "tracik_ground_truth": tracik is not None}


def _as_dict(r: SolverCoverage) -> dict:
    out = {k: v for k, v in r.__dict__.items() if k != "scopes"}
    out["scopes"] = {name: dict(s.__dict__) for name, s in r.scopes.items()}
    return out


def _bar(progress: bool, total: int, name: str):
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=f"{name}: coverage", unit=" runs")


def _step(bar) -> None:
    if bar is not None:
        bar.update(1)


# ---------------------------------------------------------------------------- summaries
def _mean(values: list[float]) -> float:
    ok = [v for v in values if not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(ok)) if ok else float("nan")


def summary(cov: dict) -> dict[str, dict[str, dict[str, float]]]:
    """``{solver: {scope: {mmd, mmd2, scored, mmd_median, coverage_n, coverage_budget, outside_n, distinct_n,
    diversity_n, diversity_budget, distinct_per_s, seconds_n, verified_n}}}`` averaged over the targets
    (``mmd_median``: the square root of the median MMD^2 over the targets, a check on single targets that
    dominate the mean: the kernel's bandwidth follows each target's spread, so a target whose solutions
    all lie close together scores MMD^2 on a larger scale)."""
    out: dict = {}
    for r in cov["solvers"]:
        per = {}
        for name, s in r["scopes"].items():
            m2, m, scored = mean_mmd(s["mmd2"])
            ok = [v for v in s["mmd2"] if not math.isnan(v)]
            per[name] = {
                "mmd": m, "mmd2": m2, "scored": scored,
                "mmd_median": math.sqrt(float(np.median(ok))) if ok else float("nan"),
                "coverage_n": _mean(s["coverage_n"]),
                "coverage_budget": _mean(s["coverage_budget"]), "outside_n": _mean(s["outside_n"]),
                "distinct_n": _mean(s["distinct_n"]), "diversity_n": _mean(s["diversity_n"]),
                "diversity_budget": _mean(s["diversity_budget"]),
                "distinct_per_s": sum(s["distinct_budget"]) / max(sum(r["seconds_budget"]), 1e-9),
                "seconds_n": _mean(r["seconds_n"]), "verified_n": _mean(r["verified_n"]),
            }
        out[r["solver"]] = per
    return out
