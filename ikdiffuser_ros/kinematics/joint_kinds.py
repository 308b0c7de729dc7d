"""Kinds of a model's active variables: lengths and wrapping angles, and what follows from them.

:func:`joint_kinds` says which variables are lengths [m] (prismatic joints, planar / floating
translations) and which are angles that wrap (``-pi`` and ``pi`` the same value: continuous joints,
planar theta, floating yaw / roll with the default ``[-pi, pi]`` range); :func:`wrap_to_pi` and
:func:`project_to_limits` bring values into range accordingly. Used by the LM, the polish, the
de-duplication, the objectives and the compiled path alike.
"""

from __future__ import annotations

import math

import torch

from ikdiffuser_ros.kinematics.joint_names import axis_of
from ikdiffuser_ros.kinematics.robot_model import RobotModel


def joint_kinds(model: RobotModel) -> tuple[torch.Tensor, torch.Tensor]:
    """(prismatic (n,) bool, wrapping (n,) bool) of the model's active variables.

    ``prismatic``: the variable is a length [m] (prismatic joints, planar /
    floating translations). ``wrapping``: the variable is an angle with period
    ``2 pi`` whose range is exactly ``[-pi, pi]`` (continuous joints, planar
    theta, floating yaw / roll), so ``-pi`` and ``pi`` are the same value.
    """
    prismatic, wrapping = [], []
    for i, name in enumerate(model.joint_names):
        joint = model.urdf.joints.get(name)
        if joint is not None:
            is_lin = joint.type == "prismatic"
            periodic = joint.type == "continuous"
        else:  # a planar / floating joint's variable
            var = axis_of(name)
            is_lin = var is not None and var.prismatic
            periodic = var is not None and var.wraps
        full = (abs(float(model.lower[i]) + math.pi) < 1e-9 and abs(float(model.upper[i]) - math.pi) < 1e-9)
        prismatic.append(is_lin)
        wrapping.append(periodic and full)
    return torch.tensor(prismatic), torch.tensor(wrapping)


def wrap_to_pi(x: torch.Tensor) -> torch.Tensor:
    """Angles -> [-pi, pi)."""
    return torch.remainder(x + math.pi, 2 * math.pi) - math.pi


def project_to_limits(q: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor,
                      wrapping: torch.Tensor | None = None) -> torch.Tensor:
    """Clamp ``q`` (..., n) into the limits; wrapping variables are wrapped to [-pi, pi) first."""
    if wrapping is not None and bool(wrapping.any()):
        q = torch.where(wrapping.to(q.device), wrap_to_pi(q), q)
    return torch.minimum(torch.maximum(q, lower), upper)

