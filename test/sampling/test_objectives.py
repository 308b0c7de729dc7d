"""Objectives (sampling/objectives.py): the math, then their effect through the whole solver.

Each objective must move solutions the way its docstring claims. The solver runs a tiny denoiser
trained for a few dozen steps (near-random samples), so what moves the solutions is the guidance
plus the null-space polish after LM; we compare with and without the objective at equal seeds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from solvertools import random_q, solve_rows

from ikdiffuser_ros.collision.spheres import SphereModel
from ikdiffuser_ros.collision.world import Shape, World, WorldObject
from ikdiffuser_ros.errors import InvalidRequestError
from ikdiffuser_ros.kinematics.joint_kinds import joint_kinds
from ikdiffuser_ros.sampling import objectives as obj


def descend(cost, q, steps=60, lr=0.02, lower=None, upper=None):
    """Plain projected gradient descent with a normalised step (the objective math alone)."""
    q = q.clone()
    for _ in range(steps):
        q.requires_grad_(True)
        (g,) = torch.autograd.grad(cost(q).sum(), q)
        with torch.no_grad():
            q = q - lr * g / g.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            if lower is not None:
                q = torch.minimum(torch.maximum(q, lower), upper)
    return q.detach()


def min_limit_distance(robot, q):
    lo, hi = robot.limits()
    return torch.minimum(q - lo, hi - q).amin(-1)


# ----------------------------------------------------------------------------- the math
def test_seed_distance_value_and_wrap(panda):
    seed = torch.zeros(7, dtype=torch.float64)
    q = torch.tensor([[1.0, 2.0, 0, 0, 0, 0, 0]], dtype=torch.float64)
    assert obj.seed_distance(seed)(q).item() == pytest.approx(5.0)
    wrap = torch.tensor([True] + [False] * 6)
    qw = torch.tensor([[2 * math.pi - 0.1, 0, 0, 0, 0, 0, 0]], dtype=torch.float64)
    assert obj.seed_distance(seed, wrap)(qw).item() == pytest.approx(0.01)


def test_joint_limit_margin_is_zero_inside_and_grows_towards_limits(panda):
    cost = obj.joint_limit_margin(panda, 0.1)
    lo, hi = panda.limits()
    mid = ((lo + hi) / 2)[None]
    assert cost(mid).item() == 0
    at = mid.clone()
    at[0, 0] = hi[0]
    assert cost(at).item() == pytest.approx(1.0)
    near = mid.clone()
    near[0, 0] = hi[0] - 0.05
    assert cost(near).item() == pytest.approx(0.25)
    q = random_q(panda, 200, seed=1)
    close = min_limit_distance(panda, q) < 0.05
    moved = descend(cost, q[close], lower=lo, upper=hi)
    assert close.sum() > 20
    assert (min_limit_distance(panda, moved) > 0.09).all()  # every joint moved out of the margin
    assert (cost(moved) < 0.02).all()


def test_collision_cost_descent_frees_self_collisions(panda):
    sm = SphereModel.from_robot(panda)
    q = random_q(panda, 400, seed=2)
    colliding = q[sm.in_self_collision(q)]
    assert len(colliding) > 10
    cost = obj.collision(sm, margin=0.02)
    assert (cost(colliding) > 0).all()
    free = q[~sm.in_self_collision(q, margin=0.03)][:5]
    assert (cost(free) == 0).all()
    lo, hi = panda.limits()
    moved = descend(cost, colliding, steps=80, lower=lo, upper=hi)
    assert sm.in_self_collision(moved).double().mean() < 0.5 * sm.in_self_collision(colliding).double().mean()


def test_collision_cost_pushes_away_from_a_world_box(panda):
    sm = SphereModel.from_robot(panda)
    pose = np.eye(4)
    pose[:3, 3] = (0.45, 0.0, 0.45)
    world = World([WorldObject("crate", [Shape.box([0.3, 0.6, 0.3], pose)])])
    q = random_q(panda, 200, seed=3)
    cost = obj.collision(sm, world, margin=0.05)
    lo, hi = panda.limits()
    moved = descend(cost, q, steps=60, lower=lo, upper=hi)
    before, after = sm.world_distance(q, world), sm.world_distance(moved, world)
    assert (after < 0).double().mean() < 0.5 * (before < 0).double().mean()
    assert after.mean() > before.mean()


def test_manipulability_descent_increases_manipulability(panda):
    q = random_q(panda, 100, seed=4)
    lo, hi = panda.limits()
    moved = descend(obj.manipulability(panda), q, steps=40, lower=lo, upper=hi)
    before = obj.manipulability_index(panda, q)
    after = obj.manipulability_index(panda, moved)
    assert after.mean() > 1.2 * before.mean()
    # the cost is -log det(J J^T) = -2 log(index)
    torch.testing.assert_close(obj.manipulability(panda)(q), -2 * torch.log(before).sum(-1), rtol=1e-6, atol=1e-6)


def test_user_checks_shape_and_combine_validates(panda):
    with pytest.raises(InvalidRequestError, match="shape"):
        obj.user(lambda q: q)(torch.zeros(3, 7))
    bare = obj.ObjectiveContext(panda)
    with pytest.raises(InvalidRequestError, match="unknown objective 'speed'.*seed, joint_limits"):
        obj.combine({"speed": 1.0}, bare)
    with pytest.raises(InvalidRequestError, match="needs a seed"):
        obj.combine({"seed": 1.0}, bare)
    with pytest.raises(InvalidRequestError, match=">= 0"):
        obj.combine({"joint_limits": -1.0}, bare)
    assert obj.combine({"seed": 0.0}, bare) is None
    q = random_q(panda, 4, seed=5)
    ctx = obj.ObjectiveContext(panda, cost_fn=lambda x: x[:, 0])
    c = obj.combine({"user": 2.0, "joint_limit_margin": 3.0}, ctx)  # an alias
    torch.testing.assert_close(c(q), 2 * q[:, 0] + 3 * obj.joint_limit_margin(panda)(q))


def test_objective_registry():
    """One registry: every objective is one class; names and aliases resolve through it."""
    assert set(obj.OBJECTIVES) == {"seed", "joint_limits", "collision", "manipulability", "user"}
    assert all(issubclass(cls, obj.Objective) and cls.name == name for name, cls in obj.OBJECTIVES.items())
    assert obj.canonical_name("self_collision") == "collision" and obj.canonical_name("seed_distance") == "seed"
    assert obj.canonical_weights({"joint_limit_margin": 2}) == {"joint_limits": 2.0}


def test_objectives_work_in_float32(panda):
    q = random_q(panda, 4, seed=6).float().requires_grad_(True)
    sm = SphereModel.from_robot(panda)
    for cost in (obj.seed_distance(torch.zeros(7, dtype=torch.float64)), obj.joint_limit_margin(panda),
                 obj.collision(sm), obj.manipulability(panda)):
        out = cost(q)
        assert out.dtype == torch.float32 and out.shape == (4,)
        (g,) = torch.autograd.grad(out.sum(), q, allow_unused=True)
        assert g is None or torch.isfinite(g).all()


# ----------------------------------------------------------------------------- through the solver
B, N = 8, 32


@pytest.fixture(scope="module")
def case(panda):
    q_true = random_q(panda, B, seed=7)
    return q_true, panda.fk(q_true)


@pytest.fixture(scope="module")
def baseline(panda_solver, case):
    return solve_rows(panda_solver, case[1], N, steps=8, random_seed=0)


def _succ_mean(x, r):
    return x[r.success].mean().item()


def test_seed_objective_halves_the_distance_to_the_seed(panda_solver, case, baseline):
    q_true, T = case
    r = solve_rows(panda_solver, T, N, objectives={"seed": 1.0}, seed=q_true, steps=8, random_seed=0)
    dist = lambda res: (res.q - q_true[:, None]).pow(2).sum(-1).sqrt()  # noqa: E731
    assert _succ_mean(dist(r), r) < 0.5 * _succ_mean(dist(baseline), baseline)
    assert r.success.double().mean() >= baseline.success.double().mean() - 0.02
    assert torch.equal(r.cost[r.success], (r.q - q_true[:, None]).pow(2).sum(-1)[r.success])


def test_joint_limit_objective_increases_the_distance_to_limits(panda, panda_solver, case, baseline):
    r = solve_rows(panda_solver, case[1], N, objectives={"joint_limits": 1.0}, steps=8, random_seed=0)
    d = lambda res: min_limit_distance(panda, res.q.reshape(-1, 7)).view(B, N)  # noqa: E731
    assert _succ_mean(d(r), r) > _succ_mean(d(baseline), baseline) + 0.02
    assert r.success.double().mean() >= baseline.success.double().mean() - 0.05


def test_collision_objective_keeps_away_from_a_world_box(panda, panda_solver):
    sm = panda_solver.sphere_model
    pose = np.eye(4)
    pose[:3, 3] = (0.45, 0.0, 0.2)
    world = World([WorldObject("crate", [Shape.box([0.3, 1.2, 0.3], pose)])])
    # targets reachable without touching the crate (a collision-free solution exists)
    q_all = random_q(panda, 200, seed=8)
    q_true = q_all[sm.world_distance(q_all, world) > 0.05][:B]
    T = panda.fk(q_true)
    base = solve_rows(panda_solver, T, N, steps=8, random_seed=0)
    r = solve_rows(panda_solver, T, N, objectives={"collision": 1.0}, world=world, steps=8, random_seed=0)
    dist = lambda res: sm.world_distance(res.q.reshape(-1, 7), world).view(B, N)  # noqa: E731
    hit = lambda res: (dist(res) < 0)[res.success].double().mean().item()  # noqa: E731
    assert hit(base) > 0.05  # the crate is in the way of the unguided solutions
    # ~0.23 -> ~0.17 measured: with near-random samples LM decides the IK branch, and the polish
    # only slides along it; a trained model's samples start closer to their final branch
    assert hit(r) <= 0.85 * hit(base)
    assert _succ_mean(dist(r), r) > _succ_mean(dist(base), base)
    self_hit = lambda res: res.in_self_collision[res.success].double().mean().item()  # noqa: E731
    assert self_hit(r) <= self_hit(base) + 1e-9
    assert r.success.double().mean() >= base.success.double().mean() - 0.05


def test_manipulability_objective_increases_manipulability(panda, panda_solver, case, baseline):
    r = solve_rows(panda_solver, case[1], N, objectives={"manipulability": 1.0}, steps=8, random_seed=0)
    w = lambda res: obj.manipulability_index(panda, res.q.reshape(-1, 7)).view(B, N)  # noqa: E731
    assert _succ_mean(w(r), r) > 1.1 * _succ_mean(w(baseline), baseline)


def test_user_cost_pulls_joint_0_down(panda_solver, case, baseline):
    r = solve_rows(panda_solver, case[1], N, cost_fn=lambda q: q[:, 0], steps=8, random_seed=0)
    assert _succ_mean(r.q[..., 0], r) < _succ_mean(baseline.q[..., 0], baseline) - 0.2
    assert r.success.double().mean() >= baseline.success.double().mean() - 0.05


def test_wrapping_kinds_feed_the_seed_objective(panda):
    assert not joint_kinds(panda)[1].any()  # panda has no continuous joint


def test_collision_objective_ignores_far_objects_exactly(panda, panda_solver):
    """Shapes farther than the margin cost nothing: 2000 far boxes change neither the cost nor its
    gradient, and are culled before any distance is computed."""
    sm = panda_solver.sphere_model
    near = np.eye(4)
    near[:3, 3] = (0.45, 0.0, 0.2)
    far = [WorldObject(f"far_{k}", [Shape.box([0.1, 0.1, 0.1], _translation(5.0 + 0.01 * k, 5.0, 0.0))])
           for k in range(2000)]
    crate = WorldObject("crate", [Shape.box([0.3, 1.2, 0.3], near)])
    q = random_q(panda, 32, seed=9).requires_grad_(True)
    costs = []
    for world in (World([crate]), World([crate, *far])):
        c = obj.collision(sm, world, 0.02)(q)
        (g,) = torch.autograd.grad(c.sum(), q)
        costs.append((c.detach(), g))
    assert torch.allclose(costs[0][0], costs[1][0]) and torch.allclose(costs[0][1], costs[1][1])
    assert sm.world_distance(q.detach(), World(far), per_shape=True, within=0.02).isinf().all()


def _translation(x: float, y: float, z: float) -> np.ndarray:
    T = np.eye(4)
    T[:3, 3] = (x, y, z)
    return T


def test_spread_apart_couples_only_the_rows_of_one_block():
    """The repulsion between a target's rows: moving a row changes the costs of its own block only
    (other targets, and other blocks of a target with more rows than SPREAD_BLOCK, are untouched), and
    a descent step along it spreads the rows further apart."""
    from ikdiffuser_ros.sampling.objectives import spread_apart

    g = torch.Generator().manual_seed(0)
    q = 0.1 * torch.randn(3 * 5, 4, generator=g, dtype=torch.float64)  # 3 targets x 5 rows
    cost = spread_apart(5)
    c0 = cost(q)
    assert c0.shape == (15,) and bool((c0 > 0).all())
    moved = q.clone()
    moved[6] += 1.0  # target 1, row 1
    changed = (cost(moved) - c0).abs() > 1e-12
    assert changed[5:10].any() and not changed[:5].any() and not changed[10:].any()
    big = spread_apart(10, block=4)  # blocks of rows 0-3, 4-7 and the rest 8-9
    q2 = 0.1 * torch.randn(10, 3, generator=g, dtype=torch.float64)
    moved2 = q2.clone()
    moved2[1] += 1.0
    changed2 = (big(moved2) - big(q2)).abs() > 1e-12
    assert changed2[:4].all() and not changed2[4:].any()
    x = q.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(cost(x).sum(), x)
    spread = lambda v: torch.cdist(v.view(3, 5, 4), v.view(3, 5, 4)).mean()  # noqa: E731
    assert spread(q - 0.01 * grad) > spread(q)
