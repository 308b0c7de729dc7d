"""The reverse-diffusion loop: end-effector targets -> joint samples.

Stable API (used by the solver facade, objectives and refinement):

- a ``LoadedModel`` from ``load_checkpoint(dir, robot, device)`` (:mod:`ikdiffuser_ros.model.checkpoint`);
- ``sample(loaded, ee_pos, ee_rot6d, ee_mask, pos_only, num_solutions, method="ddim", steps=20,
  eta=0.0, generator=None, guidance=None, guidance_scale=1.0, guidance_clip=1.0, temperature=1.0) -> q (B, N, n)``;
- ``targets_from_poses(T) -> (ee_pos, ee_rot6d)`` to build the inputs from (B, E, 4, 4) poses;
- ``default_sampling(loaded) -> (steps, tail_steps)`` and ``default_temperature(loaded)``, the checkpoint card's
  recommended sampler.

All B targets x N solutions are denoised as one batch of B*N rows (row ``b * N + k`` is solution k
of target b). Each step, numbered as in diffusion_policy::

    1. eps_hat = denoiser(x_t, t | targets)       (+ kinematic feedback of x_t for denoisers that take it,
                                                   see :mod:`ikdiffuser_ros.model.feedback`)
    2. x0_hat  = clamp((x_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t), -1, 1)
    3. guidance (optional): g = d/dx0 sum_rows cost(denormalize(x0_hat))   (autograd, normalized space)
       g is clipped per row to L2 norm <= guidance_clip, then
       x0_hat <- clamp(x0_hat - guidance_scale * g, -1, 1)
    4. x_{t_prev} = DDIM (eta) or DDPM (ancestral) update from (x_t, x0_hat); epsilon is re-derived from
       the clamped/guided x0_hat, so both samplers see the same clean-sample estimate.

**Low-noise tail** (``tail_steps`` k > 0): after the S reverse steps, k more denoiser passes at the
low timesteps ``round(linspace(TAIL_T_MAX, 0, k))``, each replacing the sample by its clean-sample
estimate (steps 1-3, no re-noising). A denoiser with kinematic feedback has learned to remove small
joint perturbations given where they put the end effectors, so these passes act as a learned,
target-aware refinement: on panda after 8 000 training steps, 6 + 9 steps give a 6 mm median raw
error where 20 plain DDIM steps give 32 mm (docs/training.md).

**Planar base**: a robot whose root joint is planar (a mobile base) gets, after the last pass, the base pose
that best fits the sampled arms to the targets in closed form (:mod:`ikdiffuser_ros.kinematics.planar_base`;
``place_base``): mobile_baxter's raw median with the shipped sampler 11.2 -> 6.5 mm, DDIM-20 80 -> 49 mm.

**Temperature** (``temperature`` tau, the card's ``sampling.temperature``): the initial noise is drawn from
N(0, tau^2) instead of N(0, 1), as flow-based IK samplers scale their latent (IKFlow). Below 1 the samples are more
typical of the target's solutions: fewer land between two modes or beyond a limit, where one sample + LM fails
(LM-ready plan, 3000 targets, tau 0.5 against 1: +1.4 to +1.7 % on panda, baxter, dual_ur5_mobile and talos;
docs/solver.md), at less spread among one target's samples.

The returned joints are denormalized and clamped to the robot's limits. All randomness comes from
``generator`` (a ``torch.Generator`` on the model's device), so a seeded generator makes ``sample``
reproducible.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from ikdiffuser_ros.clock import UnitClock
from ikdiffuser_ros.kinematics.transforms import matrix_to_rot6d
from ikdiffuser_ros.model.feedback import FeedbackTargets, rot6d_to_matrix
from ikdiffuser_ros.model.schedule import ddim_step, ddpm_step

if TYPE_CHECKING:  # the checkpoint module imports this one (its self-test samples)
    from ikdiffuser_ros.model.checkpoint import LoadedModel

GuidanceFn = Callable[[torch.Tensor], torch.Tensor]
#: highest timestep of the low-noise tail.
TAIL_T_MAX = 10
#: sampler defaults for a card without a ``sampling`` section (older checkpoints).
DEFAULT_STEPS, DEFAULT_TAIL_STEPS = 20, 0


def default_sampling(loaded: LoadedModel, refined: bool = False) -> tuple[int, int]:
    """(steps, tail_steps) recommended by the checkpoint card's ``sampling`` section: for raw samples
    ``steps`` / ``tail_steps``; for samples the LM refines (``refined``) ``refined_steps`` /
    ``refined_tail_steps`` when the card has them (the LM finishes what the tail passes would polish,
    at a fraction of their cost), else the raw plan."""
    section = _card_sampling(loaded)
    steps, tail = int(section.get("steps", DEFAULT_STEPS)), int(section.get("tail_steps", DEFAULT_TAIL_STEPS))
    if refined:
        return int(section.get("refined_steps", steps)), int(section.get("refined_tail_steps", tail))
    return steps, tail


def default_harvest_steps(loaded: LoadedModel) -> int | None:
    """The card's ``sampling.harvest_steps``: the stochastic DDIM steps of a harvest's sampled calls (a query for
    more solutions than the answer's order ranks, every valid one counted; fewer steps draw more samples per
    second), None for a card without them (the diverse plan's)."""
    steps = _card_sampling(loaded).get("harvest_steps")
    return None if steps is None else int(steps)


def default_temperature(loaded: LoadedModel) -> float:
    """The card's ``sampling.temperature`` (module docstring), 1.0 for a card without one."""
    return float(_card_sampling(loaded).get("temperature", 1.0))


def _card_sampling(loaded: LoadedModel) -> dict:
    """The card's ``sampling`` section ({} for a card without one)."""
    return loaded.card.get("sampling", {}) if isinstance(loaded.card, dict) else {}


def tail_timesteps(k: int) -> list[int]:
    """The k timesteps of the low-noise tail, descending from :data:`TAIL_T_MAX` to 0."""
    if k <= 0:
        return []
    return torch.linspace(TAIL_T_MAX, 0, k, dtype=torch.float64).round().long().tolist()


def targets_from_poses(T: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., E, 4, 4) poses -> positions (..., E, 3) and 6-D rotations (..., E, 6)."""
    return T[..., :3, 3], matrix_to_rot6d(T[..., :3, :3])


def _repeat(x: torch.Tensor, N: int) -> torch.Tensor:
    return x.repeat_interleave(N, dim=0)


def sample(loaded: LoadedModel, ee_pos: torch.Tensor, ee_rot6d: torch.Tensor, ee_mask: torch.Tensor | None = None,
           pos_only: torch.Tensor | None = None, num_solutions: int = 1, method: str = "ddim",
           steps: int | None = 20, eta: float = 0.0, generator: torch.Generator | None = None,
           guidance: GuidanceFn | None = None, guidance_scale: float = 1.0, guidance_clip: float | None = 1.0,
           deadline: float | None = None, tail_steps: int = 0, place_base: bool = True,
           temperature: float = 1.0) -> torch.Tensor:
    """Draw ``num_solutions`` joint configurations for each of B end-effector targets.

    Args:
        loaded: from :func:`load_checkpoint` (or built by the trainer).
        ee_pos: (B, E, 3) target positions [m] in the robot's root frame.
        ee_rot6d: (B, E, 6) target rotations, first two columns of R (ignored where free/position-only).
        ee_mask, pos_only: (B, E) bool, True = constrained / only in position; default all True / all False.
        num_solutions: N samples per target.
        method: ``"ddim"`` (deterministic for eta=0) or ``"ddpm"`` (ancestral).
        steps: number of reverse steps S (a strided subset of the T training steps; None = all T).
        eta: DDIM noise scale (0 = deterministic ODE-like sampler, 1 = DDPM-like).
        generator: torch.Generator for the initial noise and any step noise.
        guidance: ``cost(q (B*N, n) joint units, float32) -> (B*N,)``, differentiable in q; see step 3.
        guidance_scale: step size of the guidance shift in normalized joint units.
        guidance_clip: per-row L2 clip of the guidance gradient (None = no clip).
        deadline: ``time.monotonic()`` value; once passed, the last clean-sample estimate (None = no limit).
        tail_steps: k passes of the low-noise tail after the reverse steps (module docstring).
        place_base: unguided samples of a mobile robot get the base that best fits their arms (module docstring).
        temperature: standard deviation of the initial noise (module docstring; 1 = as in training).
    Returns:
        q: (B, N, n) joint values within the robot's limits, in the denoiser's dtype (float32 as shipped).
    """
    if method not in ("ddim", "ddpm"):
        raise ValueError(f"method must be 'ddim' or 'ddpm', got {method!r}")
    model = loaded.denoiser
    targets = _conditions(model, ee_pos, ee_rot6d, ee_mask, pos_only)
    B, N, n = targets[0].shape[0], int(num_solutions), model.config.n_joints
    was_training = model.training
    model.eval()
    with torch.no_grad():
        x = _denoise(loaded, targets, N, sampling_plan(loaded.schedule, steps, tail_steps), method, eta, generator,
                     (guidance, guidance_scale, guidance_clip), deadline, temperature)
    model.train(was_training)
    return _joints(loaded, x, targets, N, place_base and guidance is None).view(B, N, n)


def _joints(loaded: LoadedModel, x: torch.Tensor, targets: tuple[torch.Tensor, ...], N: int, place_base: bool
            ) -> torch.Tensor:
    """(B*N, n) normalized samples -> joint values within the limits; with ``place_base`` a planar base moved
    to fit the arms to the targets (:meth:`~ikdiffuser_ros.kinematics.planar_base.PlanarBase.place`, in float64)."""
    norm = loaded.normalizer
    q = torch.minimum(torch.maximum(norm.denormalize_joints(x.clamp(-1, 1)), norm.lower), norm.upper)
    if not place_base or loaded.planar_base is None:
        return q
    ee_pos, ee_rot6d, ee_mask, pos_only = (_repeat(t, N) for t in targets)
    T = torch.zeros(*ee_pos.shape[:2], 4, 4, dtype=torch.float64, device=q.device)
    T[..., :3, :3], T[..., :3, 3], T[..., 3, 3] = rot6d_to_matrix(ee_rot6d.double()), ee_pos.double(), 1.0
    placed = loaded.planar_base.place(q.double(), T, ee_mask, pos_only, loaded.robot.fk, norm.lower.double(),
                                      norm.upper.double())
    return placed.to(q.dtype)


def _denoise(loaded: LoadedModel, targets: tuple[torch.Tensor, ...], N: int, plan: list[tuple[int, int | None]],
             method: str, eta: float, generator: torch.Generator | None, guide: tuple, deadline: float | None,
             temperature: float = 1.0) -> torch.Tensor:
    """(B*N, n) normalized samples: Gaussian noise (standard deviation ``temperature``) through every pass of
    ``plan``, conditioned on the B ``targets`` (ee_pos, ee_rot6d, ee_mask, pos_only) N times each (``guide``:
    guidance, scale, clip).
    When the deadline leaves no time for another pass (after the first), the last clean-sample estimate."""
    model, norm = loaded.denoiser, loaded.normalizer
    ee_pos, ee_rot6d, ee_mask, pos_only = targets
    ctx = model.encode_targets(_repeat(norm.normalize_pos(ee_pos), N), _repeat(ee_rot6d, N),
                               _repeat(ee_mask, N), _repeat(pos_only, N))
    fb_targets = _feedback_targets(loaded, ee_pos, ee_rot6d, ee_mask, pos_only, N)
    x = torch.randn(ee_pos.shape[0] * N, model.config.n_joints, generator=generator, device=ee_pos.device,
                    dtype=torch.float32).to(ee_pos.dtype) * temperature
    noise = step_noise(x, len(plan), method, eta, generator)
    clock = UnitClock(deadline)
    x0 = x
    for i, (t, t_prev) in enumerate(plan):
        if not clock.time_for_another() and i > 0:
            return x0  # out of time: the last clean-sample estimate
        x0 = _clean_estimate(loaded, x, t, ctx, fb_targets, *guide)
        x = _reverse_update(loaded.schedule, method, x, x0, t, t_prev, eta, generator,
                            None if noise is None else noise[i])
    return x


def step_noise(x: torch.Tensor, passes: int, method: str, eta: float, generator: torch.Generator | None
               ) -> torch.Tensor | None:
    """(passes, M, n) noise of a stochastic DDIM plan (eta > 0), drawn at once after the initial noise x (M, n)
    (the compiled sampler draws the same), or None (deterministic DDIM; DDPM draws its own per step)."""
    if method != "ddim" or eta <= 0:
        return None
    return torch.randn((passes, *x.shape), generator=generator, device=x.device, dtype=torch.float32).to(x.dtype)


def _conditions(model, ee_pos, ee_rot6d, ee_mask, pos_only):
    """Targets (B, E, 3) [m] and (B, E, 6) in the denoiser's dtype and on its device, masks (B, E) bool
    (defaults: all constrained, none position-only); ValueError on wrong shapes. A denoiser cast to float64
    samples in float64 from the same float32 noise (the tests' exact reference)."""
    E, param = model.config.n_ee, next(model.parameters())
    dev, dtype = param.device, param.dtype
    ee_pos = torch.as_tensor(ee_pos).to(dev, dtype)
    ee_rot6d = torch.as_tensor(ee_rot6d).to(dev, dtype)
    B = ee_pos.shape[0]
    if ee_pos.shape != (B, E, 3) or ee_rot6d.shape != (B, E, 6):
        raise ValueError(f"expected ee_pos (B, {E}, 3) and ee_rot6d (B, {E}, 6), got "
                         f"{tuple(ee_pos.shape)} and {tuple(ee_rot6d.shape)}")
    ee_mask = torch.ones(B, E, dtype=torch.bool, device=dev) if ee_mask is None else ee_mask.to(dev).bool()
    pos_only = torch.zeros(B, E, dtype=torch.bool, device=dev) if pos_only is None else pos_only.to(dev).bool()
    return ee_pos, ee_rot6d, ee_mask, pos_only


def sampling_plan(schedule, steps: int | None, tail_steps: int) -> list[tuple[int, int | None]]:
    """(t, t_prev) of every pass: the strided reverse steps (t_prev -1 after the last), then the tail
    (t_prev None: the sample is replaced by its clean estimate)."""
    ts = schedule.timesteps(steps)
    plan = [(t, ts[i + 1] if i + 1 < len(ts) else -1) for i, t in enumerate(ts)]
    return plan + [(t, None) for t in tail_timesteps(tail_steps)]


def _clean_estimate(loaded: LoadedModel, x, t: int, ctx, fb_targets, guidance, scale, clip) -> torch.Tensor:
    """One denoiser pass on (B*N, n) normalized samples at step t -> the guided clean estimate, in [-1, 1]."""
    model, schedule = loaded.denoiser, loaded.schedule
    tt = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
    feedback = None if fb_targets is None else loaded.feedback(x, fb_targets)
    if feedback is None:
        eps = model(x, tt, None, None, None, None, ctx=ctx)
    else:
        eps = model(x, tt, None, None, None, None, ctx=ctx, feedback=feedback)
    x0 = schedule.predict_x0(x, eps, tt).clamp(-1, 1)
    return x0 if guidance is None else _guide(x0, loaded.normalizer, guidance, scale, clip)


def _reverse_update(schedule, method: str, x, x0, t: int, t_prev: int | None, eta: float, generator,
                    noise: torch.Tensor | None = None):
    """The sample at ``t_prev``: DDIM (``noise``: its step noise when eta > 0) or DDPM step, or in the
    tail the clean estimate itself."""
    if t_prev is None:
        return x0
    if method == "ddim":
        return ddim_step(schedule, x, x0, t, t_prev, eta=eta, generator=generator, noise=noise)
    return ddpm_step(schedule, x, x0, t, t_prev, generator=generator)


def _feedback_targets(loaded: LoadedModel, ee_pos, ee_rot6d, ee_mask, pos_only, N: int) -> FeedbackTargets | None:
    """Targets repeated N times for the kinematic feedback, or None if the denoiser takes none."""
    if loaded.feedback is None:
        return None
    return FeedbackTargets.build(_repeat(ee_pos, N), _repeat(ee_rot6d, N), _repeat(ee_mask, N), _repeat(pos_only, N))


def _guide(x0: torch.Tensor, norm, guidance: GuidanceFn, scale: float, clip: float | None) -> torch.Tensor:
    with torch.enable_grad():
        xg = x0.detach().requires_grad_(True)
        cost = guidance(norm.denormalize_joints(xg))
        (grad,) = torch.autograd.grad(cost.sum(), xg, allow_unused=True)
    if grad is None:
        return x0
    grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
    if clip is not None:
        gn = grad.norm(dim=-1, keepdim=True)
        grad = grad * (clip / gn.clamp_min(clip))
    return (x0 - scale * grad).clamp(-1, 1)
