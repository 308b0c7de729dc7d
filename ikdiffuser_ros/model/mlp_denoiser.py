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

from ikdiffuser_ros.kinematics.groups import TRUNK
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
    #: one network per branch (end effectors and the joints that move only them: baxter's arms, talos's legs), in
    #: one set of dense weights whose cross-branch blocks are held at zero (:func:`structure_masks`): each
    #: branch's joints see only their own joints and end effectors, as if alone, and the units of a **trunk**
    #: (group -1: joints that move several end effectors, a torso or a mobile base), which see everything.
    #: The groups are the robot's (:func:`~ikdiffuser_ros.kinematics.groups.trunk_and_branches`, filled in by
    #: the trainer): ``joint_groups`` (n,) ids in -1..G-1 and ``ee_groups`` (E,) ids in 0..G-1. False / None =
    #: one dense network.
    factorize: bool = False
    joint_groups: list[int] | None = None
    ee_groups: list[int] | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> None:
        """ValueError naming the first field outside its sane range (checked before building a network
        from an untrusted card; the checkpoint loader also caps the total parameter count)."""
        check_ranges(self, {"n_joints": (1, 512), "n_ee": (1, 64), "d_model": (1, 8192), "n_blocks": (1, 128)})
        if self.factorize and self.joint_groups is None:
            raise ValueError("factorize needs joint_groups and ee_groups (the trainer takes them from the robot)")
        if (self.joint_groups is None) != (self.ee_groups is None):
            raise ValueError("joint_groups and ee_groups come together (or neither)")
        if self.joint_groups is not None:
            if not all(isinstance(g, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in g)
                       for g in (self.joint_groups, self.ee_groups)):
                raise ValueError("joint_groups and ee_groups must be lists of integer group ids")
            jg, eg = list(self.joint_groups), list(self.ee_groups)
            if len(jg) != self.n_joints or len(eg) != self.n_ee:
                raise ValueError(f"joint_groups needs {self.n_joints} ids and ee_groups {self.n_ee}, "
                                 f"got {len(jg)} and {len(eg)}")
            groups = sorted(set(eg))
            if groups != list(range(len(groups))) or not set(jg) <= {TRUNK, *groups} \
                    or len(groups) + (TRUNK in jg) > self.d_model:
                raise ValueError(f"group ids must be 0..G-1, each with an end effector, and -1 for trunk joints, at "
                                 f"most d_model groups: joint_groups={jg}, ee_groups={eg}")

    @classmethod
    def from_dict(cls, d: dict) -> "MLPDenoiserConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def input_width(self) -> int:
        """Width of the first layer's input."""
        width = self.n_joints + TARGET_FEATURES * self.n_ee
        return width + (feature_width(self.n_joints, self.n_ee) if self.fk_feedback else 0)


def unit_groups(config: MLPDenoiserConfig) -> torch.Tensor:
    """(d,) long: the group of each hidden unit of a factorized network, contiguous shares in the order trunk
    (-1, when some joint is the trunk's), 0, ..., G-1, in proportion to each group's joints (at least one;
    the trunk at least as many as the largest branch: it serves all of them)."""
    jg = list(config.joint_groups)
    ids = ([TRUNK] if TRUNK in jg else []) + list(range(max(config.ee_groups) + 1))
    counts = [max(1, jg.count(g)) for g in ids]
    if TRUNK in jg:
        counts[0] = max(counts)
    edges = [round(sum(counts[:k + 1]) / sum(counts) * config.d_model) for k in range(len(ids))]
    cpu = torch.device("cpu")  # also when the network is built on the meta device (checkpoint shape checks)
    which = torch.bucketize(torch.arange(config.d_model, device=cpu), torch.tensor(edges, device=cpu), right=True)
    return torch.tensor(ids, device=cpu)[which]


def structure_masks(config: MLPDenoiserConfig) -> dict[str, torch.Tensor]:
    """Zero patterns of a factorized network: ``{"inp", "hidden", "head"}`` (out, in) 0/1 masks that keep each
    branch's hidden units connected only to the inputs of their own branch and of the trunk (joints,
    end-effector targets, feedback) and to their own and the trunk's units, the trunk's units to everything,
    and each joint's output fed by its group's units (a branch joint's also by the trunk's). Without a trunk:
    block-diagonal hidden layers. Input layout as :meth:`IKMLPDenoiser.forward`: x_t (n), targets (11 per end
    effector), feedback (15 per end effector + n)."""
    cpu = torch.device("cpu")
    jg, eg = torch.tensor(config.joint_groups, device=cpu), torch.tensor(config.ee_groups, device=cpu)
    hid = unit_groups(config)
    feats = [jg, eg.repeat_interleave(TARGET_FEATURES)]
    if config.fk_feedback:
        feats += [eg.repeat_interleave(15), jg]
    feat = torch.cat(feats)

    def link(out: torch.Tensor, into: torch.Tensor, trunk_reads: bool = True) -> torch.Tensor:
        same = (out[:, None] == into[None]) | (into[None] == TRUNK)
        return (same | (out[:, None] == TRUNK) if trunk_reads else same).float()

    return {"inp": link(hid, feat), "hidden": link(hid, hid), "head": link(jg, hid, trunk_reads=False)}


class SegmentLayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over each contiguous segment ``[segments[k], segments[k + 1])`` of the units on its own
    (one segment ``[0, d]``: the plain layer norm); same parameters and state-dict keys."""

    def __init__(self, d: int, segments: list[int] | None = None) -> None:
        super().__init__(d)
        self.segments = list(segments) if segments else [0, d]

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if len(self.segments) == 2:
            return super().forward(h)
        parts = [F.layer_norm(h[..., a:b], (b - a,), self.weight[a:b], self.bias[a:b], self.eps)
                 for a, b in zip(self.segments[:-1], self.segments[1:])]
        return torch.cat(parts, -1)


def hidden_segments(config: MLPDenoiserConfig) -> list[int]:
    """Unit boundaries of the groups of a factorized network (``[0, d]`` for a dense one); a share rounded to
    nothing has none."""
    if not config.factorize:
        return [0, config.d_model]
    g = unit_groups(config)
    return [0, *(torch.nonzero(g[1:] != g[:-1]).flatten() + 1).tolist(), config.d_model]


class _ResBlock(nn.Module):
    def __init__(self, d: int, segments: list[int] | None = None):
        super().__init__()
        self.ln = SegmentLayerNorm(d, segments)
        self.t_proj = nn.Linear(d, d)
        self.fc1 = nn.Linear(d, d)
        self.fc2 = nn.Linear(d, d)

    def forward(self, h: torch.Tensor, t_act: torch.Tensor, t_index: torch.Tensor) -> torch.Tensor:
        """h (B, d); t_act (U, d) per distinct timestep; t_index (B,) row -> distinct timestep. (A factorized
        network's hidden layers are block-diagonal; torch multiplies them whole, which trains faster than block
        by block under autocast; the compiled sampler multiplies the blocks.)"""
        return h + self.fc2(F.silu(self.fc1(self.ln(h) + self.t_proj(t_act)[t_index])))


class IKMLPDenoiser(nn.Module):
    """Epsilon predictor ``eps_hat(x_t, t | targets, feedback)``; see the module docstring."""

    def __init__(self, config: MLPDenoiserConfig):
        super().__init__()
        self.config = config
        d = config.d_model
        self.inp = nn.Linear(config.input_width(), d)
        self.t_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        config.validate()
        segments = hidden_segments(config)
        self.blocks = nn.ModuleList(_ResBlock(d, segments) for _ in range(config.n_blocks))
        self.ln_out = SegmentLayerNorm(d, segments)
        self.head = nn.Linear(d, config.n_joints)
        if config.factorize:
            self._hold_structure(structure_masks(config))

    def _masked(self) -> list[tuple[nn.Parameter, torch.Tensor]]:
        """(weight, 0/1 mask) of every layer with a structure (:func:`structure_masks`)."""
        m = self._structure
        return [(self.inp.weight, m["inp"]), (self.head.weight, m["head"])] + \
            [(w, m["hidden"]) for b in self.blocks for w in (b.fc1.weight, b.fc2.weight)]

    def _zero_cross_weights(self) -> None:
        with torch.no_grad():
            for w, m in self._masked():
                w.mul_(m.to(w))

    def _hold_structure(self, masks: dict[str, torch.Tensor]) -> None:
        """Zero the cross-chain weights now, after every state-dict load, and in every gradient, so they stay
        zero through AdamW (zero gradient, zero moments, decoupled decay of zero) and the EMA."""
        self._structure = masks
        self._zero_cross_weights()
        self.register_load_state_dict_post_hook(lambda module, _keys: module._zero_cross_weights())
        for w, m in self._masked():
            w.register_hook(lambda g, m=m: g * m.to(g))

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
        t_act = F.silu(self.t_mlp(sinusoidal_embedding(t_unique, self.config.d_model).to(h.dtype)))
        for block in self.blocks:
            h = block(h, t_act, t_index)
        return self.head(self.ln_out(h))
