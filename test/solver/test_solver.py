"""The batch engine (solver.py): rows measured against an independent FK, determinism, masks,
position-only targets, deadlines, objectives' costs, checkpoints. Validation, deduplication and
ranking belong to the pipeline (test/pipeline)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from solvertools import random_q, solve_rows, tiny_loaded_model

from ikdiffuser_ros.errors import CheckpointError, ConfigError
from ikdiffuser_ros.kinematics.transforms import rotation_angle
from ikdiffuser_ros.pipeline import PipelineConfig
from ikdiffuser_ros.solver import IKDiffuserSolver

ROOT = Path(__file__).resolve().parents[2]

POS_TOL, ROT_TOL = 1e-5, 1e-4


@pytest.fixture(scope="module")
def targets(panda):
    q_true = random_q(panda, 6, seed=21)
    return q_true, panda.fk(q_true)


@pytest.fixture(scope="module")
def result(panda_solver, targets):
    return solve_rows(panda_solver, targets[1], 24, steps=8, random_seed=3)


def test_rows_are_measured_as_an_independent_fk_measures_them(panda, targets, result, pk_panda_fk):
    B, N, n = 6, 24, 7
    r = result
    assert r.q.shape == (B, N, n) and r.q.dtype == torch.float64
    for name in ("position_error", "rotation_error", "within_limits", "success", "in_self_collision"):
        assert getattr(r, name).shape == (B, N), name
    assert r.cost is None
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


def test_deterministic_given_random_seed(panda_solver, targets, result):
    again = solve_rows(panda_solver, targets[1], 24, steps=8, random_seed=3)
    assert torch.equal(again.q, result.q) and torch.equal(again.success, result.success)
    other = solve_rows(panda_solver, targets[1], 24, steps=8, random_seed=4)
    assert not torch.equal(other.q, result.q)
    gen = torch.Generator().manual_seed(3)
    with_gen = solve_rows(panda_solver, targets[1], 24, steps=8, generator=gen)
    assert torch.equal(with_gen.q, result.q)


def test_ddpm_sampler(panda_solver, targets):
    r = solve_rows(panda_solver, targets[1][:1], 8, steps=6, sampler="ddpm")
    assert r.q.shape == (1, 8, 7) and r.success.any()


def test_raw_samples_without_refinement(panda, panda_solver, targets):
    timings = {}
    r = solve_rows(panda_solver, targets[1], 8, steps=6, refine=False, timings=timings)
    lo, hi = panda.limits()
    assert ((r.q >= lo) & (r.q <= hi)).all()
    assert timings["refine"] == 0.0
    assert not r.success.any()  # a near-random tiny model never hits 10 um by chance


def test_position_only_rows(panda_solver, targets):
    T = targets[1].clone()
    T[:, 0, :3, :3] = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))
    r = solve_rows(panda_solver, T, 16, steps=6, position_only=torch.tensor([True]))
    assert (r.rotation_error == 0).all()
    assert r.success.double().mean() > 0.5
    assert (r.position_error[r.success] <= POS_TOL).all()


def test_deadline_returns_what_it_has(panda_solver, targets):
    t0 = time.monotonic()
    r = solve_rows(panda_solver, targets[1], 16, steps=4, timeout=1e-6)
    assert r.q.shape == (6, 16, 7) and time.monotonic() - t0 < 1.0  # refinement skipped, rows unrefined
    assert r.success.double().mean() < 0.2


@pytest.fixture(scope="module")
def baxter_solver(baxter):
    return IKDiffuserSolver.from_model(tiny_loaded_model(baxter, train_steps=40), baxter)


def test_baxter_left_arm_only(baxter, baxter_solver):
    q_true = random_q(baxter, 4, seed=22)
    T = baxter.fk(q_true)
    T[:, 1] = torch.eye(4, dtype=torch.float64)  # the masked right target: any pose (the pipeline puts the held one)
    r = solve_rows(baxter_solver, T, 16, steps=6, target_mask=torch.tensor([True, False]))
    assert r.success.any(-1).all()
    left = baxter.fk(r.q[r.success])[:, 0]
    goal = T[:, None, 0].expand(4, 16, 4, 4)[r.success]
    assert (left[:, :3, 3] - goal[:, :3, 3]).norm(dim=-1).max() < POS_TOL
    assert rotation_angle(left[:, :3, :3], goal[:, :3, :3]).max() < ROT_TOL


def test_baxter_both_arms_with_a_shared_seed(baxter, baxter_solver):
    q_true = random_q(baxter, 3, seed=23)
    r = solve_rows(baxter_solver, baxter.fk(q_true), 16, steps=6, objectives={"seed": 1.0}, seed=q_true)
    assert r.success.any(-1).all()
    assert r.cost is not None and (r.cost[r.success] >= 0).all()


@pytest.mark.parametrize("kwargs,match", [
    (dict(sampler="euler"), "sampler='euler'"),
    (dict(steps=0), "steps=0"),
    (dict(max_targets=0), "max_targets=0"),
    (dict(default_timeout=float("nan")), "default_timeout=nan"),
    (dict(collision_guidance="sometimes"), "collision_guidance='sometimes'"),
    (dict(generous_budget=-1.0), "generous_budget=-1.0"),
    (dict(generous_budget=float("nan")), "generous_budget=nan"),
    (dict(diverse_min_budget=-0.01), "diverse_min_budget=-0.01"),
])
def test_bad_pipeline_settings_are_refused(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        PipelineConfig(**kwargs)


def test_from_checkpoint_round_trip(panda, baxter, panda_solver, targets, tmp_path):
    from ikdiffuser_ros.model.checkpoint import save_checkpoint

    loaded = panda_solver.loaded
    save_checkpoint(tmp_path, loaded.denoiser, loaded.normalizer, loaded.schedule.config, panda)
    solver = IKDiffuserSolver.from_checkpoint(tmp_path, "panda")
    r = solve_rows(solver, targets[1], 8, steps=6, random_seed=1)
    assert r.success.any()
    with pytest.raises(CheckpointError):
        IKDiffuserSolver.from_checkpoint(tmp_path, baxter)


# ----------------------------------------------------------------------------- the shipped architecture
@pytest.fixture(scope="module")
def shipped_panda(panda):
    """The shipped panda model (IKMLPDenoiser with kinematic feedback, the card's DDIM + tail plan)."""
    from pathlib import Path

    return IKDiffuserSolver.from_checkpoint(Path(__file__).resolve().parents[2] / "models" / "panda", panda)


def test_shipped_mlp_rows_solve_and_match_an_independent_fk(panda, shipped_panda, pk_panda_fk):
    q_true = random_q(panda, 8, seed=31)
    T = panda.fk(q_true)
    r = solve_rows(shipped_panda, T, 4, random_seed=0)
    assert r.success.double().mean() > 0.8  # one sample + LM: ~94 % on held-out targets
    T_pk = pk_panda_fk(r.q.reshape(-1, 7)).view(8, 4, 4, 4)
    pos = (T_pk[..., :3, 3] - T[:, None, 0, :3, 3]).norm(dim=-1)
    torch.testing.assert_close(r.position_error, pos, atol=1e-6, rtol=0)
    raw = solve_rows(shipped_panda, T, 4, random_seed=0, refine=False)
    assert raw.position_error.median() < 0.05  # raw samples land near the target (~5 mm median)


def test_shipped_mlp_guided_rows_and_restarts(panda, shipped_panda):
    """Guidance (the torch sampler, the objective's gradient at every step) and perturbed restarts on the
    shipped architecture: the seed objective pulls solutions to the seed; restarts give distinct rows."""
    q_true = random_q(panda, 6, seed=32)
    T = panda.fk(q_true)
    seed = q_true + 0.3
    base = solve_rows(shipped_panda, T, 8, random_seed=1)
    pulled = solve_rows(shipped_panda, T, 8, random_seed=1, objectives={"seed": 1.0}, seed=seed)
    dist = lambda r: (r.q - seed[:, None]).norm(dim=-1)[r.success].mean()  # noqa: E731
    assert pulled.success.double().mean() > 0.7 and dist(pulled) < dist(base)
    spread = solve_rows(shipped_panda, T, 16, random_seed=1, restarts=4)
    assert spread.success.double().mean() > 0.7
    assert (spread.q[:, 1:] - spread.q[:, :1]).abs().amax(-1).gt(1e-3).any(-1).all()  # not 16 copies of one


def test_full_turn_joints_take_the_copy_the_caller_expects():
    """UR5 (+-2 pi wrists and shoulder pan, learnt in one turn): with a seed the samples take the
    copies nearest it (a wrist wound to 5 rad stays there), without one the copies nearest the middle
    of the range, and diverse answers spread over the copies within the limits."""
    import math

    from ikdiffuser_ros.solver import SolveBatch

    solver = IKDiffuserSolver.from_checkpoint(ROOT / "models" / "ur5", "ur5")
    robot = solver.robot
    q_true = torch.tensor([[5.0, -1.2, 1.4, -1.0, 4.5, -5.2]], dtype=torch.float64)
    T = robot.fk(q_true)
    turns = solver.turns
    seed = q_true + 0.01
    seeded = solver.run(SolveBatch.of(T, 16, 6, seed=seed), refine=False, random_seed=0)["q"]
    for shift in (-2 * math.pi, 2 * math.pi):  # no other copy within the limits is nearer the seed
        other = seeded + shift
        inside = (other >= robot.lower) & (other <= robot.upper)
        nearer = (other - seed).abs() < (seeded - seed).abs() - 1e-9
        assert not bool((inside & nearer)[:, turns].any())
    assert bool((seeded[:, 0] > math.pi).any())  # the shoulder pan wound past pi, as the seed
    plain = solver.run(SolveBatch.of(T, 16, 6), refine=False, random_seed=0)["q"]
    assert bool((plain[:, turns].abs() <= math.pi + 1e-9).all())
    diverse = solver.run(SolveBatch.of(T, 256, 6), refine=False, random_seed=0, diversity=1.0)["q"]
    assert bool((diverse[:, turns].abs() > math.pi).any(0).all())
    assert bool(((diverse >= robot.lower) & (diverse <= robot.upper)).all())


def test_diverse_samples_of_a_target_repel_each_other():
    """diversity 1 with the LM: each target's samples are guided apart (SolverConfig.spread_weight), so the
    solutions spread wider than the same diverse call's without the repulsion, most still converge,
    and raw samples (no LM) are not pushed off their targets."""
    import dataclasses

    from ikdiffuser_ros.solver import SolveBatch

    solver = IKDiffuserSolver.from_checkpoint(ROOT / "models" / "panda", "panda")
    q_true = random_q(solver.robot, 4, seed=3)
    batch = SolveBatch.of(solver.robot.fk(q_true), 32, solver.robot.n_joints)
    spreads, success, raw = [], [], []
    for weight in (0.0, solver.config.spread_weight):
        solver.config = dataclasses.replace(solver.config, spread_weight=weight)
        rows = solver.run(batch, random_seed=0, diversity=1.0)
        q = rows["q"].view(4, 32, -1)
        spreads.append(torch.cdist(q, q).mean().item())
        success.append(rows["success"].double().mean().item())
        raw.append(solver.run(batch, refine=False, random_seed=0, diversity=1.0)["q"])
    assert spreads[1] > 1.1 * spreads[0]
    assert success[1] > 0.8 * success[0]  # starts farther from their targets: 86 vs 99 % converge here
    torch.testing.assert_close(raw[0], raw[1])


def test_diverse_restarts_start_a_share_from_uniform_draws(shipped_panda):
    """SolverConfig.uniform_share x diversity of the perturbed restarts start from uniform draws within the
    limits; the first copy of every sample stays the sample, the other restarts are those of a plain call,
    and a plain call (diversity 0) has none."""
    from ikdiffuser_ros.solver import SolveBatch

    solver, robot = shipped_panda, shipped_panda.robot
    B, K, N = 3, 50, 200
    q = random_q(robot, B * K, seed=5)
    few = SolveBatch.of(robot.fk(q[:B]), K, robot.n_joints)
    plain = solver._spread(q, few, N, random_seed=7)
    diverse = solver._spread(q, few, N, random_seed=7, uniform_diversity=1.0)
    torch.testing.assert_close(plain.view(B, K, 4, -1)[:, :, 0], q.view(B, K, -1))
    torch.testing.assert_close(diverse.view(B, K, 4, -1)[:, :, 0], q.view(B, K, -1))
    changed = (diverse != plain).any(-1)
    share = changed.view(B, K, 4)[:, :, 1:].double().mean().item()
    assert abs(share - solver.config.uniform_share) < 0.05, share
    lower, upper = robot.limits(torch.float64)
    drawn = diverse[changed]
    assert bool(((drawn >= lower) & (drawn <= upper)).all())
    # uniform over the range, not near the samples: the std of a uniform draw is range / sqrt(12)
    torch.testing.assert_close(drawn.std(0) / (upper - lower), torch.full_like(lower, 12 ** -0.5), atol=0.05, rtol=0)


def test_the_cards_temperature_scales_the_initial_noise_and_diversity_moves_it_toward_one():
    """``sampling.temperature`` of the card: a call's initial noise has that standard deviation (other samples than at
    1, the same ones again for the same seed); :attr:`SolverConfig.temperature` overrides the card; a call's
    ``diversity`` d moves it toward 1 (tau + d (1 - tau)); a card without one samples at 1."""
    import dataclasses

    from ikdiffuser_ros.solver import SolveBatch

    solver = IKDiffuserSolver.from_checkpoint(ROOT / "models" / "panda", "panda")
    batch = SolveBatch.of(solver.robot.fk(random_q(solver.robot, 3, seed=5)), 4, solver.robot.n_joints)
    card = solver.loaded.card
    runs = {}
    for tau in (1.0, 0.5):
        solver.loaded.card = {**card, "sampling": {**card["sampling"], "temperature": tau}}
        assert solver.temperature_of() == tau and solver.temperature_of(0.5) == tau + 0.5 * (1 - tau)
        runs[tau] = [solver.run(batch, refine=False, random_seed=s)["q"] for s in (0, 0, 1)]
    assert torch.equal(runs[0.5][0], runs[0.5][1]) and not torch.equal(runs[0.5][0], runs[0.5][2])
    assert not torch.allclose(runs[1.0][0], runs[0.5][0])
    solver.config = dataclasses.replace(solver.config, temperature=1.0)  # the card says 0.5
    assert torch.equal(solver.run(batch, refine=False, random_seed=0)["q"], runs[1.0][0])
    solver.loaded.card = {k: v for k, v in card.items() if k != "sampling"}
    solver.config = dataclasses.replace(solver.config, temperature=None)
    assert solver.temperature_of() == 1.0
