"""Batched Levenberg-Marquardt refinement of IK candidates (:func:`refine`).

:func:`refine` takes ``M`` candidate joint vectors at once (e.g. all ``B * N``
diffusion samples) and runs damped least squares in float64 on every row in
parallel, with its own damping per row:

* error of end effector ``e``: ``[p*_e - p_e, log(R*_e R_e^T)]`` (position [m],
  rotation vector [rad] in root axes), matched by the geometric Jacobian rows
  ``(v, w)`` of :meth:`RobotModel.fk_and_jacobian`. Unconstrained end effectors
  (``target_mask`` False) contribute nothing, and ``position_only`` ones only
  their position rows, so the other joints stay where they are unless a
  constrained end effector needs them.
* per-axis tolerances (a :class:`ToleranceBox`, TRAC-IK's bounds): the residual is expressed in
  each target's own axes and every component may be off by up to its bound at no cost (a dead
  zone: 0 inside, ``|e| - b`` beyond, the Jacobian row zeroed inside: the dead zone's
  derivative); an infinite bound frees the axis (e.g. yaw about a symmetric tool's axis).
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
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ikdiffuser_ros.clock import UnitClock
from ikdiffuser_ros.kinematics.joint_kinds import joint_kinds, project_to_limits
from ikdiffuser_ros.kinematics.robot_model import RobotModel
from ikdiffuser_ros.kinematics.transforms import so3_log


@dataclass(frozen=True)
class RefineConfig:
    """Settings of :func:`refine` (units: m, rad)."""

    #: Maximum LM iterations (each is one batched FK + Jacobian of the running rows). 300 (was 80), with
    #: ``progress_ratio`` 0.99: rows that still close in slowly (near a singularity or a limit) run on; one sample +
    #: LM on the cards' 1000 held-out targets baxter 89.2 -> 91.4 %, panda 96.7 -> 97.2 %, a failed row's
    #: iterations 28 -> 45, what users run unchanged (docs/solver.md, "Where one sample + LM fails").
    max_iters: int = 300
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
    #: A step "makes progress" when it cuts the weighted squared error below this fraction of the old one
    #: (0.99, was 0.9: a row cutting its error by 1-10 % a step is converging, not stalled; ``max_iters``).
    progress_ratio: float = 0.99
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


@dataclass(frozen=True)
class ToleranceBox:
    """Per-axis tolerances of the constrained frames: ``axes`` (..., E, 3, 3), each target frame's x, y, z
    axes in root coordinates (columns), and ``bounds`` (..., E, 6), how far each residual component in
    those axes may be off at no cost: x, y, z [m], rx, ry, rz [rad] (0 = exact, inf = free)."""

    axes: torch.Tensor
    bounds: torch.Tensor

    def rows(self, idx: torch.Tensor) -> "ToleranceBox":
        return ToleranceBox(self.axes[idx], self.bounds[idx])


def boxed_residual(res: torch.Tensor, J: torch.Tensor | None, box: ToleranceBox | None
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(m, E, 6) residuals and (m, E, 6, n) Jacobians (or None) -> the same in the targets' axes, each
    component's bound taken off (0 inside, ``sign(e) (|e| - b)`` beyond) and the Jacobian rows of the
    components inside their bound zeroed. Norms are unchanged by the rotation, so bounds of 0 give the
    plain residual's errors. Without a box: unchanged."""
    if box is None:
        return res, J
    Rt = box.axes.to(res.dtype).transpose(-1, -2)
    e = torch.cat([(Rt @ res[..., :3, None])[..., 0], (Rt @ res[..., 3:, None])[..., 0]], -1)
    excess = e.abs() - box.bounds.to(res.dtype)
    inside = excess <= 0
    d = torch.where(inside, torch.zeros_like(e), torch.sign(e) * excess)
    if J is None:
        return d, None
    Jt = torch.cat([Rt @ J[..., :3, :], Rt @ J[..., 3:, :]], -2)
    return d, torch.where(inside.unsqueeze(-1), torch.zeros_like(Jt), Jt)


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


def refine(model: RobotModel, q0: torch.Tensor, targets: torch.Tensor, target_mask: torch.Tensor | None = None,
           position_only: torch.Tensor | None = None, config: RefineConfig = RefineConfig(),
           deadline: float | None = None, frozen: torch.Tensor | None = None, tip_points: torch.Tensor | None = None,
           bounds: tuple[torch.Tensor, torch.Tensor] | None = None, box: ToleranceBox | None = None) -> RefineResult:
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
        box: per-axis tolerances of the constrained frames, (M, E) rows (:class:`ToleranceBox`); None =
            every constrained frame exact within ``pos_tol`` / ``rot_tol``.

    Returns:
        :class:`RefineResult` with float64 tensors on ``q0``'s device.
    """
    p = LMProblem.build(model, q0, targets, target_mask, position_only, config, frozen, tip_points, bounds, box)
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
class LMProblem:
    """What stays fixed during :func:`refine` (and :func:`~ikdiffuser_ros.sampling.polish.polish`):
    (M, E, 4, 4) end-effector targets and the targets of the tip points, (M, E) masks, (M, 6E)
    residual weights, (M, n) frozen joints, limits, wrapping joints, (M, E, 3) tip points or None,
    per-axis tolerances (M, E) or None."""

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
    box: ToleranceBox | None = None

    @classmethod
    def build(cls, model, q0, targets, target_mask, position_only, config, frozen, tip_points,
              bounds=None, box: ToleranceBox | None = None) -> "LMProblem":
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
        if box is not None:
            box = ToleranceBox(box.axes.to(device, dtype).expand(M, E, 3, 3), box.bounds.to(device, dtype).expand(M, E, 6))
        return cls(model, config, q, ee_targets, targets, target_mask, position_only, rot_mask, w, fixed, lower,
                   upper, wrapping, tip_points, box)

    def tips(self, idx: torch.Tensor) -> torch.Tensor | None:
        return None if self.tip_points is None else self.tip_points[idx]

    def residual(self, q: torch.Tensor, idx: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Residuals (m, E, 6) and Jacobians (m, E, 6, n) of rows ``idx`` (all when None) at q (m, n), in the
        targets' axes with their tolerances taken off when there is a box (:func:`boxed_residual`)."""
        tips = self.tip_points if idx is None else self.tips(idx)
        targets = self.targets if idx is None else self.targets[idx]
        box = self.box if idx is None or self.box is None else self.box.rows(idx)
        T, J = tip_fk_and_jacobian(self.model, q, tips)
        return boxed_residual(pose_residual(T, targets), J, box)


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
    def start(cls, p: LMProblem) -> "_LMState":
        q = p.q0
        (M, n), E, dev = q.shape, p.targets.shape[1], q.device
        res, J = p.residual(q)
        pos_err, rot_err = _row_errors(res, p.target_mask, p.rot_mask)
        converged = (pos_err <= p.config.pos_tol) & (rot_err <= p.config.rot_tol)
        idx = (~converged).nonzero().squeeze(-1)
        return cls(q, pos_err, rot_err, converged, torch.full((M,), p.config.lambda_init, dtype=q.dtype, device=dev),
                   torch.zeros(M, dtype=torch.int64, device=dev), torch.zeros(M, dtype=torch.int64, device=dev),
                   idx, J[idx].reshape(-1, 6 * E, n), res[idx].reshape(-1, 6 * E))


def _lm_step(p: LMProblem, st: _LMState) -> tuple[torch.Tensor, torch.Tensor]:
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


def _lm_update(p: LMProblem, st: _LMState, q_new: torch.Tensor, cost_old: torch.Tensor) -> None:
    """Accept or reject each running row's step (damping down or up), then drop converged and stalled rows."""
    idx, config = st.idx, p.config
    E, n = p.targets.shape[1], st.q.shape[1]
    e_new, J_new = p.residual(q_new, idx)
    e_new = e_new.reshape(-1, 6 * E)
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

