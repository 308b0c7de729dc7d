"""Kinds of a model's active variables: lengths and wrapping angles, and what follows from them.

:func:`joint_kinds` says which variables are lengths [m] (prismatic joints, planar / floating
translations) and which are angles that wrap (``-pi`` and ``pi`` the same value: continuous joints,
planar theta, floating yaw / roll with the default ``[-pi, pi]`` range); :func:`wrap_to_pi` and
:func:`project_to_limits` bring values into range accordingly. Used by the LM, the polish, the
de-duplication, the objectives and the compiled path alike.

:func:`full_turns` says which angles span more than one turn without wrapping (a UR arm's
``+-2 pi`` joints): each configuration has copies ``2 pi`` apart with the same poses. The prior
learns such a joint in one turn (:func:`learnt_box`, :func:`fold_turns`) and the solver spreads its
samples back over the copies within the limits (:func:`unfold_turns`).
"""

from __future__ import annotations

import math

import numpy as np
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


#: One turn [rad].
TURN = 2 * math.pi


def full_turns(model: RobotModel) -> torch.Tensor:
    """(n,) bool: angles whose range spans more than one turn and does not wrap (``+-2 pi``
    revolute joints): the configurations 2 pi apart are copies with the same poses."""
    prismatic, wrapping = joint_kinds(model)
    return ~prismatic & ~wrapping & (model.upper - model.lower > TURN + 1e-9)


def learnt_box(model: RobotModel) -> tuple[torch.Tensor, torch.Tensor]:
    """(lower, upper) (n,) float64 of the joint box the prior learns: the limits, but one turn
    ``[mid - pi, mid + pi]`` around the middle of the range for :func:`full_turns` joints."""
    turns = full_turns(model)
    mid = 0.5 * (model.lower + model.upper)
    return torch.where(turns, mid - math.pi, model.lower), torch.where(turns, mid + math.pi, model.upper)


def fold_turns(q: torch.Tensor, lower: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """``q`` (..., n) with each ``turns`` joint moved by whole turns into ``[lower, lower + 2 pi)``
    (``lower`` (n,): :func:`learnt_box`'s)."""
    lower, turns = lower.to(q), turns.to(q.device)
    return torch.where(turns, lower + torch.remainder(q - lower, TURN), q)


def unfold_turns(q: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor, turns: torch.Tensor,
                 reference: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each ``turns`` joint of ``q`` (M, n) moved to one of its copies ``q + 2 pi k`` within
    ``[lower, upper]`` (n,): the copy nearest ``reference`` (M, n) when given (the seed, as a
    robot's current state), else one drawn uniformly (the spread of uniform configurations over
    the full range). Other joints and values with no copy in the limits are returned as they are."""
    if not bool(turns.any()):
        return q
    lower, upper, turns = lower.to(q), upper.to(q), turns.to(q.device)
    k_min = torch.ceil((lower - q) / TURN - 1e-9)
    k_max = torch.floor((upper - q) / TURN + 1e-9)
    if reference is not None:
        k = torch.round((reference.to(q) - q) / TURN).clamp(k_min, k_max)
    else:
        u = torch.rand(q.shape, generator=generator, dtype=q.dtype, device=q.device)
        k = torch.minimum(k_min + torch.floor(u * (k_max - k_min + 1)), k_max)
    return torch.where(turns & (k_max >= k_min), q + TURN * k, q)


def uniform_in_limits(lower: torch.Tensor, upper: torch.Tensor, rows: int, generator: torch.Generator,
                      dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """(rows, n) joint values [rad or m] drawn uniformly within ``[lower, upper]`` (n,) from ``generator``,
    of ``dtype`` on the generator's device (the uniform starts and targets of the solver, the data and the
    benches)."""
    u = torch.rand(rows, lower.shape[-1], generator=generator, dtype=dtype, device=generator.device)
    lower, upper = lower.to(u), upper.to(u)
    return lower + (upper - lower) * u


def wrap_to_pi(x: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """Angles -> [-pi, pi) (a tensor or a numpy array: ``%`` is the floored remainder in both)."""
    return (x + math.pi) % (2 * math.pi) - math.pi


def project_to_limits(q: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor,
                      wrapping: torch.Tensor | None = None) -> torch.Tensor:
    """Clamp ``q`` (..., n) into the limits; wrapping variables are wrapped to [-pi, pi) first."""
    if wrapping is not None and bool(wrapping.any()):
        q = torch.where(wrapping.to(q.device), wrap_to_pi(q), q)
    return torch.minimum(torch.maximum(q, lower), upper)

