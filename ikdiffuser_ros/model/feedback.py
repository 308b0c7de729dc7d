"""Kinematic feedback: what the current noisy sample reaches, as conditioning for the denoiser.

At every denoising step the joints of the current sample ``x_t`` (normalized, clamped to the limit
box) are put through forward kinematics; the features tell the network where each end effector is,
how far it is from its target, and which joint-space step would close that gap (one damped
least-squares step). Near the end of sampling ``x_t`` is close to a solution, so these features turn
the denoiser into a learned, target-aware refiner; at high noise they carry little and the network
learns to ignore them.

Per end effector e (zeros where e is free; rotation terms also zero where e is position-only)::

    cur_pos_e   (3)  standardized position reached by x_t
    cur_rot6d_e (6)  rotation reached by x_t (first two columns)
    dpos_e      (3)  (target - reached) position / pos_std
    drot_e      (3)  log(R_target R_reached^T): rotation vector in root axes [rad]

plus, once, ``dq`` (n): the damped least-squares step ``J^T (J J^T + lambda I)^-1 [dpos; drot]`` over the
constrained rows, in normalized joint units, clipped to +-2. Feature width: ``15 E + n``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ikdiffuser_ros.kinematics.transforms import matrix_to_rot6d, so3_log

#: damping lambda of the least-squares step [m^2 or rad^2].
DLS_DAMPING = 1e-2
#: clip of the least-squares step, in normalized joint units (the joint box is [-1, 1]).
DQ_CLIP = 2.0


def feature_width(n_joints: int, n_ee: int) -> int:
    """Number of feedback features for a robot with ``n_joints`` and ``n_ee`` end effectors."""
    return 15 * n_ee + n_joints


def rot6d_to_matrix(rot6d: torch.Tensor) -> torch.Tensor:
    """(..., 6) first two columns -> (..., 3, 3) rotation (Gram-Schmidt; exact for orthonormal input)."""
    a, b = rot6d[..., :3], rot6d[..., 3:]
    c1 = a / a.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    b = b - (c1 * b).sum(-1, keepdim=True) * c1
    c2 = b / b.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    return torch.stack([c1, c2, torch.cross(c1, c2, dim=-1)], -1)


@dataclass
class FeedbackTargets:
    """Targets of a batch of rows, prepared once per sampling call.

    Attributes: ``pos`` (B, E, 3) [m], ``rot`` (B, E, 3, 3), ``pos_w`` (B, E, 1) 1 where the position
    is constrained, ``rot_w`` (B, E, 1) 1 where the rotation is constrained.
    """

    pos: torch.Tensor
    rot: torch.Tensor
    pos_w: torch.Tensor
    rot_w: torch.Tensor

    @classmethod
    def build(cls, ee_pos: torch.Tensor, ee_rot6d: torch.Tensor, ee_mask: torch.Tensor,
              pos_only: torch.Tensor) -> "FeedbackTargets":
        """(B, E, 3) [m], (B, E, 6), (B, E) bool, (B, E) bool -> FeedbackTargets."""
        mask = ee_mask.bool()
        pos_w = mask.to(ee_pos.dtype)[..., None]
        rot_w = (mask & ~pos_only.bool()).to(ee_pos.dtype)[..., None]
        return cls(ee_pos, rot6d_to_matrix(ee_rot6d), pos_w, rot_w)


class KinematicFeedback:
    """``x_t (B, n) -> features (B, 15 E + n)`` for one robot and normalizer (see the module docstring)."""

    def __init__(self, robot, normalizer):
        self.robot = robot
        self.normalizer = normalizer

    @property
    def width(self) -> int:
        return feature_width(len(self.robot.joint_names), len(self.robot.end_effectors))

    def __call__(self, x_t: torch.Tensor, targets: FeedbackTargets) -> torch.Tensor:
        norm = self.normalizer
        q = norm.denormalize_joints(x_t.clamp(-1, 1))
        T, J = self.robot.fk_and_jacobian(q)  # (B, E, 4, 4), (B, E, 6, n)
        T, J = T.to(x_t.dtype), J.to(x_t.dtype)
        cur_pos, cur_rot = T[..., :3, 3], T[..., :3, :3]
        dpos_m = (targets.pos - cur_pos) * targets.pos_w
        drot = so3_log(targets.rot @ cur_rot.transpose(-1, -2)) * targets.rot_w
        per_ee = torch.cat([norm.normalize_pos(cur_pos) * targets.pos_w, matrix_to_rot6d(cur_rot) * targets.pos_w,
                            dpos_m / norm.pos_std.to(x_t.dtype), drot], -1)
        dq = self._dls_step(J, dpos_m, drot, targets)
        scale = 2.0 / (norm.upper - norm.lower).to(x_t.dtype)
        return torch.cat([per_ee.flatten(1), (dq * scale).clamp(-DQ_CLIP, DQ_CLIP)], -1)

    @staticmethod
    def _dls_step(J: torch.Tensor, dpos_m: torch.Tensor, drot: torch.Tensor, targets: FeedbackTargets) -> torch.Tensor:
        """Damped least-squares joint step (B, n) [joint units] over the constrained task rows."""
        B, E, _, n = J.shape
        w = torch.cat([targets.pos_w.expand(B, E, 3), targets.rot_w.expand(B, E, 3)], -1)  # (B, E, 6)
        Jw = (J * w[..., None]).reshape(B, 6 * E, n)
        err = torch.cat([dpos_m, drot], -1).reshape(B, 6 * E, 1)
        A = Jw @ Jw.transpose(1, 2) + DLS_DAMPING * torch.eye(6 * E, dtype=J.dtype, device=J.device)
        return (Jw.transpose(1, 2) @ torch.linalg.solve(A, err)).squeeze(-1)
