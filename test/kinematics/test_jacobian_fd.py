"""Geometric Jacobians vs central finite differences of our own FK.

Position rows: (p(q + h e_i) - p(q - h e_i)) / 2h. Rotation rows: the root-frame angular
velocity ``R_minus so3_log(R_minus^T R_plus) / 2h`` (the log is in the EE frame, rotated to root).
"""

from __future__ import annotations

import pytest
import torch

from ikdiffuser_ros.kinematics.transforms import so3_log
from kinref import ROBOTS, random_q

H = 1e-6


def fd_jacobian(model, q: torch.Tensor) -> torch.Tensor:
    """(C, n) -> (C, E, 6, n) by central differences of model.fk."""
    C, n = q.shape
    step = torch.eye(n, dtype=q.dtype) * H
    Tp = model.fk(q[:, None, :] + step)  # (C, n, E, 4, 4)
    Tm = model.fk(q[:, None, :] - step)
    v = (Tp[..., :3, 3] - Tm[..., :3, 3]) / (2 * H)  # (C, n, E, 3)
    Rm = Tm[..., :3, :3]
    w_local = so3_log(Rm.transpose(-1, -2) @ Tp[..., :3, :3]) / (2 * H)
    w = (Rm @ w_local[..., None])[..., 0]
    return torch.cat([v, w], -1).permute(0, 2, 3, 1)  # (C, E, 6, n)


@pytest.mark.parametrize("name", ROBOTS)
def test_jacobian_matches_finite_differences(name, robot):
    model = robot(name)
    q = random_q(model, 25, seed=5)
    J = model.jacobian(q)
    J_fd = fd_jacobian(model, q)
    assert J.shape == J_fd.shape == (25, len(model.end_effectors), 6, model.n_joints)
    err = (J - J_fd).abs().max().item()
    assert err <= 1e-6, err
