"""Batched Levenberg-Marquardt refinement (sampling/lm.py)."""

from __future__ import annotations

import pytest
import torch
from solvertools import random_q

from ikdiffuser_ros.kinematics.transforms import rotation_angle
from ikdiffuser_ros.sampling.lm import RefineConfig, refine

POS_TOL, ROT_TOL = 1e-5, 1e-4


def _errors(T, target):
    return (T[..., :3, 3] - target[..., :3, 3]).norm(dim=-1), rotation_angle(T[..., :3, :3], target[..., :3, :3])


def test_panda_converges_from_perturbed_starts_checked_by_pytorch_kinematics(panda, pk_panda_fk):
    q_true = random_q(panda, 300, seed=1)
    targets = panda.fk(q_true)
    q0 = q_true + 0.3 * torch.randn(q_true.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    res = refine(panda, q0, targets)
    assert res.converged.double().mean() > 0.95
    # independent FK: pytorch_kinematics
    pos, rot = _errors(pk_panda_fk(res.q[res.converged]), targets[res.converged, 0])
    assert pos.max() < POS_TOL + 1e-6 and rot.max() < ROT_TOL + 1e-6
    # the reported errors are the real ones
    p_own, r_own = _errors(panda.fk(res.q)[:, 0], targets[:, 0])
    torch.testing.assert_close(res.position_error, p_own, atol=1e-9, rtol=0)
    torch.testing.assert_close(res.rotation_error, r_own, atol=1e-9, rtol=0)
    lo, hi = panda.limits()
    assert ((res.q >= lo) & (res.q <= hi)).all()


def test_panda_from_uniform_random_starts_reaches_a_good_rate_within_limits(panda, pk_panda_fk):
    targets = panda.fk(random_q(panda, 500, seed=3))
    res = refine(panda, random_q(panda, 500, seed=4), targets)
    rate = res.converged.double().mean().item()
    assert rate > 0.35, rate  # ~0.5 measured: local minima and limits stop the rest
    lo, hi = panda.limits()
    assert ((res.q >= lo) & (res.q <= hi)).all()
    pos, rot = _errors(pk_panda_fk(res.q[res.converged]), targets[res.converged, 0])
    assert pos.max() < POS_TOL + 1e-6 and rot.max() < ROT_TOL + 1e-6
    assert (res.iterations <= RefineConfig().max_iters).all()


def test_baxter_both_arms_converge(baxter):
    q_true = random_q(baxter, 200, seed=5)
    targets = baxter.fk(q_true)
    q0 = q_true + 0.2 * torch.randn(q_true.shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    res = refine(baxter, q0, targets)
    assert res.converged.double().mean() > 0.9
    pos, rot = _errors(baxter.fk(res.q[res.converged]), targets[res.converged])  # (k, 2) both arms
    assert pos.max() < POS_TOL and rot.max() < ROT_TOL
    lo, hi = baxter.limits()
    assert ((res.q >= lo) & (res.q <= hi)).all()


def test_baxter_left_only_leaves_the_right_arm_alone(baxter):
    q_true = random_q(baxter, 200, seed=7)
    targets = baxter.fk(q_true)
    q0 = random_q(baxter, 200, seed=8)
    # the right target is garbage: masked, it must not matter
    targets[:, 1, :3, 3] = 100.0
    mask = torch.tensor([True, False])
    res = refine(baxter, q0, targets, target_mask=mask)
    right = [i for i, name in enumerate(baxter.joint_names) if name.startswith("right_")]
    left = [i for i, name in enumerate(baxter.joint_names) if name.startswith("left_")]
    assert len(right) == 7 and len(left) == 7
    # the right arm moves only as the left target needs: not at all (no shared joint)
    torch.testing.assert_close(res.q[:, right], q0[:, right], atol=0, rtol=0)
    assert res.converged.double().mean() > 0.35
    pos, rot = _errors(baxter.fk(res.q[res.converged])[:, 0], targets[res.converged, 0])
    assert pos.max() < POS_TOL and rot.max() < ROT_TOL
    # the reported error only looks at the left arm
    assert (res.position_error[res.converged] < POS_TOL).all()


def test_position_only_ignores_orientation(panda):
    q_true = random_q(panda, 200, seed=9)
    targets = panda.fk(q_true).clone()
    # a rotation that no solution will match by chance
    targets[:, 0, :3, :3] = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))
    q0 = q_true + 0.3 * torch.randn(q_true.shape, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    res = refine(panda, q0, targets, position_only=torch.tensor([True]))
    assert res.converged.double().mean() > 0.95
    T = panda.fk(res.q)[:, 0]
    pos, rot = _errors(T, targets[:, 0])
    assert pos[res.converged].max() < POS_TOL
    assert (res.rotation_error == 0).all()  # not constrained, not reported
    assert rot.median() > 0.1  # the orientation was really ignored
    # position-only from the true solution: nothing to do
    res0 = refine(panda, q_true, targets, position_only=torch.tensor([True]))
    torch.testing.assert_close(res0.q, q_true)
    assert (res0.iterations == 0).all()


def test_limits_hold_with_targets_at_the_limits(panda):
    lo, hi = panda.limits()
    q_true = random_q(panda, 100, seed=11)
    q_true[:, 3] = hi[3]  # joint 4 on its upper limit
    q_true[:, 5] = lo[5]
    targets = panda.fk(q_true)
    q0 = q_true + 0.2 * torch.randn(q_true.shape, generator=torch.Generator().manual_seed(12), dtype=torch.float64)
    res = refine(panda, q0, targets)
    assert ((res.q >= lo) & (res.q <= hi)).all()
    assert res.converged.double().mean() > 0.7


def test_deadline_stops_early(panda):
    targets = panda.fk(random_q(panda, 50, seed=13))
    res = refine(panda, random_q(panda, 50, seed=14), targets, deadline=0.0)  # already past
    assert (res.iterations == 0).all()


@pytest.mark.parametrize("pos_only", [False, True])
def test_refine_is_deterministic(panda, pos_only):
    targets = panda.fk(random_q(panda, 64, seed=16))
    q0 = random_q(panda, 64, seed=17)
    po = torch.tensor([pos_only])
    a = refine(panda, q0, targets, position_only=po)
    b = refine(panda, q0, targets, position_only=po)
    assert torch.equal(a.q, b.q) and torch.equal(a.converged, b.converged)
