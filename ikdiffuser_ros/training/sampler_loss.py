"""A loss on what the shipped sampler returns: the pose error of the LM-ready plan's samples, back-propagated
through every pass of that plan (DRaFT, Clark et al. 2024: fine-tuning a diffusion model on a differentiable reward
of its samples).

The denoising loss teaches each pass on its own; the LM-ready plan (DDIM-3 + one tail pass, the card's
``refined_steps`` / ``refined_tail_steps``) chains four of them from noise at the card's temperature, and one
sample + LM fails where that chain ends far from its target or beyond a limit (docs/solver.md). This loss runs the
chain on a few training targets with gradients and penalises where its samples' end effectors are::

    loss = mean_rows sum_e  pos_w |p_e(q) - p_e*| / POS_SCALE + rot_w ||R_e(q) - R_e*||_F / ROT_SCALE

(``|.|`` smoothed at 0; q the clamped, denormalized sample; the kinematic feedback of each pass is an input, not
differentiated). The first pass, from pure noise, is not differentiated either (DRaFT-K): its clean estimate divides
the noise estimate by sqrt(abar_99) = 5e-4, and through it baxter's gradient norm reads 14 000 against 240 through
the other three passes. :class:`~ikdiffuser_ros.training.trainer.TrainConfig`'s ``sampler_loss_weight`` adds it to the
denoising loss.
"""

from __future__ import annotations

import torch

from ikdiffuser_ros.model.feedback import FeedbackTargets, rot6d_to_matrix
from ikdiffuser_ros.model.schedule import ddim_step

#: position error [m] that counts as one unit of loss.
POS_SCALE = 0.01
#: chordal rotation error ||R - R*||_F (about sqrt(2) x the angle [rad]) that counts as one unit of loss.
ROT_SCALE = 0.1
#: smoothing of the norms at 0, in the units above.
SMOOTH = 1e-3


def chain_samples(model, normalizer, schedule, feedback, plan: list[tuple[int, int | None]], noise: torch.Tensor,
                  pos: torch.Tensor, rot6d: torch.Tensor, keep: torch.Tensor, pos_only: torch.Tensor) -> torch.Tensor:
    """(B, n) normalized samples of ``plan`` (the sampler's (t, t_prev) passes) from ``noise`` (B, n), with gradients
    to the network's weights: targets (B, E, 3) [m] and (B, E, 6), masks (B, E) bool."""
    ctx = model.encode_targets(normalizer.normalize_pos(pos), rot6d, keep, pos_only)
    fb_targets = FeedbackTargets.build(pos, rot6d, keep, pos_only) if feedback is not None else None
    x = noise
    for i, (t, t_prev) in enumerate(plan):
        x = x.detach() if i == 1 else x
        tt = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        extra = {}
        if fb_targets is not None:
            with torch.no_grad():
                extra["feedback"] = feedback(x.detach(), fb_targets)
        eps = model(x, tt, None, None, None, None, ctx=ctx, **extra)
        x0 = schedule.predict_x0(x, eps.float(), tt).clamp(-1, 1)
        x = x0 if t_prev is None else ddim_step(schedule, x, x0, t, t_prev)
    return x


def pose_loss(robot, q: torch.Tensor, pos: torch.Tensor, rot6d: torch.Tensor, keep: torch.Tensor,
              pos_only: torch.Tensor) -> torch.Tensor:
    """Scalar: the mean over rows of the constrained end effectors' smoothed position and rotation errors of joints
    q (B, n) against targets (B, E, 3) [m] and (B, E, 6), in units of :data:`POS_SCALE` / :data:`ROT_SCALE`."""
    T = robot.fk(q)
    dp = ((T[..., :3, 3] - pos) / POS_SCALE).square().sum(-1)
    dr = ((T[..., :3, :3] - rot6d_to_matrix(rot6d)) / ROT_SCALE).square().sum((-1, -2))
    pos_w, rot_w = keep.to(q.dtype), (keep & ~pos_only).to(q.dtype)
    err = pos_w * (dp + SMOOTH**2).sqrt() + rot_w * (dr + SMOOTH**2).sqrt()
    return err.sum(-1).mean()
