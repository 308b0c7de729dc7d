"""Normalization of joints and end-effector positions (an ``nn.Module``: stats live in the state_dict).

- joints ``q`` (..., n) in joint units -> ``x`` in [-1, 1]: ``x = 2 (q - lower) / (upper - lower) - 1``;
- end-effector positions (..., E, 3) [m] -> ``(p - pos_mean[e]) / pos_std[e]`` per end effector and axis,
  statistics from the training data (or FK of uniform samples);
- the 6-D rotation (two columns of R) is already in [-1, 1] and is passed through.
"""

from __future__ import annotations

import torch
from torch import nn


class Normalizer(nn.Module):
    """Joint-limit and dataset-statistics normalization.

    Buffers: ``lower``/``upper`` (n,), ``pos_mean``/``pos_std`` (E, 3), all float32.
    """

    def __init__(self, lower: torch.Tensor, upper: torch.Tensor, pos_mean: torch.Tensor, pos_std: torch.Tensor):
        super().__init__()
        self.register_buffer("lower", torch.as_tensor(lower, dtype=torch.float32).clone())
        self.register_buffer("upper", torch.as_tensor(upper, dtype=torch.float32).clone())
        self.register_buffer("pos_mean", torch.as_tensor(pos_mean, dtype=torch.float32).clone())
        self.register_buffer("pos_std", torch.as_tensor(pos_std, dtype=torch.float32).clamp_min(1e-6).clone())

    @classmethod
    def empty(cls, n_joints: int, n_ee: int) -> "Normalizer":
        """Placeholder with the right buffer shapes, to be filled by ``load_state_dict``."""
        return cls(-torch.ones(n_joints), torch.ones(n_joints), torch.zeros(n_ee, 3), torch.ones(n_ee, 3))

    @classmethod
    def fit(cls, lower, upper, ee_pos: torch.Tensor) -> "Normalizer":
        """Joint limits (n,) and sample end-effector positions (M, E, 3) -> Normalizer."""
        ee_pos = ee_pos.double()
        return cls(lower, upper, ee_pos.mean(0), ee_pos.std(0))

    def normalize_joints(self, q: torch.Tensor) -> torch.Tensor:
        """(..., n) joint units -> (..., n) in [-1, 1] (for q within limits)."""
        lo, hi = self.lower.to(q.dtype), self.upper.to(q.dtype)
        return 2 * (q - lo) / (hi - lo) - 1

    def denormalize_joints(self, x: torch.Tensor) -> torch.Tensor:
        """(..., n) normalized -> (..., n) joint units."""
        lo, hi = self.lower.to(x.dtype), self.upper.to(x.dtype)
        return lo + (x + 1) * 0.5 * (hi - lo)

    def normalize_pos(self, pos: torch.Tensor) -> torch.Tensor:
        """(..., E, 3) [m] -> (..., E, 3) standardized."""
        return (pos - self.pos_mean.to(pos.dtype)) / self.pos_std.to(pos.dtype)

    def denormalize_pos(self, pos: torch.Tensor) -> torch.Tensor:
        """(..., E, 3) standardized -> (..., E, 3) [m]."""
        return pos * self.pos_std.to(pos.dtype) + self.pos_mean.to(pos.dtype)

    def stats(self) -> dict:
        """Plain-list copy of the statistics (for the checkpoint card)."""
        return {k: v.tolist() for k, v in self.state_dict().items()}
