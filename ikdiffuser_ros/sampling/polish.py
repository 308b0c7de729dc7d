"""Null-space polish: lower an objective on converged IK rows while keeping their poses (:func:`polish`).

Each row moves along the projection of the cost's descent direction onto the null space of its
task Jacobian, and is re-converged by a short :func:`~ikdiffuser_ros.sampling.lm.refine`; a move
is kept only when the row stays converged and its cost goes down.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ikdiffuser_ros.clock import UnitClock
from ikdiffuser_ros.kinematics.robot_model import RobotModel
from ikdiffuser_ros.sampling.lm import LMProblem, RefineConfig, RefineResult, ToleranceBox, refine


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


def polish(model: RobotModel, result: RefineResult, targets: torch.Tensor, cost_fn,
           target_mask: torch.Tensor | None = None, position_only: torch.Tensor | None = None,
           config: RefineConfig = RefineConfig(), polish_config: PolishConfig = PolishConfig(),
           deadline: float | None = None, frozen: torch.Tensor | None = None,
           tip_points: torch.Tensor | None = None, box: ToleranceBox | None = None,
           clock: UnitClock | None = None) -> RefineResult:
    """Lower ``cost_fn`` on converged rows while keeping their end-effector poses.

    Each iteration moves every converged row along the projection of ``-grad cost`` onto the null space of
    its (weighted, masked) task Jacobian, by a per-row step length (normalised to the largest joint change),
    then re-converges it with a short :func:`refine`. The move is kept only when the row is still converged
    and its cost went down; the step length then grows, else it shrinks. Non-converged rows are returned
    unchanged. Redundant robots, unconstrained end effectors and position-only targets leave room to move;
    a fully constrained 6-DOF arm has none (the cost cannot change).

    Args:
        result: the output of :func:`refine` (not modified).
        targets, target_mask, position_only: as for :func:`refine`.
        cost_fn: ``q (M, n) float64 -> (M,)``, differentiable, row-wise; always called on all M rows.
        frozen, tip_points, box: as for :func:`refine` (frozen joints do not move, errors at the tips,
            per-axis tolerances: a component inside its bound is free to move).
        clock: the steps' :class:`UnitClock` (default: one on ``deadline``); one given the step time measured
            before keeps a first step that would end past the deadline from starting (the problem is built lazily).

    Returns:
        a new :class:`RefineResult`.
    """
    out, p = RefineResult(**{name: value.clone() for name, value in vars(result).items()}), None
    step = torch.full((len(out.q),), polish_config.step, dtype=out.q.dtype, device=out.q.device)
    clock = UnitClock(deadline) if clock is None else clock
    for _ in range(polish_config.iters):
        idx = (out.converged & (step >= polish_config.min_step)).nonzero().squeeze(-1)
        if idx.numel() == 0 or not clock.time_for_another():
            break
        p = p or _null_space_problem(model, result.q, targets, target_mask, position_only,
                                     RefineConfig(**{**config.__dict__, "max_iters": polish_config.reconverge_iters}),
                                     frozen, tip_points, box)
        if not _polish_step(p, out, idx, step, cost_fn, polish_config, deadline):
            break
    return out


def _null_space_problem(model: RobotModel, q: torch.Tensor, targets: torch.Tensor, target_mask: torch.Tensor | None,
                        position_only: torch.Tensor | None, config: RefineConfig, frozen: torch.Tensor | None,
                        tip_points: torch.Tensor | None, box: ToleranceBox | None = None) -> LMProblem:
    """What stays fixed during :func:`polish`: the re-convergence's LM settings, targets, masks, frozen
    joints and limits, with unit weights on every constrained row (rotation rows unscaled) for the
    null-space projection."""
    p = LMProblem.build(model, q, targets, target_mask, position_only, config, frozen, tip_points, box=box)
    p.w = torch.cat([p.target_mask.unsqueeze(-1).expand(*p.target_mask.shape, 3),
                     p.rot_mask.unsqueeze(-1).expand(*p.rot_mask.shape, 3)], -1).flatten(1).to(p.w.dtype)
    return p


def _cost_and_gradient(q: torch.Tensor, idx: torch.Tensor, cost_fn):
    """Cost (m,) of rows ``idx`` of q (M, n) and its gradient (m, n), or None without a gradient.
    The cost sees all M rows (row-wise objectives such as per-target seeds stay aligned)."""
    qa = q[idx].detach().requires_grad_(True)
    with torch.enable_grad():
        c = cost_fn(q.detach().index_put((idx,), qa))[idx]
        (g,) = torch.autograd.grad(c.sum(), qa, allow_unused=True)
    return None if g is None else (c.detach(), torch.nan_to_num(g.detach()))


@torch.no_grad()
def _null_space_direction(p: LMProblem, q: torch.Tensor, idx: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """(m, n) descent direction ``-(I - J^+ J) g`` of rows ``idx``; joints on a bound do not move
    outwards, frozen joints not at all."""
    n = q.shape[1]
    J = p.residual(q[idx], idx)[1].reshape(len(idx), -1, n) * p.w[idx].unsqueeze(-1)
    J = J * (~p.fixed[idx]).to(q.dtype).unsqueeze(1)
    N = torch.eye(n, dtype=q.dtype, device=q.device) - torch.linalg.pinv(J, rtol=1e-8) @ J
    d = -(N @ g.unsqueeze(-1)).squeeze(-1)
    qi = q[idx]
    blocked = ((qi <= p.lower + 1e-12) & (d < 0)) | ((qi >= p.upper - 1e-12) & (d > 0)) | p.fixed[idx]
    return torch.where(blocked, torch.zeros_like(d), d)


@torch.no_grad()
def _polish_step(p: LMProblem, out: RefineResult, idx, step, cost_fn, pc: PolishConfig, deadline) -> bool:
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
               p.fixed[idx], p.tips(idx), box=None if p.box is None else p.box.rows(idx))
    accept = movable & r.converged & (cost_fn(out.q.index_put((idx,), r.q))[idx] < c)
    out.q[idx] = torch.where(accept.unsqueeze(-1), r.q, out.q[idx])
    out.position_error[idx] = torch.where(accept, r.position_error, out.position_error[idx])
    out.rotation_error[idx] = torch.where(accept, r.rotation_error, out.rotation_error[idx])
    out.iterations[idx] += r.iterations
    step[idx] = torch.where(accept, (step[idx] * pc.grow).clamp(max=pc.max_step),
                            torch.where(movable, step[idx] * pc.shrink, torch.zeros_like(step[idx])))
    return True
