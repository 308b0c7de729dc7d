"""The IKDiffuserSolver facade (solver.py): results, determinism, masks, validation, checkpoints."""

from __future__ import annotations

import math

import pytest
import torch
from solvertools import random_q, tiny_loaded_model

from ikdiffuser_ros import IKDiffuserSolver, InvalidRequestError
from ikdiffuser_ros.errors import CheckpointError
from ikdiffuser_ros.kinematics.transforms import rotation_angle
from ikdiffuser_ros.solver import SolverConfig

POS_TOL, ROT_TOL = 1e-5, 1e-4


@pytest.fixture(scope="module")
def targets(panda):
    q_true = random_q(panda, 6, seed=21)
    return q_true, panda.fk(q_true)


@pytest.fixture(scope="module")
def result(panda_solver, targets):
    return panda_solver.solve(targets[1], num_solutions=24, steps=8, random_seed=3)


def test_result_shapes_and_meaning(panda, targets, result, pk_panda_fk):
    B, N, n = 6, 24, 7
    r = result
    assert r.q.shape == (B, N, n) and r.q.dtype == torch.float64
    for name in ("position_error", "rotation_error", "within_limits", "success", "in_self_collision", "is_unique"):
        assert getattr(r, name).shape == (B, N), name
    assert r.num_unique.shape == (B,) and r.cost is None
    assert {"sample", "refine", "total"} <= set(r.timings)
    lo, hi = panda.limits()
    assert ((r.q >= lo) & (r.q <= hi)).all() and r.within_limits.all()
    # success and errors agree with an independent FK (pytorch_kinematics)
    T = pk_panda_fk(r.q.reshape(-1, n)).view(B, N, 4, 4)
    goal = targets[1][:, None, 0]
    pos = (T[..., :3, 3] - goal[..., :3, 3]).norm(dim=-1)
    rot = rotation_angle(T[..., :3, :3], goal.expand_as(T)[..., :3, :3])
    torch.testing.assert_close(r.position_error, pos, atol=1e-6, rtol=0)
    torch.testing.assert_close(r.rotation_error, rot, atol=1e-6, rtol=0)
    assert (pos[r.success] < POS_TOL + 1e-6).all() and (rot[r.success] < ROT_TOL + 1e-6).all()
    assert r.success.double().mean() > 0.3  # near-random starts; ~0.5 measured
    assert r.success.any(-1).all()  # every target solved at least once
    # ordering: unique successes first, then duplicate successes, then failures
    rank = torch.where(r.is_unique, 0, torch.where(r.success, 1, 2))
    assert (rank[:, 1:] >= rank[:, :-1]).all()
    assert torch.equal(r.num_unique, r.is_unique.sum(-1))
    assert (r.is_unique <= r.success).all()


def test_unique_solutions_differ(result):
    for b in range(result.q.shape[0]):
        u = result.q[b][result.is_unique[b]]
        if len(u) > 1:
            diff = (u[:, None] - u[None]).abs().amax(-1) + torch.eye(len(u), dtype=torch.float64) * 10
            assert diff.min() > SolverConfig().dedup_tol


def test_deterministic_given_random_seed(panda_solver, targets, result):
    again = panda_solver.solve(targets[1], num_solutions=24, steps=8, random_seed=3)
    assert torch.equal(again.q, result.q) and torch.equal(again.success, result.success)
    other = panda_solver.solve(targets[1], num_solutions=24, steps=8, random_seed=4)
    assert not torch.equal(other.q, result.q)
    gen = torch.Generator().manual_seed(3)
    with_gen = panda_solver.solve(targets[1], num_solutions=24, steps=8, generator=gen)
    assert torch.equal(with_gen.q, result.q)


def test_single_target_without_batch_dim_and_ddpm(panda_solver, targets):
    r = panda_solver.solve(targets[1][0], num_solutions=8, steps=6, sampler="ddpm")
    assert r.q.shape == (1, 8, 7)


def test_raw_samples_without_refinement(panda, panda_solver, targets):
    r = panda_solver.solve(targets[1], num_solutions=8, steps=6, refine=False)
    lo, hi = panda.limits()
    assert ((r.q >= lo) & (r.q <= hi)).all()
    assert r.timings["refine"] == 0.0
    assert not r.success.any()  # a near-random tiny model never hits 10 um by chance


def test_position_only_through_the_solver(panda_solver, targets):
    T = targets[1].clone()
    T[:, 0, :3, :3] = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))
    r = panda_solver.solve(T, num_solutions=16, steps=6, position_only=torch.tensor([True]))
    assert (r.rotation_error == 0).all()
    assert r.success.double().mean() > 0.5
    assert (r.position_error[r.success] <= POS_TOL).all()


def test_timeout_returns_what_it_has(panda_solver, targets):
    r = panda_solver.solve(targets[1], num_solutions=16, steps=4, timeout=1e-6)
    assert r.q.shape == (6, 16, 7)  # refinement skipped, rows unrefined
    assert r.success.double().mean() < 0.2


@pytest.fixture(scope="module")
def baxter_solver(baxter):
    return IKDiffuserSolver.from_model(tiny_loaded_model(baxter, train_steps=40), baxter)


def test_baxter_left_arm_only(baxter, baxter_solver):
    q_true = random_q(baxter, 4, seed=22)
    T = baxter.fk(q_true)
    T[:, 1] = float("nan")  # the masked right target may hold anything
    r = baxter_solver.solve(T, num_solutions=16, steps=6, target_mask=torch.tensor([True, False]))
    assert r.success.any(-1).all()
    left = baxter.fk(r.q[r.success])[:, 0]
    goal = T[:, None, 0].expand(4, 16, 4, 4)[r.success]
    assert (left[:, :3, 3] - goal[:, :3, 3]).norm(dim=-1).max() < POS_TOL
    assert rotation_angle(left[:, :3, :3], goal[:, :3, :3]).max() < ROT_TOL


def test_baxter_both_arms_with_a_shared_seed(baxter, baxter_solver):
    q_true = random_q(baxter, 3, seed=23)
    r = baxter_solver.solve(baxter.fk(q_true), num_solutions=16, steps=6, objectives={"seed": 1.0}, seed=q_true)
    assert r.success.any(-1).all()
    assert r.cost is not None and (r.cost[r.success] >= 0).all()


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize("mutate,match", [
    (lambda T: T[:, :, :3, :3] * 1.1, "proper rotation"),
    (lambda T: torch.cat([T[:, :, :3, :3] * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64),
                          T[:, :, :3, 3:]], -1), "proper rotation"),  # a reflection (det -1)
    (lambda T: T[:, :, :3, 3] * float("nan"), "non-finite target position"),
    (lambda T: T[:, :, :3, :3] * float("inf"), "non-finite target rotation"),
])
def test_bad_poses_are_refused(panda_solver, targets, mutate, match):
    T = targets[1].clone()
    out = mutate(T)
    if out.shape[-2:] == (3, 3):
        T[:, :, :3, :3] = out
    elif out.shape[-1] == 3 and out.ndim == 3:
        T[:, :, :3, 3] = out
    else:
        T[:, :, :3, :] = out
    with pytest.raises(InvalidRequestError, match=match):
        panda_solver.solve(T, num_solutions=2, steps=2)


def test_position_only_accepts_any_rotation(panda_solver, targets):
    T = targets[1].clone()
    T[:, :, :3, :3] = float("nan")
    r = panda_solver.solve(T, num_solutions=2, steps=2, position_only=torch.tensor([True]))
    assert torch.isfinite(r.q).all()


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_solutions=0), "positive int"),
    (dict(num_solutions=2.5), "positive int"),
    (dict(num_solutions=10001), "exceeds the maximum 10000"),
    (dict(num_solutions=2, target_mask=torch.tensor([False])), "constrain no end effector"),
    (dict(num_solutions=2, target_mask=torch.tensor([1, 0])), "bool"),
    (dict(num_solutions=2, position_only=torch.ones(2, 2, dtype=torch.bool)), "position_only must have shape"),
    (dict(num_solutions=2, objectives={"elegance": 1.0}), "unknown objective 'elegance'"),
    (dict(num_solutions=2, objectives={"seed": 1.0}), "needs a seed"),
    (dict(num_solutions=2, objectives={"seed": 1.0}, seed=torch.zeros(3)), "seed must be finite"),
    (dict(num_solutions=2, cost_fn=lambda q: q), "cost_fn must return"),
    (dict(num_solutions=2, sampler="euler"), "sampler must be"),
    (dict(num_solutions=2, steps=0), "steps must be"),
    (dict(num_solutions=2, timeout=-1.0), "timeout"),
])
def test_bad_requests_are_refused(panda_solver, targets, kwargs, match):
    with pytest.raises(InvalidRequestError, match=match):
        panda_solver.solve(targets[1], **kwargs)


def test_size_limits(panda_solver, targets):
    small = IKDiffuserSolver.from_model(panda_solver.loaded, panda_solver.robot, SolverConfig(max_rows=20))
    with pytest.raises(InvalidRequestError, match="6 targets x 4 solutions = 24 rows exceeds the maximum 20"):
        small.solve(targets[1], num_solutions=4)
    with pytest.raises(InvalidRequestError, match=r"shape \(B, 1, 4, 4\)"):
        panda_solver.solve(torch.zeros(2, 2, 4, 4), num_solutions=1)
    with pytest.raises(InvalidRequestError, match=r"shape \(B, 1, 4, 4\)"):
        panda_solver.solve(torch.zeros(0, 1, 4, 4), num_solutions=1)


def test_from_checkpoint_round_trip(panda, baxter, panda_solver, targets, tmp_path):
    from ikdiffuser_ros.model.checkpoint import save_checkpoint

    loaded = panda_solver.loaded
    save_checkpoint(tmp_path, loaded.denoiser, loaded.normalizer, loaded.schedule.config, panda)
    solver = IKDiffuserSolver.from_checkpoint(tmp_path, "panda")
    r = solver.solve(targets[1], num_solutions=8, steps=6, random_seed=1)
    assert r.success.any() and math.isfinite(r.timings["total"])
    with pytest.raises(CheckpointError):
        IKDiffuserSolver.from_checkpoint(tmp_path, baxter)
