"""Batched LM refinement, null-space polish and de-duplication (sampling/refine.py)."""

from __future__ import annotations

import math

import pytest
import torch
from solvertools import random_q

from ikdiffuser_ros.kinematics.transforms import rotation_angle
from ikdiffuser_ros.sampling.refine import (RefineConfig, count_distinct, deduplicate, joint_kinds,
                                            joint_tolerances, polish, refine, unique_mask)

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


def test_polish_lowers_a_cost_keeping_the_pose(panda):
    q_true = random_q(panda, 100, seed=15)
    targets = panda.fk(q_true)
    res = refine(panda, q_true + 0.05, targets)
    cost = lambda q: q[:, 0]  # noqa: E731 - push joint 1 down, within the null space
    out = polish(panda, res, targets, cost)
    ok = res.converged
    assert (out.converged == res.converged).all()
    assert (out.q[ok, 0] <= res.q[ok, 0] + 1e-12).all()
    assert (res.q[ok, 0] - out.q[ok, 0]).mean() > 0.1
    pos, rot = _errors(panda.fk(out.q[ok])[:, 0], targets[ok, 0])
    assert pos.max() < POS_TOL and rot.max() < ROT_TOL
    lo, hi = panda.limits()
    assert ((out.q >= lo) & (out.q <= hi)).all()


def test_dedup_merges_identical_and_near_identical():
    q = torch.tensor([[0.0, 0.0], [1e-4, -1e-4], [0.5, 0.0], [0.0, 0.0], [0.5, 2e-3]], dtype=torch.float64)
    keep, count = deduplicate(q, tol=1e-3)
    assert keep.tolist() == [True, False, True, False, True]
    assert count.item() == 3
    # failures are neither kept nor counted, and do not hide later successes
    keep, count = deduplicate(q, success=torch.tensor([False, True, True, True, True]), tol=1e-3)
    assert keep.tolist() == [False, True, True, False, True]
    # batched (B, N, n)
    qb = torch.stack([q, q.flip(0)])
    assert deduplicate(qb, tol=1e-3)[1].tolist() == [3, 3]


@pytest.mark.parametrize("wrap", [False, True])
def test_dedup_is_the_greedy_leader_clustering(wrap):
    """Against a plain Python loop: keep a row iff no earlier kept row is within tolerance."""
    g = torch.Generator().manual_seed(0)
    wrapping = torch.tensor([wrap, False, False])
    for _ in range(15):
        N = int(torch.randint(1, 50, (1,), generator=g))
        q = torch.randint(0, 4, (N, 3), generator=g).double() * 7e-4
        q += 1e-4 * torch.rand(N, 3, generator=g, dtype=torch.float64)
        if wrap:  # straddle the +-pi seam of the first (wrapping) joint
            q[:, 0] += torch.where(torch.rand(N, generator=g) < 0.5, math.pi - 1e-3, -math.pi)
        valid = torch.rand(N, generator=g) < 0.8
        kept: list[int] = []
        for i in range(N):
            if not valid[i]:
                continue
            d = q[i] - q[torch.tensor(kept, dtype=torch.long)] if kept else torch.zeros(0, 3, dtype=torch.float64)
            if wrap:
                d[:, 0] = torch.remainder(d[:, 0] + math.pi, 2 * math.pi) - math.pi
            if not kept or (d.abs().amax(-1) > 1e-3).all():
                kept.append(i)
        expect = torch.zeros(N, dtype=torch.bool)
        expect[kept] = True
        assert torch.equal(unique_mask(q, valid, 1e-3, wrapping), expect)


def test_count_distinct_uses_per_joint_tolerances_and_wraps(panda, baxter):
    tol = joint_tolerances(panda)
    assert torch.allclose(tol, torch.full((7,), 0.05, dtype=torch.float64))
    q = torch.zeros(4, 7, dtype=torch.float64)
    q[1, 2] = 0.04  # same (within 0.05 rad)
    q[2, 2] = 0.06  # distinct
    q[3, 6] = -0.06
    assert count_distinct(q, tol=tol).item() == 3
    # a wrapping joint compares modulo 2 pi
    wrap = torch.tensor([True, False])
    qw = torch.tensor([[math.pi - 0.01, 0.0], [-math.pi + 0.01, 0.0]], dtype=torch.float64)
    assert count_distinct(qw, tol=0.05, wrapping=wrap).item() == 1
    assert count_distinct(qw, tol=0.05).item() == 2
    assert unique_mask(qw, tol=0.05, wrapping=wrap).tolist() == [True, False]


def test_joint_kinds_of_mobile_robot():
    from ikdiffuser_ros.robots import load_robot

    m = load_robot("mobile_baxter")
    prismatic, wrapping = joint_kinds(m)
    names = m.joint_names
    assert prismatic[names.index("base_joint/x")] and prismatic[names.index("base_joint/y")]
    assert wrapping[names.index("base_joint/theta")] and not prismatic[names.index("base_joint/theta")]
    assert not prismatic[names.index("left_s0")] and not wrapping[names.index("left_s0")]
    assert torch.isclose(joint_tolerances(m)[names.index("base_joint/x")], torch.tensor(0.005, dtype=torch.float64))


@pytest.mark.parametrize("pos_only", [False, True])
def test_refine_is_deterministic(panda, pos_only):
    targets = panda.fk(random_q(panda, 64, seed=16))
    q0 = random_q(panda, 64, seed=17)
    po = torch.tensor([pos_only])
    a = refine(panda, q0, targets, position_only=po)
    b = refine(panda, q0, targets, position_only=po)
    assert torch.equal(a.q, b.q) and torch.equal(a.converged, b.converged)


def test_count_distinct_of_no_solutions_is_zero():
    from ikdiffuser_ros.sampling.refine import count_distinct

    assert int(count_distinct(torch.zeros(0, 7, dtype=torch.float64))) == 0
    assert count_distinct(torch.zeros(3, 0, 7)).tolist() == [0, 0, 0]
