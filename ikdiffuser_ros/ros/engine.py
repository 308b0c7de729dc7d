"""The solving core of the node, between messages and the solver facade.

:class:`IKEngine` owns the robot model, the :class:`IKDiffuserSolver`, the exact
collision checker and the node configuration; it turns validated targets into
solver calls (chunked by ``max_batch_size``, seeded for reproducibility,
retried while the deadline allows) and measures every returned solution itself
(pose errors by forward kinematics, joint limits, exact FCL collision), so
what the node reports does not depend on solver internals.

:meth:`IKEngine.get_ik_solutions` implements ``GetIKSolutions``; the MoveIt
bridge (:mod:`ikdiffuser_ros.ros.moveit_bridge`) uses :meth:`IKEngine.solve`.
No rclpy here: only message objects (and their classes) are touched.
"""

from __future__ import annotations

import inspect
import math
import secrets
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ikdiffuser_ros.errors import IKDiffuserError
from ikdiffuser_ros.kinematics.transforms import rotation_angle
from ikdiffuser_ros.ros.conversions import (
    ErrorCode, FrameResolver, JointStateLayout, RequestError, duration_to_seconds, pose_stamped_to_root,
    rigid_offsets,
)
from ikdiffuser_ros.ros.params import OBJECTIVE_ALIASES, OBJECTIVE_NAMES, NodeConfig


@dataclass
class TargetSpec:
    """One validated target: (E, 4, 4) end-effector poses (root frame) + masks.

    ``offset`` (E, 4, 4): pose of the link each target names in its end effector's frame
    (``T_ee_link``; identity when the target names the end effector itself, or when None). The
    solver is given the end-effector poses ``T``; tolerances are checked, and errors reported,
    at the named link (``fk(q)[e] @ offset[e]`` against ``T[e] @ offset[e]``).
    """

    T: np.ndarray
    mask: np.ndarray  # (E,) bool: constrained
    position_only: np.ndarray  # (E,) bool
    offset: np.ndarray | None = None  # (E, 4, 4) T_ee_link, None = identity


@dataclass
class Solutions:
    """Solutions of one target (k of them), measured by the engine."""

    q: np.ndarray  # (k, n)
    position_error: np.ndarray  # (k,)
    rotation_error: np.ndarray  # (k,)
    in_collision: np.ndarray  # (k,) bool
    valid: np.ndarray  # (k,) bool: within tolerances and limits (and collision free if asked)
    code: int = ErrorCode.SUCCESS
    message: str = ""


@dataclass
class SolveOptions:
    num_solutions: int
    seed: np.ndarray | None = None  # (n,)
    objectives: dict[str, float] = field(default_factory=dict)
    avoid_collisions: bool = False
    random_seed: int | None = None
    deadline: float = math.inf
    keep_invalid: bool = False
    #: extra acceptance test on (k, n) candidates -> (k,) bool (joint constraints...)
    accept: object = None
    #: fixed joint values (index -> value) written into every candidate (MoveIt: joints outside the group)
    fixed: dict[int, float] = field(default_factory=dict)
    max_rounds: int = 4
    #: use collision guidance in retry rounds (collision_guidance 'fallback'); 'always' ignores this
    fallback_guidance: bool = True


class IKEngine:
    """See the module docstring. ``solver`` follows the IKDiffuserSolver facade (docs/architecture.md)."""

    def __init__(self, robot, solver, config: NodeConfig, checker=None, logger=None) -> None:
        self.robot = robot
        self.solver = solver
        self.config = config
        self.checker = checker
        self.logger = logger
        self.frames = FrameResolver(robot)
        self.layout = JointStateLayout(robot)
        self.tips = rigid_offsets(robot)  # link -> (ee, T_ee_link)
        self.ee_index = {ee: i for i, ee in enumerate(robot.end_effectors)}
        self.n = robot.n_joints
        self.E = len(robot.end_effectors)
        self.lower = robot.lower.numpy()
        self.upper = robot.upper.numpy()
        self._solve_params = self._solver_params(solver)
        # active variables that move each end effector (for joints held fixed by the MoveIt bridge)
        names = robot.joint_names
        vj = robot.virtual_joint
        self.ee_vars: list[set[int]] = []
        for ee in robot.end_effectors:
            joints = [j.name for j in robot.urdf.path_from_root(ee)] + ([vj.name] if vj is not None else [])
            self.ee_vars.append({i for i, v in enumerate(names) for j in joints if v == j or v.startswith(j + "/")})

    # ------------------------------------------------------------------ solver plumbing
    @staticmethod
    def _solver_params(solver) -> set[str] | None:
        try:
            sig = inspect.signature(solver.solve)
        except (TypeError, ValueError):
            return None
        if any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
            return None
        return set(sig.parameters)

    def _call_solver(self, T: np.ndarray, mask: np.ndarray, pos_only: np.ndarray, num: int, seed,
                     objectives: dict, world, random_seed: int, deadline: float = math.inf) -> np.ndarray:
        """One solver call: (B, E, 4, 4) targets -> (B, num, n) float64 joint values."""
        cfg = self.config
        kwargs = dict(
            num_solutions=int(num), target_mask=torch.as_tensor(mask), position_only=torch.as_tensor(pos_only),
            objectives=objectives or None, seed=None if seed is None else torch.as_tensor(seed),
            world=world, refine=cfg.refine, sampler=cfg.sampler, steps=cfg.sampler_steps or None,
            random_seed=int(random_seed),
        )
        if math.isfinite(deadline):  # the solver stops refining when the budget is spent
            kwargs["timeout"] = max(deadline - time.monotonic(), 1e-3)
        if self._solve_params is not None:
            kwargs = {k: v for k, v in kwargs.items() if k in self._solve_params}
        result = self.solver.solve(torch.as_tensor(T, dtype=torch.float64), **kwargs)
        q = result.q if hasattr(result, "q") else result
        return torch.as_tensor(q).detach().to("cpu", torch.float64).numpy().reshape(T.shape[0], num, self.n)

    def warmup(self) -> float:
        """One small solve + collision check at the default state, so the first request is not slow
        (lazy mesh loading, torch kernel selection). Returns the seconds it took."""
        t0 = time.monotonic()
        q0 = self.layout.default
        T = self.robot.fk(torch.as_tensor(q0)).numpy()
        spec = TargetSpec(T, np.ones(self.E, dtype=bool), np.zeros(self.E, dtype=bool))
        self.solve([spec], SolveOptions(num_solutions=2, random_seed=0, max_rounds=1))
        return time.monotonic() - t0

    def _hold_fixed(self, q: np.ndarray, spec: TargetSpec, fixed: dict[int, float], deadline: float) -> np.ndarray:
        """Write the held joint values into the candidates; when a held joint moves a constrained end
        effector (e.g. a mobile base or a torso outside the group), re-converge the candidates with the
        held joints pinned (LM refinement on a copy of the model whose limits pin them)."""
        q = q.copy()
        for idx, value in fixed.items():
            q[:, idx] = value
        held = set(fixed)
        if not any(held & self.ee_vars[e] for e in np.flatnonzero(spec.mask)):
            return q
        import copy

        from ikdiffuser_ros.sampling.refine import RefineConfig, refine

        pinned = copy.copy(self.robot)
        lo, hi = self.robot.lower.clone(), self.robot.upper.clone()
        for idx, value in fixed.items():
            v = float(min(max(value, float(lo[idx])), float(hi[idx])))
            lo[idx] = hi[idx] = v
        pinned.lower, pinned.upper = lo, hi
        res = refine(pinned, torch.as_tensor(q), torch.as_tensor(spec.T), torch.as_tensor(spec.mask),
                     torch.as_tensor(spec.position_only), RefineConfig(),
                     deadline if math.isfinite(deadline) else None)
        q = res.q.detach().cpu().numpy().astype(np.float64)
        for idx, value in fixed.items():
            q[:, idx] = value
        return q

    # ------------------------------------------------------------------ measuring
    def measure(self, q: np.ndarray, spec: TargetSpec, world=None, collision_mask: np.ndarray | None = None
                ) -> tuple[np.ndarray, ...]:
        """(k, n) candidates -> (position error, rotation error, within limits, in collision), each (k,).

        ``collision_mask`` (k,) bool: check collisions only there (the others report False).
        """
        k = q.shape[0]
        if k == 0:
            z = np.zeros(0)
            return z, z, np.zeros(0, bool), np.zeros(0, bool)
        qt = torch.as_tensor(q, dtype=torch.float64)
        T = self.robot.fk(qt)  # (k, E, 4, 4)
        target = torch.as_tensor(spec.T, dtype=torch.float64)
        if spec.offset is not None:  # errors at the links the request names, not at their end effectors
            offset = torch.as_tensor(spec.offset, dtype=torch.float64)
            T, target = T @ offset, target @ offset
        pos = (T[..., :3, 3] - target[..., :3, 3]).norm(dim=-1)  # (k, E)
        rot = rotation_angle(T[..., :3, :3], target.expand_as(T)[..., :3, :3])
        mask = torch.as_tensor(spec.mask)
        rot_mask = mask & ~torch.as_tensor(spec.position_only)
        pos_err = torch.where(mask, pos, torch.zeros_like(pos)).amax(-1).numpy()
        rot_err = torch.where(rot_mask, rot, torch.zeros_like(rot)).amax(-1).numpy()
        eps = 1e-9
        within = np.all((q >= self.lower - eps) & (q <= self.upper + eps), axis=-1)
        if collision_mask is None:
            collide = self.check_collisions(q, world)
        else:
            collide = np.zeros(k, dtype=bool)
            if collision_mask.any():
                collide[collision_mask] = self.check_collisions(q[collision_mask], world)
        return pos_err, rot_err, within, collide

    def check_collisions_masked(self, q: np.ndarray, world, mask: np.ndarray | None) -> np.ndarray:
        if mask is None:
            return self.check_collisions(q, world)
        out = np.zeros(len(q), dtype=bool)
        if mask.any():
            out[mask] = self.check_collisions(q[mask], world)
        return out

    def check_collisions(self, q: np.ndarray, world) -> np.ndarray:
        if self.checker is None or len(q) == 0:
            return np.zeros(len(q), dtype=bool)
        report = self.checker.check(q, world)
        return np.asarray(report.in_collision, dtype=bool).reshape(-1)

    # ------------------------------------------------------------------ solving
    def solve(self, specs: list[TargetSpec], opts: SolveOptions, world=None) -> list[Solutions]:
        """Solve validated targets; per target at most ``opts.num_solutions`` solutions, valid ones first.

        Candidates are sampled (``collision_oversample`` times more with
        avoid_collisions), measured, filtered (tolerances, limits, collisions,
        ``opts.accept``) and ordered (by distance to the seed when there is a
        seed objective, else in sampling order). Targets left with no valid
        solution are sampled again with the next seeds while rounds and time
        remain. A target whose turn comes after the deadline gets TIMED_OUT.
        """
        cfg = self.config
        N = int(opts.num_solutions)
        factor = cfg.collision_oversample if opts.avoid_collisions else 1.0
        if opts.accept is not None:
            factor = max(factor, 2.0)
        n_sample = max(1, int(math.ceil(N * factor)))
        base_seed = opts.random_seed if opts.random_seed is not None and opts.random_seed >= 0 \
            else secrets.randbits(62)
        objectives = dict(opts.objectives)
        guided = dict(objectives)
        if opts.avoid_collisions and cfg.weight_collision > 0 and cfg.collision_guidance != "off":
            guided.setdefault("collision", cfg.weight_collision)
        guide_world = world if opts.avoid_collisions else None

        found: list[list[tuple]] = [[] for _ in specs]  # per target: list of candidate arrays + metrics
        valid_count = np.zeros(len(specs), dtype=int)
        timed_out = np.zeros(len(specs), dtype=bool)
        max_batch = max(1, int(cfg.max_batch_size))
        per_call = min(n_sample, max_batch)
        calls_per_target = int(math.ceil(n_sample / per_call))
        targets_per_call = max(1, max_batch // per_call)
        call_index = 0
        for round_ in range(max(1, opts.max_rounds)):
            todo = [i for i in range(len(specs)) if not timed_out[i] and (round_ == 0 or valid_count[i] == 0)]
            if not todo:
                break
            for start in range(0, len(todo), targets_per_call):
                chunk = todo[start:start + targets_per_call]
                if time.monotonic() > opts.deadline:
                    if round_ == 0:
                        for i in todo[start:]:
                            timed_out[i] = True
                    break
                T = np.stack([specs[i].T for i in chunk])
                mask = np.stack([specs[i].mask for i in chunk])
                pos_only = np.stack([specs[i].position_only for i in chunk])
                for c in range(calls_per_target):
                    num = min(per_call, n_sample - c * per_call)
                    use_guidance = cfg.collision_guidance == "always" or (round_ > 0 and opts.fallback_guidance)
                    q = self._call_solver(T, mask, pos_only, num, opts.seed,
                                          guided if use_guidance else objectives, guide_world,
                                          (base_seed + 7919 * call_index) % (2**62), opts.deadline)
                    call_index += 1
                    for j, i in enumerate(chunk):
                        qi = q[j]
                        if opts.fixed:
                            qi = self._hold_fixed(qi, specs[i], opts.fixed, opts.deadline)
                        pe, re, within, _ = self.measure(qi, specs[i], world, np.zeros(len(qi), dtype=bool))
                        ok = within & (pe <= cfg.position_tolerance) & (re <= cfg.rotation_tolerance)
                        # exact collision checks only where they matter (dropped candidates are not checked)
                        coll = self.check_collisions_masked(qi, world, None if opts.keep_invalid else ok)
                        if opts.avoid_collisions:
                            ok &= ~coll
                        if opts.accept is not None and ok.any():
                            ok &= np.asarray(opts.accept(qi), dtype=bool)
                        found[i].append((qi, pe, re, coll, ok))
                        valid_count[i] += int(ok.sum())
            if time.monotonic() > opts.deadline:
                break

        out = []
        for i, spec in enumerate(specs):
            if not found[i]:
                out.append(Solutions(np.zeros((0, self.n)), np.zeros(0), np.zeros(0), np.zeros(0, bool),
                                     np.zeros(0, bool), ErrorCode.TIMED_OUT,
                                     "timed out before this target was solved"))
                continue
            q, pe, re, coll, ok = (np.concatenate(a) for a in zip(*found[i]))
            order = np.arange(len(q))
            if opts.seed is not None and objectives.get("seed", 0.0) > 0:
                order = np.argsort(np.linalg.norm(q - opts.seed, axis=-1), kind="stable")
            # valid first (stable), then the rest by error if they are kept
            order = order[np.argsort(~ok[order], kind="stable")]
            if not opts.keep_invalid:
                order = order[ok[order]]
            order = order[:N]
            sol = Solutions(q[order], pe[order], re[order], coll[order], ok[order])
            if not ok.any():
                sol.code = ErrorCode.NO_IK_SOLUTION
                reach = (pe <= cfg.position_tolerance) & (re <= cfg.rotation_tolerance)
                best = int(np.argmin(pe + re))
                parts = [f"{int(reach.sum())} of {len(q)} candidates reach the pose within tolerances "
                         f"({cfg.position_tolerance} m, {cfg.rotation_tolerance} rad)"]
                if opts.avoid_collisions:
                    parts.append(f"{int((reach & ~coll).sum())} of those collision free")
                if opts.accept is not None:
                    parts.append("constraints also applied")
                parts.append(f"best candidate error {pe[best] * 1000:.1f} mm / {math.degrees(re[best]):.1f} deg")
                sol.message = "no IK solution: " + "; ".join(parts)
            out.append(sol)
        return out

    # ------------------------------------------------------------------ request parsing
    def target_spec(self, link_names, poses, position_only, q_ref: np.ndarray | None, what: str) -> TargetSpec:
        """IKTarget-like fields -> :class:`TargetSpec` (raises RequestError)."""
        link_names, poses, position_only = list(link_names), list(poses), list(position_only)
        if not link_names:
            raise RequestError(ErrorCode.INVALID_GOAL, f"{what}: no link_names")
        if len(poses) != len(link_names):
            raise RequestError(ErrorCode.INVALID_GOAL,
                               f"{what}: {len(link_names)} link_names but {len(poses)} poses")
        if position_only and len(position_only) != len(link_names):
            raise RequestError(ErrorCode.INVALID_GOAL,
                               f"{what}: position_only has {len(position_only)} entries, expected "
                               f"{len(link_names)} or 0")
        T = self.robot.fk(torch.as_tensor(q_ref if q_ref is not None else self.layout.default)).numpy().copy()
        offset = np.tile(np.eye(4), (self.E, 1, 1))
        mask = np.zeros(self.E, dtype=bool)
        pos_only = np.zeros(self.E, dtype=bool)
        for k, (link, pose) in enumerate(zip(link_names, poses)):
            if link not in self.tips:
                known = link in self.robot.urdf.links
                raise RequestError(
                    ErrorCode.INVALID_LINK_NAME,
                    f"{what}: link {link!r} " + ("is not an end effector (nor rigidly attached to one)"
                                                 if known else "is not a link of the robot")
                    + f"; end effectors: {self.robot.end_effectors}")
            ee, T_ee_link = self.tips[link]
            e = self.ee_index[ee]
            if mask[e]:
                raise RequestError(ErrorCode.INVALID_GOAL, f"{what}: end effector {ee!r} is constrained twice")
            T_root_link = pose_stamped_to_root(pose, self.frames, q_ref, f"{what}, link {link!r}")
            T[e] = T_root_link @ np.linalg.inv(T_ee_link)
            offset[e] = T_ee_link
            mask[e] = True
            pos_only[e] = bool(position_only[k]) if position_only else False
            if pos_only[e] and not np.allclose(T_ee_link[:3, 3], 0):
                # position of a offset frame needs the orientation; keep it exact by constraining the offset point
                raise RequestError(ErrorCode.INVALID_GOAL,
                                   f"{what}: position_only is supported on end-effector links "
                                   f"{self.robot.end_effectors}, not on the offset frame {link!r}")
        return TargetSpec(T, mask, pos_only, offset)

    def objectives_from(self, names, weights) -> dict[str, float]:
        names, weights = list(names), list(weights)
        if len(names) != len(weights):
            raise RequestError(ErrorCode.INVALID_REQUEST,
                               f"objective_names has {len(names)} entries but objective_weights {len(weights)}")
        out = {"joint_limits": self.config.weight_joint_limits, "manipulability": self.config.weight_manipulability}
        for name, w in zip(names, weights):
            canon = OBJECTIVE_ALIASES.get(name, name)
            if canon not in OBJECTIVE_NAMES:
                raise RequestError(ErrorCode.INVALID_REQUEST,
                                   f"unknown objective {name!r}; known: {list(OBJECTIVE_NAMES)} "
                                   f"(aliases {sorted(OBJECTIVE_ALIASES)})")
            if not math.isfinite(w) or w < 0:
                raise RequestError(ErrorCode.INVALID_REQUEST, f"objective {name!r}: weight {w} must be finite, >= 0")
            out[canon] = float(w)
        return {k: v for k, v in out.items() if v > 0}

    # ------------------------------------------------------------------ GetIKSolutions
    def get_ik_solutions(self, request, response, world=None):
        """Fill a GetIKSolutions response (never raises for bad input)."""
        t0 = time.monotonic()
        response.joint_names = list(self.robot.joint_names)
        try:
            specs, errors, opts = self._parse_request(request, t0)
        except RequestError as exc:
            response.error_code, response.message = exc.code, exc.message
            response.solve_time = time.monotonic() - t0
            return response
        if opts.avoid_collisions and self.checker is None:
            response.error_code = ErrorCode.COLLISION_CHECKING_UNAVAILABLE
            response.message = "avoid_collisions requested but exact collision checking is unavailable (python-fcl)"
            response.solve_time = time.monotonic() - t0
            return response
        valid_idx = [i for i, e in enumerate(errors) if e is None]
        solved = self.solve([specs[i] for i in valid_idx], opts, world) if valid_idx else []
        results: list = [None] * len(errors)
        for i, sol in zip(valid_idx, solved):
            results[i] = sol
        from ikdiffuser_ros.msg import IKTargetResult

        codes = []
        for i, err in enumerate(errors):
            r = IKTargetResult()
            if err is not None:
                r.error_code, r.message = err.code, err.message
            else:
                sol = results[i]
                r.error_code, r.message = int(sol.code), sol.message or "ok"
                r.num_solutions = int(len(sol.q))
                r.positions = sol.q.reshape(-1).astype(float).tolist()
                r.position_errors = sol.position_error.astype(float).tolist()
                r.rotation_errors = sol.rotation_error.astype(float).tolist()
                r.in_collision = [bool(c) for c in sol.in_collision]
            codes.append(int(r.error_code))
            response.results.append(r)
        failed = [c for c in codes if c != ErrorCode.SUCCESS]
        if not failed:
            response.error_code = ErrorCode.SUCCESS
            response.message = f"{len(codes)} target(s) solved"
        else:
            distinct = sorted(set(failed))
            response.error_code = distinct[0] if len(distinct) == 1 else ErrorCode.FAILURE
            first = next(i for i, c in enumerate(codes) if c != ErrorCode.SUCCESS)
            response.message = (f"{len(failed)} of {len(codes)} target(s) failed; target {first}: "
                                f"{response.results[first].message}")
        response.solve_time = time.monotonic() - t0
        return response

    def _parse_request(self, request, t0: float):
        cfg = self.config
        targets = list(request.targets)
        if not targets:
            raise RequestError(ErrorCode.INVALID_REQUEST, "empty request: no targets")
        if len(targets) > cfg.max_targets:
            raise RequestError(ErrorCode.INVALID_REQUEST,
                               f"{len(targets)} targets exceed max_targets={cfg.max_targets}")
        num = int(request.num_solutions) or cfg.default_num_solutions
        if num > cfg.max_num_solutions:
            raise RequestError(ErrorCode.INVALID_REQUEST,
                               f"num_solutions={num} exceeds max_num_solutions={cfg.max_num_solutions}")
        timeout = duration_to_seconds(request.timeout)
        if timeout < 0 or not math.isfinite(timeout):
            raise RequestError(ErrorCode.INVALID_REQUEST, f"negative timeout {timeout:.9g} s")
        timeout = min(timeout or cfg.default_timeout, cfg.max_timeout)
        seed_weight = float(request.seed_weight)
        if not math.isfinite(seed_weight) or seed_weight < 0:
            raise RequestError(ErrorCode.INVALID_REQUEST, f"seed_weight {seed_weight} must be finite and >= 0")
        objectives = self.objectives_from(request.objective_names, request.objective_weights)
        seed = None
        if len(request.seed_state.name) or len(request.seed_state.position):
            seed, _, _ = self.layout.from_joint_state(request.seed_state, what="seed_state")
            if seed_weight > 0:
                objectives["seed"] = seed_weight
        elif "seed" in objectives:
            raise RequestError(ErrorCode.INVALID_REQUEST, "the seed objective needs a seed_state")
        specs, errors = [], []
        for b, target in enumerate(targets):
            try:
                specs.append(self.target_spec(target.link_names, target.poses, target.position_only, seed,
                                              f"target {b}"))
                errors.append(None)
            except RequestError as exc:
                specs.append(None)
                errors.append(exc)
        opts = SolveOptions(
            num_solutions=num, seed=seed, objectives=objectives, avoid_collisions=bool(request.avoid_collisions),
            random_seed=int(request.random_seed) if request.random_seed >= 0 else None,
            deadline=t0 + timeout, keep_invalid=cfg.return_failed_solutions)
        return specs, errors, opts


def error_from_exception(exc: Exception) -> tuple[int, str]:
    """Any exception -> (code, message) for an answer (the callback never lets it escape)."""
    if isinstance(exc, RequestError):
        return exc.code, exc.message
    if isinstance(exc, IKDiffuserError):
        return ErrorCode.INVALID_REQUEST, f"{type(exc).__name__}: {exc}"
    return ErrorCode.FAILURE, f"internal error: {type(exc).__name__}: {exc}"
