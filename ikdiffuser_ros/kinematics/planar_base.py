"""A mobile robot's planar base placed in closed form: the base pose that best fits the sampled arms to the targets.

A planar root joint (an SRDF planar virtual joint ``odom -> base``, or a URDF planar joint about the root's z)
moves every end effector by the same rigid motion of the floor plane: with the base at ``(x, y, theta)``,
``F(q) = P(x, y, theta) F(q | base at 0)``. So, for sampled arm joints, the base that brings the end effectors
nearest their targets in the plane has a closed form (the planar Procrustes fit of the weighted end-effector
positions and horizontal axes), and :meth:`PlanarBase.place` moves each row's base there.

Why: a diffusion sample of a mobile manipulator is off mostly because its base pose does not suit both arms at
once (docs/training.md, cause 3): the network has to learn the base from the targets over the whole range of the
base, and one percent of a 2 m range is 20 mm at the hands. Placing the base exactly for the sampled arms
leaves the network the arms' errors only (mobile_baxter, 1000 held-out targets, the shipped sampler: raw
median 11.2 -> 6.5 mm; docs/solver.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ikdiffuser_ros.kinematics.joint_names import planar_indices

#: Length [m] that weighs a constrained rotation against positions in the fit: each end effector's x and y
#: axes, projected on the floor and scaled to this length, count as two more point pairs.
AXIS_LENGTH_M = 0.3
#: Weight [m^2] that keeps a row's heading where nothing in the targets fixes it (one position-only target).
HEADING_PRIOR_M2 = 1e-12

FK = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class PlanarBase:
    """Indices of the ``x`` [m], ``y`` [m] and ``theta`` [rad] variables of a robot's planar root joint."""

    x: int
    y: int
    theta: int

    @classmethod
    def of(cls, robot) -> "PlanarBase | None":
        """The robot's planar base, or None: no active planar joint, or one that does not move every end
        effector rigidly in the root's floor plane (checked by FK on a few configurations)."""
        for x, y, theta in planar_indices(list(robot.joint_names)):
            base = cls(x, y, theta)
            if base._moves_rigidly(robot):
                return base
        return None

    @property
    def indices(self) -> list[int]:
        return [self.x, self.y, self.theta]

    def _moves_rigidly(self, robot) -> bool:
        """``F(q) == P(x, y, theta) F(q | base 0)`` on four configurations within the limits (1e-9 m)."""
        lower, upper = robot.limits(torch.float64)
        u = torch.rand(4, robot.n_joints, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        q = lower + (upper - lower) * u
        zero = q.clone()
        zero[:, self.indices] = 0.0
        moved = _planar(q[:, self.x], q[:, self.y], q[:, self.theta])[:, None] @ robot.fk(zero)
        return bool(torch.allclose(robot.fk(q), moved, atol=1e-9))

    def place(self, q: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, pos_only: torch.Tensor, fk: FK,
              lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
        """Rows with their base moved to fit their end effectors to the targets; a row keeps its base where
        the moved one (within the limits) would leave its worst constrained end effector farther off.

        Args:
            q: (M, n) float64 joint values [rad or m].
            targets: (M, E, 4, 4) end-effector targets in the root frame [m].
            mask, pos_only: (M, E) bool, constrained end effectors and those constrained in position only.
            fk: (M, n) -> (M, E, 4, 4) end-effector poses in the root frame.
            lower, upper: (n,) joint limits.
        Returns:
            (M, n) float64.
        """
        poses = fk(q)
        moved = self._fitted(q, poses, targets, mask.to(q.dtype), (mask & ~pos_only).to(q.dtype))
        moved = torch.minimum(torch.maximum(moved, lower), upper)
        better = _worst_position_error(fk(moved), targets, mask) <= _worst_position_error(poses, targets, mask)
        return torch.where(better[:, None], moved, q)

    def _fitted(self, q: torch.Tensor, poses: torch.Tensor, targets: torch.Tensor, w_pos: torch.Tensor,
                w_rot: torch.Tensor) -> torch.Tensor:
        """(M, n) rows with the base composed with the planar motion (rotation d_theta, shift d) that maps the
        rows' end effectors (``poses`` (M, E, 4, 4)) best onto ``targets``; weights (M, E)."""
        p, t = poses[..., :2, 3], targets[..., :2, 3]  # (M, E, 2)
        total = w_pos.sum(-1, keepdim=True).clamp_min(1e-12)
        pc = (w_pos[..., None] * p).sum(1) / total  # (M, 2) weighted centroids
        tc = (w_pos[..., None] * t).sum(1) / total
        a = torch.cat([p - pc[:, None], AXIS_LENGTH_M * poses[..., :2, 0], AXIS_LENGTH_M * poses[..., :2, 1]], 1)
        b = torch.cat([t - tc[:, None], AXIS_LENGTH_M * targets[..., :2, 0], AXIS_LENGTH_M * targets[..., :2, 1]], 1)
        w = torch.cat([w_pos, w_rot, w_rot], 1)  # (M, 3E)
        dot = (w * (a * b).sum(-1)).sum(-1) + HEADING_PRIOR_M2
        cross = (w * (a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0])).sum(-1)
        d_theta = torch.atan2(cross, dot)
        c, s = torch.cos(d_theta), torch.sin(d_theta)
        out = q.clone()
        # new base = shift(d) rot(d_theta) old base, with d = tc - rot(d_theta) pc
        x, y = q[:, self.x] - pc[:, 0], q[:, self.y] - pc[:, 1]
        out[:, self.x] = c * x - s * y + tc[:, 0]
        out[:, self.y] = s * x + c * y + tc[:, 1]
        out[:, self.theta] = torch.remainder(q[:, self.theta] + d_theta + math.pi, 2 * math.pi) - math.pi
        return out


def _planar(x: torch.Tensor, y: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """(M,) -> (M, 4, 4) poses ``translate(x, y) rot_z(theta)``."""
    T = torch.eye(4, dtype=x.dtype).repeat(x.shape[0], 1, 1)
    c, s = torch.cos(theta), torch.sin(theta)
    T[:, 0, 0], T[:, 0, 1], T[:, 1, 0], T[:, 1, 1] = c, -s, s, c
    T[:, 0, 3], T[:, 1, 3] = x, y
    return T


def _worst_position_error(poses: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(M,) largest position error [m] over the constrained end effectors."""
    return torch.where(mask, (poses[..., :3, 3] - targets[..., :3, 3]).norm(dim=-1), 0.0).amax(-1)
