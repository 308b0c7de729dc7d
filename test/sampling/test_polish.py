"""Null-space polish of converged rows (sampling/polish.py)."""

from __future__ import annotations

from solvertools import random_q

from ikdiffuser_ros.kinematics.transforms import rotation_angle
from ikdiffuser_ros.sampling.lm import refine
from ikdiffuser_ros.sampling.polish import polish

POS_TOL, ROT_TOL = 1e-5, 1e-4


def _errors(T, target):
    return (T[..., :3, 3] - target[..., :3, 3]).norm(dim=-1), rotation_angle(T[..., :3, :3], target[..., :3, :3])


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


def test_a_polish_whose_first_step_would_end_late_leaves_the_rows_as_they_are(panda):
    """Given a clock that knows a step takes longer than the time left, polish starts none (and costs nothing):
    a query with an objective and a tight budget is answered on time with the LM's rows."""
    import time

    from ikdiffuser_ros.clock import UnitClock

    q_true = random_q(panda, 8, seed=16)
    targets = panda.fk(q_true)
    res = refine(panda, q_true + 0.05, targets)
    deadline = time.monotonic() + 0.005
    out = polish(panda, res, targets, lambda q: q[:, 0], deadline=deadline, clock=UnitClock(deadline, first=0.05))
    assert (out.q == res.q).all() and (out.iterations == res.iterations).all()
    assert time.monotonic() < deadline
