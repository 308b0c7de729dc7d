"""The IKDiffuser solver facade: targets in, joint solutions out.

Pipeline of :meth:`IKDiffuserSolver.solve` (``B`` targets, ``N`` solutions each,
all ``B * N`` rows processed as one batch)::

    validate -> objectives -> sample (diffusion, guided) -> refine (LM, float64)
             -> polish (null-space objective descent) -> measure -> deduplicate -> order

1. **validate**: shapes, finite values, proper rotations, masks, sizes; every
   problem raises :class:`InvalidRequestError` naming it.
2. **objectives**: ``{name: weight}`` over the registry :data:`objectives.OBJECTIVES`
   (``seed``, ``joint_limits``, ``collision``, ``manipulability``, ``user``) plus
   ``cost_fn`` (added as ``user`` with weight 1 when not named), combined into
   one ``cost(q) -> (B*N,)``.
3. **sample**: :func:`sampling.sampler.sample` with the cost as guidance.
4. **refine** (``refine=True``): the raw samples are the initial guesses of a
   batched Levenberg-Marquardt polish (:func:`sampling.refine.refine`); locked
   joints stay where they are. Rows that do not converge come back with
   ``success=False``: one call is one round. Rounds, deadlines over many
   calls, exact collision filtering and planning groups belong to
   :class:`ikdiffuser_ros.pipeline.IKPipeline`, which calls this method.
5. **polish** (objectives given and ``refine=True``): converged rows descend the
   cost in the null space of the task (:func:`sampling.refine.polish`), so the
   objectives hold after refinement too.
6. **measure**: position / rotation errors by FK at the constrained frames
   (``tip_points``; worst over constrained end effectors), limits, and the one
   success test (errors within ``SolverConfig.refine`` tolerances and within
   limits); sphere-model self collision.
7. **deduplicate**: successful rows equal within ``dedup_tol`` per joint are
   merged (``is_unique``; ``num_unique`` counts them).
8. **order**: per target, unique successful solutions first, then duplicate
   successes, then failures; within each group by :func:`ranking_key`: the cost
   (if any objective), else the distance to the seed (if given), else the
   position error.

Determinism: all randomness comes from one ``torch.Generator`` seeded with
``random_seed`` (default 0), or the ``generator`` passed in, so equal inputs
give equal outputs on the same device and thread settings.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ikdiffuser_ros import native
from ikdiffuser_ros.collision.spheres import SphereModel
from ikdiffuser_ros.errors import InvalidRequestError
from ikdiffuser_ros.kinematics.joint_kinds import joint_kinds, project_to_limits
from ikdiffuser_ros.kinematics.robot_model import RobotModel
from ikdiffuser_ros.model.checkpoint import load_checkpoint
from ikdiffuser_ros.robots import load_robot
from ikdiffuser_ros.sampling import objectives as obj
from ikdiffuser_ros.sampling.dedup import unique_mask
from ikdiffuser_ros.sampling.lm import RefineConfig, RefineResult, pose_residual, refine, tip_fk_and_jacobian, tip_targets
from ikdiffuser_ros.sampling.polish import PolishConfig, polish
from ikdiffuser_ros.sampling.sampler import default_sampling, sample, sampling_plan, targets_from_poses


#: Share of a ``timeout`` that sampling may use at most (the rest is the refinement's).
SAMPLE_SHARE = 0.5


@dataclass(frozen=True)
class SolverConfig:
    """Limits and defaults of :class:`IKDiffuserSolver` (units: m, rad, s)."""

    #: Largest ``num_solutions`` per target.
    max_solutions: int = 10000
    #: Largest ``B * num_solutions`` of one call.
    max_rows: int = 200000
    #: Default reverse steps (None = the checkpoint card's: ``sampling.refined_steps`` when the LM
    #: follows, ``sampling.steps`` for raw samples; else 20).
    steps: int | None = None
    #: Low-noise tail passes after the reverse steps (None = the card's ``sampling.refined_tail_steps``
    #: when the LM follows, ``sampling.tail_steps`` for raw samples; else 0).
    tail_steps: int | None = None
    #: Spread of a perturbed restart (:meth:`IKDiffuserSolver.run`'s ``restarts``): Gaussian noise of this
    #: share of each joint's range around a diffusion sample, the LM's start for another solution near it.
    restart_spread: float = 0.05
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
    #: Largest |R^T R - I| entry and |det R - 1| accepted in a target rotation.
    orthonormal_tol: float = 1e-4


@dataclass
class IKSolutions:
    """Result of :meth:`IKDiffuserSolver.solve` (see the module docstring for the order of the N rows).

    Attributes:
        q: (B, N, n) float64 joint values, in ``robot.joint_names`` order.
        position_error: (B, N) worst position error over the constrained end effectors [m].
        rotation_error: (B, N) worst rotation error over rotation-constrained end effectors [rad].
        within_limits: (B, N) bool.
        success: (B, N) bool, errors within the refinement tolerances and within limits.
        in_self_collision: (B, N) bool by the sphere model, or None when the robot has none.
        is_unique: (B, N) bool, successful and not a repeat of an earlier row.
        num_unique: (B,) int64 distinct successful solutions.
        cost: (B, N) float64 combined objective, or None without objectives.
        timings: seconds spent per stage (``validate``, ``sample``, ``refine``, ``polish``,
            ``measure``, ``total``).
    """

    q: torch.Tensor
    position_error: torch.Tensor
    rotation_error: torch.Tensor
    within_limits: torch.Tensor
    success: torch.Tensor
    in_self_collision: torch.Tensor | None
    is_unique: torch.Tensor
    num_unique: torch.Tensor
    cost: torch.Tensor | None = None
    timings: dict[str, float] = field(default_factory=dict)


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
        self.native_kinematics, self.native_sampler = self._native_parts(loaded, robot, config)
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

    # ------------------------------------------------------------------ validation
    def _validate(self, targets, num_solutions, target_mask, position_only, seed):
        """Checked inputs: (targets (B, E, 4, 4) float64 with unconstrained parts sanitised, B,
        target_mask (B, E), position_only (B, E), seed (B, n) or None); InvalidRequestError naming a problem."""
        targets = self._as_targets(targets)
        B = targets.shape[0]
        self._check_sizes(B, num_solutions)
        target_mask = self._mask(target_mask, "target_mask", True, B)
        position_only = self._mask(position_only, "position_only", False, B)
        empty = (~target_mask.any(-1)).nonzero().flatten().tolist()
        if empty:
            raise InvalidRequestError(f"targets {empty[:10]} constrain no end effector (target_mask all False)")
        clean = self._checked_poses(targets, target_mask, target_mask & ~position_only)
        return clean, B, target_mask, position_only, self._seed(seed, B)

    def _as_targets(self, targets) -> torch.Tensor:
        """Any (B, E, 4, 4) or (E, 4, 4) array of poses -> (B, E, 4, 4) float64 tensor."""
        E = len(self.robot.end_effectors)
        if not isinstance(targets, torch.Tensor):
            try:
                targets = torch.as_tensor(targets, dtype=torch.float64)
            except (TypeError, ValueError, RuntimeError) as exc:
                raise InvalidRequestError(f"targets must be a (B, {E}, 4, 4) array of poses: {exc}") from None
        targets = targets.to(torch.float64)
        if targets.ndim == 3:
            targets = targets.unsqueeze(0)
        if targets.ndim != 4 or targets.shape[1:] != (E, 4, 4) or targets.shape[0] == 0:
            raise InvalidRequestError(
                f"targets must have shape (B, {E}, 4, 4) (B >= 1; end effectors {self.robot.end_effectors}), "
                f"got {tuple(targets.shape)}")
        return targets

    def _check_sizes(self, B: int, num_solutions) -> None:
        if isinstance(num_solutions, bool) or not isinstance(num_solutions, int) or num_solutions <= 0:
            raise InvalidRequestError(f"num_solutions must be a positive int, got {num_solutions!r}")
        if num_solutions > self.config.max_solutions:
            raise InvalidRequestError(
                f"num_solutions={num_solutions} exceeds the maximum {self.config.max_solutions}")
        if B * num_solutions > self.config.max_rows:
            raise InvalidRequestError(
                f"{B} targets x {num_solutions} solutions = {B * num_solutions} rows exceeds the maximum "
                f"{self.config.max_rows} per call; split the request")

    def _mask(self, m, name: str, default: bool, B: int) -> torch.Tensor:
        """None, (E,) or (B, E) bool -> (B, E) bool CPU tensor."""
        E = len(self.robot.end_effectors)
        if m is None:
            return torch.full((B, E), default, dtype=torch.bool)
        m = torch.as_tensor(m)
        if m.dtype != torch.bool:
            raise InvalidRequestError(f"{name} must be a bool tensor, got {m.dtype}")
        if m.shape == (E,):
            m = m.expand(B, E)
        if m.shape != (B, E):
            raise InvalidRequestError(f"{name} must have shape ({B}, {E}) or ({E},), got {tuple(m.shape)}")
        return m.cpu().clone()

    def _checked_poses(self, targets: torch.Tensor, target_mask: torch.Tensor, rot_mask: torch.Tensor) -> torch.Tensor:
        """Finite constrained positions, proper constrained rotations; a copy whose unconstrained parts
        are identity / zero, so nothing non-finite reaches the network or the LM."""
        pos = targets[..., :3, 3]
        bad = (target_mask & ~torch.isfinite(pos).all(-1)).nonzero().tolist()
        if bad:
            raise InvalidRequestError(f"non-finite target position at (target, end effector) {bad[:10]}")
        R = targets[..., :3, :3]
        finite_R = torch.isfinite(R).flatten(-2).all(-1)
        bad = (rot_mask & ~finite_R).nonzero().tolist()
        if bad:
            raise InvalidRequestError(f"non-finite target rotation at (target, end effector) {bad[:10]}")
        Rs = torch.where(finite_R[..., None, None], R, torch.eye(3, dtype=R.dtype))
        ortho = (Rs.transpose(-1, -2) @ Rs - torch.eye(3, dtype=R.dtype)).abs().flatten(-2).amax(-1)
        tol = self.config.orthonormal_tol
        bad = (rot_mask & ((ortho > tol) | ((torch.linalg.det(Rs) - 1).abs() > tol))).nonzero().tolist()
        if bad:
            raise InvalidRequestError(
                f"target rotation is not a proper rotation matrix (|R^T R - I| or |det R - 1| > {tol}) at "
                f"(target, end effector) {bad[:10]}")
        clean = targets.clone()
        clean[..., :3, 3] = torch.where(target_mask[..., None], torch.nan_to_num(pos), torch.zeros_like(pos))
        clean[..., :3, :3] = torch.where(rot_mask[..., None, None], Rs, torch.eye(3, dtype=R.dtype).expand_as(R))
        clean[..., 3, :] = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)
        return clean

    def _seed(self, seed, B: int) -> torch.Tensor | None:
        """None, (n,) or (B, n) finite joint values -> (B, n) float64 or None."""
        if seed is None:
            return None
        n = self.robot.n_joints
        seed = torch.as_tensor(seed, dtype=torch.float64)
        if seed.shape == (n,):
            seed = seed.expand(B, n)
        if seed.shape != (B, n) or not torch.isfinite(seed).all():
            raise InvalidRequestError(f"seed must be finite with shape ({n},) or ({B}, {n}), got {tuple(seed.shape)}")
        return seed

    def make_cost(self, objectives, seed_rows=None, world=None, cost_fn=None):
        """``{name: weight}`` (+ ``cost_fn`` as ``user``) -> one ``cost(q (M, n)) -> (M,)`` or None;
        ``seed_rows`` (M, n) for the ``seed`` objective, ``world`` for ``collision``."""
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

    def _locked(self, locked) -> dict[int, float]:
        """``{joint index or name: value}`` -> ``{index: value}`` (validated)."""
        out: dict[int, float] = {}
        for key, value in dict(locked or {}).items():
            i = self.robot.index_of(key) if isinstance(key, str) else int(key)
            if not 0 <= i < self.robot.n_joints or not math.isfinite(float(value)):
                raise InvalidRequestError(f"locked joint {key!r}: index or value {value!r} out of range")
            out[i] = float(value)
        return out

    def _tip_points(self, tip_points, B: int):
        if tip_points is None:
            return None
        E = len(self.robot.end_effectors)
        tp = torch.as_tensor(tip_points, dtype=torch.float64)
        if tp.shape == (E, 3):
            tp = tp.expand(B, E, 3)
        if tp.shape != (B, E, 3) or not torch.isfinite(tp).all():
            raise InvalidRequestError(f"tip_points must be finite with shape ({E}, 3) or ({B}, {E}, 3)")
        return tp

    # ------------------------------------------------------------------ solve
    def solve(
        self,
        targets: torch.Tensor,
        num_solutions: int = 32,
        target_mask: torch.Tensor | None = None,
        position_only: torch.Tensor | None = None,
        objectives: Mapping[str, float] | None = None,
        seed: torch.Tensor | None = None,
        world=None,
        cost_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
        refine: bool = True,
        sampler: str = "ddim",
        steps: int | None = None,
        generator: torch.Generator | None = None,
        random_seed: int | None = None,
        timeout: float | None = None,
        locked: Mapping[int | str, float] | None = None,
        tip_points: torch.Tensor | None = None,
        self_collision: bool = True,
    ) -> IKSolutions:
        """Solve B IK problems, ``num_solutions`` candidates each (see the module docstring).

        Args:
            targets: (B, E, 4, 4) (or (E, 4, 4) for B = 1) float poses of the end effectors in the root frame.
            num_solutions: N > 0 candidates per target.
            target_mask: (B, E) or (E,) bool, True = constrained (default all True).
            position_only: (B, E) or (E,) bool, True = position only (default all False).
            objectives: ``{name: weight}``, names (or aliases) of :data:`objectives.OBJECTIVES`:
                ``seed``, ``joint_limits``, ``collision``, ``manipulability``, ``user``.
            seed: (n,) or (B, n) joint values: the ``seed`` objective, and the order of the
                solutions when there is no objective (closest first).
            world: :class:`~ikdiffuser_ros.collision.world.World` for the ``collision`` objective.
            cost_fn: user cost ``q (M, n) -> (M,)``, differentiable (the ``user`` objective).
            refine: run LM refinement (and the objective polish); False returns raw samples.
            sampler: ``"ddim"`` or ``"ddpm"``.
            steps: reverse diffusion steps (default :attr:`SolverConfig.steps`).
            generator: a torch.Generator on the model device (overrides ``random_seed``).
            random_seed: seed of the run (default 0).
            timeout: wall-clock budget [s]; sampling stops (between reverse steps) after
                :data:`SAMPLE_SHARE` of it, so refinement has time to turn samples into solutions;
                refinement and polish stop when it is spent; unfinished rows report ``success=False``.
            locked: ``{joint index or name: value}`` [rad or m]: joints held at these values (the
                refinement does not move them).
            tip_points: (B, E, 3) or (E, 3) position [m] of the constrained frame in each end
                effector's frame (a TCP...): errors and tolerances are taken there. Default: origin.
            self_collision: measure self collision with the sphere model (``in_self_collision``).

        Raises:
            InvalidRequestError: bad shapes/values/sizes, unknown objectives, ``seed`` objective without a seed.
        """
        t0 = time.monotonic()
        deadline = self._deadline(timeout, t0)
        self._check_sampler(sampler, steps)
        batch = self.batch(targets, num_solutions, target_mask, position_only, seed, locked, tip_points)
        cost = self.make_cost(objectives, batch.seed_rows, world, cost_fn)
        timings = {"validate": time.monotonic() - t0}
        measured = self.run(batch, cost, refine=refine, sampler=sampler, steps=steps, generator=generator,
                            random_seed=random_seed, deadline=deadline, self_collision=self_collision,
                            timings=timings, start=t0)
        t = time.monotonic()
        result = self._ordered(batch, measured)
        timings["order"] = time.monotonic() - t
        timings["total"] = time.monotonic() - t0
        result.timings = timings
        return result

    def run(self, batch: "SolveBatch", cost=None, *, refine: bool = True, sampler: str = "ddim",
            steps: int | None = None, generator: torch.Generator | None = None, random_seed: int | None = None,
            deadline: float | None = None, self_collision: bool = False, timings: dict | None = None,
            start: float | None = None, q0: torch.Tensor | None = None, bounds=None, restarts: int = 1) -> dict:
        """The batch call behind :meth:`solve` and the pipeline, trusting its caller: ``batch`` is
        validated, ``cost`` built (:meth:`make_cost`). Samples (or starts from ``q0`` (B*N, n)),
        refines within ``bounds`` ((n,) lower, upper [rad or m]; default the joint limits) and
        measures; returns (B*N,)-row tensors, target-major, unordered (see :meth:`_measure`).

        ``restarts`` r > 1: only ceil(N / r) diffusion samples per target; each is the LM's start
        r times, as it is and perturbed (:meth:`_spread`): the prior's basins at the cost of an LM
        per extra row, and solutions spread along each basin (a net gain in distinct valid
        solutions per CPU-second when many are asked for)."""
        timings = {} if timings is None else timings
        t0 = time.monotonic() if start is None else start
        if q0 is None:
            sample_deadline = None if deadline is None else t0 + SAMPLE_SHARE * (deadline - t0)
            few = dataclasses.replace(batch, N=-(-batch.N // restarts)) if restarts > 1 else batch
            q = self._sample(few, cost, sampler, steps, generator, random_seed, sample_deadline, timings, refine)
            if restarts > 1:
                q = batch.with_locked(self._spread(q, few, batch.N, random_seed))
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

    # ------------------------------------------------------------------ stages of solve
    @staticmethod
    def _deadline(timeout, t0: float) -> float | None:
        if timeout is None:
            return None
        if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
            raise InvalidRequestError(f"timeout must be a positive number of seconds, got {timeout!r}")
        return t0 + float(timeout)

    @staticmethod
    def _check_sampler(sampler: str, steps) -> None:
        if sampler not in ("ddim", "ddpm"):
            raise InvalidRequestError(f"sampler must be 'ddim' or 'ddpm', got {sampler!r}")
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0):
            raise InvalidRequestError(f"steps must be a positive int, got {steps!r}")

    def batch(self, targets, num_solutions: int, target_mask=None, position_only=None, seed=None, locked=None,
              tip_points=None) -> "SolveBatch":
        """The validated :class:`SolveBatch` of :meth:`run` (arguments as :meth:`solve`'s)."""
        T, B, target_mask, position_only, seed = self._validate(targets, num_solutions, target_mask,
                                                                position_only, seed)
        dev = self.device
        return SolveBatch(T=T.to(dev), B=B, N=num_solutions, mask=target_mask.to(dev), pos_only=position_only.to(dev),
                      seed=None if seed is None else seed.to(dev), locked=self._locked(locked),
                      tip_points=self._tip_points(tip_points, B), n=self.robot.n_joints)

    def _sample(self, batch: "SolveBatch", cost, sampler, steps, generator, random_seed, deadline, timings,
                refined: bool) -> torch.Tensor:
        """Diffusion samples, (M, n) float64 rows (target-major), locked joints set. Unguided DDIM on CPU
        runs in the compiled sampler (the same loop); ``refined``: the LM follows (the card's LM-ready plan)."""
        t = time.monotonic()
        steps, tail = self.plan_of(refined, steps)
        if generator is None:
            generator = torch.Generator(device=self.device).manual_seed(0 if random_seed is None else int(random_seed))
        if self.native_sampler is not None and cost is None and sampler == "ddim":
            x = torch.randn(batch.B * batch.N, batch.n, generator=generator, device=self.device, dtype=torch.float32)
            q = self.native_sampler.sample(x, batch.rows(batch.T), batch.rows(batch.mask), batch.rows(batch.pos_only),
                                           sampling_plan(self.loaded.schedule, steps, tail), deadline)
        else:
            ee_pos, ee_rot6d = targets_from_poses(batch.T.float())
            q = sample(self.loaded, ee_pos, ee_rot6d, batch.mask, batch.pos_only, batch.N, method=sampler,
                       steps=steps, tail_steps=tail, guidance_scale=self.config.guidance_scale,
                       guidance_clip=self.config.guidance_clip, generator=generator, guidance=cost, deadline=deadline)
        timings["sample"] = time.monotonic() - t
        return batch.with_locked(q.reshape(batch.B * batch.N, batch.n).to(torch.float64))

    def plan_of(self, refined: bool, steps: int | None = None) -> tuple[int, int]:
        """(DDIM steps, tail passes) of a call: ``steps``, else :attr:`SolverConfig.steps`, else the card's
        plan (for refined samples when ``refined``); tail passes from the config, else the card."""
        card_steps, card_tail = default_sampling(self.loaded, refined)
        return (steps or self.config.steps or card_steps,
                card_tail if self.config.tail_steps is None else self.config.tail_steps)

    def _spread(self, q: torch.Tensor, few: "SolveBatch", N: int, random_seed: int | None) -> torch.Tensor:
        """(B * K, n) samples -> (B * N, n) LM starts: each sample repeated, the first copy as it is, the
        others with Gaussian noise of ``restart_spread`` x each joint's range (wrapped, within limits)."""
        B, K, n = few.B, few.N, few.n
        reps = -(-N // K)
        rows = q.view(B, K, 1, n).expand(B, K, reps, n).reshape(B, K * reps, n)[:, :N]
        g = torch.Generator(device=q.device).manual_seed(0 if random_seed is None else int(random_seed) + 1)
        lower, upper = self.robot.limits(torch.float64, q.device)
        noise = torch.randn(B, K * reps, n, generator=g, dtype=q.dtype, device=q.device)[:, :N]
        noise = noise * self.config.restart_spread * (upper - lower)
        noise[:, ::reps] = 0.0
        return project_to_limits((rows + noise).reshape(B * N, n), lower, upper, self.wrapping.to(q.device))

    def _refine(self, batch: "SolveBatch", q: torch.Tensor, cost, deadline, timings, bounds=None) -> RefineResult:
        """LM refinement, then the null-space objective polish when there is a cost: (M, n) -> RefineResult."""
        t = time.monotonic()
        rows = dict(frozen=batch.frozen, tip_points=batch.rows(batch.tip_points))
        lm = refine_fn(self.robot) if self.native_kinematics is None else self.native_kinematics.refine
        res = lm(q, batch.rows(batch.T), batch.rows(batch.mask), batch.rows(batch.pos_only), self.config.refine,
                 deadline, bounds=bounds, **rows)
        timings["refine"] = time.monotonic() - t
        t = time.monotonic()
        if cost is not None:
            res = polish(self.robot, res, batch.rows(batch.T), cost, batch.rows(batch.mask),
                         batch.rows(batch.pos_only), self.config.refine, self.config.polish, deadline, **rows)
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
            T_fk = torch.from_numpy(self.native_kinematics.fk(q.detach().cpu().numpy()))
            if tips is not None:
                T_fk[..., :3, 3] += (T_fk[..., :3, :3] @ tips.cpu().unsqueeze(-1)).squeeze(-1)
        else:
            T_fk = tip_fk_and_jacobian(self.robot, q, tips)[0] if tips is not None else self.robot.fk(q)
        res6 = pose_residual(T_fk.to(q.device), tip_targets(batch.rows(batch.T), tips))
        mask, rot_mask = batch.rows(batch.mask), batch.rows(batch.mask & ~batch.pos_only)
        return (torch.where(mask, res6[..., :3].norm(dim=-1), 0.0).amax(-1),
                torch.where(rot_mask, res6[..., 3:].norm(dim=-1), 0.0).amax(-1))

    def _ordered(self, batch: "SolveBatch", m: dict) -> IKSolutions:
        """Per target: unique successes, duplicate successes, failures; each by :func:`ranking_key`."""
        B, N, n = batch.B, batch.N, batch.n
        succ = m["success"].view(B, N)
        unique = unique_mask(m["q"].view(B, N, n), succ, self.config.dedup_tol, self.wrapping.to(self.device))
        key = ranking_key(m["cost"], m["q"], batch.rows(batch.seed), m["position_error"], self.wrapping)
        order = rank(unique, succ, key.view(B, N))
        fields = {k: None if v is None else take_rows(v.view(B, N, *v.shape[1:]), order) for k, v in m.items()}
        uq = take_rows(unique, order)
        return IKSolutions(**fields, is_unique=uq, num_unique=uq.sum(-1))


@dataclass
class SolveBatch:
    """One validated solve: B targets x N rows, on the model's device (build it with
    :meth:`IKDiffuserSolver.batch`, or directly from checked tensors as the pipeline does).

    T (B, E, 4, 4) float64 end-effector targets, mask / pos_only (B, E) bool, seed (B, n) or None,
    locked ``{index: value}``, tip_points (B, E, 3) or None. ``rows(x)`` repeats a per-target
    tensor for the B * N rows (target-major).
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

    def rows(self, x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else x.to(self.T.device).repeat_interleave(self.N, 0)

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


def take_rows(x: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """(B, N, ...) -> rows reordered by ``order`` (B, N)."""
    idx = order.view(*order.shape, *([1] * (x.ndim - 2))).expand_as(x)
    return x.gather(1, idx)


def refine_fn(model: RobotModel):
    """The torch LM bound to ``model``, with :meth:`NativeKinematics.refine`'s signature."""
    return lambda *args, **kwargs: refine(model, *args, **kwargs)
