"""Seed first and local mode (issue 15): the seed's own solution comes back as it is, and local mode
keeps every answer within the consistency limits of the seed (shipped models, independent checks)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ikdiffuser_ros.errors import InvalidRequestError
from ikdiffuser_ros.kinematics.joint_kinds import joint_kinds
from ikdiffuser_ros.query import IKQuery, IKTarget, Status


def _targets(robot, k: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    q = robot.lower + (robot.upper - robot.lower) * (0.15 + 0.7 * torch.rand(k, robot.n_joints, generator=g,
                                                                             dtype=torch.float64))
    return q.numpy(), robot.fk(q).numpy()


def _wrapped_gap(robot, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(..., n) largest joint distance, continuous joints modulo 2 pi."""
    d = a - b
    wrap = joint_kinds(robot)[1].numpy()
    d = np.where(wrap, np.remainder(d + np.pi, 2 * np.pi) - np.pi, d)
    return np.abs(d).max(-1)


@pytest.mark.parametrize("num", [1, 8])
def test_a_seed_that_solves_comes_back_first_as_it_is(baxter_pipeline, num):
    pl = baxter_pipeline
    robot = pl.robot
    q, T = _targets(robot, 5, seed=11)
    for qi, Ti in zip(q, T):
        answer = pl.answer(IKQuery([IKTarget(list(robot.end_effectors), list(Ti))], num_solutions=num, seed=qi,
                                   timeout=1.0))
        t = answer.targets[0]
        assert t.status is Status.SOLVED
        assert np.abs(t.q[0] - qi).max() <= 1e-6
        assert 1 <= len(t.q) <= num and t.valid.all()


def test_local_mode_keeps_answers_near_the_seed(baxter_pipeline):
    """A seed 0.1 rad (max norm) from a solution: answers within 0.3 rad of the seed in every joint."""
    pl = baxter_pipeline
    robot = pl.robot
    q, T = _targets(robot, 12, seed=12)
    rng = np.random.default_rng(0)
    lower, upper = robot.lower.numpy(), robot.upper.numpy()
    solved = 0
    for qi, Ti in zip(q, T):
        seed = np.clip(qi + rng.uniform(-0.1, 0.1, qi.shape), lower, upper)
        answer = pl.answer(IKQuery([IKTarget(list(robot.end_effectors), list(Ti))], num_solutions=4, seed=seed,
                                   consistency_limits=0.3, timeout=0.5, random_seed=1))
        t = answer.targets[0]
        if t.status is Status.SOLVED:
            solved += 1
            assert (_wrapped_gap(robot, t.q, seed) <= 0.3 + 1e-9).all()
            pos = np.linalg.norm(robot.fk(torch.as_tensor(t.q)).numpy()[..., :3, 3] - Ti[:, :3, 3], axis=-1)
            assert (pos <= 1e-5 * (1 + 1e-6)).all()
    assert solved >= 11


def test_local_mode_needs_a_seed_and_positive_limits(baxter_pipeline):
    pl = baxter_pipeline
    robot = pl.robot
    _, T = _targets(robot, 1, seed=13)
    target = IKTarget(list(robot.end_effectors), list(T[0]))
    with pytest.raises(InvalidRequestError, match="needs a seed"):
        pl.answer(IKQuery([target], consistency_limits=0.3))
    for bad in (0.0, -1.0, float("nan"), [0.1, 0.2], "wide"):
        with pytest.raises(InvalidRequestError, match="consistency_limits"):
            pl.answer(IKQuery([target], seed=robot.default_positions().numpy(), consistency_limits=bad))


def test_same_query_same_answer_with_the_compiled_path(baxter_pipeline):
    pl = baxter_pipeline
    robot = pl.robot
    _, T = _targets(robot, 2, seed=14)
    query = IKQuery([IKTarget(list(robot.end_effectors), list(Ti)) for Ti in T], num_solutions=16, random_seed=3,
                    timeout=5.0)
    a, b = pl.answer(query), pl.answer(query)
    for ta, tb in zip(a.targets, b.targets):
        assert np.array_equal(ta.q, tb.q)


def test_a_cost_fn_in_the_query_shapes_and_orders_the_answers(baxter_pipeline):
    """IKQuery.cost_fn (the user objective): answers come back ordered by it, and lower than without it."""
    pl = baxter_pipeline
    robot = pl.robot
    _, T = _targets(robot, 1, seed=15)
    target = IKTarget(["left_gripper"], [T[0][0]])
    cost = lambda q: (q[:, 0] - 0.5) ** 2  # noqa: E731 - left_s0 near 0.5 rad
    plain = pl.answer(IKQuery([target], num_solutions=8, random_seed=0, timeout=5.0)).targets[0]
    shaped = pl.answer(IKQuery([target], num_solutions=8, random_seed=0, timeout=5.0, cost_fn=cost)).targets[0]
    assert shaped.status is Status.SOLVED and plain.status is Status.SOLVED
    c = cost(torch.as_tensor(shaped.q)).numpy()
    assert np.all(np.diff(c) >= -1e-12), "ordered by the user's cost"
    assert c.min() <= cost(torch.as_tensor(plain.q)).numpy().min() + 1e-9
    with pytest.raises(InvalidRequestError, match="cost_fn"):
        pl.answer(IKQuery([target], cost_fn="not callable"))
