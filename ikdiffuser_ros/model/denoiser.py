"""IKDenoiser: the epsilon-prediction network of IKDiffuser (arXiv 2506.13087), CPU-sized.

One token per joint and one per end effector::

    joint token j   = Linear(1, d)(x_t[j]) + joint_id_emb[j]
    EE token e      = MLP(pos_e (3) ++ rot6d_e (6)) + ee_id_emb[e]
                      (+ pos_only_emb, rot6d zeroed, if only the position is constrained)
                      = free_emb + ee_id_emb[e]     if the end effector is free (not constrained)
    t_emb           = MLP(sinusoidal(t))

    for each block:  h = h + Linear_b(SiLU(t_emb))            # timestep residual injection
                     h = h + SelfAttn(LN(h))                  # joints <-> joints
                     h = h + CrossAttn(LN(h), LN(EE tokens))  # joints -> end-effector targets
                     h = h + MLP(LN(h))
    eps_hat[j]      = Linear(d, 1)(LN(h[j]))

Inputs are *normalized* (see :mod:`ikdiffuser_ros.model.normalizer`): ``x_t`` in joint-normalized
units, ``ee_pos`` standardized. A free end effector's token does not depend on its pose values, so
the output is exactly invariant to them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from ikdiffuser_ros.model.validation import check_range, check_ranges


@dataclass
class DenoiserConfig:
    #: number of active joints n.
    n_joints: int
    #: number of end effectors E.
    n_ee: int
    #: token width.
    d_model: int = 128
    #: attention heads.
    n_heads: int = 4
    #: transformer blocks.
    n_layers: int = 4
    #: MLP hidden width = ff_mult * d_model.
    ff_mult: int = 4
    #: dropout in attention outputs and MLPs.
    dropout: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> None:
        """ValueError naming the first field outside its sane range (checked before building a network
        from an untrusted card; the checkpoint loader also caps the total parameter count)."""
        check_ranges(self, {"n_joints": (1, 512), "n_ee": (1, 64), "d_model": (2, 4096), "n_heads": (1, 64),
                            "n_layers": (1, 64), "ff_mult": (1, 16)})
        check_range("dropout", self.dropout, 0.0, 1.0, open_high=True)
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model = {self.d_model} is not divisible by n_heads = {self.n_heads}")

    @classmethod
    def from_dict(cls, d: dict) -> "DenoiserConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(B,) timesteps -> (B, dim) [cos | sin] features."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], -1)
    return F.pad(emb, (0, dim % 2))


class _Attention(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, d)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        B, L, d = x.shape
        S = ctx.shape[1]
        h = self.heads
        q = self.q(x).view(B, L, h, d // h).transpose(1, 2)
        k, v = self.kv(ctx).view(B, S, 2, h, d // h).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(B, L, d))


class _Block(nn.Module):
    def __init__(self, cfg: DenoiserConfig):
        super().__init__()
        d = cfg.d_model
        self.t_proj = nn.Linear(d, d)
        self.ln_self = nn.LayerNorm(d)
        self.self_attn = _Attention(d, cfg.n_heads, cfg.dropout)
        self.ln_cross = nn.LayerNorm(d)
        self.ln_ctx = nn.LayerNorm(d)
        self.cross_attn = _Attention(d, cfg.n_heads, cfg.dropout)
        self.ln_mlp = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, cfg.ff_mult * d), nn.GELU(), nn.Dropout(cfg.dropout),
                                 nn.Linear(cfg.ff_mult * d, d))

    def forward(self, h: torch.Tensor, ctx: torch.Tensor, t_act: torch.Tensor) -> torch.Tensor:
        h = h + self.t_proj(t_act)[:, None, :]
        x = self.ln_self(h)
        h = h + self.self_attn(x, x)
        h = h + self.cross_attn(self.ln_cross(h), self.ln_ctx(ctx))
        return h + self.mlp(self.ln_mlp(h))


class IKDenoiser(nn.Module):
    """Epsilon predictor ``eps_hat(x_t, t | end-effector targets)``; see the module docstring."""

    def __init__(self, config: DenoiserConfig):
        super().__init__()
        self.config = config
        n, E, d = config.n_joints, config.n_ee, config.d_model
        if d % config.n_heads:
            raise ValueError("d_model must be divisible by n_heads")
        self.joint_in = nn.Linear(1, d)
        self.joint_emb = nn.Parameter(torch.randn(n, d) * 0.02)
        self.t_mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.SiLU(), nn.Linear(4 * d, d))
        self.ee_mlp = nn.Sequential(nn.Linear(9, d), nn.SiLU(), nn.Linear(d, d))
        self.ee_emb = nn.Parameter(torch.randn(E, d) * 0.02)
        self.free_emb = nn.Parameter(torch.randn(d) * 0.02)
        self.pos_only_emb = nn.Parameter(torch.randn(d) * 0.02)
        self.blocks = nn.ModuleList(_Block(config) for _ in range(config.n_layers))
        self.ln_out = nn.LayerNorm(d)
        self.head = nn.Linear(d, 1)

    @property
    def needs_feedback(self) -> bool:
        """This network takes no kinematic feedback (see :mod:`ikdiffuser_ros.model.mlp_denoiser`)."""
        return False

    def encode_targets(self, ee_pos: torch.Tensor, ee_rot6d: torch.Tensor, ee_mask: torch.Tensor,
                       pos_only: torch.Tensor) -> torch.Tensor:
        """(B, E, 3), (B, E, 6), (B, E) bool, (B, E) bool -> (B, E, d) end-effector tokens."""
        pos_only = pos_only.bool()
        rot = torch.where(pos_only[..., None], torch.zeros_like(ee_rot6d), ee_rot6d)
        tok = self.ee_mlp(torch.cat([ee_pos, rot], -1))
        tok = tok + pos_only[..., None].to(tok.dtype) * self.pos_only_emb
        tok = torch.where(ee_mask.bool()[..., None], tok, self.free_emb.expand_as(tok))
        return tok + self.ee_emb

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, ee_pos: torch.Tensor, ee_rot6d: torch.Tensor,
                ee_mask: torch.Tensor, pos_only: torch.Tensor, ctx: torch.Tensor | None = None) -> torch.Tensor:
        """Predict the noise.

        Args:
            x_t: (B, n) noisy normalized joints.
            t: (B,) long timesteps in [0, T).
            ee_pos: (B, E, 3) standardized target positions.
            ee_rot6d: (B, E, 6) target rotations (first two columns of R).
            ee_mask: (B, E) bool, True = this end effector is constrained.
            pos_only: (B, E) bool, True = only its position is constrained.
            ctx: optional precomputed ``encode_targets(...)`` (B, E, d), reused across sampler steps.
        Returns:
            eps_hat: (B, n).
        """
        if ctx is None:
            ctx = self.encode_targets(ee_pos, ee_rot6d, ee_mask, pos_only)
        h = self.joint_in(x_t[..., None]) + self.joint_emb
        t_act = F.silu(self.t_mlp(sinusoidal_embedding(t, self.config.d_model)))
        for block in self.blocks:
            h = block(h, ctx, t_act)
        return self.head(self.ln_out(h)).squeeze(-1)
