"""The protocols of ``ikdiffuser bench``; every solver runs on the same targets in one process.

Targets are FK poses of configurations drawn uniformly within the limits (seed ``2**31 - 1`` by
default, never used in training); every end effector is constrained in position and rotation.
A solution *succeeds* when one float64 FK of our :class:`RobotModel` puts every end effector
within 1e-5 m and 1e-4 rad of its target and the joints are within the limits, whatever the
solver itself claimed.

1. **One solution per target** (:func:`one_solution_peer`, :func:`one_solution_batched`): every
   target gets a time budget; peers restart from uniform random configurations until they answer
   or the budget is spent. A peer runs once per target with the largest budget, recording when it
   answered; its success and mean time at budget ``b`` are those of the answers given by ``b``
   (a target not solved by ``b`` costs ``b``). The batched pipelines get the whole batch with the
   summed budget, one run per budget.
2. **Many solutions per target** (:func:`many_solutions`): ``budget`` seconds per target (1 s);
   peers restart from uniform random configurations and keep every answer. Reported: verified
   solutions, distinct ones (> 0.05 rad or 5 mm apart in some joint,
   :func:`~ikdiffuser_ros.sampling.dedup.count_distinct`), diversity (mean pairwise joint-space
   L2 distance of the distinct representatives), and how many distinct ones are free of self
   collision (exact FCL, SRDF disabled pairs) and also of a fixed table-and-box scene
   (:func:`table_and_box`), per second.
3. **Learned prior vs uniform starts**: the ``uniform+LM`` rows of 1 and 2
   (:mod:`ikdiffuser_ros.bench.pipelines`).
4. **Coverage of the solution set** (``--protocols coverage``): MMD to a ground-truth set and the share
   of its clusters found, in :mod:`ikdiffuser_ros.bench.coverage`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ikdiffuser_ros.bench.peers import restart_until
from ikdiffuser_ros.collision.world import Shape, World, WorldObject, translation
from ikdiffuser_ros.kinematics.joint_kinds import joint_kinds, uniform_in_limits
from ikdiffuser_ros.kinematics.robot_model import RobotModel
from ikdiffuser_ros.kinematics.transforms import pose_errors
from ikdiffuser_ros.sampling.dedup import joint_tolerances, unique_mask

POS_TOL, ROT_TOL = 1e-5, 1e-4
DEFAULT_SEED = 2**31 - 1


def random_targets(model: RobotModel, num: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(q (num, n), targets (num, E, 4, 4)) float64, FK of uniform configurations."""
    g = torch.Generator().manual_seed(seed)
    q = uniform_in_limits(model.lower, model.upper, num, g)
    return q, model.fk(q)


def errors(model: RobotModel, q: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """q (..., n), targets (..., E, 4, 4) -> worst position [m] and rotation [rad] error over EEs, (...)."""
    pos, rot = pose_errors(model.fk(q), targets)
    return pos.amax(-1), rot.amax(-1)


def verified(model: RobotModel, q: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """q (..., n), targets (..., E, 4, 4) -> (...) bool: within tolerances at every EE and within limits
    (NaN rows are failures)."""
    q_safe = torch.nan_to_num(q)
    pos, rot = errors(model, q_safe, targets)
    inside = ((q >= model.lower - 1e-9) & (q <= model.upper + 1e-9)).all(-1)
    return (pos <= POS_TOL) & (rot <= ROT_TOL) & inside


def diversity(q: torch.Tensor) -> float:
    """Mean pairwise joint-space L2 distance among (M, n) solutions [rad/m] (nan if M < 2)."""
    if q.shape[0] < 2:
        return float("nan")
    return float(torch.cdist(q, q).sum() / (q.shape[0] * (q.shape[0] - 1)))


def table_and_box(model: RobotModel, seed: int = 0) -> World:
    """A fixed scene scaled to the robot's reach: a 4 cm table top in front of the root (+x) at the
    25th percentile of end-effector heights, and a cube on it, from 2000 uniform configurations."""
    _, T = random_targets(model, 2000, seed)
    p = T[..., :3, 3].reshape(-1, 3)
    reach = float(p[:, :2].norm(dim=-1).quantile(0.9))
    z = float(p[:, 2].quantile(0.25))
    side = 0.25 * reach
    table = Shape.box((0.6 * reach, 1.5 * reach, 0.04), translation(0.6 * reach, 0.0, z - 0.02))
    box = Shape.box((side, side, side), translation(0.5 * reach, 0.3 * reach, z + side / 2))
    return World(objects=[WorldObject("table", [table]), WorldObject("box", [box])])


# ---------------------------------------------------------------------------- protocol 1
@dataclass
class OneSolution:
    """Protocol 1 for one solver: per budget, success rate and mean time per target [s]; errors of
    the answers given within ``budgets[main]`` (position [m], rotation [rad]: p50, p95, max)."""

    solver: str
    budgets: list[float]
    success: list[float]
    time_per_target: list[float]
    pos_err: list[float] = field(default_factory=list)
    rot_err: list[float] = field(default_factory=list)
    #: batched pipelines only: one start per target, no restarts, no time limit (success, s per target).
    single_success: float = float("nan")
    single_time_per_target: float = float("nan")


def _percentiles(x: torch.Tensor) -> list[float]:
    """p50, p95 and max of a 1-D tensor (NaNs when empty)."""
    if x.numel() == 0:
        return [float("nan")] * 3
    x = x.double()
    return [float(x.quantile(0.5)), float(x.quantile(0.95)), float(x.max())]


def _answer_errors(result: OneSolution, model: RobotModel, q: torch.Tensor, targets: torch.Tensor) -> None:
    """Error percentiles of the answered rows of q (B, n) (NaN rows = no answer) into ``result``."""
    answered = ~q.isnan().any(-1)
    pos, rot = errors(model, q[answered], targets[answered])
    result.pos_err, result.rot_err = _percentiles(pos), _percentiles(rot)


def one_solution_peer(peer, model: RobotModel, targets: torch.Tensor, budgets: list[float], main: int,
                      seed: int) -> OneSolution:
    """Protocol 1 for a restart-based peer; targets (B, E, 4, 4), budgets [s], main = budget index for errors."""
    rng = np.random.default_rng(seed)
    B, n = targets.shape[0], model.n_joints
    t_answer = torch.full((B,), float("inf"), dtype=torch.float64)
    q = torch.full((B, n), float("nan"), dtype=torch.float64)
    for i, T in enumerate(targets.numpy()):
        start = time.perf_counter()
        answer = restart_until(peer, T, rng, start + max(budgets))
        if answer is not None:
            t_answer[i] = time.perf_counter() - start
            q[i] = torch.from_numpy(answer)
    ok = verified(model, q, targets)
    result = OneSolution(peer.name, list(budgets),
                         [float((ok & (t_answer <= b)).double().mean()) for b in budgets],
                         [float(t_answer.clamp(max=b).mean()) for b in budgets])
    q_main = torch.where((t_answer <= budgets[main])[:, None], q, float("nan"))
    _answer_errors(result, model, q_main, targets)
    return result


def one_solution_batched(pipeline, targets: torch.Tensor, budgets: list[float], main: int,
                         seed: int) -> OneSolution:
    """Protocol 1 for a batched row (:mod:`ikdiffuser_ros.bench.pipelines`): one run per budget, the batch
    gets ``B * budget``; then one start per target without a time limit ("1000 targets x 1 sample + LM")."""
    model, B = pipeline.model, targets.shape[0]
    result = OneSolution(pipeline.name, list(budgets), [], [])
    pipeline.first_solutions(targets[:2], 1.0, seed)  # warm-up
    for k, b in enumerate(budgets):
        start = time.perf_counter()
        q = pipeline.first_solutions(targets, b * B, seed + k)
        result.time_per_target.append((time.perf_counter() - start) / B)
        result.success.append(float(verified(model, q, targets).double().mean()))
        if k == main:
            _answer_errors(result, model, q, targets)
    start = time.perf_counter()
    q = pipeline.one_start(targets, seed + len(budgets))
    result.single_time_per_target = (time.perf_counter() - start) / B
    result.single_success = float(verified(model, q, targets).double().mean())
    return result


# ---------------------------------------------------------------------------- protocol 2
@dataclass
class ManySolutions:
    """Protocol 2 for one solver, summed over the targets (``seconds`` = time spent in total).

    ``checked`` distinct representatives went through FCL (all, or a random subset of up to
    ``max_checks`` per target); the collision-free counts are the checked shares times ``distinct``.
    """

    solver: str
    seconds: float = 0.0
    answers: int = 0
    verified: int = 0
    distinct: int = 0
    checked: int = 0
    self_free: float = 0.0
    scene_free: float = 0.0
    diversity: list[float] = field(default_factory=list)
    diversity_self_free: list[float] = field(default_factory=list)

    @property
    def distinct_per_s(self) -> float:
        return self.distinct / self.seconds if self.seconds else float("nan")

    @property
    def self_free_per_s(self) -> float:
        return self.self_free / self.seconds if self.seconds else float("nan")

    @property
    def scene_free_per_s(self) -> float:
        return self.scene_free / self.seconds if self.seconds else float("nan")

    @property
    def mean_diversity(self) -> float:
        return _nan_mean(self.diversity)

    @property
    def mean_diversity_self_free(self) -> float:
        """Diversity of the checked self-collision-free distinct solutions (a random subset of up to
        ``max_checks`` per target, whose mean pairwise distance estimates the whole set's) [rad/m]."""
        return _nan_mean(self.diversity_self_free)


def _nan_mean(values: list[float]) -> float:
    """The mean of the non-NaN values (NaN if none)."""
    kept = [v for v in values if not np.isnan(v)]
    return float(np.mean(kept)) if kept else float("nan")


class SolutionCounter:
    """Verifies, de-duplicates and collision-checks the answers of protocol 2 for one robot."""

    def __init__(self, model: RobotModel, checker, scene: World, max_checks: int, seed: int) -> None:
        self.model, self.checker, self.scene, self.max_checks = model, checker, scene, max_checks
        self.tol = joint_tolerances(model)  # 0.05 rad / 5 mm per joint
        self.wrapping = joint_kinds(model)[1]
        self.rng = np.random.default_rng(seed)

    def add(self, result: ManySolutions, answers: torch.Tensor, target: torch.Tensor, seconds: float) -> None:
        """Fold one target's answers (M, n) found in ``seconds`` into ``result``."""
        result.seconds += seconds
        result.answers += answers.shape[0]
        good = answers[verified(self.model, answers, target.expand(answers.shape[0], *target.shape))]
        result.verified += good.shape[0]
        reps = good[unique_mask(good, None, self.tol, self.wrapping)] if good.shape[0] else good
        result.distinct += reps.shape[0]
        result.diversity.append(diversity(reps))
        if reps.shape[0] == 0:
            return
        pick = self.rng.permutation(reps.shape[0])[: self.max_checks]
        checked = reps[torch.from_numpy(pick)]
        self_hit = self.checker.check(checked).self_collision
        scene_hit = self.checker.check(checked, self.scene).in_collision
        result.checked += len(pick)
        result.diversity_self_free.append(diversity(checked[~self_hit]))
        scale = reps.shape[0] / len(pick)
        result.self_free += float((~self_hit).sum()) * scale
        result.scene_free += float((~scene_hit).sum()) * scale


def restart_answers(peer, targets: np.ndarray, rng: np.random.Generator, deadline: float,
                    most: int | None = None) -> torch.Tensor:
    """Random restarts (uniform within limits) of ``peer`` until ``deadline`` (``time.perf_counter()``)
    or ``most`` answers: every answer it gives, (M, n) float64. targets (E, 4, 4)."""
    lower, upper = peer.model.lower.numpy(), peer.model.upper.numpy()
    found = []
    while time.perf_counter() < deadline and (most is None or len(found) < most):
        q = peer.attempt(targets, lower + (upper - lower) * rng.random(lower.shape[0]), deadline)
        if q is not None:
            found.append(torch.from_numpy(q))
    return torch.stack(found) if found else torch.zeros(0, lower.shape[0], dtype=torch.float64)


def many_solutions_peer(peer, targets: torch.Tensor, budget: float, counter: SolutionCounter,
                        seed: int) -> ManySolutions:
    """Protocol 2 for a restart-based peer: random restarts for ``budget`` seconds per target."""
    rng = np.random.default_rng(seed)
    result = ManySolutions(peer.name)
    for T in targets:
        start = time.perf_counter()
        answers = restart_answers(peer, T.numpy(), rng, start + budget)
        counter.add(result, answers, T, time.perf_counter() - start)
    return result


def many_solutions_batched(pipeline, targets: torch.Tensor, budget: float, counter: SolutionCounter,
                           seed: int) -> ManySolutions:
    """Protocol 2 for a batched row: every solution it finds in ``budget`` seconds per target."""
    result = ManySolutions(pipeline.name)
    for i, T in enumerate(targets):
        start = time.perf_counter()
        answers = pipeline.all_solutions(T, budget, seed + 1000 * i)
        counter.add(result, answers, T, time.perf_counter() - start)
    return result
