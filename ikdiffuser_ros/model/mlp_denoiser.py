"""IKMLPDenoiser: a residual-MLP epsilon predictor with kinematic feedback, sized to learn on a CPU.

The transformer of :mod:`ikdiffuser_ros.model.denoiser` follows the paper but learns slowly per
CPU-minute. This network sees the same inputs as one flat vector and, optionally, the kinematic
feedback of :mod:`ikdiffuser_ros.model.feedback` (where the current noisy sample puts each end
effector, its error to the target and a damped least-squares joint step)::

    target_e   = [constrained, pos_only, pos_e (3), rot6d_e (6)]  zeroed where free (rot6d also
                 where position-only); 11 features per end effector
    h          = Linear(x_t (n) ++ targets (11 E) ++ feedback (15 E + n, if fk_feedback))
    t_emb      = MLP(sinusoidal(t))
    for each block:  h = h + Linear(SiLU(Linear(LN(h) + Linear_b(t_emb))))
    eps_hat    = Linear(LN(h))  (n)

Inputs are normalized as for the transformer (joints in [-1, 1], positions standardized). One model
answers any subset of constrained end effectors and position-only targets, as the paper's model does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from ikdiffuser_ros.model.denoiser import sinusoidal_embedding
from ikdiffuser_ros.model.feedback import feature_width
from ikdiffuser_ros.model.validation import check_ranges

#: target features per end effector: constrained flag, position-only flag, position (3), rot6d (6).
TARGET_FEATURES = 11


@dataclass
class MLPDenoiserConfig:
    #: number of active joints n.
    n_joints: int
    #: number of end effectors E.
    n_ee: int
    #: hidden width.
    d_model: int = 256
    #: residual blocks.
    n_blocks: int = 4
    #: condition on the kinematic feedback of the current sample (needs the robot at sampling time).
    fk_feedback: bool = True

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> None:
        """ValueError naming the first field outside its sane range (checked before building a network
        from an untrusted card; the checkpoint loader also caps the total parameter count)."""
        check_ranges(self, {"n_joints": (1, 512), "n_ee": (1, 64), "d_model": (1, 8192), "n_blocks": (1, 128)})

    @classmethod
    def from_dict(cls, d: dict) -> "MLPDenoiserConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def input_width(self) -> int:
        """Width of the first layer's input."""
        width = self.n_joints + TARGET_FEATURES * self.n_ee
        return width + (feature_width(self.n_joints, self.n_ee) if self.fk_feedback else 0)


class _ResBlock(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.ln = nn.LayerNorm(d)
        self.t_proj = nn.Linear(d, d)
        self.fc1 = nn.Linear(d, d)
        self.fc2 = nn.Linear(d, d)

    def forward(self, h: torch.Tensor, t_act: torch.Tensor, t_index: torch.Tensor) -> torch.Tensor:
        """h (B, d); t_act (U, d) per distinct timestep; t_index (B,) row -> distinct timestep."""
        return h + self.fc2(F.silu(self.fc1(self.ln(h) + self.t_proj(t_act)[t_index])))


class IKMLPDenoiser(nn.Module):
    """Epsilon predictor ``eps_hat(x_t, t | targets, feedback)``; see the module docstring."""

    def __init__(self, config: MLPDenoiserConfig):
        super().__init__()
        self.config = config
        d = config.d_model
        self.inp = nn.Linear(config.input_width(), d)
        self.t_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.blocks = nn.ModuleList(_ResBlock(d) for _ in range(config.n_blocks))
        self.ln_out = nn.LayerNorm(d)
        self.head = nn.Linear(d, config.n_joints)

    @property
    def needs_feedback(self) -> bool:
        return self.config.fk_feedback

    def encode_targets(self, ee_pos: torch.Tensor, ee_rot6d: torch.Tensor, ee_mask: torch.Tensor,
                       pos_only: torch.Tensor) -> torch.Tensor:
        """(B, E, 3) standardized, (B, E, 6), (B, E) bool, (B, E) bool -> (B, 11 E) target features."""
        mask, pos_only = ee_mask.bool(), pos_only.bool() & ee_mask.bool()
        keep_rot = (mask & ~pos_only)[..., None]
        feats = torch.cat([mask[..., None].to(ee_pos.dtype), pos_only[..., None].to(ee_pos.dtype),
                           ee_pos * mask[..., None], ee_rot6d * keep_rot], -1)
        return feats.flatten(1)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, ee_pos: torch.Tensor | None, ee_rot6d: torch.Tensor | None,
                ee_mask: torch.Tensor | None, pos_only: torch.Tensor | None, ctx: torch.Tensor | None = None,
                feedback: torch.Tensor | None = None) -> torch.Tensor:
        """Predict the noise.

        Args:
            x_t: (B, n) noisy normalized joints.
            t: (B,) long timesteps in [0, T).
            ee_pos, ee_rot6d, ee_mask, pos_only: as :meth:`encode_targets` (unused if ``ctx`` is given).
            ctx: optional precomputed ``encode_targets(...)`` (B, 11 E), reused across sampler steps.
            feedback: (B, 15 E + n) from :class:`~ikdiffuser_ros.model.feedback.KinematicFeedback`
                of ``x_t``; required iff ``config.fk_feedback``.
        Returns:
            eps_hat: (B, n).
        """
        if ctx is None:
            ctx = self.encode_targets(ee_pos, ee_rot6d, ee_mask, pos_only)
        parts = [x_t, ctx]
        if self.config.fk_feedback:
            if feedback is None:
                raise ValueError("this denoiser conditions on kinematic feedback: pass feedback=")
            parts.append(feedback)
        h = self.inp(torch.cat(parts, -1))
        # timestep terms once per distinct t (a sampler step has one; a training batch at most T)
        t_unique, t_index = torch.unique(t, return_inverse=True)
        t_act = F.silu(self.t_mlp(sinusoidal_embedding(t_unique, self.config.d_model)))
        for block in self.blocks:
            h = block(h, t_act, t_index)
        return self.head(self.ln_out(h))
