"""The batch engine under :class:`~ikdiffuser_ros.pipeline.IKPipeline`: one trusted call, rows in, rows out.

:meth:`IKDiffuserSolver.run` takes a :class:`SolveBatch` (``B`` targets x ``N`` rows, already
validated by the pipeline: the one front door, :meth:`IKPipeline.answer`) and processes all
``B * N`` rows as one batch::

    sample (diffusion, guided by the cost) | or start from given rows (q0)
        -> refine (LM, float64, locked joints frozen, within a box) -> polish (null-space
           objective descent, with a cost) -> measure

1. **sample**: :func:`sampling.sampler.sample` (the compiled sampler for unguided DDIM on CPU)
   with the cost as guidance (in a diverse call, plus a repulsion between each target's samples); with ``restarts`` r > 1, N / r samples per target, each the LM's
   start r times (as it is and perturbed); raw samples (no LM) of a mobile robot get the planar base that
   best fits their arms (:mod:`~ikdiffuser_ros.kinematics.planar_base`). Joints that span more than a turn (``+-2 pi``) are
   learnt in one turn; each sample takes the copy (2 pi apart) nearest the seed, else (diverse
   answers) a random one within the limits, else the one nearest the middle of the range
   (:func:`~ikdiffuser_ros.kinematics.joint_kinds.unfold_turns`).
2. **refine**: a batched Levenberg-Marquardt polish of the samples (:func:`sampling.lm.refine`,
   or the compiled :meth:`~ikdiffuser_ros.native.NativeKinematics.refine`).
3. **polish** (a cost): converged rows descend the cost in the null space of the task
   (:func:`sampling.polish.polish`), so the objectives hold after refinement too.
4. **measure**: position / rotation errors by FK at the constrained frames (``tip_points``; worst
   over the constrained end effectors), limits, and the one success test (errors within
   ``SolverConfig.refine`` tolerances and within limits); sphere-model self collision; the cost.

Rows come back unordered; the pipeline pools, deduplicates and ranks them (:func:`rank` with
:func:`ranking_key`: the one ordering). The costs are built by :meth:`IKDiffuserSolver.make_cost`
from the objective registry (:data:`sampling.objectives.OBJECTIVES`).

Determinism: all randomness comes from one ``torch.Generator`` seeded with ``random_seed``
(default 0), or the ``generator`` passed in, so equal inputs give equal outputs on the same
device and thread settings.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ikdiffuser_ros import native
from ikdiffuser_ros.clock import UnitClock
from ikdiffuser_ros.collision.spheres import SphereModel
from ikdiffuser_ros.errors import InvalidRequestError
from ikdiffuser_ros.kinematics.joint_kinds import full_turns, joint_kinds, learnt_box, project_to_limits, uniform_in_limits, unfold_turns
from ikdiffuser_ros.kinematics.robot_model import RobotModel
from ikdiffuser_ros.model.checkpoint import load_checkpoint
from ikdiffuser_ros.robots import load_robot
from ikdiffuser_ros.sampling import objectives as obj
from ikdiffuser_ros.sampling.lm import (RefineConfig, RefineResult, ToleranceBox, boxed_residual, pose_residual, refine,
                                        tip_fk_and_jacobian, tip_targets)
from ikdiffuser_ros.sampling.polish import PolishConfig, polish
from ikdiffuser_ros.sampling.sampler import (default_sampling, default_temperature, sample, sampling_plan, step_noise,
                                             targets_from_poses)


#: Share of a ``timeout`` that sampling may use at most (the rest is the refinement's).
SAMPLE_SHARE = 0.5
#: Largest shift [m] of a sample's target along an axis with a position tolerance (a free axis included).
JITTER_MAX_M = 0.1


@dataclass(frozen=True)
class SolverConfig:
    """Settings of :class:`IKDiffuserSolver` (units: m, rad, s)."""

    #: Default reverse steps (None = the checkpoint card's: ``sampling.refined_steps`` when the LM
    #: follows, ``sampling.steps`` for raw samples; else 20).
    steps: int | None = None
    #: Low-noise tail passes after the reverse steps (None = the card's ``sampling.refined_tail_steps``
    #: when the LM follows, ``sampling.tail_steps`` for raw samples; else 0).
    tail_steps: int | None = None
    #: Standard deviation of the sampler's initial noise in a call without ``diversity`` (None = the card's
    #: ``sampling.temperature``, else 1). Below 1 fewer samples land between modes or beyond a limit (one sample +
    #: LM succeeds more often) and one target's samples spread less, so the pipeline uses it for queries of one
    #: solution only; a diverse call moves it toward 1 (:meth:`IKDiffuserSolver.temperature_of`).
    temperature: float | None = None
    #: Spread of a perturbed restart (:meth:`IKDiffuserSolver.run`'s ``restarts``): Gaussian noise of this
    #: share of each joint's range around a diffusion sample, the LM's start for another solution near it.
    #: 0.15 (was 0.05): on panda the first 50 of 100 solutions' MMD to the ground truth 0.140 -> 0.105 and
    #: the clusters found 84 -> 96 %, at the same distinct solutions per second (docs/solver.md).
    restart_spread: float = 0.15
    #: Share of a diverse call's perturbed restarts (times its ``diversity``; only when its caller asks, the
    #: pipeline for generous budgets) that start from a uniform draw within the limits instead: starts the
    #: prior's basins would not give, for coverage of the whole solution set; every diffusion sample is still a
    #: start itself. 1.0 (20 held-out targets, 100 solutions asked, answers farthest point first among 2 x 100;
    #: shares 0 / 0.25 / 0.5 / 0.75 / 1): panda MMD of the first 50 to the ground truth 0.062 / 0.060 / 0.059 /
    #: 0.055 / 0.054, baxter 0.045 / 0.031 / 0.021 / 0.022 / 0.019, baxter clusters found 63 / 68 / 69 / 70 /
    #: 71 %, the time to 100 solutions within noise (docs/solver.md).
    uniform_share: float = 1.0
    #: DDIM steps of a call at full ``diversity`` (stochastic DDIM, eta 1, no tail; :meth:`IKDiffuserSolver.plan_of`).
    diverse_steps: int = 10
    #: Weight of the repulsion between a target's samples (:func:`~ikdiffuser_ros.sampling.objectives.spread_apart`)
    #: in the guidance of a diverse call, times its ``diversity`` (0 = none; the guidance step is clipped, so
    #: the weight mostly switches it on or off). Such calls run the torch sampler (docs/solver.md).
    spread_weight: float = 1.0
    #: Run FK, the LM and unguided DDIM sampling in the compiled module on CPU when it is built
    #: (:mod:`ikdiffuser_ros.native`; same answers, microseconds instead of milliseconds per row).
    native: bool = True
    #: Guidance step size (normalized joint units, the range of every joint is [-1, 1]) and per-row
    #: gradient clip: each reverse step shifts the clean-sample estimate by at most
    #: ``guidance_scale * guidance_clip`` (objective weights set the balance between objectives).
    guidance_scale: float = 0.5
    guidance_clip: float | None = 1.0
    #: LM settings (tolerances define ``success``).
    refine: RefineConfig = field(default_factory=RefineConfig)
    #: Null-space objective polish.
    polish: PolishConfig = field(default_factory=PolishConfig)
    #: "Same solution" tolerance of the de-duplication, per joint [rad or m].
    dedup_tol: float = 1e-3
    #: Margin of the ``joint_limits`` objective [rad or m].
    joint_limit_margin: float = 0.1
    #: Margin of the ``collision`` objective [m].
    collision_margin: float = 0.02


class IKDiffuserSolver:
    """Diffusion sampling + batched refinement IK for one robot and one trained model."""

    def __init__(self, loaded, robot: RobotModel, config: SolverConfig = SolverConfig(),
                 sphere_model=None) -> None:
        self.loaded = loaded
        self.robot = robot
        self.config = config
        self.device = torch.device(getattr(loaded, "device", "cpu"))
        self._sphere_model = sphere_model
        self._sphere_tried = sphere_model is not None
        self.prismatic, self.wrapping = joint_kinds(robot)
        self.turns = full_turns(robot)
        self.box_lower, self.box_upper = learnt_box(robot)  #: the joint box the prior learnt (n,) [rad or m]
        self.native_kinematics, self.native_sampler = self._native_parts(loaded, robot, config)
        self._plans: dict[tuple[int, int], list[tuple[int, int | None]]] = {}  #: sampling plans by (steps, tail)
        #: the last polish step measured per objective set [s]: a polish whose first step would end past the
        #: deadline does not start it (a manipulability step takes 7-20 ms on one CPU core)
        self._polish_step_s: dict[tuple | None, float] = {}
        n_model = loaded.denoiser.config.n_joints
        e_model = loaded.denoiser.config.n_ee
        if n_model != robot.n_joints or e_model != len(robot.end_effectors):
            raise InvalidRequestError(
                f"model has {n_model} joints / {e_model} end effectors, robot {robot.name!r} has "
                f"{robot.n_joints} / {len(robot.end_effectors)}")

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_checkpoint(cls, path: str | Path, robot: RobotModel | str, device: str | torch.device = "cpu",
                        config: SolverConfig = SolverConfig()) -> "IKDiffuserSolver":
        """Load ``path`` (a checkpoint directory) for ``robot`` (a RobotModel or a robot name)."""
        if isinstance(robot, str):
            robot = load_robot(robot)
        return cls(load_checkpoint(path, robot, device), robot, config)

    @classmethod
    def from_model(cls, loaded, robot: RobotModel | None = None,
                   config: SolverConfig = SolverConfig()) -> "IKDiffuserSolver":
        """Wrap an in-memory ``LoadedModel`` (e.g. a tiny model in tests); ``robot`` defaults to ``loaded.robot``."""
        return cls(loaded, robot if robot is not None else loaded.robot, config)

    def _native_parts(self, loaded, robot: RobotModel, config: SolverConfig):
        """(NativeKinematics, NativeSampler) of the compiled path, each None where it does not apply
        (not built, a GPU, ``config.native`` False, a denoiser other than the MLP)."""
        if not (config.native and native.available() and self.device.type == "cpu"):
            return None, None
        kin = native.NativeKinematics(robot)
        return kin, native.NativeSampler(loaded, kin) if native.NativeSampler.supports(loaded) else None

    @property
    def sphere_model(self) -> SphereModel | None:
        """The robot's :class:`~ikdiffuser_ros.collision.spheres.SphereModel` (loaded on first use), or None
        without collision geometry to guide with (:meth:`SphereModel.for_guidance`: none, or, with a warning,
        unloadable meshes or no trimesh). A corrupt or unreadable sphere file raises
        :class:`~ikdiffuser_ros.errors.SphereFileError` naming it."""
        if not self._sphere_tried:
            self._sphere_model = SphereModel.for_guidance(self.robot)
            self._sphere_tried = True
        return self._sphere_model

    # ------------------------------------------------------------------ the batch call
    def make_cost(self, objectives, seed_rows=None, world=None, cost_fn=None):
        """``{name: weight}`` (+ ``cost_fn`` as ``user``) -> one ``cost(q (M, n)) -> (M,)`` or None;
        ``seed_rows`` (M, n) or (n,) for the ``seed`` objective, ``world`` for ``collision``. A call with ``restarts``
        samples fewer rows than it refines: give it a cost of any row count (a seed (n,), not (M, n) rows)."""
        weights = dict(objectives or {})
        if cost_fn is not None:
            if not callable(cost_fn):
                raise InvalidRequestError("cost_fn must be callable: q (M, n) -> (M,)")
            weights.setdefault("user", 1.0)
        collision_weighted = float(obj.canonical_weights(weights).get("collision", 0.0)) > 0
        ctx = obj.ObjectiveContext(
            robot=self.robot, seed_rows=seed_rows, world=world, cost_fn=cost_fn,
            sphere_model=self.sphere_model if collision_weighted else None,
            joint_limit_margin=self.config.joint_limit_margin, collision_margin=self.config.collision_margin)
        return obj.combine(weights, ctx)

    def run(self, batch: "SolveBatch", cost=None, *, refine: bool = True, sampler: str = "ddim",
            steps: int | None = None, generator: torch.Generator | None = None, random_seed: int | None = None,
            deadline: float | None = None, self_collision: bool = False, timings: dict | None = None,
            start: float | None = None, q0: torch.Tensor | None = None, bounds=None, restarts: int = 1,
            diversity: float = 0.0, repel: bool = True, uniform: bool = False, temperature: float | None = None) -> dict:
        """The batch call of the pipeline, trusting its caller: ``batch`` is validated (:meth:`SolveBatch.of`),
        ``cost`` built (:meth:`make_cost`), ``sampler`` "ddim" or "ddpm", ``steps`` None or > 0. Samples (or starts
        from ``q0`` (B*N, n)), refines within ``bounds`` ((n,) lower, upper [rad or m]; default the joint limits) and
        measures; returns (B*N,)-row tensors, target-major, unordered (see :meth:`_measure`).

        ``restarts`` r > 1: only ceil(N / r) diffusion samples per target; each is the LM's start
        r times, as it is and perturbed (:meth:`_spread`): the prior's basins at the cost of an LM
        per extra row, and solutions spread along each basin (a net gain in distinct valid
        solutions per CPU-second when many are asked for).

        ``diversity`` d in [0, 1]: 0 = the card's plan (deterministic DDIM + low-noise tail: accurate, but its samples
        pile up on the most likely modes); d > 0 = stochastic DDIM (eta = d) with more steps and no tail (:meth:`plan_of`),
        with the LM and ``repel`` each target's samples repel each other (``spread_weight * d``, in the torch sampler);
        with ``uniform``, ``uniform_share * d`` of the perturbed restarts start from uniform draws: more coverage at
        more cost per solution. ``temperature``: the initial noise's standard deviation (None: :meth:`temperature_of`)."""
        timings = {} if timings is None else timings
        t0 = time.monotonic() if start is None else start
        if q0 is None:
            sample_deadline = None if deadline is None else t0 + SAMPLE_SHARE * (deadline - t0)
            few = dataclasses.replace(batch, N=-(-batch.N // restarts)) if restarts > 1 else batch
            q = self._sample(few, cost, sampler, steps, generator, random_seed, sample_deadline, timings, refine,
                             diversity, repel, temperature)
            if restarts > 1:
                q = batch.with_locked(self._spread(q, few, batch.N, random_seed, diversity if uniform else 0.0))
        else:
            q = batch.with_locked(torch.as_tensor(q0, dtype=torch.float64).reshape(batch.B * batch.N, batch.n))
        if refine:
            res = self._refine(batch, q, cost, deadline, timings, bounds)
            q, errors = res.q, (res.position_error, res.rotation_error)
        else:
            q, errors = self._raw(batch, q, timings), None
        t = time.monotonic()
        measured = self._measure(batch, q, cost, self_collision, errors)
        timings["measure"] = time.monotonic() - t
        return measured

    # ------------------------------------------------------------------ stages of run
    def _sample(self, batch: "SolveBatch", cost, sampler, steps, generator, random_seed, deadline, timings,
                refined: bool, diversity: float = 0.0, repel: bool = True, temperature: float | None = None
                ) -> torch.Tensor:
        """Diffusion samples, (M, n) float64 rows (target-major), locked joints set. Unguided DDIM on CPU
        runs in the compiled sampler (the same loop); ``refined``: the LM follows (the card's LM-ready plan)."""
        t = time.monotonic()
        steps, tail = self.plan_of(refined, steps, diversity)
        eta = float(diversity)
        tau = self.temperature_of(diversity) if temperature is None else float(temperature)
        if generator is None:
            generator = torch.Generator(device=self.device).manual_seed(0 if random_seed is None else int(random_seed))
        T_rows = batch.rows(batch.T) if batch.box_bounds is None else batch.jittered_targets(generator)
        cost = self._with_spread(cost, batch.N, diversity) if refined and repel else cost
        if self.native_sampler is not None and cost is None and sampler == "ddim":
            x = torch.randn(batch.B * batch.N, batch.n, generator=generator, device=self.device, dtype=torch.float32)
            x *= tau
            if (steps, tail) not in self._plans:
                self._plans[steps, tail] = sampling_plan(self.loaded.schedule, steps, tail)
            plan = self._plans[steps, tail]
            q = self.native_sampler.sample(x, T_rows, batch.rows(batch.mask), batch.rows(batch.pos_only), plan, deadline,
                                           eta, step_noise(x, len(plan), "ddim", eta, generator))
            q = q.to(torch.float64) if refined else self._place_base(q.to(torch.float64), T_rows, batch)
        else:  # one target per row (the same rows, target-major, as N samples of each of B targets)
            ee_pos, ee_rot6d = targets_from_poses(T_rows.float())
            q = sample(self.loaded, ee_pos, ee_rot6d, batch.rows(batch.mask), batch.rows(batch.pos_only), 1,
                       method=sampler, eta=eta, steps=steps, tail_steps=tail, guidance_scale=self.config.guidance_scale,
                       guidance_clip=self.config.guidance_clip, generator=generator, guidance=cost, deadline=deadline,
                       place_base=not refined, temperature=tau)
        q = q.reshape(batch.B * batch.N, batch.n).to(torch.float64)
        if bool(self.turns.any()):  # robots without full-turn joints skip it (the one-target hot path)
            lower, upper = self.robot.limits(torch.float64, q.device)
            q = unfold_turns(q, lower, upper, self.turns, self._turn_reference(batch, q, diversity), generator)
        timings["sample"] = time.monotonic() - t
        return batch.with_locked(q)

    def _place_base(self, q: torch.Tensor, T_rows: torch.Tensor, batch: "SolveBatch") -> torch.Tensor:
        """The compiled sampler's (M, n) float64 raw samples with a planar base placed as :func:`sample` places it
        (:meth:`~ikdiffuser_ros.kinematics.planar_base.PlanarBase.place`, by the compiled FK). Samples the LM
        refines keep their base: the LM moves it anyway, and placing it first bought 0 to +0.2 % one-sample success
        on mobile_baxter and dual_ur5_mobile for ~1 ms more per one-target request (docs/solver.md)."""
        base = self.loaded.planar_base
        if base is None:
            return q
        norm = self.loaded.normalizer
        return base.place(q, T_rows, batch.rows(batch.mask), batch.rows(batch.pos_only), self._native_fk,
                          norm.lower.to(q), norm.upper.to(q))

    def _native_fk(self, q: torch.Tensor) -> torch.Tensor:
        """(M, n) -> (M, E, 4, 4) float64 end-effector poses by the compiled FK."""
        return torch.from_numpy(self.native_kinematics.fk(q.detach().cpu().numpy())).to(q.device)

    def _with_spread(self, cost, rows_per_target: int, diversity: float):
        """The sampler's guidance: ``cost`` plus, in a diverse call with several rows per target, the
        repulsion between them weighted ``spread_weight * diversity``. Only LM starts are spread (the
        repulsion moves raw samples off their targets: panda, 32 per target, median 7 mm -> 0.4 m, which
        the LM takes back onto a more spread-out set of solutions)."""
        weight = self.config.spread_weight * diversity
        if weight <= 0 or rows_per_target < 2:
            return cost
        spread = obj.spread_apart(rows_per_target)
        if cost is None:
            return lambda q: weight * spread(q)
        return lambda q: cost(q) + weight * spread(q)

    def _turn_reference(self, batch: "SolveBatch", q: torch.Tensor, diversity: float) -> torch.Tensor | None:
        """Where the joints of :attr:`turns` take their copy (:func:`unfold_turns`): near the seed (M, n) when
        there is one; anywhere within the limits (None: drawn) when diverse answers are asked; else near the
        middle of the range, the copy farthest from the limits."""
        if batch.seed is not None:
            return batch.seed_rows
        if diversity > 0:
            return None
        return (0.5 * (self.robot.lower + self.robot.upper)).to(q).expand_as(q)

    def temperature_of(self, diversity: float = 0.0) -> float:
        """The initial noise's standard deviation of a call: :attr:`SolverConfig.temperature` (else the card's)
        at ``diversity`` 0, moved toward 1 by it (a fully diverse call samples the training distribution)."""
        tau = default_temperature(self.loaded) if self.config.temperature is None else float(self.config.temperature)
        return tau + float(diversity) * (1.0 - tau)

    def plan_of(self, refined: bool, steps: int | None = None, diversity: float = 0.0) -> tuple[int, int]:
        """(DDIM steps, tail passes) of a call: ``steps``, else :attr:`SolverConfig.steps`, else the card's
        plan (for refined samples when ``refined``); tail passes from the config, else the card. With
        ``diversity`` d > 0: no tail, and (unless ``steps`` is given) d of the way from those steps to
        :attr:`SolverConfig.diverse_steps`."""
        card_steps, card_tail = default_sampling(self.loaded, refined)
        base = self.config.steps or card_steps
        if diversity > 0:
            return steps or base + round(diversity * max(self.config.diverse_steps - base, 0)), 0
        return steps or base, card_tail if self.config.tail_steps is None else self.config.tail_steps

    def _spread(self, q: torch.Tensor, few: "SolveBatch", N: int, random_seed: int | None,
                uniform_diversity: float = 0.0) -> torch.Tensor:
        """(B * K, n) samples -> (B * N, n) LM starts: each sample repeated, the first copy as it is, the
        others with Gaussian noise of ``restart_spread`` x each joint's range (one turn for the joints
        of :func:`full_turns`; wrapped, within limits), or with probability ``uniform_share *
        uniform_diversity`` a uniform draw within the limits."""
        B, K, n = few.B, few.N, few.n
        reps = -(-N // K)
        rows = q.view(B, K, 1, n).expand(B, K, reps, n).reshape(B, K * reps, n)[:, :N]
        g = torch.Generator(device=q.device).manual_seed(0 if random_seed is None else int(random_seed) + 1)
        lower, upper = self.robot.limits(torch.float64, q.device)
        noise = torch.randn(B, K * reps, n, generator=g, dtype=q.dtype, device=q.device)[:, :N]
        noise = noise * self.config.restart_spread * (self.box_upper - self.box_lower).to(q)
        noise[:, ::reps] = 0.0
        starts = project_to_limits((rows + noise).reshape(B * N, n), lower, upper, self.wrapping.to(q.device))
        share = self.config.uniform_share * uniform_diversity
        if share > 0:
            uniform = torch.rand(B, N, generator=g, dtype=q.dtype, device=q.device) < share
            uniform[:, ::reps] = False
            draws = uniform_in_limits(lower, upper, B * N, g, q.dtype)
            starts = torch.where(uniform.reshape(B * N, 1), draws, starts)
        return starts

    def _refine(self, batch: "SolveBatch", q: torch.Tensor, cost, deadline, timings, bounds=None) -> RefineResult:
        """LM refinement, then the null-space objective polish when there is a cost: (M, n) -> RefineResult."""
        t = time.monotonic()
        rows = dict(frozen=batch.frozen, tip_points=batch.rows(batch.tip_points))
        box = batch.box_rows()  # per-axis tolerances: only the torch LM has them
        lm = self.native_kinematics.refine if self.native_kinematics is not None and box is None \
            else functools.partial(refine, self.robot, box=box)
        res = lm(q, batch.rows(batch.T), batch.rows(batch.mask), batch.rows(batch.pos_only), self.config.refine,
                 deadline, bounds=bounds, **rows)
        timings["refine"] = time.monotonic() - t
        t = time.monotonic()
        if cost is not None:
            key = getattr(cost, "names", None)
            clock = UnitClock(deadline, first=self._polish_step_s.get(key, 0.0))
            res = polish(self.robot, res, batch.rows(batch.T), cost, batch.rows(batch.mask),
                         batch.rows(batch.pos_only), self.config.refine, self.config.polish, deadline, box=box,
                         clock=clock, **rows)
            self._polish_step_s[key] = clock.last
        timings["polish"] = time.monotonic() - t
        return res

    def _raw(self, batch: "SolveBatch", q: torch.Tensor, timings) -> torch.Tensor:
        lower, upper = self.robot.limits(torch.float64, self.device)
        timings["refine"] = timings["polish"] = 0.0
        return batch.with_locked(project_to_limits(q, lower, upper))

    @torch.no_grad()
    def _measure(self, batch: "SolveBatch", q: torch.Tensor, cost, self_collision: bool, errors=None) -> dict:
        """Errors at the tips (``errors``: the refinement's (pos (M,), rot (M,)) at q when it has them),
        limits, the one success test, self collision and cost of (M, n) rows."""
        pos_err, rot_err = errors if errors is not None else self._tip_errors(batch, q)
        lower, upper = self.robot.limits(torch.float64, self.device)
        within = ((q >= lower - 1e-9) & (q <= upper + 1e-9)).all(-1)
        tol = self.config.refine
        success = (pos_err <= tol.pos_tol * (1 + 1e-6)) & (rot_err <= tol.rot_tol * (1 + 1e-6)) & within
        sm = self.sphere_model if self_collision else None
        cost_val = None
        if cost is not None:
            with torch.enable_grad():  # user costs may build graphs; we only need values
                cost_val = cost(q).detach().to(torch.float64)
        return dict(q=q, position_error=pos_err, rotation_error=rot_err, within_limits=within, success=success,
                    in_self_collision=sm.in_self_collision(q) if sm is not None else None, cost=cost_val)

    def _tip_errors(self, batch: "SolveBatch", q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Worst position [m] and rotation [rad] error over the constrained tips of (M, n) rows, each (M,)."""
        tips = batch.rows(batch.tip_points)
        if self.native_kinematics is not None:
            T_fk = self._native_fk(q)
            if tips is not None:
                T_fk[..., :3, 3] += (T_fk[..., :3, :3] @ tips.cpu().unsqueeze(-1)).squeeze(-1)
        else:
            T_fk = tip_fk_and_jacobian(self.robot, q, tips)[0] if tips is not None else self.robot.fk(q)
        res6 = boxed_residual(pose_residual(T_fk.to(q.device), tip_targets(batch.rows(batch.T), tips)), None,
                              batch.box_rows())[0]
        mask, rot_mask = batch.rows(batch.mask), batch.rows(batch.mask & ~batch.pos_only)
        return (torch.where(mask, res6[..., :3].norm(dim=-1), 0.0).amax(-1),
                torch.where(rot_mask, res6[..., 3:].norm(dim=-1), 0.0).amax(-1))


@dataclass
class SolveBatch:
    """One validated solve: B targets x N rows (build it with :meth:`of`; the pipeline validates what
    goes in).

    T (B, E, 4, 4) float64 end-effector targets, mask / pos_only (B, E) bool, seed (B, n) or None,
    locked ``{index: value}``, tip_points (B, E, 3) or None; per-axis tolerances or None: box_frames
    (B, E, 4, 4), each constrained frame's target pose (its axes are the tolerances' axes), and
    box_bounds (B, E, 6), x, y, z [m], rx, ry, rz [rad] (inf = free; :class:`ToleranceBox`).
    ``rows(x)`` repeats a per-target tensor for the B * N rows (target-major).
    """

    T: torch.Tensor
    B: int
    N: int
    mask: torch.Tensor
    pos_only: torch.Tensor
    seed: torch.Tensor | None
    locked: dict[int, float]
    tip_points: torch.Tensor | None
    n: int
    box_frames: torch.Tensor | None = None
    box_bounds: torch.Tensor | None = None

    @classmethod
    def of(cls, T, N: int, n: int, mask=None, pos_only=None, seed=None, locked: dict[int, float] | None = None,
           tip_points=None, device: str | torch.device = "cpu", box_frames=None, box_bounds=None) -> "SolveBatch":
        """A batch from trusted arrays (numpy or torch): T (B, E, 4, 4) end-effector poses in the root
        frame, mask / pos_only (B, E) bool (default: every end effector constrained, full pose), seed
        (B, n) [rad or m] or None, locked ``{joint index: value}``, tip_points (B, E, 3) [m] or None,
        box_frames (B, E, 4, 4) and box_bounds (B, E, 6) or None (per-axis tolerances); ``N`` rows per
        target, ``n`` joints; tensors on ``device``."""
        T = torch.as_tensor(T, dtype=torch.float64, device=device)
        B, E = T.shape[:2]

        def mask_of(m, default: bool) -> torch.Tensor:
            return (torch.full((B, E), default, dtype=torch.bool, device=device) if m is None
                    else torch.as_tensor(m, dtype=torch.bool, device=device).expand(B, E))

        def float_of(x):
            return None if x is None else torch.as_tensor(x, dtype=torch.float64, device=device)

        return cls(T=T, B=B, N=int(N), mask=mask_of(mask, True), pos_only=mask_of(pos_only, False),
                   seed=float_of(seed), locked=dict(locked or {}), tip_points=float_of(tip_points), n=n,
                   box_frames=float_of(box_frames), box_bounds=float_of(box_bounds))

    def box_rows(self) -> ToleranceBox | None:
        """The per-axis tolerances of the B * N rows, or None."""
        if self.box_bounds is None:
            return None
        return ToleranceBox(self.rows(self.box_frames)[..., :3, :3], self.rows(self.box_bounds))

    def jittered_targets(self, generator: torch.Generator) -> torch.Tensor:
        """(B * N, E, 4, 4) targets of the rows' samples, each moved within its tolerances: rotated about its
        frame's axes by up to ``min(bound, pi)`` and shifted along them by up to ``min(bound, JITTER_MAX_M)``
        (uniform), so the prior's samples spread over a free axis instead of piling up at the nominal pose."""
        F = self.rows(self.box_frames)
        b = self.rows(self.box_bounds)
        u = 2 * torch.rand(b.shape, generator=generator, dtype=b.dtype, device="cpu").to(b.device) - 1
        u = u * torch.cat([b[..., :3].clamp(max=JITTER_MAX_M), b[..., 3:].clamp(max=math.pi)], -1)
        G = torch.zeros_like(F)
        G[..., :3, :3] = torch.linalg.matrix_exp(_skew(u[..., 3:]))
        G[..., :3, 3] = u[..., :3]
        G[..., 3, 3] = 1.0
        return F @ G @ torch.linalg.inv(F) @ self.rows(self.T)

    def rows(self, x: torch.Tensor | None) -> torch.Tensor | None:
        """(B, ...) per target -> (B * N, ...) per row, target-major (``x`` itself, on the batch's device, when N is 1:
        read it, do not write it)."""
        if x is None:
            return None
        x = x.to(self.T.device)
        return x if self.N == 1 else x.repeat_interleave(self.N, 0)

    @property
    def seed_rows(self) -> torch.Tensor | None:
        return self.rows(self.seed)

    @property
    def frozen(self) -> torch.Tensor | None:
        """(n,) bool, the locked joints (None when none is)."""
        if not self.locked:
            return None
        out = torch.zeros(self.n, dtype=torch.bool, device=self.T.device)
        out[list(self.locked)] = True
        return out

    def with_locked(self, q: torch.Tensor) -> torch.Tensor:
        """(M, n) rows with the locked joints set to their values."""
        if self.locked:
            q = q.clone()
            q[:, list(self.locked)] = torch.tensor(list(self.locked.values()), dtype=q.dtype, device=q.device)
        return q


def _skew(w: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 3, 3) cross-product matrices."""
    zero = torch.zeros_like(w[..., 0])
    return torch.stack([torch.stack([zero, -w[..., 2], w[..., 1]], -1), torch.stack([w[..., 2], zero, -w[..., 0]], -1),
                        torch.stack([-w[..., 1], w[..., 0], zero], -1)], -2)


def ranking_key(cost: torch.Tensor | None, q: torch.Tensor, seed_rows: torch.Tensor | None,
                position_error: torch.Tensor, wrapping: torch.Tensor) -> torch.Tensor:
    """(M,) key of the one ordering rule: the combined cost when there is an objective, else the
    squared joint distance to the seed when there is one (wrap-aware), else the position error [m]."""
    if cost is not None:
        key = cost
    elif seed_rows is not None:
        key = obj.seed_distance(seed_rows, wrapping)(q)
    else:
        key = position_error
    return torch.nan_to_num(key.to(torch.float64), nan=math.inf)


def rank(unique: torch.Tensor, valid: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """(B, N) bools and key -> (B, N) row order: unique valid rows, then repeated valid rows, then
    the rest; ascending ``key`` within each group (stable)."""
    group = torch.where(unique, 0, torch.where(valid, 1, 2)).to(torch.float64)
    order = torch.sort(key, dim=-1, stable=True).indices
    return order.gather(-1, torch.sort(group.gather(-1, order), dim=-1, stable=True).indices)
