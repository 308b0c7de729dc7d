"""Per-axis tolerances (IKTarget.tolerances, TRAC-IK's bounds): a free yaw about the tool axis, a
position box, and refused values, on the shipped panda and baxter models through the pipeline."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ikdiffuser_ros.errors import InvalidGoalError
from ikdiffuser_ros.query import IKQuery, IKTarget, Status
from ikdiffuser_ros.sampling.lm import ToleranceBox, boxed_residual

FREE_YAW = (0.0, 0.0, 0.0, 0.0, 0.0, math.inf)


@pytest.fixture(scope="module")
def panda_pipeline():
    from ikdiffuser_ros.pipeline import IKPipeline

    return IKPipeline.from_robot("panda", warmup=False)


def _target(robot, seed: int) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    q = robot.default_positions() + 0.4 * (torch.rand(robot.n_joints, generator=g, dtype=torch.float64) - 0.5)
    return robot.fk(q).numpy()


def _in_target_axes(robot, q, T_goal, e: int = 0):
    """(k, 3) position offsets and (k, 3) rotation vectors of the solutions' end effector e, in the goal's axes."""
    from scipy.spatial.transform import Rotation

    T = robot.fk(torch.as_tensor(q)).numpy()[:, e]
    R_goal = T_goal[:3, :3]
    dp = (T[:, :3, 3] - T_goal[:3, 3]) @ R_goal
    rv = Rotation.from_matrix(np.einsum("ji,kjl->kil", R_goal, T[:, :3, :3])).as_rotvec()
    return dp, rv


def test_free_yaw_meets_position_and_tool_axis_and_spreads_the_yaw(panda_pipeline):
    pl = panda_pipeline
    T = _target(pl.robot, 1)[0]
    [t] = pl.answer(IKQuery([IKTarget(list(pl.robot.end_effectors), [T], tolerances=[FREE_YAW])], num_solutions=32,
                            timeout=10.0, random_seed=0)).targets
    assert t.status is Status.SOLVED and len(t.q) >= 16 and t.valid.all()
    dp, rv = _in_target_axes(pl.robot, t.q, T)
    assert np.abs(dp).max() < 1e-5 * 1.01
    z_sol = pl.robot.fk(torch.as_tensor(t.q)).numpy()[:, 0, :3, 2]
    tilt = np.arccos(np.clip(z_sol @ T[:3, 2], -1, 1))  # the tool axis, whatever the yaw
    assert tilt.max() < 1e-4 * 1.01, tilt.max()
    yaw = rv[:, 2]
    assert yaw.max() - yaw.min() > 2.0, f"yaw spread {yaw.min():.2f}..{yaw.max():.2f} rad"
    assert np.all(t.rotation_error <= 1e-4 * 1.01)  # errors are what is left beyond the tolerances


def test_position_box_holds_per_axis(panda_pipeline):
    pl = panda_pipeline
    T = _target(pl.robot, 2)[0]
    box = (0.01, 0.02, 0.0, 0.0, 0.0, 0.0)
    [t] = pl.answer(IKQuery([IKTarget(list(pl.robot.end_effectors), [T], tolerances=[box])], num_solutions=16,
                            timeout=10.0, random_seed=0)).targets
    assert t.status is Status.SOLVED and t.valid.all()
    dp, rv = _in_target_axes(pl.robot, t.q, T)
    assert np.all(np.abs(dp) <= np.array(box[:3]) + 1e-5 * 1.01)
    assert np.abs(rv).max() < 1e-4 * 1.01
    assert np.abs(dp[:, 1]).max() > 1e-3  # answers use the box, not only its centre


def test_one_arm_boxed_the_other_exact(baxter_pipeline):
    pl = baxter_pipeline
    T = _target(pl.robot, 3)
    tol = [FREE_YAW, None]
    [t] = pl.answer(IKQuery([IKTarget(["left_gripper", "right_gripper"], list(T), tolerances=tol)], num_solutions=8,
                            timeout=10.0, random_seed=0)).targets
    assert t.status is Status.SOLVED
    T_sol = pl.robot.fk(torch.as_tensor(t.q[t.valid])).numpy()
    assert np.abs(T_sol[:, 1] - T[1]).max() < 2e-4  # the right arm exact
    assert np.abs(T_sol[:, 0, :3, 3] - T[0, :3, 3]).max() < 1.01e-5


@pytest.mark.parametrize("tol", [(0, 0, 0), (0, 0, 0, 0, 0, -1), (0, 0, 0, 0, 0, math.nan), "loose"])
def test_bad_tolerances_make_the_target_invalid(panda_pipeline, tol):
    pl = panda_pipeline
    T = _target(pl.robot, 4)[0]
    [t] = pl.answer(IKQuery([IKTarget(list(pl.robot.end_effectors), [T], tolerances=[tol])], timeout=5.0)).targets
    assert t.status is Status.INVALID and isinstance(t.error, InvalidGoalError) and "tolerances" in t.message


def test_boxed_residual_zero_bounds_is_the_plain_residual_rotated():
    g = torch.Generator().manual_seed(0)
    res = torch.randn(5, 2, 6, generator=g, dtype=torch.float64)
    J = torch.randn(5, 2, 6, 7, generator=g, dtype=torch.float64)
    A = torch.linalg.qr(torch.randn(5, 2, 3, 3, generator=g, dtype=torch.float64))[0]
    d, Jd = boxed_residual(res, J, ToleranceBox(A, torch.zeros(5, 2, 6, dtype=torch.float64)))
    torch.testing.assert_close(d[..., :3].norm(dim=-1), res[..., :3].norm(dim=-1))
    torch.testing.assert_close(d[..., 3:].norm(dim=-1), res[..., 3:].norm(dim=-1))
    # the step's normal equations do not change under the rotation
    torch.testing.assert_close(Jd.transpose(-1, -2) @ d.unsqueeze(-1), J.transpose(-1, -2) @ res.unsqueeze(-1))
    free = torch.full((5, 2, 6), math.inf, dtype=torch.float64)
    d, Jd = boxed_residual(res, J, ToleranceBox(A, free))
    assert not d.any() and not Jd.any()
