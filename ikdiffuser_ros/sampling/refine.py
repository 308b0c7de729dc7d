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
from dataclasses import dataclass

import numpy as np
import torch

from ikdiffuser_ros.clock import UnitClock
from ikdiffuser_ros.kinematics.joint_names import axis_of
from ikdiffuser_ros.kinematics.robot_model import RobotModel
from ikdiffuser_ros.kinematics.transforms import so3_log


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
        else:  # a planar / floating joint's variable
            var = axis_of(name)
            is_lin = var is not None and var.prismatic
            periodic = var is not None and var.wraps
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
    bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
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
        bounds: (lower (n,), upper (n,)) box [rad or m] the rows stay in (default the joint limits;
            a narrower box keeps answers near a seed).

    Returns:
        :class:`RefineResult` with float64 tensors on ``q0``'s device.
    """
    p = _LMProblem.build(model, q0, targets, target_mask, position_only, config, frozen, tip_points, bounds)
    st = _LMState.start(p)
    clock = UnitClock(deadline)
    for _ in range(config.max_iters):
        if st.idx.numel() == 0 or not clock.time_for_another():
            break
        q_new, cost_old = _lm_step(p, st)
        _lm_update(p, st, q_new, cost_old)
    return RefineResult(q=st.q, position_error=st.pos_err, rotation_error=st.rot_err, converged=st.converged,
                        iterations=st.iters)


@dataclass
class _LMProblem:
    """What stays fixed during :func:`refine`: (M, E, 4, 4) end-effector targets and the targets of
    the tip points, (M, E) masks, (M, 6E) residual weights, (M, n) frozen joints, limits, wrapping
    joints, (M, E, 3) tip points or None."""

    model: RobotModel
    config: RefineConfig
    q0: torch.Tensor
    ee_targets: torch.Tensor
    targets: torch.Tensor
    target_mask: torch.Tensor
    position_only: torch.Tensor
    rot_mask: torch.Tensor
    w: torch.Tensor
    fixed: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor
    wrapping: torch.Tensor
    tip_points: torch.Tensor | None

    @classmethod
    def build(cls, model, q0, targets, target_mask, position_only, config, frozen, tip_points,
              bounds=None) -> "_LMProblem":
        device, dtype = q0.device, torch.float64
        q = q0.detach().to(dtype).clone()
        M, n = q.shape
        E = len(model.end_effectors)
        targets, target_mask, position_only, rot_mask = _broadcast_targets(
            targets, target_mask, position_only, M, E, device, dtype)
        lower, upper = model.limits(dtype, device) if bounds is None else (
            torch.as_tensor(b, dtype=dtype, device=device) for b in bounds)
        wrapping = joint_kinds(model)[1].to(device)
        fixed = _frozen_rows(frozen, M, n, device)
        ee_targets = targets
        if tip_points is not None:
            tip_points = tip_points.to(device=device, dtype=dtype).expand(M, E, 3)
            targets = tip_targets(targets, tip_points)
        w = torch.cat([target_mask.unsqueeze(-1).expand(M, E, 3).to(dtype),
                       rot_mask.unsqueeze(-1).expand(M, E, 3).to(dtype) * config.rot_weight], -1).reshape(M, 6 * E)
        q = torch.where(fixed, q, project_to_limits(q, lower, upper, wrapping))
        return cls(model, config, q, ee_targets, targets, target_mask, position_only, rot_mask, w, fixed, lower,
                   upper, wrapping, tip_points)

    def tips(self, idx: torch.Tensor) -> torch.Tensor | None:
        return None if self.tip_points is None else self.tip_points[idx]


@dataclass
class _LMState:
    """Per-row state of :func:`refine` ((M,) or (M, n)), plus the running rows ``idx`` (m,) with their
    current Jacobians (m, 6E, n), residuals (m, 6E) and damping."""

    q: torch.Tensor
    pos_err: torch.Tensor
    rot_err: torch.Tensor
    converged: torch.Tensor
    lam: torch.Tensor
    iters: torch.Tensor
    no_progress: torch.Tensor
    idx: torch.Tensor
    cur_J: torch.Tensor
    cur_e: torch.Tensor

    @classmethod
    def start(cls, p: _LMProblem) -> "_LMState":
        q = p.q0
        (M, n), E, dev = q.shape, p.targets.shape[1], q.device
        T, J = tip_fk_and_jacobian(p.model, q, p.tip_points)
        res = pose_residual(T, p.targets)
        pos_err, rot_err = _row_errors(res, p.target_mask, p.rot_mask)
        converged = (pos_err <= p.config.pos_tol) & (rot_err <= p.config.rot_tol)
        idx = (~converged).nonzero().squeeze(-1)
        return cls(q, pos_err, rot_err, converged, torch.full((M,), p.config.lambda_init, dtype=q.dtype, device=dev),
                   torch.zeros(M, dtype=torch.int64, device=dev), torch.zeros(M, dtype=torch.int64, device=dev),
                   idx, J[idx].reshape(-1, 6 * E, n), res[idx].reshape(-1, 6 * E))


def _lm_step(p: _LMProblem, st: _LMState) -> tuple[torch.Tensor, torch.Tensor]:
    """One damped step of the running rows: (candidate q (m, n), weighted squared error before (m,))."""
    idx, config = st.idx, p.config
    wi, qi, li = p.w[idx], st.q[idx], st.lam[idx]
    Jw = st.cur_J * wi.unsqueeze(-1)  # W^(1/2) J with W^(1/2) = w (w in {0, 1, rot_weight})
    ew = st.cur_e * wi
    g = (Jw.transpose(1, 2) @ ew.unsqueeze(-1)).squeeze(-1)  # (m, n) = J^T W e
    # active set: joints on a bound whose descent direction leaves the box are frozen (locked ones always)
    at_low = (qi <= p.lower + 1e-12) & (g < 0) & ~p.wrapping
    at_up = (qi >= p.upper - 1e-12) & (g > 0) & ~p.wrapping
    free = (~(at_low | at_up | p.fixed[idx])).to(qi.dtype)
    Jf = Jw * free.unsqueeze(1)
    H = Jf.transpose(1, 2) @ Jf
    eye = torch.eye(qi.shape[-1], dtype=qi.dtype, device=qi.device)
    A = H + li.view(-1, 1, 1) * (torch.diag_embed(H.diagonal(dim1=1, dim2=2)) + eye)
    dq = torch.linalg.solve(A, (g * free).unsqueeze(-1)).squeeze(-1)
    scale = (config.max_step / dq.abs().amax(-1).clamp_min(1e-300)).clamp(max=1.0)
    stepped = project_to_limits(qi + dq * scale.unsqueeze(-1), p.lower, p.upper, p.wrapping)
    return torch.where(p.fixed[idx], qi, stepped), (ew * ew).sum(-1)


def _lm_update(p: _LMProblem, st: _LMState, q_new: torch.Tensor, cost_old: torch.Tensor) -> None:
    """Accept or reject each running row's step (damping down or up), then drop converged and stalled rows."""
    idx, config = st.idx, p.config
    E, n = p.targets.shape[1], st.q.shape[1]
    T_new, J_new = tip_fk_and_jacobian(p.model, q_new, p.tips(idx))
    e_new = pose_residual(T_new, p.targets[idx]).reshape(-1, 6 * E)
    cost_new = ((e_new * p.w[idx]) ** 2).sum(-1)
    accept = cost_new < cost_old
    progress = cost_new < config.progress_ratio * cost_old
    st.no_progress[idx] = torch.where(progress, 0, st.no_progress[idx] + 1)
    st.iters[idx] += 1
    st.q[idx] = torch.where(accept.unsqueeze(-1), q_new, st.q[idx])
    li = st.lam[idx]
    st.lam[idx] = torch.where(accept, (li * config.lambda_down).clamp_min(config.lambda_min), li * config.lambda_up)
    st.cur_J = torch.where(accept.view(-1, 1, 1), J_new.reshape(-1, 6 * E, n), st.cur_J)
    st.cur_e = torch.where(accept.unsqueeze(-1), e_new, st.cur_e)
    p_i, r_i = _row_errors(st.cur_e.view(-1, E, 6), p.target_mask[idx], p.rot_mask[idx])
    st.pos_err[idx], st.rot_err[idx] = p_i, r_i
    done_ok = (p_i <= config.pos_tol) & (r_i <= config.rot_tol)
    st.converged[idx] = done_ok
    keep = ~(done_ok | (st.lam[idx] > config.lambda_max) | (st.no_progress[idx] >= config.patience))
    st.idx, st.cur_J, st.cur_e = idx[keep], st.cur_J[keep], st.cur_e[keep]


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
    valid = (torch.ones(q.shape[0], N, dtype=torch.bool, device=q.device) if valid is None
             else valid.reshape(q.shape[0], N).to(q.device, torch.bool))
    tol_t = torch.as_tensor(tol, dtype=q.dtype, device=q.device).expand(n)
    wrap = None if wrapping is None or not bool(wrapping.any()) else wrapping.to(q.device)
    close = _Closeness(tol_t, wrap, max_elements)
    scaled = q / tol_t
    # 1. rows with no other valid row within tolerance are kept as they are (one chunked pass)
    has_neighbour = close.has_neighbour(scaled, valid)
    keep = valid & ~has_neighbour
    # 2. greedy leaders among the rest, per batch, in row order, on their dense closeness matrix
    ambiguous = valid & has_neighbour
    for b in ambiguous.any(-1).nonzero().flatten().tolist():
        idx = ambiguous[b].nonzero().flatten()
        kept = _greedy_leaders(close.dense(scaled[b, idx]))
        keep[b, idx[torch.from_numpy(kept).to(idx.device)]] = True
    return keep.reshape(*batch, N)


@dataclass(frozen=True)
class _Closeness:
    """Chebyshev closeness of rows scaled by the per-joint tolerance (n,), wrap-aware (``wrap`` (n,)
    bool or None), in chunks of at most ``max_elements`` compared elements."""

    tol: torch.Tensor
    wrap: torch.Tensor | None
    max_elements: int

    def block(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(..., c, n), (..., m, n) scaled rows -> (..., c, m) bool, Chebyshev distance <= 1."""
        if self.wrap is None:
            return torch.cdist(a, b, p=float("inf")) <= 1.0
        diff = (a[..., :, None, :] - b[..., None, :, :]) * self.tol
        diff = torch.where(self.wrap, wrap_to_pi(diff), diff)
        return (diff.abs() / self.tol).amax(-1) <= 1.0

    def _per_row(self, N: int) -> int:
        return N * (len(self.tol) if self.wrap is not None else 1)

    def has_neighbour(self, scaled: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """(Bf, N, n), (Bf, N) -> (Bf, N) bool: another valid row lies within tolerance."""
        Bf, N, _ = scaled.shape
        out = torch.zeros(Bf, N, dtype=torch.bool, device=scaled.device)
        cols = torch.arange(N, device=scaled.device)
        chunk = max(1, min(N, self.max_elements // max(1, Bf * self._per_row(N))))
        for start in range(0, N, chunk):
            stop = min(N, start + chunk)
            not_self = cols[None, :] != cols[start:stop, None]
            out[:, start:stop] = (self.block(scaled[:, start:stop], scaled) & valid[:, None, :] & not_self).any(-1)
        return out

    def dense(self, qa: torch.Tensor) -> np.ndarray:
        """(A, n) scaled rows -> (A, A) bool closeness matrix."""
        A = len(qa)
        out = np.zeros((A, A), dtype=bool)
        step = max(1, min(A, self.max_elements // max(1, self._per_row(A))))
        for start in range(0, A, step):
            out[start:start + step] = self.block(qa[start:start + step], qa).cpu().numpy()
        return out


def _greedy_leaders(close: np.ndarray) -> np.ndarray:
    """(A, A) closeness -> (A,) bool: in row order, a row is kept unless a kept row is close to it."""
    A = len(close)
    removed, kept = np.zeros(A, dtype=bool), np.zeros(A, dtype=bool)
    for i in range(A):
        if not removed[i]:
            kept[i] = True
            removed |= close[i]
    return kept


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
    out = RefineResult(q=result.q.clone(), position_error=result.position_error.clone(),
                       rotation_error=result.rotation_error.clone(), converged=result.converged.clone(),
                       iterations=result.iterations.clone())
    p = _LMProblem.build(model, result.q, targets, target_mask, position_only,
                         RefineConfig(**{**config.__dict__, "max_iters": polish_config.reconverge_iters}),
                         frozen, tip_points)
    p.w = torch.cat([p.target_mask.unsqueeze(-1).expand(*p.target_mask.shape, 3),
                     p.rot_mask.unsqueeze(-1).expand(*p.rot_mask.shape, 3)], -1).flatten(1).to(p.w.dtype)
    step = torch.full((len(out.q),), polish_config.step, dtype=out.q.dtype, device=out.q.device)
    clock = UnitClock(deadline)
    for _ in range(polish_config.iters):
        idx = (out.converged & (step >= polish_config.min_step)).nonzero().squeeze(-1)
        if idx.numel() == 0 or not clock.time_for_another():
            break
        if not _polish_step(p, out, idx, step, cost_fn, polish_config, deadline):
            break
    return out


def _cost_and_gradient(q: torch.Tensor, idx: torch.Tensor, cost_fn):
    """Cost (m,) of rows ``idx`` of q (M, n) and its gradient (m, n), or None without a gradient.
    The cost sees all M rows (row-wise objectives such as per-target seeds stay aligned)."""
    qa = q[idx].detach().requires_grad_(True)
    with torch.enable_grad():
        c = cost_fn(q.detach().index_put((idx,), qa))[idx]
        (g,) = torch.autograd.grad(c.sum(), qa, allow_unused=True)
    return None if g is None else (c.detach(), torch.nan_to_num(g.detach()))


@torch.no_grad()
def _null_space_direction(p: _LMProblem, q: torch.Tensor, idx: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """(m, n) descent direction ``-(I - J^+ J) g`` of rows ``idx``; joints on a bound do not move
    outwards, frozen joints not at all."""
    n = q.shape[1]
    J = tip_fk_and_jacobian(p.model, q[idx], p.tips(idx))[1].reshape(len(idx), -1, n) * p.w[idx].unsqueeze(-1)
    J = J * (~p.fixed[idx]).to(q.dtype).unsqueeze(1)
    N = torch.eye(n, dtype=q.dtype, device=q.device) - torch.linalg.pinv(J, rtol=1e-8) @ J
    d = -(N @ g.unsqueeze(-1)).squeeze(-1)
    qi = q[idx]
    blocked = ((qi <= p.lower + 1e-12) & (d < 0)) | ((qi >= p.upper - 1e-12) & (d > 0)) | p.fixed[idx]
    return torch.where(blocked, torch.zeros_like(d), d)


@torch.no_grad()
def _polish_step(p: _LMProblem, out: RefineResult, idx, step, cost_fn, pc: PolishConfig, deadline) -> bool:
    """Move rows ``idx`` of ``out`` along the null-space direction by their ``step``, re-converge, keep
    the rows still converged and cheaper (step grows), else shrink the step. False: no gradient."""
    cg = _cost_and_gradient(out.q, idx, cost_fn)
    if cg is None:
        return False
    c, g = cg
    d = _null_space_direction(p, out.q, idx, g)
    dn = d.abs().amax(-1)
    movable = dn > 1e-12
    q_try = out.q[idx] + d / dn.clamp_min(1e-12).unsqueeze(-1) * step[idx].unsqueeze(-1)
    r = refine(p.model, q_try, p.ee_targets[idx], p.target_mask[idx], p.position_only[idx], p.config, deadline,
               p.fixed[idx], p.tips(idx))
    accept = movable & r.converged & (cost_fn(out.q.index_put((idx,), r.q))[idx] < c)
    out.q[idx] = torch.where(accept.unsqueeze(-1), r.q, out.q[idx])
    out.position_error[idx] = torch.where(accept, r.position_error, out.position_error[idx])
    out.rotation_error[idx] = torch.where(accept, r.rotation_error, out.rotation_error[idx])
    out.iterations[idx] += r.iterations
    step[idx] = torch.where(accept, (step[idx] * pc.grow).clamp(max=pc.max_step),
                            torch.where(movable, step[idx] * pc.shrink, torch.zeros_like(step[idx])))
    return True
