"""Rotation and pose utilities on batched torch tensors.

Quaternions use ROS order ``(x, y, z, w)``. Shapes: ``(..., 4)`` quaternions,
``(..., 3, 3)`` rotations, ``(..., 4, 4)`` homogeneous transforms.
"""

from __future__ import annotations

import numpy as np
import torch


def quat_to_matrix(quat: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """(..., 4) unit quaternions (x, y, z, w) -> (..., 3, 3) rotation matrices; torch in, torch out,
    numpy in, numpy out (one (4,) quaternion in Python floats: 3 us where numpy's per-op cost takes 20)."""
    one = isinstance(quat, np.ndarray) and quat.ndim == 1
    stack = (lambda parts, axis: list(parts)) if one else np.stack if isinstance(quat, np.ndarray) else torch.stack
    x, y, z, w = quat.tolist() if one else (quat[..., i] for i in range(4))
    xx, yy, zz = x * x, y * y, z * z
    xy, xz, yz, wx, wy, wz = x * y, x * z, y * z, w * x, w * y, w * z
    rows = [
        stack([1 - 2 * (yy + zz), 2 * (xy - wz), 2 * (xz + wy)], -1),
        stack([2 * (xy + wz), 1 - 2 * (xx + zz), 2 * (yz - wx)], -1),
        stack([2 * (xz - wy), 2 * (yz + wx), 1 - 2 * (xx + yy)], -1),
    ]
    return np.array(rows) if one else stack(rows, -2)


def matrix_to_quat(rot: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) rotation matrices -> (..., 4) unit quaternions (x, y, z, w), w >= 0.

    Uses the numerically stable branch on the largest of (w, x, y, z).
    """
    m = rot
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    candidates = torch.stack(
        [1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1
    )  # 4*w^2, 4*x^2, 4*y^2, 4*z^2
    best = candidates.argmax(-1, keepdim=True)
    s = torch.sqrt(candidates.gather(-1, best).clamp_min(1e-30)).squeeze(-1) * 2  # 4 * |largest|
    d = lambda i, j: m[..., i, j]  # noqa: E731
    quats = torch.stack(
        [
            torch.stack([d(2, 1) - d(1, 2), d(0, 2) - d(2, 0), d(1, 0) - d(0, 1), s * s / 4], -1),
            torch.stack([s * s / 4, d(0, 1) + d(1, 0), d(0, 2) + d(2, 0), d(2, 1) - d(1, 2)], -1),
            torch.stack([d(0, 1) + d(1, 0), s * s / 4, d(1, 2) + d(2, 1), d(0, 2) - d(2, 0)], -1),
            torch.stack([d(0, 2) + d(2, 0), d(1, 2) + d(2, 1), s * s / 4, d(1, 0) - d(0, 1)], -1),
        ],
        -2,
    )  # (..., 4 branches, 4)
    quat = quats.gather(-2, best.unsqueeze(-1).expand(*best.shape[:-1], 1, 4)).squeeze(-2) / s.unsqueeze(-1)
    quat = quat / quat.norm(dim=-1, keepdim=True)
    return torch.where(quat[..., 3:4] < 0, -quat, quat)


def so3_log(rot: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) rotations -> (..., 3) rotation vectors (axis * angle, angle in [0, pi]).

    Exact near 0 (first-order series) and near pi (axis from the symmetric part).
    """
    vee = torch.stack(
        [rot[..., 2, 1] - rot[..., 1, 2], rot[..., 0, 2] - rot[..., 2, 0], rot[..., 1, 0] - rot[..., 0, 1]], -1
    ) / 2  # sin(theta) * axis
    cos = ((rot.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1.0, 1.0)
    sin = vee.norm(dim=-1)
    angle = torch.atan2(sin, cos)
    small = sin < 1e-7
    scale = torch.where(small, torch.ones_like(angle), angle / torch.where(small, torch.ones_like(sin), sin))
    regular = vee * scale.unsqueeze(-1)
    # Near pi: R ~ 2 a a^T - I, so a_i^2 = (R_ii + 1) / 2; signs from the largest component's row.
    diag = rot.diagonal(dim1=-2, dim2=-1)
    axis_sq = ((diag - cos.unsqueeze(-1)) / (1 - cos).clamp_min(1e-12).unsqueeze(-1)).clamp_min(0)
    k = axis_sq.argmax(-1, keepdim=True)
    row = (rot + rot.transpose(-1, -2)).gather(-2, k.unsqueeze(-1).expand(*k.shape[:-1], 1, 3)).squeeze(-2)
    axis = row / row.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    # Sign: keep the direction consistent with vee where vee carries any information.
    sign = torch.where((axis * vee).sum(-1) < 0, -1.0, 1.0).to(rot.dtype)
    near_pi = (cos < -0.99) & (sin < 1e-3)
    return torch.where(near_pi.unsqueeze(-1), axis * (sign * angle).unsqueeze(-1), regular)


def rotation_angle(rot_a: torch.Tensor, rot_b: torch.Tensor) -> torch.Tensor:
    """Geodesic angle [rad] between (..., 3, 3) rotations, in [0, pi]."""
    rel = rot_a.transpose(-1, -2) @ rot_b
    vee = torch.stack(
        [rel[..., 2, 1] - rel[..., 1, 2], rel[..., 0, 2] - rel[..., 2, 0], rel[..., 1, 0] - rel[..., 0, 1]], -1
    )
    cos = rel.diagonal(dim1=-2, dim2=-1).sum(-1) - 1
    return torch.atan2(vee.norm(dim=-1), cos)


def pose_errors(T_a: torch.Tensor, T_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., 4, 4) poses -> (position error [m], rotation error [rad]), each (...)."""
    pos = (T_a[..., :3, 3] - T_b[..., :3, 3]).norm(dim=-1)
    return pos, rotation_angle(T_a[..., :3, :3], T_b[..., :3, :3])


def matrix_to_rot6d(rot: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 6): the first two columns, the continuous 6-D representation (Zhou et al. 2019)."""
    return torch.cat([rot[..., :, 0], rot[..., :, 1]], -1)


def pose_to_matrix(position: torch.Tensor, quat: torch.Tensor) -> torch.Tensor:
    """(..., 3) positions [m] and (..., 4) unit quaternions (x, y, z, w) -> (..., 4, 4)."""
    T = torch.zeros(*position.shape[:-1], 4, 4, dtype=position.dtype, device=position.device)
    T[..., :3, :3] = quat_to_matrix(quat)
    T[..., :3, 3] = position
    T[..., 3, 3] = 1
    return T


def euler_zyx_to_matrix(yaw: torch.Tensor, pitch: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """Yaw, pitch, roll [rad] (each (...)) -> (..., 3, 3) ``Rz(yaw) @ Ry(pitch) @ Rx(roll)``.

    The one Euler order of this package (URDF ``rpy`` and planar/floating joint variables use it).
    """
    cy, sy, cp, sp, cr, sr = (torch.cos(yaw), torch.sin(yaw), torch.cos(pitch), torch.sin(pitch),
                              torch.cos(roll), torch.sin(roll))
    rows = [
        torch.stack([cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr], -1),
        torch.stack([sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr], -1),
        torch.stack([-sp, cp * sr, cp * cr], -1),
    ]
    return torch.stack(rows, -2)


def matrix_to_euler_zyx(rot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(..., 3, 3) -> (yaw, pitch, roll) [rad], the inverse of :func:`euler_zyx_to_matrix` (pitch in [-pi/2, pi/2])."""
    yaw = torch.atan2(rot[..., 1, 0], rot[..., 0, 0])
    pitch = torch.asin((-rot[..., 2, 0]).clamp(-1.0, 1.0))
    roll = torch.atan2(rot[..., 2, 1], rot[..., 2, 2])
    return yaw, pitch, roll
