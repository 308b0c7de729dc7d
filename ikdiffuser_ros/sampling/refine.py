"""Batched Levenberg-Marquardt polish of IK candidates, and de-duplication.

:func:`refine` takes ``M`` candidate joint vectors at once (e.g. all ``B * N``
diffusion samples) and runs damped least squares in float64 on every row in
parallel, with its own damping per row:

* error of end effector ``e``: ``[p*_e - p_e, log(R*_e R_e^T)]`` (position [m],
  rotation vector [rad] in root axes), matched by the geometric Jacobian rows
  ``(v, w)`` of :meth:`RobotModel.fk_and_jacobian`. Unconstrained end effectors
  (``target_mask`` False) contribute nothing, and ``position_only`` ones only
  their position rows, so the other joints stay where they are unless a
  constrained end effector needs them.
* step: ``(J^T W J + lambda * (diag(J^T W J) + I)) dq = J^T W e`` with ``W`` the
  per-row weights (rotation rows scaled by ``rot_weight`` [m/rad]).
  A step that lowers the weighted squared error is accepted and ``lambda``
  shrinks; otherwise it is rejected and ``lambda`` grows (classic LM).
* joint limits: a joint sitting on a bound whose gradient pushes it outwards is
  frozen for the step (active set), the step is capped to ``max_step`` and the
  result is clamped into ``[lower, upper]``. Wrapping variables (continuous
  joints and planar/floating angles with the default ``[-pi, pi]`` range) are
  wrapped instead of clamped.
* a row stops when it converges (every constrained end effector within
  ``pos_tol`` [m] and, unless position-only, ``rot_tol`` [rad]), when it
  stalls (``patience`` iterations in a row without cutting its error to
  ``progress_ratio`` of the previous value, or ``lambda`` past
  ``lambda_max``: a local minimum, a limit, or an unreachable target), or at
  ``max_iters``. Converged rows are not touched again, so rows
  cost nothing once done.

Only the rows still running are evaluated at each iteration, so a batch where
most samples start near a solution is cheap.

De-duplication (:func:`unique_mask`, :func:`deduplicate`, :func:`count_distinct`)
compares joint vectors by the largest per-joint difference, scaled by a
per-joint tolerance (wrap-aware for wrapping joints).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from ikdiffuser_ros.kinematics.robot_model import RobotModel
from ikdiffuser_ros.kinematics.transforms import so3_log

_ANGLE_SUFFIXES = ("theta", "yaw", "roll", "pitch")
_TRANSLATION_SUFFIXES = ("x", "y", "z")


@dataclass(frozen=True)
class RefineConfig:
    """Settings of :func:`refine` (units: m, rad)."""

    #: Maximum LM iterations (each is one batched FK + Jacobian of the running rows).
    max_iters: int = 80
    #: Success tolerance on the position of every constrained end effector [m].
    pos_tol: float = 1e-5
    #: Success tolerance on the orientation of every rotation-constrained end effector [rad].
    rot_tol: float = 1e-4
    #: Weight of rotation error rows relative to position rows [m/rad].
    rot_weight: float = 0.2
    #: Initial damping.
    lambda_init: float = 1e-3
    #: Damping multiplier after a rejected step.
    lambda_up: float = 8.0
    #: Damping multiplier after an accepted step.
    lambda_down: float = 0.25
    #: Lower clamp on the damping.
    lambda_min: float = 1e-9
    #: A row whose damping grows past this is declared stalled and stops.
    lambda_max: float = 1e6
    #: Largest change of any joint in one step [rad or m].
    max_step: float = 0.5
    #: A step "makes progress" when it cuts the weighted squared error below this fraction of the old one.
    progress_ratio: float = 0.9
    #: A row stops (stalled) after this many consecutive iterations without progress.
    patience: int = 15


@dataclass
class RefineResult:
    """Output of :func:`refine`; every field has leading shape ``(M,)``.

    Attributes:
        q: (M, n) float64 refined joint values, within limits.
        position_error: (M,) worst position error over constrained end effectors [m].
        rotation_error: (M,) worst rotation error over rotation-constrained end effectors [rad]
            (0 when none is rotation-constrained).
        converged: (M,) bool, both errors within the tolerances.
        iterations: (M,) int64 LM iterations spent on each row.
    """

    q: torch.Tensor
    position_error: torch.Tensor
    rotation_error: torch.Tensor
    converged: torch.Tensor
    iterations: torch.Tensor


# ---------------------------------------------------------------------------- joint kinds
def joint_kinds(model: RobotModel) -> tuple[torch.Tensor, torch.Tensor]:
    """(prismatic (n,) bool, wrapping (n,) bool) of the model's active variables.

    ``prismatic``: the variable is a length [m] (prismatic joints, planar /
    floating translations). ``wrapping``: the variable is an angle with period
    ``2 pi`` whose range is exactly ``[-pi, pi]`` (continuous joints, planar
    theta, floating yaw / roll), so ``-pi`` and ``pi`` are the same value.
    """
    prismatic, wrapping = [], []
    for i, name in enumerate(model.joint_names):
        joint = model.urdf.joints.get(name)
        if joint is not None:
            is_lin = joint.type == "prismatic"
            periodic = joint.type == "continuous"
        else:
            suffix = name.rsplit("/", 1)[-1]
            is_lin = suffix in _TRANSLATION_SUFFIXES
            periodic = suffix in ("theta", "yaw", "roll")
        full = (abs(float(model.lower[i]) + math.pi) < 1e-9 and abs(float(model.upper[i]) - math.pi) < 1e-9)
        prismatic.append(is_lin)
        wrapping.append(periodic and full)
    return torch.tensor(prismatic), torch.tensor(wrapping)


def wrap_to_pi(x: torch.Tensor) -> torch.Tensor:
    """Angles -> [-pi, pi)."""
    return torch.remainder(x + math.pi, 2 * math.pi) - math.pi


def project_to_limits(q: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor,
                      wrapping: torch.Tensor | None = None) -> torch.Tensor:
    """Clamp ``q`` (..., n) into the limits; wrapping variables are wrapped to [-pi, pi) first."""
    if wrapping is not None and bool(wrapping.any()):
        q = torch.where(wrapping.to(q.device), wrap_to_pi(q), q)
    return torch.minimum(torch.maximum(q, lower), upper)


# ---------------------------------------------------------------------------- errors
def pose_residual(T: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(..., E, 4, 4) current and target poses -> (..., E, 6) residual [p* - p, log(R* R^T)]."""
    dp = targets[..., :3, 3] - T[..., :3, 3]
    dr = so3_log(targets[..., :3, :3] @ T[..., :3, :3].transpose(-1, -2))
    return torch.cat([dp, dr], -1)


def _row_errors(res: torch.Tensor, target_mask: torch.Tensor, rot_mask: torch.Tensor):
    """(M, E, 6) residuals -> worst position and rotation error over the constrained EEs, each (M,)."""
    pos = res[..., :3].norm(dim=-1)
    rot = res[..., 3:].norm(dim=-1)
    pos = torch.where(target_mask, pos, torch.zeros_like(pos)).amax(-1)
    rot = torch.where(rot_mask, rot, torch.zeros_like(rot)).amax(-1)
    return pos, rot


def tip_targets(targets: torch.Tensor, tip_points: torch.Tensor | None) -> torch.Tensor:
    """(..., E, 4, 4) end-effector targets -> targets of the tip frames ``T_ee @ [I | p]``.

    ``tip_points`` (..., E, 3): the tip's position in its end effector's frame [m] (None = the
    end effector itself). Tips are rigid on their end effector, so only positions change.
    """
    if tip_points is None:
        return targets
    out = targets.clone()
    out[..., :3, 3] = targets[..., :3, 3] + (targets[..., :3, :3] @ tip_points.unsqueeze(-1)).squeeze(-1)
    return out


def tip_fk_and_jacobian(model: RobotModel, q: torch.Tensor, tip_points: torch.Tensor | None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, n) -> poses (M, E, 4, 4) and geometric Jacobians (M, E, 6, n) of the tip frames.

    A tip at ``p`` [m] in end effector ``e``'s frame moves with ``v_tip = v_e + w x (R_e p)``, so its
    Jacobian's linear rows are ``J_v - [R_e p]_x J_w`` (rows ``(v, w)`` in root axes as
    :meth:`RobotModel.fk_and_jacobian`).
    """
    T, J = model.fk_and_jacobian(q)
    if tip_points is None:
        return T, J
    r = (T[..., :3, :3] @ tip_points.to(T.dtype).unsqueeze(-1)).squeeze(-1)  # (M, E, 3) lever arm, root axes
    T_tip = T.clone()
    T_tip[..., :3, 3] = T[..., :3, 3] + r
    J_tip = J.clone()
    J_tip[..., :3, :] = J[..., :3, :] - torch.linalg.cross(r.unsqueeze(-1).expand_as(J[..., 3:, :]),
                                                           J[..., 3:, :], dim=-2)
    return T_tip, J_tip


def _frozen_rows(frozen: torch.Tensor | None, M: int, n: int, device) -> torch.Tensor:
    """(n,) or (M, n) bool (or None) -> (M, n) bool: joints the refinement must not move."""
    if frozen is None:
        return torch.zeros(M, n, dtype=torch.bool, device=device)
    return frozen.to(device=device, dtype=torch.bool).expand(M, n)


# ---------------------------------------------------------------------------- LM
@torch.no_grad()
def _broadcast_targets(targets: torch.Tensor, target_mask: torch.Tensor | None, position_only: torch.Tensor | None,
                       M: int, E: int, device, dtype) -> tuple[torch.Tensor, ...]:
    """Targets (M, E, 4, 4) and (M, E) masks: constrained EEs (default all), position-only EEs
    (default none) and EEs whose rotation is constrained (constrained and not position-only)."""
    targets = targets.to(device=device, dtype=dtype).expand(M, E, 4, 4)
    target_mask = (torch.ones(M, E, dtype=torch.bool, device=device) if target_mask is None
                   else target_mask.to(device=device, dtype=torch.bool).expand(M, E))
    position_only = (torch.zeros(M, E, dtype=torch.bool, device=device) if position_only is None
                     else position_only.to(device=device, dtype=torch.bool).expand(M, E))
    return targets, target_mask, position_only, target_mask & ~position_only


def refine(
    model: RobotModel,
    q0: torch.Tensor,
    targets: torch.Tensor,
    target_mask: torch.Tensor | None = None,
    position_only: torch.Tensor | None = None,
    config: RefineConfig = RefineConfig(),
    deadline: float | None = None,
    frozen: torch.Tensor | None = None,
    tip_points: torch.Tensor | None = None,
) -> RefineResult:
    """Polish ``M`` IK candidates with batched Levenberg-Marquardt (see the module docstring).

    Args:
        model: the robot.
        q0: (M, n) initial joint values (any float dtype; projected into limits first).
        targets: (M, E, 4, 4) or (E, 4, 4) target poses in the root frame.
        target_mask: (M, E) or (E,) bool, True = constrained (default: all).
        position_only: (M, E) or (E,) bool, True = only the position is constrained.
        config: tolerances and LM settings.
        deadline: optional ``time.monotonic()`` value after which iteration stops.
        frozen: (n,) or (M, n) bool, joints held where ``q0`` has them (locked joints): their
            Jacobian columns are dropped from every step.
        tip_points: (M, E, 3) or (E, 3) positions [m] of the constrained frames in their end
            effectors' frames (a TCP on the hand...): errors and tolerances apply there
            (:func:`tip_targets`); None = at the end effectors.

    Returns:
        :class:`RefineResult` with float64 tensors on ``q0``'s device.
    """
    device = q0.device
    dtype = torch.float64
    q = q0.detach().to(dtype).clone()
    M, n = q.shape
    E = len(model.end_effectors)
    targets, target_mask, position_only, rot_mask = _broadcast_targets(
        targets, target_mask, position_only, M, E, device, dtype)
    lower, upper = model.limits(dtype, device)
    _, wrapping = joint_kinds(model)
    wrapping = wrapping.to(device)
    fixed = _frozen_rows(frozen, M, n, device)
    q = torch.where(fixed, q, project_to_limits(q, lower, upper, wrapping))
    if tip_points is not None:
        tip_points = tip_points.to(device=device, dtype=dtype).expand(M, E, 3)
        targets = tip_targets(targets, tip_points)

    # per-row weights of the 6E residual rows
    w = torch.cat([target_mask.unsqueeze(-1).expand(M, E, 3).to(dtype),
                   rot_mask.unsqueeze(-1).expand(M, E, 3).to(dtype) * config.rot_weight], -1)  # (M, E, 6)
    w = w.reshape(M, 6 * E)

    T, J = tip_fk_and_jacobian(model, q, tip_points)
    res = pose_residual(T, targets)
    pos_err, rot_err = _row_errors(res, target_mask, rot_mask)
    converged = (pos_err <= config.pos_tol) & (rot_err <= config.rot_tol)
    lam = torch.full((M,), config.lambda_init, dtype=dtype, device=device)
    iters = torch.zeros(M, dtype=torch.int64, device=device)
    no_progress = torch.zeros(M, dtype=torch.int64, device=device)
    running = ~converged
    # state of the running rows, indexed by `idx`
    idx = running.nonzero().squeeze(-1)
    cur_J = J[idx].reshape(-1, 6 * E, n)
    cur_e = res[idx].reshape(-1, 6 * E)
    eye = torch.eye(n, dtype=dtype, device=device)

    for _ in range(config.max_iters):
        if idx.numel() == 0 or (deadline is not None and time.monotonic() > deadline):
            break
        wi = w[idx]
        qi = q[idx]
        li = lam[idx]
        Jw = cur_J * wi.unsqueeze(-1)  # W^(1/2) J with W^(1/2) = w (w in {0, 1, rot_weight})
        ew = cur_e * wi
        g = (Jw.transpose(1, 2) @ ew.unsqueeze(-1)).squeeze(-1)  # (m, n) = J^T W e
        # active set: joints on a bound whose descent direction leaves the box are frozen
        at_low = (qi <= lower + 1e-12) & (g < 0) & ~wrapping
        at_up = (qi >= upper - 1e-12) & (g > 0) & ~wrapping
        free = (~(at_low | at_up | fixed[idx])).to(dtype)
        Jf = Jw * free.unsqueeze(1)
        H = Jf.transpose(1, 2) @ Jf
        A = H + li.view(-1, 1, 1) * (torch.diag_embed(H.diagonal(dim1=1, dim2=2)) + eye)
        dq = torch.linalg.solve(A, (g * free).unsqueeze(-1)).squeeze(-1)
        scale = (config.max_step / dq.abs().amax(-1).clamp_min(1e-300)).clamp(max=1.0)
        q_new = torch.where(fixed[idx], qi, project_to_limits(qi + dq * scale.unsqueeze(-1), lower, upper, wrapping))

        T_new, J_new = tip_fk_and_jacobian(model, q_new, None if tip_points is None else tip_points[idx])
        res_new = pose_residual(T_new, targets[idx])
        e_new = res_new.reshape(-1, 6 * E)
        cost_old = (ew * ew).sum(-1)
        cost_new = ((e_new * wi) ** 2).sum(-1)
        accept = cost_new < cost_old
        progress = cost_new < config.progress_ratio * cost_old
        no_progress[idx] = torch.where(progress, 0, no_progress[idx] + 1)
        iters[idx] += 1
        q[idx] = torch.where(accept.unsqueeze(-1), q_new, qi)
        lam[idx] = torch.where(accept, (li * config.lambda_down).clamp_min(config.lambda_min), li * config.lambda_up)
        cur_J = torch.where(accept.view(-1, 1, 1), J_new.reshape(-1, 6 * E, n), cur_J)
        cur_e = torch.where(accept.unsqueeze(-1), e_new, cur_e)
        p_i, r_i = _row_errors(cur_e.view(-1, E, 6), target_mask[idx], rot_mask[idx])
        pos_err[idx] = p_i
        rot_err[idx] = r_i
        done_ok = (p_i <= config.pos_tol) & (r_i <= config.rot_tol)
        converged[idx] = done_ok
        stalled = (lam[idx] > config.lambda_max) | (no_progress[idx] >= config.patience)
        keep = ~(done_ok | stalled)
        idx, cur_J, cur_e = idx[keep], cur_J[keep], cur_e[keep]

    return RefineResult(q=q, position_error=pos_err, rotation_error=rot_err, converged=converged,
                        iterations=iters)


# ---------------------------------------------------------------------------- de-duplication
def joint_tolerances(model: RobotModel, rad: float = 0.05, m: float = 0.005,
                     dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """(n,) per-joint tolerance: ``rad`` for angular variables, ``m`` for lengths."""
    prismatic, _ = joint_kinds(model)
    return torch.where(prismatic, torch.tensor(m, dtype=dtype), torch.tensor(rad, dtype=dtype))


def unique_mask(
    q: torch.Tensor,
    valid: torch.Tensor | None = None,
    tol: float | torch.Tensor = 1e-3,
    wrapping: torch.Tensor | None = None,
    max_elements: int = 1 << 24,
) -> torch.Tensor:
    """(..., N, n) solutions -> (..., N) bool: valid and not a repeat of an earlier valid one.

    Greedy leader clustering in row order: row ``i`` is kept when it is valid
    and no earlier *kept* row ``j`` has ``max_k |q_ik - q_jk| / tol_k <= 1``
    (``tol`` a float or (n,) tensor; wrapping joints compare modulo ``2 pi``).
    So every kept pair differs by more than the tolerance in some joint, and
    every dropped row is within the tolerance of a kept one. Cost: one chunked
    all-pairs pass; rows with a neighbour are then resolved per batch on their
    dense closeness matrix (one O(A) step per row).
    """
    *batch, N, n = q.shape
    if N == 0 or q.numel() == 0:
        return torch.zeros(*batch, N, dtype=torch.bool, device=q.device)
    q = q.reshape(-1, N, n)
    Bf = q.shape[0]
    valid = (torch.ones(Bf, N, dtype=torch.bool, device=q.device) if valid is None
             else valid.reshape(Bf, N).to(q.device, torch.bool))
    tol_t = torch.as_tensor(tol, dtype=q.dtype, device=q.device).expand(n)
    wrap = None if wrapping is None or not bool(wrapping.any()) else wrapping.to(q.device)
    scaled = q / tol_t

    def close_block(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(..., c, n), (..., m, n) scaled rows -> (..., c, m) bool, Chebyshev distance <= 1."""
        if wrap is None:
            return torch.cdist(a, b, p=float("inf")) <= 1.0
        diff = (a[..., :, None, :] - b[..., None, :, :]) * tol_t
        diff = torch.where(wrap, wrap_to_pi(diff), diff)
        return (diff.abs() / tol_t).amax(-1) <= 1.0

    per_row = N * (n if wrap is not None else 1)
    # 1. rows with no other valid row within tolerance are kept as they are (one chunked pass)
    has_neighbour = torch.zeros(Bf, N, dtype=torch.bool, device=q.device)
    cols = torch.arange(N, device=q.device)
    chunk = max(1, min(N, max_elements // max(1, Bf * per_row)))
    for start in range(0, N, chunk):
        stop = min(N, start + chunk)
        not_self = cols[None, :] != cols[start:stop, None]
        close = close_block(scaled[:, start:stop], scaled) & valid[:, None, :] & not_self
        has_neighbour[:, start:stop] = close.any(-1)
    keep = valid & ~has_neighbour
    # 2. greedy leaders among the rest, per batch, in row order, on their dense closeness matrix
    ambiguous = valid & has_neighbour
    for b in ambiguous.any(-1).nonzero().flatten().tolist():
        idx = ambiguous[b].nonzero().flatten()
        qa = scaled[b, idx]
        A = len(idx)
        close = np.zeros((A, A), dtype=bool)
        step = max(1, min(A, max_elements // max(1, A * (n if wrap is not None else 1))))
        for start in range(0, A, step):
            close[start:start + step] = close_block(qa[start:start + step], qa).cpu().numpy()
        removed = np.zeros(A, dtype=bool)
        kept = np.zeros(A, dtype=bool)
        for i in range(A):
            if not removed[i]:
                kept[i] = True
                removed |= close[i]
        keep[b, idx[torch.from_numpy(kept).to(idx.device)]] = True
    return keep.reshape(*batch, N)


def deduplicate(
    q: torch.Tensor,
    success: torch.Tensor | None = None,
    tol: float | torch.Tensor = 1e-3,
    wrapping: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge solutions that converged to the same configuration.

    Args:
        q: (..., N, n) solutions.
        success: (..., N) bool; only successful rows are kept / counted (default all).
        tol: "same configuration" tolerance per joint [rad or m], float or (n,).
        wrapping: (n,) bool, variables compared modulo 2 pi (see :func:`joint_kinds`).

    Returns:
        (keep (..., N) bool: the first of each group of equal successful solutions,
        count (...,) int64: number of such groups).
    """
    keep = unique_mask(q, success, tol, wrapping)
    return keep, keep.sum(-1)


def count_distinct(
    q: torch.Tensor,
    success: torch.Tensor | None = None,
    tol: float | torch.Tensor = 0.05,
    wrapping: torch.Tensor | None = None,
) -> torch.Tensor:
    """(..., N, n) -> (...,) number of distinct (successful) solutions.

    Benchmark definition: two solutions are distinct when they differ by more
    than ``tol`` in some joint (use :func:`joint_tolerances` for "0.05 rad or
    5 mm"), counted by greedy leader clustering as in :func:`unique_mask`.
    """
    return unique_mask(q, success, tol, wrapping).sum(-1)


# ---------------------------------------------------------------------------- null-space polish
@dataclass(frozen=True)
class PolishConfig:
    """Settings of :func:`polish` (step lengths are the largest joint change, rad or m)."""

    #: Polish iterations (each: one cost gradient, one null-space step, one short LM re-convergence).
    iters: int = 8
    #: Initial step length per row.
    step: float = 0.2
    #: Step growth after an accepted step and shrink after a rejected one.
    grow: float = 1.5
    shrink: float = 0.4
    #: Largest step length.
    max_step: float = 0.5
    #: Rows whose step falls below this stop.
    min_step: float = 2e-3
    #: LM iterations allowed to restore the pose after each null-space step.
    reconverge_iters: int = 8


def polish(
    model: RobotModel,
    result: RefineResult,
    targets: torch.Tensor,
    cost_fn,
    target_mask: torch.Tensor | None = None,
    position_only: torch.Tensor | None = None,
    config: RefineConfig = RefineConfig(),
    polish_config: PolishConfig = PolishConfig(),
    deadline: float | None = None,
    frozen: torch.Tensor | None = None,
    tip_points: torch.Tensor | None = None,
) -> RefineResult:
    """Lower ``cost_fn`` on converged rows while keeping their end-effector poses.

    Each iteration moves every converged row along the projection of
    ``-grad cost`` onto the null space of its (weighted, masked) task Jacobian,
    by a per-row step length (normalised to the largest joint change), then
    re-converges it with a short :func:`refine`. The move is kept only when the
    row is still converged and its cost went down; the step length then grows,
    else it shrinks. Non-converged rows are returned unchanged. Redundant
    robots, unconstrained end effectors and position-only targets leave room
    to move; a fully constrained 6-DOF arm has none (the cost cannot change).

    Args:
        result: the output of :func:`refine` (not modified).
        targets, target_mask, position_only: as for :func:`refine`.
        cost_fn: ``q (M, n) float64 -> (M,)``, differentiable, row-wise (row i's cost depends
            only on row i); always called on all M rows.
        frozen, tip_points: as for :func:`refine` (frozen joints do not move, errors at the tips).

    Returns:
        a new :class:`RefineResult`.
    """
    q = result.q.clone()
    pos_err, rot_err = result.position_error.clone(), result.rotation_error.clone()
    converged = result.converged.clone()
    iters = result.iterations.clone()
    M, n = q.shape
    E = len(model.end_effectors)
    device, dtype = q.device, q.dtype
    targets, target_mask, position_only, rot_mask = _broadcast_targets(
        targets, target_mask, position_only, M, E, device, dtype)
    w = torch.cat([target_mask.unsqueeze(-1).expand(M, E, 3).to(dtype),
                   rot_mask.unsqueeze(-1).expand(M, E, 3).to(dtype)], -1).reshape(M, 6 * E)
    step = torch.full((M,), polish_config.step, dtype=dtype, device=device)
    lower, upper = model.limits(dtype, device)
    short = RefineConfig(**{**config.__dict__, "max_iters": polish_config.reconverge_iters})
    eye = torch.eye(n, dtype=dtype, device=device)
    fixed = _frozen_rows(frozen, M, n, device)
    if tip_points is not None:
        tip_points = tip_points.to(device=device, dtype=dtype).expand(M, E, 3)
    for _ in range(polish_config.iters):
        idx = (converged & (step >= polish_config.min_step)).nonzero().squeeze(-1)
        if idx.numel() == 0 or (deadline is not None and time.monotonic() > deadline):
            break
        qa = q[idx].detach().requires_grad_(True)
        with torch.enable_grad():
            # the cost sees all M rows (row-wise objectives such as per-target seeds stay aligned)
            c = cost_fn(q.detach().index_put((idx,), qa))[idx]
            (g,) = torch.autograd.grad(c.sum(), qa, allow_unused=True)
        if g is None:
            break
        g = torch.nan_to_num(g.detach())
        c = c.detach()
        with torch.no_grad():
            tips = None if tip_points is None else tip_points[idx]
            J = tip_fk_and_jacobian(model, q[idx], tips)[1].reshape(-1, 6 * E, n) * w[idx].unsqueeze(-1)
            J = J * (~fixed[idx]).to(dtype).unsqueeze(1)
            N = eye - torch.linalg.pinv(J, rtol=1e-8) @ J
            d = -(N @ g.unsqueeze(-1)).squeeze(-1)
            # joints on a bound cannot move outwards; frozen joints not at all
            d = torch.where(((q[idx] <= lower + 1e-12) & (d < 0)) | ((q[idx] >= upper - 1e-12) & (d > 0))
                            | fixed[idx], torch.zeros_like(d), d)
            dn = d.abs().amax(-1)
            movable = dn > 1e-12
            q_try = q[idx] + d / dn.clamp_min(1e-12).unsqueeze(-1) * step[idx].unsqueeze(-1)
            r = refine(model, q_try, targets[idx], target_mask[idx], position_only[idx], short, deadline,
                       fixed[idx], tips)
            c_new = cost_fn(q.index_put((idx,), r.q))[idx]
            accept = movable & r.converged & (c_new < c)
            q[idx] = torch.where(accept.unsqueeze(-1), r.q, q[idx])
            pos_err[idx] = torch.where(accept, r.position_error, pos_err[idx])
            rot_err[idx] = torch.where(accept, r.rotation_error, rot_err[idx])
            iters[idx] += r.iterations
            step[idx] = torch.where(accept, (step[idx] * polish_config.grow).clamp(max=polish_config.max_step),
                                    torch.where(movable, step[idx] * polish_config.shrink, torch.zeros_like(step[idx])))
    return RefineResult(q=q, position_error=pos_err, rotation_error=rot_err, converged=converged, iterations=iters)
