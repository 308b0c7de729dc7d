"""The one IK pipeline: :class:`IKQuery` in, :class:`IKAnswer` out, within the query's deadline.

:meth:`IKPipeline.answer` runs these stages (the ROS node, the MoveIt bridge and Python users
all call it)::

    plan      validate the query; resolve each target's links (tips, planning group), frames
              (at the reference state) and position-only flags into end-effector targets; lock
              joints (the group's complement, ``locked``); build the objectives
    seed      with a seed, the LM starts from it first (every target): a seed that solves comes
              back as it is and ranks first; when that answers every target, nothing is sampled
    local     local mode (``consistency_limits``): LM rounds from points around the seed, inside
              the consistency box, instead of the learned prior
    rounds    round 0 samples every target, later rounds only targets with fewer valid solutions
              than asked for (at most ``max_rounds``; round k samples ``ROUND_GROWTH**k`` times
              more, up to ``ROUND_ROWS``); only targets with none get collision guidance. A query for
              one solution samples at the card's temperature (typical samples: one sample + LM
              succeeds more often), one for several at 1 (their answers should spread). A round
              that wants ``restart_min_rows`` or more rows per target of a query for several
              solutions gives each sample ``restarts`` LM starts. Work is cut into solver calls
              whose size follows the measured cost of a call (fixed and per row) and the time
              left (:class:`ChunkSizer`), breadth first: each call gives its targets equal
              shares, so a tight budget still reaches them all
    chunk     one :meth:`IKDiffuserSolver.run` call (sample, LM with locked joints frozen,
              polish, measure at the named links: the one success test) -> joint constraints ->
              exact collision check of the call's rows in one batch (FCL, stops at the deadline)
    finish    pool each target's measured candidates, rank them (unique valid first, then by
              :func:`~ikdiffuser_ros.solver.ranking_key`), keep ``num_solutions``, set the status

Deadline contract: every stage checks the deadline between short units of work (a reverse
diffusion pass, an LM iteration, a polish step, a slice of collision checks, one solver call)
and starts no unit that, as long as the last one, would end late; the time to rank the answers
is kept aside. So the answer arrives at the deadline (a few ms either side), with every
candidate fully measured by then. A target gets ``TIMED_OUT`` only when none of its candidates
was measured in time.
"""

from __future__ import annotations

import gc
import logging
import math
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from logging import Logger
from typing import TYPE_CHECKING
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ikdiffuser_ros.call_costs import ChunkSizer, RateBySize
from ikdiffuser_ros.errors import (CollisionCheckingUnavailableError, ConfigError, IKDiffuserError, InvalidGoalError,
                                   InvalidRequestError, InvalidRobotStateError, UnknownLinkError)
from ikdiffuser_ros.kinematics.frames import FrameResolver, pose_matrices, rigid_offsets
from ikdiffuser_ros.kinematics.groups import Group, build_groups, find_group
from ikdiffuser_ros.kinematics.joint_kinds import wrap_to_pi
from ikdiffuser_ros.query import IKAnswer, IKQuery, IKTarget, JointBounds, Status, TargetAnswer
from ikdiffuser_ros.sampling import objectives as obj
from ikdiffuser_ros.sampling.dedup import farthest_first_many, unique_mask_numpy
from ikdiffuser_ros.sampling.sampler import default_harvest_steps
from ikdiffuser_ros.kinematics.robot_model import RobotModel
from ikdiffuser_ros.pool_ranking import PoolRows, rank_pools
from ikdiffuser_ros.solver import IKDiffuserSolver, SolveBatch, SolverConfig


if TYPE_CHECKING:  # python-fcl is optional
    from ikdiffuser_ros.collision.fcl_checker import CollisionChecker

#: How many times longer a collision-guided solver call takes than a plain one (CPU, sphere model),
#: a first guess until one is measured.
GUIDED_COST = 4.0
#: Time kept for ranking the answer after the solving [s], by the answer's order, size and checks
#: (:meth:`IKPipeline._finish_key`: ranking 512 solutions takes 100x the time of one) and its targets: FINISH_MARGIN
#: x the running mean of its measurements per target for answers of as many targets
#: (:class:`~ikdiffuser_ros.call_costs.RateBySize`, FINISH_EMA the weight of the newest), FINISH_S_PER_TARGET per
#: target until one is measured. The whole answer keeps at least FINISH_MIN_S (the last call's pooling after its
#: solver deadline) and at most FINISH_MAX_SHARE of its timeout. (Was one mean per target across answers of 1 to 64
#: targets: one target's ranking is mostly fixed cost, and 64 targets kept 2-4 ms for a ranking of 0.7-0.9 ms.)
FINISH_S_PER_TARGET, FINISH_MARGIN, FINISH_EMA, FINISH_MIN_S, FINISH_MAX_SHARE = 2e-4, 1.5, 0.3, 2e-4, 0.5
#: Each round after the first samples this many times more candidates per target than the one
#: before (a target the prior missed with a few samples gets more, while the budget lasts), up to
#: ROUND_ROWS per target (or the query's own count, if larger).
ROUND_GROWTH, ROUND_ROWS = 4, 64
#: Share of the time left that one solver call may use (at most the time left less the call's measured pooling,
#: :meth:`IKPipeline._pooling_estimate`); the rest is for its last unit of work, the exact collision checks and the
#: answer (so a call started near the deadline still ends before it).
SOLVER_SHARE = 0.8
#: A diverse answer without objectives or seed comes farthest point first
#: (:func:`~ikdiffuser_ros.sampling.dedup.farthest_first`) over at most this many of its distinct valid
#: candidates (the cost is this squared; the rest follow in the ranking rule's order).
SPREAD_CANDIDATES = 256
#: A target's rounds count its *distinct* valid candidates (the solver's ``dedup_tol``) when it wants 2 to
#: SPREAD_CANDIDATES of them (a harvest, more, counts every valid one and stops sooner), and stop early when
#: this many calls in a row, each bringing at least STALE_MIN_ROWS valid candidates, found no new one: the
#: target's solutions look exhausted (a 6-joint arm has a few).
STALE_CALLS, STALE_MIN_ROWS = 2, 8


@dataclass(frozen=True)
class PipelineConfig:
    """Limits and policies of :class:`IKPipeline` (units: s)."""

    #: Most targets and solutions per target of one query.
    max_targets: int = 256
    max_num_solutions: int = 512
    #: Budget of a query whose ``timeout`` is None [s].
    default_timeout: float = 5.0
    #: Most candidate rows (targets x solutions) per solver call.
    max_batch_size: int = 4096
    #: Most rows of the first solver call of a query; each later call at most 4x the one before.
    #: Within these caps the calls follow the measured throughput and the time left, so with a
    #: generous budget the calls, and so the answer, depend on the query alone (same query, same
    #: random_seed: same answer).
    first_chunk_rows: int = 256
    #: Candidates sampled per solution asked for (rounded down: a request for one solution samples one),
    #: so that one call usually yields them all (one sample + LM succeeds 84-95 % of the time on the
    #: shipped models); with ``avoid_collisions`` (or joint constraints), this many times more.
    oversample: float = 1.25
    collision_oversample: float = 2.0
    constraint_oversample: float = 2.0
    #: Sphere-model collision guidance with ``avoid_collisions``: "off", "fallback" (rounds > 0), "always".
    collision_guidance: str = "fallback"
    weight_collision: float = 1.0
    #: Rounds that want at least this many rows per target, of a query for more than one solution, give each
    #: diffusion sample of their calls ``restarts`` LM starts (it and perturbed copies, :meth:`IKDiffuserSolver.run`):
    #: more valid and distinct solutions per CPU-second when many are asked for, whatever rows the time left lets a
    #: call have (a 1 x 32 query within 10 ms used to get a first call of 12 rows, too few for restarts, at the cost
    #: of 12 samples). 1 = every start is a diffusion sample.
    restarts: int = 4
    restart_min_rows: int = 16
    #: Queries asking for at least this many solutions sample with full diversity unless they set their own
    #: (:attr:`IKQuery.diversity`). A diverse query with a generous budget (at least ``generous_budget`` [s])
    #: spreads its first solver call's samples apart (a repulsion between each target's samples, the torch
    #: sampler, ~4x the cost per row) and, without objectives or seed, when its pool fits the order
    #: (``diverse_pool`` x ``num_solutions`` <= SPREAD_CANDIDATES), starts its restarts from uniform draws
    #: (:attr:`SolverConfig.uniform_share`) and collects that pool of valid candidates (while time lasts) to
    #: answer the ``num_solutions`` of them farthest point first. A larger ask is a harvest: every valid
    #: solution found counts, so it keeps the perturbed restarts, which converge more often (uniform ones
    #: took baxter's distinct solutions per second in 1 s from 1681 to 1038). Tighter budgets stay on the fast
    #: path (a 0.1 s query for 8 x 512 solutions returned nothing under load when its first call repelled).
    #: A pool of 2 took the ground-truth clusters found with 100 solutions on baxter from 56 to 62 % (panda
    #: 99 -> 100 %) for 1.2x the time to them (docs/solver.md).
    diverse_min_solutions: int = 16
    #: ... and a timeout of at least this [s]: within a few ms a query wants its solutions first (1 x 32 within 10 ms,
    #: 60 targets: 32 valid in time 85 % plain against 48 % diverse on baxter, 78 / 65 % on panda, with no more spread;
    #: within 20 ms both are 98-100 % in time and the diverse answers spread 10-14 % wider). Its answer still comes
    #: farthest point first.
    diverse_min_budget: float = 0.02
    generous_budget: float = 0.25
    diverse_pool: float = 2.0
    #: Solver settings per call: reverse-diffusion sampler ("ddim" or "ddpm"), its steps (None = the
    #: checkpoint card's plan), the LM after sampling (False: raw samples).
    sampler: str = "ddim"
    steps: int | None = None
    refine: bool = True

    def __post_init__(self) -> None:
        """Refuse settings out of range with :class:`ConfigError` naming them."""
        positive = ("max_targets", "max_num_solutions", "max_batch_size", "first_chunk_rows", "restarts",
                    "restart_min_rows", "diverse_min_solutions")
        bad = [f"{k}={getattr(self, k)!r} (an int >= 1)" for k in positive
               if isinstance(getattr(self, k), bool) or not isinstance(getattr(self, k), int) or getattr(self, k) < 1]
        bad += [f"{k}={getattr(self, k)!r} (a finite number > 0)" for k in ("default_timeout", "oversample",
                "collision_oversample", "constraint_oversample", "diverse_pool") if not (_finite_number(getattr(self, k))
                                                                          and getattr(self, k) > 0)]
        if not (_finite_number(self.weight_collision) and self.weight_collision >= 0):
            bad.append(f"weight_collision={self.weight_collision!r} (a finite number >= 0)")
        for k in ("generous_budget", "diverse_min_budget"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
                bad.append(f"{k}={v!r} (a number >= 0 [s]; inf: never)")
        if self.sampler not in ("ddim", "ddpm"):
            bad.append(f"sampler={self.sampler!r} ('ddim' or 'ddpm')")
        if self.steps is not None and (isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1):
            bad.append(f"steps={self.steps!r} (None or an int >= 1)")
        if self.collision_guidance not in ("off", "fallback", "always"):
            bad.append(f"collision_guidance={self.collision_guidance!r} ('off', 'fallback' or 'always')")
        if bad:
            raise ConfigError("PipelineConfig: " + "; ".join(bad))


@dataclass
class _Spec:
    """A resolved target: end-effector poses T (E, 4, 4) in the root frame, constrained (E,) and
    position-only (E,) masks, tip points (E, 3) [m] of the named links in their end effectors' frames;
    per-axis tolerances: the named links' target poses (E, 4, 4) and bounds (E, 6) (0 = exact), and whether any
    bound is set (``boxed``: a property asked per target per call took 0.3 ms of a 64-target call)."""

    T: np.ndarray
    mask: np.ndarray
    position_only: np.ndarray
    tip_points: np.ndarray
    box_frames: np.ndarray
    box_bounds: np.ndarray
    boxed: bool = False


@dataclass
class _Plan:
    """A validated query: specs (or the error of each malformed target) and what every call shares."""

    query: IKQuery
    specs: list
    #: time kept for ranking the answer [s] (FINISH_MARGIN x :meth:`IKPipeline._finish_estimate`, within
    #: [FINISH_MIN_S, FINISH_MAX_SHARE x timeout])
    reserve: float
    n_sample: int
    seed: np.ndarray | None
    locked: dict[int, float]
    objectives: dict[str, float]
    guided: dict[str, float]
    random_seed: int
    #: local mode: per-joint distance [rad or m] every answer keeps from the seed, (n,) or None
    consistency: np.ndarray | None = None
    #: the LM's box (lower (n,), upper (n,)): the limits narrowed by the joint constraints and, in local mode, to
    #: the seed's neighbourhood (:meth:`IKPipeline._box`); None = the joint limits
    box: tuple[np.ndarray, np.ndarray] | None = None
    #: diversity of the sampled calls, in [0, 1] (:attr:`IKQuery.diversity` resolved)
    diversity: float = 0.0
    #: order the answers farthest point first (:meth:`IKPipeline._spread`): diverse, no objectives, no seed
    spread_first: bool = False
    #: valid candidates each target's rounds collect before they stop: ``num_solutions``, more for
    #: ``cover`` (:attr:`PipelineConfig.diverse_pool`)
    wanted: int = 1
    #: ``spread_first`` with a generous budget (:attr:`PipelineConfig.generous_budget`) and a pool that fits
    #: the order: collect ``wanted`` candidates and trade converged rows for coverage (uniform restarts)
    cover: bool = False
    #: when the answer is due (monotonic s): t0 + timeout
    end: float = math.inf
    #: DDIM steps of the sampled calls: :attr:`PipelineConfig.steps`, else for a harvest (a diverse ask larger than
    #: the order ranks) the card's ``sampling.harvest_steps``; None = the solver's plan
    steps: int | None = None
    calls: int = 0  #: solver calls made (each gets its own random seed)
    sampled_calls: int = 0  #: of those, calls of the learned prior
    returnable: int = 0  #: rows the answer would hold now: sum over targets of min(num_solutions, rows kept)
    pending: int = 0  #: rows the call under way may add to ``returnable`` (0 between calls)

    @property
    def deadline(self) -> float:
        """When the rounds end (monotonic s): the answer's end less the ranking's reserve and the caller's
        delivery of the rows found so far and of those the call under way may add
        (:attr:`IKQuery.delivery_s_per_solution`)."""
        return self.end - self.reserve - self.query.delivery_s_per_solution * (self.returnable + self.pending)


@dataclass
class _Pool:
    """Measured candidates of one target, concatenated over calls (rows of the arrays in ``parts``)."""

    parts: list = field(default_factory=list)  #: (q, pe, re, coll, valid, cost, first) per call (_PART_KEYS)
    valid_count: int = 0
    kept: int = 0  #: rows in ``parts`` (valid ones, all measured ones with ``keep_invalid``)
    distinct: int = 0  #: distinct valid rows, counted where the plan wants 2 to SPREAD_CANDIDATES (:meth:`_count`)
    stale: int = 0  #: calls in a row that brought STALE_MIN_ROWS valid rows or more and no new distinct one
    measured: int = 0  #: rows whose measurement completed in time
    reached: int = 0  #: rows within tolerances and limits (the solver's success test)
    best: tuple[float, float] = (math.inf, math.inf)  #: smallest (position [m], rotation [rad]) error measured


_EYE4 = np.eye(4)
_PART_KEYS = ("q", "pe", "re", "coll", "valid", "cost", "first")


def _stack(arrays: list[np.ndarray]) -> np.ndarray:
    """``np.stack(arrays)``; one array as a view with a leading axis (a one-target call skips the copy)."""
    return arrays[0][None] if len(arrays) == 1 else np.stack(arrays)


def _pool_rows(pools: list[_Pool], m: dict, keep_invalid: bool) -> list[int]:
    """Add a call's measured rows (``m``: the (k, num) arrays of :meth:`IKPipeline._measured`, row j for
    ``pools[j]``) to their pools, in one pass over the call (per-target numpy work cost ~75 us a target: 1.2 ms
    of every call of a 16-target query); returns each target's new valid rows."""
    checked, valid, pe, re = m["checked"], m["valid"], m["pe"], m["re"]
    keep = checked.copy() if keep_invalid else checked & valid
    kept = [None if m[key] is None else m[key][keep] for key in _PART_KEYS]  # the kept rows, target by target
    counts = np.stack([valid & keep, keep, checked, m["success"] & checked]).sum(-1).T.tolist()  # (k, 4)
    best = np.where(checked, pe + re, np.inf).argmin(1).tolist()
    start = 0
    for j, (pool, (new_valid, new_kept, measured, reached)) in enumerate(zip(pools, counts)):
        pool.parts.append(tuple(None if a is None else a[start:start + new_kept] for a in kept))
        start += new_kept
        pool.valid_count += new_valid
        pool.kept += new_kept
        pool.measured += measured
        pool.reached += reached
        if measured:
            pool.best = min(pool.best, (float(pe[j, best[j]]), float(re[j, best[j]])), key=sum)
    return [c[0] for c in counts]


def _target_lists(target: IKTarget, what: str) -> tuple[list, ...]:
    """(links, poses, frames, position_only, tolerances) of a target, each one per link (empty optional
    lists filled with their defaults); InvalidGoalError names the counts that do not match."""
    links, poses = list(target.links), list(target.poses)
    optional = ((target.frames, "frames", ""), (target.position_only, "position_only flags", False),
                (target.tolerances, "tolerances", None))
    if not links:
        raise InvalidGoalError(f"{what}: no links")
    wrong = [(len(poses), "poses", "one per link name")] if len(poses) != len(links) else []
    wrong += [(len(values), name, "one per link name, or none") for values, name, _ in optional
              if len(values) not in (0, len(links))]
    if wrong:
        raise InvalidGoalError(f"{what}: {len(links)} link names but " + " and ".join(f"{n} {name}" for n, name, _ in wrong)
                               + " (" + "; ".join(f"{name}: {rule}" for _, name, rule in wrong) + ")")
    return links, poses, *(list(values) or [default] * len(links) for values, _, default in optional)


def _batch_key(target: IKTarget) -> tuple | None:
    """What targets validated together (:meth:`IKPipeline._specs`) share: their links, frames and position_only
    flags; None (one at a time) for a target with tolerances, mismatched lists or unhashable names."""
    try:
        if any(t is not None for t in target.tolerances) or len(target.poses) != len(target.links) or \
                len(target.frames) not in (0, len(target.links)) or \
                len(target.position_only) not in (0, len(target.links)):
            return None
        key = (tuple(target.links), tuple(target.frames), tuple(bool(p) for p in target.position_only))
        hash(key)
    except TypeError:
        return None
    return key


def _reports_late(query: IKQuery) -> bool:
    """Whether a query's answer rows are checked for collisions after the ranking: reported, not avoided, and
    several solutions asked (one solution's valid rows, one or two a call, are checked as they come, with the
    pooling's measured time kept free: after the ranking, in its 1.5x reserve, one target within 2 ms solved less)."""
    return query.report_collisions and not query.avoid_collisions and query.num_solutions > 1


def _tolerance(values: Sequence[float] | np.ndarray, what: str) -> np.ndarray:
    """Six tolerances (x, y, z [m], rx, ry, rz [rad]), each >= 0 or inf -> (6,) float64 (InvalidGoalError)."""
    try:
        b = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        b = np.full(1, np.nan)
    if b.shape != (6,) or np.any(np.isnan(b)) or np.any(b < 0):
        raise InvalidGoalError(f"{what}: tolerances are 6 numbers >= 0 (x, y, z [m], rx, ry, rz [rad]; inf = free "
                               f"axis), got {values!r}")
    return b


def _finite_number(value: object) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


class IKPipeline:
    """Answers :class:`IKQuery` s with one solver, an optional exact collision checker and planning groups.

    Args:
        solver: the :class:`IKDiffuserSolver` (its ``config.refine`` tolerances are the success test).
        checker: a :class:`~ikdiffuser_ros.collision.fcl_checker.CollisionChecker`, or None (then
            ``avoid_collisions`` queries raise :class:`CollisionCheckingUnavailableError`).
        config: :class:`PipelineConfig`.
        groups: planning groups by name (:func:`~ikdiffuser_ros.kinematics.groups.build_groups`).
    """

    def __init__(self, solver: IKDiffuserSolver, checker: CollisionChecker | None = None,
                 config: PipelineConfig = PipelineConfig(),
                 groups: dict[str, Group] | None = None) -> None:
        self.solver, self.checker, self.config = solver, checker, config
        self.robot = solver.robot
        self.groups = dict(groups or {})
        self.frames = FrameResolver(self.robot)
        self.tips = rigid_offsets(self.robot)
        self._tips_inv = {link: np.linalg.inv(T) for link, (_, T) in self.tips.items()}  #: T_link_ee
        self.ee_index = {ee: i for i, ee in enumerate(self.robot.end_effectors)}
        self.joint_index = {name: i for i, name in enumerate(self.robot.joint_names)}
        self.default_state = self.robot.default_positions().numpy().astype(np.float64)
        self._reset_measurements()
        self._spread_s = 0.001  #: measured time of the last farthest-first order of one target [s]

    @classmethod
    def from_robot(cls, robot: "str | RobotModel", model_path: str | Path | None = None, device: str = "cpu",
                   config: PipelineConfig = PipelineConfig(), solver_config: SolverConfig = SolverConfig(),
                   collision: bool = True, warmup: bool = True) -> "IKPipeline":
        """The pipeline for a robot, assembled as the node assembles it.

        Args:
            robot: a robot config name or path (``config/robots``, :func:`~ikdiffuser_ros.robots.robot_config`)
                or a :class:`RobotModel` (its planning groups then come from its SRDF alone).
            model_path: checkpoint folder; None = the robot's checkpoint on the search path
                (:func:`~ikdiffuser_ros.model.registry.find_checkpoint`, by fingerprint).
            device: torch device of the model (``cpu``: the compiled small-batch path when built).
            config, solver_config: :class:`PipelineConfig` and :class:`SolverConfig`.
            collision: build the exact collision checker (needs python-fcl; else ``avoid_collisions``
                queries raise :class:`CollisionCheckingUnavailableError`).
            warmup: run every path once (:meth:`warmup`), so the first query pays no start-up cost.

        Raises:
            CheckpointError, RobotDescriptionError: no model for the robot, or a bad robot description.
        """
        from ikdiffuser_ros.model.checkpoint import load_checkpoint
        from ikdiffuser_ros.model.registry import find_checkpoint
        from ikdiffuser_ros.robots import robot_config

        rcfg = robot_config(robot) if isinstance(robot, (str, Path)) else None
        model = rcfg.load() if rcfg is not None else robot
        solver = IKDiffuserSolver(load_checkpoint(find_checkpoint(model, model_path), model, device), model, solver_config)
        pipeline = cls.around(solver, config, dict(rcfg.groups) if rcfg is not None else {}, collision=collision)
        if warmup:
            pipeline.warmup()
        return pipeline

    @classmethod
    def around(cls, solver: IKDiffuserSolver, config: PipelineConfig = PipelineConfig(),
               config_groups: Mapping[str, tuple[str, ...]] | None = None,
               param_groups: Mapping[str, tuple[str, ...]] | None = None, collision: bool = True,
               logger: Logger | None = None) -> "IKPipeline":
        """The pipeline around a loaded solver, as every caller assembles it (:meth:`from_robot`, the node).

        Args:
            solver: the loaded :class:`IKDiffuserSolver` (its robot is the pipeline's).
            config: :class:`PipelineConfig`.
            config_groups, param_groups: planning groups ``{name: tip links}`` of the robot config and of
                the node's ``groups`` parameter, added to (and overriding) the SRDF's
                (:func:`~ikdiffuser_ros.kinematics.groups.build_groups`).
            collision: build the exact collision checker; when python-fcl or the robot's collision
                geometry is missing, there is none (``avoid_collisions`` queries then raise
                :class:`CollisionCheckingUnavailableError`) and ``logger`` says why.
            logger: anything with ``warning(str)`` (a ``logging.Logger``, an rclpy logger); default
                the ``ikdiffuser_ros`` logger.
        """
        logger = logger if logger is not None else logging.getLogger("ikdiffuser_ros")
        model = solver.robot
        checker = cls._checker(model, logger) if collision else None
        groups = build_groups(model, config_groups or {}, param_groups or {}, rigid_offsets(model), logger)
        return cls(solver, checker, config, groups)

    @staticmethod
    def _checker(model: RobotModel, logger: Logger) -> CollisionChecker | None:
        """The exact collision checker, or None (with a warning) without python-fcl or collision geometry."""
        try:
            from ikdiffuser_ros.collision.fcl_checker import CollisionChecker
        except ImportError:
            logger.warning("exact collision checking unavailable: python-fcl is not importable")
            return None
        try:
            return CollisionChecker(model)
        except (OSError, IKDiffuserError) as exc:  # the pipeline still answers, without exact checks
            logger.warning(f"exact collision checking unavailable: {type(exc).__name__}: {exc}")
            return None

    # ------------------------------------------------------------------ the one entry point
    def answer(self, query: IKQuery) -> IKAnswer:
        """Answer ``query`` (module docstring). Raises :class:`InvalidRequestError` subclasses for a
        malformed query as a whole; a malformed target only marks that target INVALID."""
        t0 = time.monotonic() if query.start is None else query.start
        plan = self._plan(query, t0)
        pools = self._rounds(plan)
        t = time.monotonic()
        answers = self._finish(plan, pools)
        cost = self._finish_costs.setdefault(self._finish_key(query, plan.spread_first), RateBySize(FINISH_EMA))
        cost.record(len(answers), time.monotonic() - t)
        return IKAnswer(answers, list(self.robot.joint_names), time.monotonic() - t0)

    def warmup(self) -> float:
        """Run every path of a request before serving (lazy loading, kernel selection, the chunk sizers' first
        measurements): sampled, seeded and local queries of 1 and 8 solutions at the default state, sampled ones
        of 32 (with restarts), batches of 8 targets x 1 and x 4, a diverse one of 16, and with a checker the sphere
        model (fitted now if the robot has no sphere file) and collision checks (avoided, reported); twice, the
        sizers and the ranking's and pooling's times keeping the second (warm) pass's measurements; returns seconds
        (~0.1-0.3 s). Then it collects the garbage and freezes what is alive (``gc.freeze``, process-wide: the
        modules, the model, the robot): the collector's full passes scanned those ~265 k objects in 70-210 ms, in
        the middle of a request, which then came that late."""
        t0 = time.monotonic()
        target = IKTarget(list(self.robot.end_effectors), list(self._fk(self.default_state)))
        seed = self.default_state + 0.05 * (self.robot.upper - self.robot.lower).numpy()
        for _ in range(2):
            self._reset_measurements()
            for num in (1, 8):
                for extra in ({}, {"seed": seed}, {"seed": seed, "consistency_limits": 0.2}):
                    self.answer(IKQuery([target], num_solutions=num, max_rounds=1, timeout=30.0, **extra))
            self.answer(IKQuery([target], num_solutions=32, max_rounds=1, timeout=30.0, diversity=0.0))
            for num in (1, 4):  # a batch: its sizers, pooling and ranking times per target
                self.answer(IKQuery([target] * 8, num_solutions=num, max_rounds=1, timeout=30.0))
            self.answer(IKQuery([target], num_solutions=16, max_rounds=1, timeout=30.0, diversity=1.0))
            if self.checker is not None:
                _ = self.solver.sphere_model  # the collision guidance's spheres, before the first request needs them
                self.answer(IKQuery([target], num_solutions=8, max_rounds=1, timeout=30.0, avoid_collisions=True))
                for num in (1, 32):
                    self.answer(IKQuery([target], num_solutions=num, max_rounds=1, timeout=30.0,
                                        report_collisions=True))
        gc.collect()
        gc.freeze()
        return time.monotonic() - t0

    def _reset_measurements(self) -> None:
        """Forget the measured costs: the chunk sizers, the ranking's and the pooling's times."""
        self._sizers = self._new_sizers()
        #: measured time to rank an answer by its targets, by :meth:`_finish_key`
        self._finish_costs: dict[tuple[bool, int, bool], RateBySize] = {}
        #: measured time to pool a call's rows by its targets, by the collision checks it makes (:meth:`_checks`)
        self._pooling_costs: dict[tuple[bool, bool], RateBySize] = {}

    def forward_kinematics(self, q: np.ndarray | Sequence[float], links: list[str], frame: str = "",
                           external: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """Poses (M, L, 4, 4) of any ``links`` of the robot at joint states ``q`` ((n,) or (M, n) [rad or m],
        in ``robot.joint_names`` order), expressed in ``frame`` (a link of the robot, "" = the root frame, or
        a frame of ``external``: ``{name: T_root_frame}`` as :attr:`IKQuery.external_frames`). Joints outside
        the model's active ones are at their default values.

        Raises:
            InvalidRobotStateError: q is not finite or has the wrong shape.
            UnknownLinkError, UnknownFrameError: a name that is not a link of the robot.
        """
        n = self.robot.n_joints
        try:
            qa = np.asarray(q, dtype=np.float64)
        except (TypeError, ValueError):
            qa = np.full(1, np.nan)
        qa = qa.reshape(1, -1) if qa.ndim == 1 else qa
        if qa.ndim != 2 or qa.shape[1] != n or not np.all(np.isfinite(qa)):
            raise InvalidRobotStateError(f"joint states must be finite with shape ({n},) or (M, {n}), got "
                                         f"{np.shape(q)}")
        valid = sorted(self.robot.urdf.links)
        for link in links:
            if link not in self.robot.urdf.links:
                raise UnknownLinkError(link, valid, "is not a link of the robot", "forward kinematics")
        frame = self.frames.normalize(frame)
        if not self.frames.known(frame):  # a frame outside the robot, or UnknownFrameError
            T_frame_root = np.linalg.inv(self.frames.T_root(frame, what="forward kinematics", external=external))
            return T_frame_root @ self.forward_kinematics(qa, links)
        names = list(links) + ([] if frame == self.robot.root_frame else [frame])
        T = self.robot.fk_links(torch.as_tensor(qa), names).numpy() if names else np.zeros((len(qa), 0, 4, 4))
        if frame == self.robot.root_frame:
            return T
        return np.linalg.inv(T[:, -1:]) @ T[:, :-1]

    # ------------------------------------------------------------------ plan
    def _plan(self, query: IKQuery, t0: float) -> _Plan:
        self._check_sizes(query)
        timeout = self.config.default_timeout if query.timeout is None else query.timeout
        seed = self._seed(query.seed)
        group = find_group(self.groups, query.group) if query.group is not None else None
        q_ref = self.default_state if seed is None else seed
        locked = self._locked(query, group, q_ref)
        objectives = obj.canonical_weights({**({"user": 1.0} if query.cost_fn is not None else {}),
                                            **dict(query.objectives)})
        if query.cost_fn is not None and not callable(query.cost_fn):
            raise InvalidRequestError("cost_fn must be callable: q (M, n) -> (M,)")
        if objectives.get("seed", 0) > 0 and seed is None:
            raise InvalidRequestError("the seed objective needs a seed")
        if query.avoid_collisions and self.checker is None:
            raise CollisionCheckingUnavailableError(
                "avoid_collisions requested but exact collision checking is unavailable (python-fcl)")
        self._check_constraints(query)
        consistency = self._consistency(query.consistency_limits, seed)
        T_ref = self._fk(q_ref)  # (E, 4, 4): unconstrained / held tips
        specs = self._specs(query, group, q_ref, T_ref)
        if self.checker is not None:
            self.checker.prepare(query.world)  # a new scene's FCL objects, built once, before the solving starts
        factor = self.config.collision_oversample if query.avoid_collisions else self.config.oversample
        if query.constraints:
            factor = max(factor, self.config.constraint_oversample)
        seed_value = query.random_seed if query.random_seed is not None and query.random_seed >= 0 \
            else secrets.randbits(62)
        diversity, spread_first = self._diversity(query, timeout, seed is None and not objectives)
        finish = self._finish_estimate(self._finish_key(query, spread_first), len(specs))
        reserve = min(max(FINISH_MARGIN * finish, FINISH_MIN_S), FINISH_MAX_SHARE * timeout)
        pooled = int(query.num_solutions * self.config.diverse_pool)  # a harvest asks more than the order ranks
        cover = spread_first and timeout >= self.config.generous_budget and pooled <= SPREAD_CANDIDATES
        wanted = max(query.num_solutions, pooled) if cover else query.num_solutions
        harvest = diversity > 0 and pooled > SPREAD_CANDIDATES
        steps = self.config.steps or (default_harvest_steps(self.solver.loaded) if harvest else None)
        return _Plan(query, specs, reserve, max(1, int(wanted * factor + 1e-9)), seed, locked,
                     objectives, self._guided(query, objectives), int(seed_value), consistency,
                     self._box(seed, consistency, query.constraints), float(diversity), spread_first, wanted,
                     cover, t0 + timeout, steps)

    def _diversity(self, query: IKQuery, timeout: float, free: bool) -> tuple[float, bool]:
        """The sampled calls' diversity (:attr:`IKQuery.diversity`, else 1 for a query of ``diverse_min_solutions``
        or more within ``diverse_min_budget`` or more, else 0) and whether the answer comes farthest point first
        (a diverse query, or one that would be but for its tight budget, that is ``free``: no seed, no objective)."""
        many = query.diversity is None and query.num_solutions >= self.config.diverse_min_solutions
        diversity = float(many and timeout >= self.config.diverse_min_budget) if query.diversity is None \
            else query.diversity
        return diversity, (diversity > 0 or many) and free and query.num_solutions > 1

    @staticmethod
    def _finish_key(query: IKQuery, spread_first: bool) -> tuple[bool, int, bool]:
        """Which measured ranking time a query keeps and updates: that of answers of its order (farthest point
        first or not), size (``num_solutions`` to the next power of two) and whether its answer's rows are
        checked for collisions then (:meth:`_report_collisions`)."""
        return spread_first, int(query.num_solutions).bit_length(), _reports_late(query)

    def _finish_estimate(self, key: tuple[bool, int, bool], targets: int) -> float:
        """Seconds to rank an answer of :meth:`_finish_key` ``key`` for ``targets`` targets: its measurements', else
        the largest of answers no larger (of the same order and checks if any; a larger answer is ranked from a pool
        that the budget, more than the size asked for, limits), else FINISH_S_PER_TARGET per target."""
        if key in self._finish_costs:
            return self._finish_costs[key].predict(targets)
        smaller = {k: c for k, c in self._finish_costs.items() if k[1] <= key[1]}
        for alike in ((0, 2), (2,), (0,), ()):  # the same order and checks, the same checks, ...
            same = [c.predict(targets) for k, c in smaller.items() if all(k[i] == key[i] for i in alike)]
            if same:
                return max(same)
        return FINISH_S_PER_TARGET * targets

    def _fk(self, q: np.ndarray) -> np.ndarray:
        """(n,) joint values -> (E, 4, 4) end-effector poses (the compiled FK when built)."""
        kin = self.solver.native_kinematics
        return kin.fk(q[None])[0] if kin is not None else self.robot.fk(torch.as_tensor(q)).numpy()

    def _consistency(self, limits: float | Sequence[float] | None, seed: np.ndarray | None) -> np.ndarray | None:
        """Local mode's per-joint distance (n,) [rad or m] from ``consistency_limits``, or None (global)."""
        if limits is None:
            return None
        if seed is None:
            raise InvalidRequestError("consistency_limits (local mode) needs a seed")
        try:
            c = np.broadcast_to(np.asarray(limits, dtype=np.float64), (self.robot.n_joints,)).copy()
        except (TypeError, ValueError):
            c = np.full(1, np.nan)
        if c.shape != (self.robot.n_joints,) or not np.all(np.isfinite(c)) or np.any(c <= 0):
            raise InvalidRequestError(f"consistency_limits must be one positive number or {self.robot.n_joints} "
                                      f"of them ({self.robot.joint_names}), got {limits!r}")
        return c

    def _check_sizes(self, query: IKQuery) -> None:
        cfg = self.config
        if not query.targets:
            raise InvalidRequestError("empty query: no targets")
        if len(query.targets) > cfg.max_targets:
            raise InvalidRequestError(f"{len(query.targets)} targets exceed max_targets={cfg.max_targets}")
        n = query.num_solutions
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= cfg.max_num_solutions:
            raise InvalidRequestError(f"num_solutions={n!r} must be an integer in [1, {cfg.max_num_solutions}]")
        timeout = query.timeout
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float, np.floating))
                                    or not math.isfinite(timeout) or timeout <= 0):
            raise InvalidRequestError(f"timeout must be a positive number of seconds, got {query.timeout!r}")
        if query.max_rounds < 1:
            raise InvalidRequestError(f"max_rounds must be >= 1, got {query.max_rounds}")
        d = query.diversity
        if d is not None and not (_finite_number(d) and 0 <= d <= 1):
            raise InvalidRequestError(f"diversity must be a number in [0, 1] (or None: automatic), got {d!r}")
        c = query.delivery_s_per_solution
        if not (_finite_number(c) and c >= 0):
            raise InvalidRequestError(f"delivery_s_per_solution must be a number >= 0 [s], got {c!r}")

    def _seed(self, seed: np.ndarray | Sequence[float] | None) -> np.ndarray | None:
        if seed is None:
            return None
        try:
            q = np.asarray(seed, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            q = np.full(1, np.nan)
        if q.shape != (self.robot.n_joints,) or not np.all(np.isfinite(q)):
            raise InvalidRobotStateError(f"seed must be {self.robot.n_joints} finite joint values "
                                         f"({self.robot.joint_names}), got shape {q.shape}")
        return q

    def _locked(self, query: IKQuery, group: Group | None, q_ref: np.ndarray) -> dict[int, float]:
        """``{index: value}``: the group's complement at the reference state, then ``query.locked``."""
        locked = {} if group is None else {i: float(q_ref[i]) for i in range(self.robot.n_joints)
                                           if i not in set(group.joints)}
        for name, value in dict(query.locked).items():
            if name not in self.joint_index or not _finite_number(value):
                raise InvalidRobotStateError(f"locked joint {name!r} = {value!r}: not an active joint with a "
                                             f"finite value; active joints: {self.robot.joint_names}")
            locked[self.joint_index[name]] = float(value)
        return locked

    def _check_constraints(self, query: IKQuery) -> None:
        for c in query.constraints:
            if c.joint not in self.joint_index:
                raise InvalidGoalError(f"joint constraint on {c.joint!r}, which is not an active joint "
                                       f"{self.robot.joint_names}")
            if not (_finite_number(c.lower) and _finite_number(c.upper) and c.lower <= c.upper):
                raise InvalidGoalError(f"joint constraint on {c.joint!r}: bad bounds [{c.lower}, {c.upper}]")

    def _guided(self, query: IKQuery, objectives: dict[str, float]) -> dict[str, float]:
        """Objectives of the collision-guided calls (sphere model; only with avoid_collisions)."""
        cfg = self.config
        if (query.avoid_collisions and cfg.weight_collision > 0 and cfg.collision_guidance != "off"
                and self.solver.sphere_model is not None):
            return {**objectives, "collision": objectives.get("collision", cfg.weight_collision)}
        return objectives

    # ------------------------------------------------------------------ targets
    def _specs(self, query: IKQuery, group: Group | None, q_ref: np.ndarray, T_ref: np.ndarray) -> list:
        """Every target's :class:`_Spec`, or the error that makes it INVALID. Targets that name the same links in
        the same frames with the same flags and no tolerances (:func:`_batch_key`) are validated and composed
        together (:meth:`_spec_batch`), the rest one at a time."""
        specs: list = [None] * len(query.targets)
        batches: dict = {}
        for b, target in enumerate(query.targets):
            batches.setdefault(_batch_key(target) if len(query.targets) > 1 else None, []).append(b)
        for key, members in batches.items():
            rest = members if key is None or len(members) < 2 else \
                self._spec_batch(query, members, group, q_ref, T_ref, specs)
            for b in rest:
                specs[b] = self._spec_or_error(query.targets[b], group, q_ref, T_ref, f"target {b}",
                                               query.external_frames)
        return specs

    def _spec_batch(self, query: IKQuery, members: list[int], group: Group | None, q_ref: np.ndarray,
                    T_ref: np.ndarray, specs: list) -> list[int]:
        """Fill ``specs`` for targets ``members`` of one :func:`_batch_key` in one numpy pass: the first target
        one at a time (links, frames and flags checked, the template of the others), every pose by
        :func:`pose_matrices` (a ROS request's 64 targets: ~0.3 ms against ~6 ms one at a time). Returns the
        members left to :meth:`_spec` (all of them when the first is malformed, else those with a malformed
        pose, for their own error)."""
        first = query.targets[members[0]]
        template = self._spec_or_error(first, group, q_ref, T_ref, f"target {members[0]}", query.external_frames)
        if not isinstance(template, _Spec):
            return members
        try:
            T_pose, ok = pose_matrices([list(query.targets[b].poses) for b in members])  # (B, L, 4, 4), (B, L)
        except (TypeError, ValueError):  # ragged or not numbers: each target's own error
            return members
        frames = list(first.frames) or [""] * len(first.links)
        F = np.stack([self.frames.T_root(f, q_ref, "", query.external_frames) for f in frames])  # (L, 4, 4)
        T_links = F @ T_pose @ np.stack([self._tips_inv[link] for link in first.links])
        T = np.repeat(template.T[None], len(members), 0)
        T[:, [self.ee_index[self.tips[link][0]] for link in first.links]] = T_links
        ok = ok.all(-1)
        for j in np.flatnonzero(ok).tolist():
            specs[members[j]] = _Spec(T[j], template.mask, template.position_only, template.tip_points,
                                      template.box_frames, template.box_bounds, template.boxed)
        return [b for b, good in zip(members, ok.tolist()) if not good]

    def _spec_or_error(self, target: IKTarget, group: Group | None, q_ref: np.ndarray, T_ref: np.ndarray, what: str,
                       external: Mapping[str, np.ndarray]):
        try:
            return self._spec(target, group, q_ref, T_ref, what, external)
        except IKDiffuserError as exc:
            return exc

    def _spec(self, target: IKTarget, group: Group | None, q_ref: np.ndarray, T_ref: np.ndarray, what: str,
              external: Mapping[str, np.ndarray]) -> _Spec:
        """The end-effector targets of ``target`` (poses in robot frames or ``external`` ones, at ``q_ref``)."""
        E = len(self.robot.end_effectors)
        spec = _Spec(T_ref.copy(), np.zeros(E, bool), np.zeros(E, bool), np.zeros((E, 3)),
                     _EYE4[None].repeat(E, 0), np.zeros((E, 6)))
        for link, pose, frame, po, tol in zip(*_target_lists(target, what)):
            T_root_link = self.frames.to_root(pose, frame, q_ref, f"{what}, link {link!r}", external)
            self._constrain(spec, link, T_root_link, bool(po), group, what)
            if tol is not None:
                e = self.ee_index[self.tips[link][0]]
                spec.box_frames[e], spec.box_bounds[e] = T_root_link, _tolerance(tol, f"{what}, link {link!r}")
                spec.boxed = spec.boxed or bool(np.any(spec.box_bounds[e] > 0))
        if group is not None:  # group tips without a pose keep their pose at the reference state
            for tip in group.tips:
                spec.mask[self.ee_index[self.tips[tip][0]]] = True
        return spec

    def _constrain(self, spec: _Spec, link: str, T_root_link: np.ndarray, position_only: bool,
                   group: Group | None, what: str) -> None:
        """Constrain the end effector carrying ``link`` so that ``link`` reaches ``T_root_link``."""
        if link not in self.tips:
            reason = ("is not rigidly attached to an end effector of the model" if link in self.robot.urdf.links
                      else "is not a link of the robot")
            raise UnknownLinkError(link, list(self.tips), reason, what)
        ee, T_ee_link = self.tips[link]
        if group is not None and ee not in {self.tips[t][0] for t in group.tips}:
            raise UnknownLinkError(link, group.tips, f"is not a tip of group {group.name!r}", what)
        e = self.ee_index[ee]
        if spec.mask[e]:
            raise InvalidGoalError(f"{what}: end effector {ee!r} is constrained twice")
        if position_only and not np.allclose(T_ee_link[:3, 3], 0):
            raise InvalidGoalError(f"{what}: position_only is supported on end-effector links "
                                   f"{self.robot.end_effectors}, not on the offset frame {link!r}")
        spec.T[e] = T_root_link @ self._tips_inv[link]
        spec.mask[e], spec.position_only[e], spec.tip_points[e] = True, position_only, T_ee_link[:3, 3]

    # ------------------------------------------------------------------ rounds
    def _rounds(self, plan: _Plan) -> list[_Pool]:
        pools = [_Pool() for _ in plan.specs]
        if plan.seed is not None:
            self._seed_call(plan, pools)
        if plan.consistency is not None:
            self._local_rounds(plan, pools)
        elif not self._enough(plan, pools):
            self._sampled_rounds(plan, pools)
        return pools

    def _enough(self, plan: _Plan, pools: list[_Pool]) -> bool:
        """Whether every well-formed target already has the valid candidates it wants (``plan.wanted``)."""
        return not self._todo(plan, pools)

    @staticmethod
    def _counts_distinct(plan: _Plan) -> bool:
        return 1 < plan.wanted <= SPREAD_CANDIDATES

    def _done(self, plan: _Plan, pool: _Pool) -> bool:
        """Whether a target's rounds stop: ``plan.wanted`` valid candidates, distinct ones where it wants 2 to
        SPREAD_CANDIDATES, or (counting distinct) STALE_CALLS calls in a row without a new one."""
        if not self._counts_distinct(plan):
            return pool.valid_count >= plan.wanted
        return pool.distinct >= plan.wanted or pool.stale >= STALE_CALLS

    def _todo(self, plan: _Plan, pools: list[_Pool]) -> list[int]:
        """The well-formed targets whose rounds go on (:meth:`_done`)."""
        return [i for i, s in enumerate(plan.specs) if isinstance(s, _Spec) and not self._done(plan, pools[i])]

    def _seed_call(self, plan: _Plan, pools: list[_Pool]) -> None:
        """The LM from the seed, for every target, before any sampling: a seed that solves comes back as is."""
        items = [i for i, s in enumerate(plan.specs) if isinstance(s, _Spec)]
        if items:
            self._call(plan, items, 1, False, pools, q0=np.broadcast_to(plan.seed, (len(items), len(plan.seed))),
                       first=True)

    def _local_rounds(self, plan: _Plan, pools: list[_Pool]) -> None:
        """Local mode: LM from points drawn uniformly in the consistency box around the seed, inside it."""
        gen = np.random.default_rng(plan.random_seed)
        lower, upper = plan.box
        for _ in range(plan.query.max_rounds):
            todo = self._todo(plan, pools)
            if not todo or time.monotonic() >= plan.deadline:
                return
            starts = gen.uniform(lower, upper, size=(len(todo) * plan.n_sample, len(lower)))
            self._call(plan, todo, plan.n_sample, False, pools, q0=starts)

    def _box(self, seed: np.ndarray | None, consistency: np.ndarray | None, constraints: Sequence[JointBounds]
             ) -> tuple[np.ndarray, np.ndarray] | None:
        """The LM's box (lower (n,), upper (n,)) [rad or m]: the joint limits narrowed by the joint constraints
        (so every LM result meets them, rather than being filtered after it) and, in local mode, to the seed
        +- the consistency limits. Wrapping joints keep their full range and are checked after the LM (modulo
        2 pi). None when nothing narrows the limits."""
        if consistency is None and not constraints:
            return None
        lower, upper = (b.numpy().copy() for b in self.robot.limits(torch.float64))
        wrap = self.solver.wrapping.numpy()
        for c in constraints:
            i = self.joint_index[c.joint]
            if not wrap[i]:
                lower[i], upper[i] = max(lower[i], c.lower), min(upper[i], c.upper)
        if consistency is not None:
            lower = np.where(wrap, lower, np.maximum(lower, seed - consistency))
            upper = np.where(wrap, upper, np.minimum(upper, seed + consistency))
        return lower, np.maximum(upper, lower)

    def _sampled_rounds(self, plan: _Plan, pools: list[_Pool]) -> None:
        """Rounds of the learned prior: round 0 for every target, later ones for targets still short of the
        valid candidates they want (``plan.wanted``)."""
        sizers = self._started_sizers(plan)
        calls = -1
        for round_ in range(plan.query.max_rounds):
            todo = self._todo(plan, pools)
            if not todo or time.monotonic() > plan.deadline or plan.calls == calls:  # no call fitted the last round
                break
            calls = plan.calls
            rows = max(plan.n_sample, min(plan.n_sample * ROUND_GROWTH ** round_, ROUND_ROWS))
            # a one-solution query's later rounds are retries: fresh samples rescue a failed target more often than
            # restarts near the samples that failed (panda: four fresh 90 %, four restarts 79 %; docs/solver.md)
            many = rows >= self.config.restart_min_rows and plan.wanted > 1
            restarts = self.config.restarts if many else 1
            # targets without any valid answer may get the (costly) collision guidance; the others are topped up
            empty = [i for i in todo if pools[i].valid_count == 0]
            groups = ((empty, self._is_guided(plan, round_)), ([i for i in todo if i not in set(empty)], False))
            for items_of_group, guided in groups:
                sizer = sizers[guided, restarts > 1]
                chunks = self._chunks(plan, items_of_group, sizer, rows, lambda i: self._done(plan, pools[i]))
                for items, num in chunks if items_of_group else ():
                    t = time.monotonic()
                    self._call(plan, items, num, guided, pools, restarts=restarts)
                    sizer.record(len(items) * num, time.monotonic() - t)

    @staticmethod
    def _new_sizers() -> dict[str, ChunkSizer]:
        """One sizer per kind of call, its measured costs kept across queries: plain (the compiled path), diverse
        (stochastic DDIM with more steps; the first call of a generous one repels its samples in the torch
        sampler), with objectives (the torch sampler guided by their cost, 20-60x a plain call per row),
        collision-guided; each also with restarts (a row is then an LM start, most without a sample of its own), and
        each for queries of one target and of several (/batch: each target adds its own costs; the affine fit of one
        target's calls undersized a batch's: 64 targets x 1 row on dual_ur5_mobile)."""
        sizers = {}
        for kind in ("plain", "diverse", "objectives", "guided"):
            factor = 1.0 if kind == "plain" else GUIDED_COST
            one = sizers[kind] = ChunkSizer(guess_factor=factor)
            sizers[kind + "+restarts"] = ChunkSizer(one, factor)
            batch = sizers[kind + "/batch"] = ChunkSizer(one, factor)
            sizers[kind + "+restarts/batch"] = ChunkSizer(batch, factor)
        return sizers

    def _started_sizers(self, plan: _Plan) -> dict[tuple[bool, bool], ChunkSizer]:
        """The sizers of a query's sampled calls by (collision-guided, with restarts), its caps set: guided calls
        (collision gradients at every reverse step) cost several times more per row, so they start smaller."""
        first, most = self.config.first_chunk_rows, self.config.max_batch_size
        unguided = "objectives" if plan.objectives else "diverse" if plan.diversity > 0 else "plain"
        batch = "/batch" if len(plan.specs) > 1 else ""
        out = {}
        for restarts, suffix in ((False, ""), (True, "+restarts")):
            out[False, restarts] = self._sizers[unguided + suffix + batch].start(first, most)
            out[True, restarts] = self._sizers["guided" + suffix + batch].start(first // 4, most)
        return out

    def _guided_guess(self, sizer: ChunkSizer) -> float | None:
        """The shortest call a sizer expects until it has measured one of its own [s]: the plain calls' shortest x
        its ``guess_factor`` (GUIDED_COST for costlier calls: diverse, objectives, collision guidance)."""
        plain = self._sizers["plain"]
        return None if plain.shortest is None or sizer is plain else plain.shortest * sizer.guess_factor

    def _is_guided(self, plan: _Plan, round_: int) -> bool:
        """Whether the calls of this round use the collision-guided objectives."""
        if plan.guided == plan.objectives:
            return False
        return self.config.collision_guidance == "always" or round_ > 0

    def _chunks(self, plan: _Plan, todo: list[int], sizer: ChunkSizer, rows_per_target: int,
                done: Callable[[int], bool] = lambda i: False) -> Iterator[tuple[list[int], int]]:
        """Yield (target indices, rows per target) of the solver calls of one round (``rows_per_target``
        candidates for each target in ``todo``, none more for a target once ``done(i)``: it has all its
        valid solutions), sized when each is due; stops at the deadline. Breadth
        first: a call gives each target in it the same share of its rows and served targets go to the
        back of the queue, so under a tight budget every target gets candidates, not only the first
        ones (a generous budget: whole targets per call)."""
        left = {i: rows_per_target for i in todo}
        queue = list(todo)
        while queue:
            remaining = plan.deadline - time.monotonic()
            if remaining <= 0 or not sizer.worth_a_call(remaining, plan.calls, self._guided_guess(sizer)):
                return
            rows = sizer.rows(remaining)
            share = max(1, min(rows // len(queue), min(left[i] for i in queue)))
            items = queue[:max(1, rows // share)]
            yield items, share
            for i in items:
                left[i] -= share
            queue = [i for i in queue[len(items):] + items if left[i] > 0 and not done(i)]

    # ------------------------------------------------------------------ one solver call
    def _call(self, plan: _Plan, items: list[int], num: int, guided: bool, pools: list[_Pool],
              q0: np.ndarray | None = None, first: bool = False, restarts: int = 1) -> None:
        """Solve ``num`` rows for each target in ``items`` (sampled, ``restarts`` LM starts per sample, or LM from
        ``q0`` (len(items) * num, n)) and pool what gets fully measured; ``first``: these rows rank before all
        others (the seed's)."""
        q = plan.query
        specs = [plan.specs[i] for i in items]
        objectives = plan.guided if guided else plan.objectives
        seed = None if plan.seed is None else torch.as_tensor(plan.seed)  # (n,): a cost of any row count (restarts)
        cost = self.solver.make_cost(objectives, seed, q.world if q.avoid_collisions else None, q.cost_fn) \
            if objectives else None
        boxed = any(s.boxed for s in specs)
        batch = SolveBatch.of(_stack([s.T for s in specs]), num, self.robot.n_joints,
                              _stack([s.mask for s in specs]), _stack([s.position_only for s in specs]),
                              None if plan.seed is None else np.repeat(plan.seed[None], len(items), 0),
                              plan.locked, _stack([s.tip_points for s in specs]),
                              box_frames=_stack([s.box_frames for s in specs]) if boxed else None,
                              box_bounds=_stack([s.box_bounds for s in specs]) if boxed else None)
        remaining = plan.deadline - time.monotonic()
        if remaining <= 0:  # the rounds' deadline passed since the call was planned (the process was descheduled)
            return
        plan.pending = self._pending(plan, items, num, pools)
        solving = min(SOLVER_SHARE * remaining, remaining - self._pooling_estimate(plan, len(items)))
        res = self.solver.run(batch, cost, refine=self.config.refine, sampler=self.config.sampler,
                              steps=plan.steps, random_seed=(plan.random_seed + 7919 * plan.calls) % (2**62),
                              deadline=time.monotonic() + max(solving, 0.0),
                              q0=None if q0 is None else torch.tensor(np.asarray(q0, dtype=np.float64)),
                              restarts=min(restarts, num),
                              bounds=plan.box, diversity=plan.diversity,
                              repel=plan.sampled_calls == 0 and remaining >= self.config.generous_budget,
                              uniform=plan.cover, temperature=None if q.num_solutions == 1 else 1.0)
        plan.calls += 1
        plan.sampled_calls += q0 is None
        self._pool_call(plan, items, int(num), res, first, pools)

    def _pool_call(self, plan: _Plan, items: list[int], num: int, res: dict, first: bool, pools: list[_Pool]) -> None:
        """Measure a call's rows (:meth:`_measured`: exact collision checks included) and pool them per target
        (:func:`_pool_rows`), counting the distinct ones where the rounds count them; its time is measured
        (:meth:`_pooling_estimate`)."""
        t = time.monotonic()
        m = self._measured(plan, res, len(items), num)
        m["first"] = np.full((len(items), num), first)
        valid_new = _pool_rows([pools[i] for i in items], m, plan.query.keep_invalid)
        if self._counts_distinct(plan):
            self._count([pools[i] for i in items], valid_new, plan.wanted)
        plan.returnable = sum(min(plan.query.num_solutions, p.kept) for p in pools)
        plan.pending = 0
        cost = self._pooling_costs.setdefault(self._checks(plan), RateBySize(FINISH_EMA))
        cost.record(len(items), time.monotonic() - t)

    @staticmethod
    def _checks(plan: _Plan) -> tuple[bool, bool]:
        """(avoid_collisions, report_collisions): what sets the collision checks of a plan's pooling (the valid rows
        of a query that avoids collisions, or that reports them for one solution, :func:`_reports_late`), so each
        has its own pooling time: the node reports collisions on every request, and the warmup's collision-guided
        query (~10 ms a target) had set what its 1 x 1 requests kept free."""
        return plan.query.avoid_collisions, plan.query.report_collisions

    def _pooling_estimate(self, plan: _Plan, targets: int) -> float:
        """Seconds to pool the rows of a call for ``targets`` targets (measured, 0 until then), kept free of its
        solver deadline where SOLVER_SHARE leaves less: the pooling of a 16-target call ran 0.15-0.2 ms past the
        rounds' deadline and the answer came late."""
        cost = self._pooling_costs.get(self._checks(plan))
        return (cost.predict(targets) if cost is not None else None) or 0.0

    @staticmethod
    def _pending(plan: _Plan, items: list[int], num: int, pools: list[_Pool]) -> int:
        """Rows a call of ``num`` rows for each target in ``items`` may add to the answer (:attr:`_Plan.pending`)."""
        return sum(min(num, max(0, plan.query.num_solutions - pools[i].kept)) for i in items)

    def _measured(self, plan: _Plan, res: dict, k: int, num: int) -> dict[str, np.ndarray | None]:
        """The solver's rows (:meth:`IKDiffuserSolver.run`, k targets x num rows) -> numpy (k, num) arrays:
        q (k, num, n), errors, the solver's success, ``valid`` (+ constraints, + within the consistency
        limits, + collision free if asked), exact collisions (checked in one batch until the deadline)
        and which rows were fully ``checked``; cost or None."""
        q = res["q"].detach().cpu().numpy().astype(np.float64).reshape(k, num, -1)
        n = q.shape[-1]
        success = res["success"].cpu().numpy().reshape(k, num)
        ok = success.copy()
        for c in plan.query.constraints:
            ok &= c.satisfied(q.reshape(-1, n), self.joint_index[c.joint]).reshape(k, num)
        if plan.consistency is not None:
            ok &= self._near_seed(q, plan)
        check = np.ones_like(ok) if plan.query.keep_invalid else ok
        if not (plan.query.avoid_collisions or plan.query.report_collisions) or _reports_late(plan.query):
            check = np.zeros_like(ok)  # nothing to check, or the answer's rows only (_report_collisions)
        coll, checked = (a.reshape(k, num) for a in self._collisions(q.reshape(-1, n), check.reshape(-1), plan))
        valid = ok & ~coll if plan.query.avoid_collisions else ok
        # rank by the query's own objectives: without any, guided calls' collision costs are not a key
        cost = None if res["cost"] is None or not plan.objectives else res["cost"].detach().cpu().numpy().reshape(k, num)
        return dict(q=q, pe=res["position_error"].cpu().numpy().reshape(k, num),
                    re=res["rotation_error"].cpu().numpy().reshape(k, num), success=success, valid=valid, coll=coll,
                    checked=checked, cost=cost)

    def _near_seed(self, q: np.ndarray, plan: _Plan) -> np.ndarray:
        """(..., n) -> (...) bool: every joint within the consistency limits of the seed (wrap-aware)."""
        d = q - plan.seed
        wrap = self.solver.wrapping.numpy()
        d = np.where(wrap, wrap_to_pi(d), d)
        return np.all(np.abs(d) <= plan.consistency + 1e-12, axis=-1)

    def _count(self, pools: list[_Pool], new_valid: list[int], wanted: int) -> None:
        """Update each pool's distinct valid rows (the solver's ``dedup_tol``, as the answer's ranking counts them)
        and its run of calls without a new one, after a call that brought it ``new_valid`` valid rows; all pools in
        one batched pass. Not while a pool holds fewer valid rows than the ``wanted`` distinct ones (it cannot be
        done: de-duplicating every target's pool after every call took 4.5 ms of a 16 x 4 query within 20 ms on
        baxter)."""
        due = [(pool, new) for pool, new in zip(pools, new_valid) if new and pool.valid_count >= wanted]
        if not due:
            return
        qs = [np.concatenate([part[0][part[4]] for part in pool.parts]) for pool, _ in due]
        M, n = max(len(q) for q in qs), qs[0].shape[-1]
        q, valid = np.zeros((len(qs), M, n)), np.zeros((len(qs), M), bool)
        for b, rows in enumerate(qs):
            q[b, :len(rows)], valid[b, :len(rows)] = rows, True
        distinct = unique_mask_numpy(q, valid, self.solver.config.dedup_tol, self.solver.wrapping.numpy()).sum(-1)
        for (pool, new), count in zip(due, distinct.tolist()):
            before, pool.distinct = pool.distinct, count
            pool.stale = 0 if count > before else pool.stale + (new >= STALE_MIN_ROWS)

    def _collisions(self, q: np.ndarray, check: np.ndarray, plan: _Plan) -> tuple[np.ndarray, np.ndarray]:
        """Exact collision status of the rows of q (M, n) in ``check`` (M,) until the deadline:
        (in_collision, checked), each (M,) bool; rows not in ``check`` count as checked (they are
        dropped or reported as they are)."""
        coll, checked = np.zeros(len(q), bool), ~check
        if self.checker is None or not check.any():
            return coll, np.ones(len(q), bool)
        idx = np.flatnonzero(check)
        hit, done = self.checker.check_until(q[idx], plan.query.world, plan.deadline)
        coll[idx], checked[idx] = hit, done
        return coll, checked

    # ------------------------------------------------------------------ finish
    def _finish(self, plan: _Plan, pools: list[_Pool]) -> list[TargetAnswer]:
        """Every target's answer: INVALID or TIMED_OUT where it has no measured candidate, else its pool in
        the order of :meth:`_orders` (all pools ranked in batched passes), cut to ``num_solutions``."""
        answers: list[TargetAnswer | None] = [self._unranked(plan.specs[i], pool) for i, pool in enumerate(pools)]
        todo = [i for i, a in enumerate(answers) if a is None]
        rows = [self._concat(pools[i]) for i in todo]
        for i, (q, pe, re, coll, valid, _, _), order in zip(todo, rows, self._orders(plan, rows)):
            order = order[: plan.query.num_solutions]
            answers[i] = TargetAnswer(Status.SOLVED, "ok", q[order], pe[order], re[order], coll[order], valid[order])
            if not valid.any():
                answers[i].status = Status.NO_SOLUTION
                answers[i].message = self._no_solution_message(plan, pools[i])
        if _reports_late(plan.query) and self.checker is not None:
            self._report_collisions(plan, [answers[i] for i in todo])
        return answers

    def _report_collisions(self, plan: _Plan, answers: list[TargetAnswer]) -> None:
        """Check the answers' rows for collisions (a query that reports them without avoiding them), all in one
        batch until the answer is due, rows left unchecked then dropped: only the rows returned are checked, not
        every valid row found (FCL: ~0.15 ms a baxter row; a 1 x 32 query within 10 ms found 17 solutions when it
        checked every one)."""
        if not answers:
            return
        rows = sum(len(a.q) for a in answers)
        due = plan.end - plan.query.delivery_s_per_solution * rows
        hit, done = self.checker.check_until(np.concatenate([a.q for a in answers]), plan.query.world, due)
        start = 0
        for a in answers:
            part = slice(start, start + len(a.q))
            start += len(a.q)
            keep = done[part]
            a.q, a.position_error, a.rotation_error = a.q[keep], a.position_error[keep], a.rotation_error[keep]
            a.in_collision, a.valid = hit[part][keep], a.valid[keep]
            if not keep.all() and not len(a.q):
                a.status, a.message = Status.TIMED_OUT, "timed out checking its solutions for collisions"

    def _unranked(self, spec: _Spec | IKDiffuserError, pool: _Pool) -> TargetAnswer | None:
        """The answer of a target with nothing to rank (INVALID, TIMED_OUT), else None."""
        if not isinstance(spec, _Spec):
            return TargetAnswer(Status.INVALID, str(spec), np.zeros((0, self.robot.n_joints)), error=spec)
        if pool.measured == 0:
            return TargetAnswer(Status.TIMED_OUT, "timed out before any candidate of this target was measured",
                                np.zeros((0, self.robot.n_joints)))
        return None

    def _concat(self, pool: _Pool):
        if len(pool.parts) == 1:
            return pool.parts[0]
        q, pe, re, coll, valid, cost, first = zip(*pool.parts)
        cost = None if any(c is None for c in cost) else np.concatenate(cost)
        return (np.concatenate(q), np.concatenate(pe), np.concatenate(re), np.concatenate(coll),
                np.concatenate(valid), cost, np.concatenate(first))

    def _orders(self, plan: _Plan, rows: list[tuple]) -> list[np.ndarray]:
        """Each pool's row order by the solver's ranking rule (:func:`~ikdiffuser_ros.pool_ranking.rank_pools`),
        the distinct valid rows of a ``spread_first`` plan farthest point first, except that a valid solution
        from the seed (``first``) comes before all others. A pool of one row (most of MoveIt's answers) or none is
        not ranked; an answer of one solution takes the valid row of the lowest key without de-duplicating its pool
        (a pool of 5 rows: ~0.5 ms less)."""
        out = [np.arange(len(r[0])) for r in rows]
        multi = [k for k, r in enumerate(rows) if len(r[0]) > 1]
        pools = [PoolRows(q, valid, pe, cost) for q, pe, _, _, valid, cost, _ in (rows[k] for k in multi)]
        seed = None if plan.seed is None else torch.as_tensor(plan.seed)
        ranked = rank_pools(pools, seed, self.solver.config.dedup_tol, self.solver.wrapping,
                            distinct=plan.query.num_solutions > 1 or plan.spread_first)
        if plan.spread_first and pools:
            self._spread(plan, pools, ranked)
        for k, (order, _) in zip(multi, ranked):
            order, (*_, valid, _, first) = order.numpy(), rows[k]
            lead = (first & valid)[order]
            out[k] = np.concatenate([order[lead], order[~lead]])
        return out

    def _spread(self, plan: _Plan, pools: list[PoolRows], ranked: list[tuple[torch.Tensor, int]]) -> None:
        """In each pool's order, put the first SPREAD_CANDIDATES of the distinct valid rows that lead it farthest
        point first (in place, all pools in one batched pass), where the time it took last does not delay the
        answer."""
        if time.monotonic() + self._spread_s >= plan.end:
            return
        t = time.monotonic()
        heads = [order[: min(distinct, SPREAD_CANDIDATES)] for order, distinct in ranked]
        spread = farthest_first_many([torch.as_tensor(pool.q)[head] for pool, head in zip(pools, heads)],
                                     [plan.query.num_solutions] * len(heads), self.solver.wrapping)
        for (order, _), head, head_order in zip(ranked, heads, spread):
            order[: len(head)] = head[head_order]
        self._spread_s = time.monotonic() - t

    def _no_solution_message(self, plan: _Plan, pool: _Pool) -> str:
        tol = self.solver.config.refine
        parts = [f"{pool.reached} of {pool.measured} candidates reach the pose within tolerances "
                 f"({tol.pos_tol} m, {tol.rot_tol} rad) and limits"]
        if plan.query.avoid_collisions:
            parts.append("none of those is collision free")
        if plan.query.constraints:
            parts.append("joint constraints also applied")
        parts.append(f"best candidate error {pool.best[0] * 1000:.1f} mm / {math.degrees(pool.best[1]):.1f} deg")
        if time.monotonic() > plan.deadline:
            parts.append("the deadline cut the search short")
        return "no IK solution: " + "; ".join(parts)


__all__ = ["IKPipeline", "PipelineConfig"]
