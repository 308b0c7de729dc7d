"""The IKDiffuser solver facade: targets in, joint solutions out.

Pipeline of :meth:`IKDiffuserSolver.solve` (``B`` targets, ``N`` solutions each,
all ``B * N`` rows processed as one batch)::

    validate -> objectives -> sample (diffusion, guided) -> refine (LM, float64)
             -> polish (null-space objective descent) -> measure -> deduplicate -> order

1. **validate**: shapes, finite values, proper rotations, masks, sizes; every
   problem raises :class:`InvalidRequestError` naming it.
2. **objectives**: ``{name: weight}`` over :data:`objectives.KNOWN_OBJECTIVES`
   (``seed``, ``joint_limits``, ``collision``, ``manipulability``, ``user``) plus
   ``cost_fn`` (added as ``user`` with weight 1 when not named), combined into
   one ``cost(q) -> (B*N,)``.
3. **sample**: :func:`sampling.sampler.sample` with the cost as guidance.
4. **refine** (``refine=True``): the raw samples are the initial guesses of a
   batched Levenberg-Marquardt polish (:func:`sampling.refine.refine`). By
   default rows that do not converge are *not* retried: they come back with
   ``success=False`` (ask for more solutions, or call again with another
   ``random_seed``). With ``SolverConfig.retries = k``, up to k rounds draw a
   fresh diffusion sample for every failed row and refine it.
5. **polish** (objectives given and ``refine=True``): converged rows descend the
   cost in the null space of the task (:func:`sampling.refine.polish`), so the
   objectives hold after refinement too.
6. **measure**: position / rotation errors by FK (worst over constrained end
   effectors), limits, sphere-model self collision.
7. **deduplicate**: successful rows equal within ``dedup_tol`` per joint are
   merged (``is_unique``; ``num_unique`` counts them).
8. **order**: per target, unique successful solutions first, then duplicate
   successes, then failures; within each group by cost (if any objective) else
   by position error.

Determinism: all randomness comes from one ``torch.Generator`` seeded with
``random_seed`` (default 0), or the ``generator`` passed in, so equal inputs
give equal outputs on the same device and thread settings.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ikdiffuser_ros.errors import InvalidRequestError
from ikdiffuser_ros.kinematics.robot_model import RobotModel
from ikdiffuser_ros.sampling import objectives as obj
from ikdiffuser_ros.sampling.refine import (PolishConfig, RefineConfig, joint_kinds, polish, pose_residual,
                                            project_to_limits, refine, unique_mask)


@dataclass(frozen=True)
class SolverConfig:
    """Limits and defaults of :class:`IKDiffuserSolver` (units: m, rad, s)."""

    #: Largest ``num_solutions`` per target.
    max_solutions: int = 10000
    #: Largest ``B * num_solutions`` of one call.
    max_rows: int = 200000
    #: Default reverse steps (None = the checkpoint card's ``sampling.steps``, else 20).
    steps: int | None = None
    #: Low-noise tail passes after the reverse steps (None = the card's ``sampling.tail_steps``, else 0).
    tail_steps: int | None = None
    #: Guidance step size (normalized joint units, the range of every joint is [-1, 1]) and per-row
    #: gradient clip: each reverse step shifts the clean-sample estimate by at most
    #: ``guidance_scale * guidance_clip`` (objective weights set the balance between objectives).
    guidance_scale: float = 0.5
    guidance_clip: float | None = 1.0
    #: LM settings (tolerances define ``success``).
    refine: RefineConfig = field(default_factory=RefineConfig)
    #: Null-space objective polish.
    polish: PolishConfig = field(default_factory=PolishConfig)
    #: Rounds of re-sampling for rows whose refinement failed: each round draws one fresh
    #: diffusion sample per failed row (same target, same guidance) and refines it; a row keeps
    #: the new sample only if it converges. 0 = failed rows come back with ``success=False``.
    retries: int = 0
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
        from ikdiffuser_ros.model.checkpoint import load_checkpoint

        if isinstance(robot, str):
            from ikdiffuser_ros.robots import load_robot

            robot = load_robot(robot)
        return cls(load_checkpoint(path, robot, device), robot, config)

    @classmethod
    def from_model(cls, loaded, robot: RobotModel | None = None,
                   config: SolverConfig = SolverConfig()) -> "IKDiffuserSolver":
        """Wrap an in-memory ``LoadedModel`` (e.g. a tiny model in tests); ``robot`` defaults to ``loaded.robot``."""
        return cls(loaded, robot if robot is not None else loaded.robot, config)

    @property
    def sphere_model(self):
        """The robot's :class:`~ikdiffuser_ros.collision.spheres.SphereModel` (loaded on first use), or None."""
        if not self._sphere_tried:
            self._sphere_tried = True
            try:
                from ikdiffuser_ros.collision.spheres import SphereModel

                self._sphere_model = SphereModel.from_robot(self.robot)
                if self._sphere_model.num_spheres == 0:
                    self._sphere_model = None
            except Exception:  # a robot without loadable collision geometry: no sphere model
                self._sphere_model = None
        return self._sphere_model

    # ------------------------------------------------------------------ validation
    def _validate(self, targets, num_solutions, target_mask, position_only, seed):
        E, n = len(self.robot.end_effectors), self.robot.n_joints
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
        B = targets.shape[0]
        if isinstance(num_solutions, bool) or not isinstance(num_solutions, int) or num_solutions <= 0:
            raise InvalidRequestError(f"num_solutions must be a positive int, got {num_solutions!r}")
        if num_solutions > self.config.max_solutions:
            raise InvalidRequestError(
                f"num_solutions={num_solutions} exceeds the maximum {self.config.max_solutions}")
        if B * num_solutions > self.config.max_rows:
            raise InvalidRequestError(
                f"{B} targets x {num_solutions} solutions = {B * num_solutions} rows exceeds the maximum "
                f"{self.config.max_rows} per call; split the request")

        def mask(m, name, default):
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

        target_mask = mask(target_mask, "target_mask", True)
        position_only = mask(position_only, "position_only", False)
        empty = (~target_mask.any(-1)).nonzero().flatten().tolist()
        if empty:
            raise InvalidRequestError(f"targets {empty[:10]} constrain no end effector (target_mask all False)")
        rot_mask = target_mask & ~position_only
        # only constrained parts are used: masked end effectors may hold placeholders
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
        det_err = (torch.linalg.det(Rs) - 1).abs()
        tol = self.config.orthonormal_tol
        bad = (rot_mask & ((ortho > tol) | (det_err > tol))).nonzero().tolist()
        if bad:
            raise InvalidRequestError(
                f"target rotation is not a proper rotation matrix (|R^T R - I| or |det R - 1| > {tol}) at "
                f"(target, end effector) {bad[:10]}")
        # sanitise unconstrained entries so nothing non-finite reaches the network or the LM
        clean = targets.clone()
        clean[..., :3, 3] = torch.where(target_mask[..., None], torch.nan_to_num(pos), torch.zeros_like(pos))
        clean[..., :3, :3] = torch.where(rot_mask[..., None, None], Rs, torch.eye(3, dtype=R.dtype).expand_as(R))
        clean[..., 3, :] = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)
        if seed is not None:
            seed = torch.as_tensor(seed, dtype=torch.float64)
            if seed.shape == (n,):
                seed = seed.expand(B, n)
            if seed.shape != (B, n) or not torch.isfinite(seed).all():
                raise InvalidRequestError(f"seed must be finite with shape ({n},) or ({B}, {n}), "
                                          f"got {tuple(seed.shape)}")
        return clean, B, target_mask, position_only, seed

    def _cost(self, objectives, seed_rows, world, cost_fn):
        weights = dict(objectives or {})
        if cost_fn is not None:
            if not callable(cost_fn):
                raise InvalidRequestError("cost_fn must be callable: q (M, n) -> (M,)")
            weights.setdefault("user", 1.0)
        factories: dict[str, Callable[[], obj.CostFn]] = {
            "joint_limits": lambda: obj.joint_limit_margin(self.robot, self.config.joint_limit_margin),
            "manipulability": lambda: obj.manipulability(self.robot),
        }
        if seed_rows is not None:
            factories["seed"] = lambda: obj.seed_distance(seed_rows, self.wrapping)
        if cost_fn is not None:
            factories["user"] = lambda: obj.user(cost_fn)
        if "collision" in weights and float(weights.get("collision", 0)) != 0 and self.sphere_model is not None:
            factories["collision"] = lambda: obj.collision(self.sphere_model, world, self.config.collision_margin)
        return obj.combine(weights, factories)

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
    ) -> IKSolutions:
        """Solve B IK problems, ``num_solutions`` candidates each (see the module docstring).

        Args:
            targets: (B, E, 4, 4) (or (E, 4, 4) for B = 1) float poses in the root frame.
            num_solutions: N > 0 candidates per target.
            target_mask: (B, E) or (E,) bool, True = constrained (default all True).
            position_only: (B, E) or (E,) bool, True = position only (default all False).
            objectives: ``{name: weight}``, names from ``seed``, ``joint_limits``, ``collision``,
                ``manipulability``, ``user`` (see :mod:`ikdiffuser_ros.sampling.objectives`).
            seed: (n,) or (B, n) joint values for the ``seed`` objective.
            world: :class:`~ikdiffuser_ros.collision.world.World` for the ``collision`` objective.
            cost_fn: user cost ``q (M, n) -> (M,)``, differentiable (the ``user`` objective).
            refine: run LM refinement (and the objective polish); False returns raw samples.
            sampler: ``"ddim"`` or ``"ddpm"``.
            steps: reverse diffusion steps (default :attr:`SolverConfig.steps`).
            generator: a torch.Generator on the model device (overrides ``random_seed``).
            random_seed: seed of the run (default 0).
            timeout: wall-clock budget [s]; sampling (between reverse steps), refinement and polish
                stop when it is spent; unfinished rows report ``success=False``.

        Raises:
            InvalidRequestError: bad shapes/values/sizes, unknown objectives, ``seed`` objective without a seed.
        """
        t0 = time.monotonic()
        timings: dict[str, float] = {}
        deadline = None
        if timeout is not None:
            if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
                raise InvalidRequestError(f"timeout must be a positive number of seconds, got {timeout!r}")
            deadline = t0 + float(timeout)
        if sampler not in ("ddim", "ddpm"):
            raise InvalidRequestError(f"sampler must be 'ddim' or 'ddpm', got {sampler!r}")
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0):
            raise InvalidRequestError(f"steps must be a positive int, got {steps!r}")
        T, B, target_mask, position_only, seed = self._validate(
            targets, num_solutions, target_mask, position_only, seed)
        N, n, E = num_solutions, self.robot.n_joints, len(self.robot.end_effectors)
        M = B * N
        dev = self.device
        seed_rows = None if seed is None else seed.repeat_interleave(N, 0).to(dev)
        cost = self._cost(objectives, seed_rows, world, cost_fn)
        timings["validate"] = time.monotonic() - t0

        # 3. sample
        from ikdiffuser_ros.sampling.sampler import default_sampling, sample, targets_from_poses

        card_steps, card_tail = default_sampling(self.loaded)
        sampling = dict(method=sampler, steps=steps or self.config.steps or card_steps,
                        tail_steps=card_tail if self.config.tail_steps is None else self.config.tail_steps,
                        guidance_scale=self.config.guidance_scale, guidance_clip=self.config.guidance_clip,
                        deadline=deadline)
        if generator is None:
            generator = torch.Generator(device=dev).manual_seed(0 if random_seed is None else int(random_seed))
        t = time.monotonic()
        T_dev = T.to(dev)
        ee_pos, ee_rot6d = targets_from_poses(T_dev.float())
        q_raw = sample(self.loaded, ee_pos, ee_rot6d, target_mask.to(dev), position_only.to(dev), N,
                       generator=generator, guidance=cost, **sampling)
        timings["sample"] = time.monotonic() - t

        # 4./5. refine and polish (float64)
        q = q_raw.reshape(M, n).to(torch.float64)
        T_rows = T_dev.repeat_interleave(N, 0)
        mask_rows = target_mask.to(dev).repeat_interleave(N, 0)
        po_rows = position_only.to(dev).repeat_interleave(N, 0)
        t = time.monotonic()
        timings["polish"] = 0.0
        if refine:
            res = refine_fn(self.robot, q, T_rows, mask_rows, po_rows, self.config.refine, deadline)
            for _ in range(self.config.retries):
                failed = (~res.converged).nonzero().flatten()
                if failed.numel() == 0 or (deadline is not None and time.monotonic() > deadline):
                    break
                b_idx = failed // N
                cost_sub = self._cost(objectives, None if seed_rows is None else seed_rows[failed], world, cost_fn)
                q_new = sample(self.loaded, ee_pos[b_idx], ee_rot6d[b_idx], target_mask.to(dev)[b_idx],
                               position_only.to(dev)[b_idx], 1, generator=generator, guidance=cost_sub, **sampling)
                r2 = refine_fn(self.robot, q_new.reshape(-1, n).to(torch.float64), T_rows[failed], mask_rows[failed],
                               po_rows[failed], self.config.refine, deadline)
                take_new = r2.converged
                rows = failed[take_new]
                res.q[rows] = r2.q[take_new]
                res.position_error[rows] = r2.position_error[take_new]
                res.rotation_error[rows] = r2.rotation_error[take_new]
                res.converged[rows] = True
                res.iterations[failed] += r2.iterations
            timings["refine"] = time.monotonic() - t
            if cost is not None:
                t = time.monotonic()
                res = polish(self.robot, res, T_rows, cost, mask_rows, po_rows, self.config.refine,
                             self.config.polish, deadline)
                timings["polish"] = time.monotonic() - t
            q, converged = res.q, res.converged
        else:
            lower, upper = self.robot.limits(torch.float64, dev)
            q = project_to_limits(q, lower, upper)
            timings["refine"] = 0.0
            converged = None

        # 6. measure (independently of the refinement's own bookkeeping)
        t = time.monotonic()
        with torch.no_grad():
            res6 = pose_residual(self.robot.fk(q), T_rows)
            rot_mask = mask_rows & ~po_rows
            pos_err = torch.where(mask_rows, res6[..., :3].norm(dim=-1), 0.0).amax(-1)
            rot_err = torch.where(rot_mask, res6[..., 3:].norm(dim=-1), 0.0).amax(-1)
            lower, upper = self.robot.limits(torch.float64, dev)
            within = ((q >= lower - 1e-9) & (q <= upper + 1e-9)).all(-1)
            tol = self.config.refine
            success = (pos_err <= tol.pos_tol * (1 + 1e-6)) & (rot_err <= tol.rot_tol * (1 + 1e-6)) & within
            sm = self.sphere_model
            coll = sm.in_self_collision(q) if sm is not None else None
            cost_val = None
            if cost is not None:
                with torch.enable_grad():  # user costs may build graphs; we only need values
                    cost_val = cost(q).detach().to(torch.float64)
        # 7./8. dedup and order, per target
        q3, succ3 = q.view(B, N, n), success.view(B, N)
        unique = unique_mask(q3, succ3, self.config.dedup_tol, self.wrapping.to(dev))
        key = cost_val.view(B, N) if cost_val is not None else pos_err.view(B, N)
        key = torch.nan_to_num(key, nan=math.inf)
        group = torch.where(unique, 0, torch.where(succ3, 1, 2)).to(torch.float64)
        # lexicographic (group, key): sort by key, then stable sort by group
        order = torch.sort(key, dim=-1, stable=True).indices
        order = order.gather(-1, torch.sort(group.gather(-1, order), dim=-1, stable=True).indices)

        def take(x):
            if x is None:
                return None
            if tuple(x.shape[:2]) != (B, N):
                x = x.reshape(B, N, *x.shape[1:])
            idx = order.view(B, N, *([1] * (x.ndim - 2))).expand_as(x)
            return x.gather(1, idx)

        timings["measure"] = time.monotonic() - t
        timings["total"] = time.monotonic() - t0
        uq = take(unique)
        return IKSolutions(
            q=take(q), position_error=take(pos_err), rotation_error=take(rot_err), within_limits=take(within),
            success=take(success), in_self_collision=take(coll), is_unique=uq, num_unique=uq.sum(-1),
            cost=take(cost_val), timings=timings,
        )


refine_fn = refine  # the module-level name `refine` is shadowed by solve()'s argument
