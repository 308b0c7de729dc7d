"""Noise schedule and the DDPM / DDIM step math (epsilon parameterization).

Forward process: ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` for ``t = 0 .. T-1``;
``abar_{-1} = 1`` (the clean sample). Cosine schedule of Nichol & Dhariwal (2021).

The step functions take the (possibly clamped / guided) prediction of the clean sample ``x0``
and re-derive the matching epsilon from it, so that clamping and guidance act consistently on
both samplers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from ikdiffuser_ros.model.validation import check_range


@dataclass
class ScheduleConfig:
    #: number of diffusion steps used in training.
    num_train_steps: int = 100
    #: "cosine" (the only one implemented).
    kind: str = "cosine"
    #: cosine offset s.
    cosine_s: float = 0.008
    #: clip of each beta_t.
    max_beta: float = 0.999

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> None:
        """ValueError naming the first field outside its sane range (an untrusted card's schedule)."""
        check_range("num_train_steps", self.num_train_steps, 1, 10_000)
        if self.kind != "cosine":
            raise ValueError(f"kind = {self.kind!r} is not 'cosine' (the only schedule implemented)")
        check_range("cosine_s", self.cosine_s, 0.0, 1.0, open_low=True)
        check_range("max_beta", self.max_beta, 0.0, 1.0, open_low=True, open_high=True)


class NoiseSchedule:
    """Precomputed ``alphas_cumprod`` (T,) float64 on CPU, with helpers."""

    def __init__(self, config: ScheduleConfig | None = None):
        self.config = config or ScheduleConfig()
        if self.config.kind != "cosine":
            raise ValueError(f"unknown schedule kind {self.config.kind!r}")
        T, s = self.config.num_train_steps, self.config.cosine_s
        f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
        betas = torch.tensor([min(1 - f(i + 1) / f(i), self.config.max_beta) for i in range(T)], dtype=torch.float64)
        self.betas = betas
        self.alphas_cumprod = torch.cumprod(1 - betas, 0)

    @property
    def num_train_steps(self) -> int:
        return self.config.num_train_steps

    def abar(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """(B,) long timesteps (-1 allowed = clean) -> (B, 1) abar in ``like``'s dtype/device."""
        t = torch.as_tensor(t).long().cpu()
        ones = torch.ones_like(t, dtype=torch.float64)
        ab = torch.where(t >= 0, self.alphas_cumprod[t.clamp_min(0)], ones)
        return ab.to(dtype=like.dtype, device=like.device).reshape(-1, *([1] * (like.dim() - 1)))

    def add_noise(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """q(x_t | x_0): (B, n), (B, n), (B,) -> (B, n)."""
        ab = self.abar(t, x0)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * eps

    def predict_x0(self, x_t: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = self.abar(t, x_t)
        return (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()

    def predict_eps(self, x_t: torch.Tensor, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = self.abar(t, x_t)
        return (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()

    def timesteps(self, num_steps: int | None = None) -> list[int]:
        """Descending subset of ``num_steps`` timesteps of ``[0, T)``, from T-1 down to 0.

        ``None`` or ``num_steps >= T`` gives all T steps.
        """
        T = self.num_train_steps
        if num_steps is None or num_steps >= T:
            return list(range(T - 1, -1, -1))
        if num_steps < 1:
            raise ValueError("num_steps must be >= 1")
        if num_steps == 1:
            return [T - 1]
        ts = torch.linspace(T - 1, 0, num_steps, dtype=torch.float64).round().long().tolist()
        out: list[int] = []
        for t in ts:
            if not out or t < out[-1]:
                out.append(t)
        return out


def ddim_step(schedule: NoiseSchedule, x_t: torch.Tensor, x0: torch.Tensor, t: int, t_prev: int,
              eta: float = 0.0, generator: torch.Generator | None = None,
              noise: torch.Tensor | None = None) -> torch.Tensor:
    """One DDIM update x_t -> x_{t_prev} (Song et al. 2021, eq. 12), ``t_prev = -1`` for the last.

    ``sigma = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev)``;
    ``x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma^2) eps(x0) + sigma z``, with z the
    given ``noise`` (x_t's shape) or drawn from ``generator``.
    """
    B = x_t.shape[0]
    tt = torch.full((B,), t, dtype=torch.long)
    ab_t = schedule.abar(tt, x_t)
    ab_p = schedule.abar(torch.full((B,), t_prev, dtype=torch.long), x_t)
    eps = (x_t - ab_t.sqrt() * x0) / (1 - ab_t).sqrt()
    sigma = eta * ((1 - ab_p) / (1 - ab_t)).sqrt() * (1 - ab_t / ab_p).clamp_min(0).sqrt()
    x_prev = ab_p.sqrt() * x0 + (1 - ab_p - sigma**2).clamp_min(0).sqrt() * eps
    if eta > 0 and t_prev >= 0:
        z = noise if noise is not None else torch.randn(x_t.shape, generator=generator, dtype=x_t.dtype,
                                                         device=x_t.device)
        x_prev = x_prev + sigma * z
    return x_prev


def ddpm_step(schedule: NoiseSchedule, x_t: torch.Tensor, x0: torch.Tensor, t: int, t_prev: int,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """One ancestral step: a sample of the posterior q(x_{t_prev} | x_t, x0) (Ho et al. 2020, eq. 7).

    Works for strided steps: with ``a = abar_t / abar_prev`` and ``b = 1 - a``,
    ``mean = sqrt(abar_prev) b / (1 - abar_t) x0 + sqrt(a) (1 - abar_prev) / (1 - abar_t) x_t``,
    ``var = b (1 - abar_prev) / (1 - abar_t)``; no noise on the last step (``t_prev = -1``).
    """
    B = x_t.shape[0]
    ab_t = schedule.abar(torch.full((B,), t, dtype=torch.long), x_t)
    ab_p = schedule.abar(torch.full((B,), t_prev, dtype=torch.long), x_t)
    a = ab_t / ab_p
    b = 1 - a
    mean = ab_p.sqrt() * b / (1 - ab_t) * x0 + a.sqrt() * (1 - ab_p) / (1 - ab_t) * x_t
    if t_prev < 0:
        return mean
    var = b * (1 - ab_p) / (1 - ab_t)
    z = torch.randn(x_t.shape, generator=generator, dtype=x_t.dtype, device=x_t.device)
    return mean + var.sqrt() * z
