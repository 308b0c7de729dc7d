"""PlanarBase: which robots have a planar base, and the closed-form base placement against a numerical fit."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from scipy.optimize import least_squares

from ikdiffuser_ros.kinematics.planar_base import AXIS_LENGTH_M, PlanarBase
from ikdiffuser_ros.robots import robot_config


@pytest.mark.parametrize("name", ["panda", "baxter", "talos", "ur5"])
def test_fixed_base_robots_have_none(robot, name):
    assert PlanarBase.of(robot(name)) is None


@pytest.mark.parametrize("name", ["mobile_baxter", "dual_ur5_mobile"])
def test_mobile_robots_have_one(robot, name):
    model = robot(name)
    base = PlanarBase.of(model)
    assert base is not None
    assert [model.joint_names[i] for i in base.indices] == ["base_joint/x", "base_joint/y", "base_joint/theta"]


def test_a_locked_base_is_no_planar_base():
    """mobile_baxter with ``locked_joints: [base_joint]`` is baxter on a fixed base: nothing to place."""
    locked = dataclasses.replace(robot_config("mobile_baxter"), locked_joints=("base_joint",), joint_limits={}).load()
    assert PlanarBase.of(locked) is None


def _rows(model, base: PlanarBase, K: int, seed: int, shift_m: float = 0.4):
    """(K, n) configurations, their end-effector poses, and the same arms with the base moved by up to
    ``shift_m`` [m] and 0.5 rad."""
    g = torch.Generator().manual_seed(seed)
    lower, upper = model.limits(torch.float64)
    lower, upper = lower.clone(), upper.clone()
    lower[[base.x, base.y]], upper[[base.x, base.y]] = -0.5, 0.5  # room to move within the +-1 m limits
    q = lower + (upper - lower) * torch.rand(K, model.n_joints, generator=g, dtype=torch.float64)
    moved = q.clone()
    moved[:, [base.x, base.y]] += shift_m * (2 * torch.rand(K, 2, generator=g, dtype=torch.float64) - 1)
    moved[:, base.theta] += 0.5 * (2 * torch.rand(K, generator=g, dtype=torch.float64) - 1)
    return q, model.fk(q), moved


@pytest.mark.parametrize("name", ["mobile_baxter", "dual_ur5_mobile"])
@pytest.mark.parametrize("constrained", ["both", "left", "left position"])
def test_place_restores_the_base_of_exact_arms(robot, name, constrained):
    """Arms of a solution with the base moved away: the fit puts the base back (1e-9 m) whenever the targets fix
    it (two positions, or one full pose); one position-only target gets its end effector over the target."""
    model = robot(name)
    base = PlanarBase.of(model)
    q, T, moved = _rows(model, base, 64, seed=1)
    E = len(model.end_effectors)
    mask = torch.ones(64, E, dtype=torch.bool)
    pos_only = torch.zeros(64, E, dtype=torch.bool)
    if constrained != "both":
        mask[:, 1:] = False
        pos_only[:, 0] = constrained == "left position"
    lower, upper = model.limits(torch.float64)
    placed = base.place(moved, T, mask, pos_only, model.fk, lower, upper)
    arms = [i for i in range(model.n_joints) if i not in base.indices]
    assert torch.equal(placed[:, arms], moved[:, arms])
    if constrained == "left position":
        xy = (model.fk(placed)[:, 0, :2, 3] - T[:, 0, :2, 3]).norm(dim=-1)
        assert xy.max() < 1e-9
        turn = torch.remainder(placed[:, base.theta] - moved[:, base.theta] + math.pi, 2 * math.pi) - math.pi
        assert turn.abs().max() < 1e-12  # nothing in the target turns it
    else:
        assert (placed[:, base.indices] - q[:, base.indices]).abs().max() < 1e-9


def _numerical_fit(p_pose: np.ndarray, t_pose: np.ndarray, w_pos: np.ndarray, w_rot: np.ndarray) -> np.ndarray:
    """(dx, dy, dtheta) of the planar motion that best maps the poses (E, 4, 4) onto the targets, by
    scipy's least squares on the weighted residuals the fit minimises (positions and the axes of length
    AXIS_LENGTH_M projected on the floor)."""
    def residual(v):
        c, s = math.cos(v[2]), math.sin(v[2])
        R = np.array([[c, -s], [s, c]])
        res = [math.sqrt(w_pos[e]) * (R @ p_pose[e, :2, 3] + v[:2] - t_pose[e, :2, 3]) for e in range(len(w_pos))]
        res += [math.sqrt(w_rot[e]) * AXIS_LENGTH_M * (R @ p_pose[e, :2, k] - t_pose[e, :2, k])
                for e in range(len(w_pos)) for k in (0, 1)]
        return np.concatenate(res)

    best = min((least_squares(residual, [0.0, 0.0, a], xtol=1e-14, ftol=1e-14, gtol=1e-14) for a in (-2, 0, 2)),
               key=lambda r: r.cost)
    return best.x


def test_place_is_the_least_squares_fit(robot):
    """Sampled-like rows (arms and base both off): the closed form equals scipy's numerical fit of the same
    objective (arms perturbed, so no base fits exactly)."""
    model = robot("mobile_baxter")
    base = PlanarBase.of(model)
    q, T, moved = _rows(model, base, 16, seed=2, shift_m=0.2)
    arms = [i for i in range(model.n_joints) if i not in base.indices]
    moved[:, arms] += 0.05 * torch.randn(16, len(arms), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    mask = torch.ones(16, 2, dtype=torch.bool)
    pos_only = torch.tensor([[False, False], [False, True]]).repeat(8, 1)
    lower, upper = model.limits(torch.float64)
    placed = base._fitted(moved, model.fk(moved), T, mask.double(), (mask & ~pos_only).double())
    P = model.fk(moved).numpy()
    for k in range(16):
        dx, dy, dth = _numerical_fit(P[k], T[k].numpy(), np.ones(2), (~pos_only[k]).double().numpy())
        c, s = math.cos(dth), math.sin(dth)
        x, y = moved[k, base.x].item(), moved[k, base.y].item()
        expected = (c * x - s * y + dx, s * x + c * y + dy, moved[k, base.theta].item() + dth)
        got = placed[k, base.indices].tolist()
        assert got[:2] == pytest.approx(expected[:2], abs=1e-7)
        assert math.remainder(got[2] - expected[2], 2 * math.pi) == pytest.approx(0.0, abs=1e-7)


def test_place_never_leaves_a_row_worse(robot):
    """Targets whose fitted base lies beyond the +-1 m limits: the clamped base is kept only where it brings the
    worst end effector nearer, so no row ends farther off than it started."""
    model = robot("mobile_baxter")
    base = PlanarBase.of(model)
    q, T, moved = _rows(model, base, 64, seed=4)
    T = T.clone()
    T[..., 0, 3] += 1.2  # every target beyond the base's reach in x
    mask, pos_only = torch.ones(64, 2, dtype=torch.bool), torch.zeros(64, 2, dtype=torch.bool)
    lower, upper = model.limits(torch.float64)
    placed = base.place(moved, T, mask, pos_only, model.fk, lower, upper)

    def worst(rows):
        return (model.fk(rows)[..., :3, 3] - T[..., :3, 3]).norm(dim=-1).amax(-1)

    assert ((placed >= lower - 1e-12) & (placed <= upper + 1e-12)).all()
    assert (worst(placed) <= worst(moved) + 1e-12).all()
    assert (worst(placed) < worst(moved) - 1e-3).float().mean() > 0.5  # and it still helps most rows
