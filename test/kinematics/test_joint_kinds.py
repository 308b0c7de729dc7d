"""Kinds of the active variables: lengths and wrapping angles (kinematics/joint_kinds.py)."""

from __future__ import annotations

import torch

from ikdiffuser_ros.kinematics.joint_kinds import joint_kinds
from ikdiffuser_ros.sampling.dedup import joint_tolerances


def test_joint_kinds_of_mobile_robot():
    from ikdiffuser_ros.robots import load_robot

    m = load_robot("mobile_baxter")
    prismatic, wrapping = joint_kinds(m)
    names = m.joint_names
    assert prismatic[names.index("base_joint/x")] and prismatic[names.index("base_joint/y")]
    assert wrapping[names.index("base_joint/theta")] and not prismatic[names.index("base_joint/theta")]
    assert not prismatic[names.index("left_s0")] and not wrapping[names.index("left_s0")]
    assert torch.isclose(joint_tolerances(m)[names.index("base_joint/x")], torch.tensor(0.005, dtype=torch.float64))


def test_full_turns_of_ur5_and_their_learnt_box():
    """The UR5's +-2 pi joints span two turns: learnt in one turn around the middle; the elbow
    (+-pi) and panda's joints keep their limits; continuous joints wrap and are not full turns."""
    import math

    from ikdiffuser_ros.kinematics.joint_kinds import full_turns, learnt_box
    from ikdiffuser_ros.robots import load_robot

    ur5 = load_robot("ur5")
    turns = full_turns(ur5)
    assert turns.tolist() == [True, True, False, True, True, True]
    lower, upper = learnt_box(ur5)
    torch.testing.assert_close(lower[turns], torch.full((5,), -math.pi, dtype=torch.float64))
    torch.testing.assert_close(upper[turns], torch.full((5,), math.pi, dtype=torch.float64))
    assert lower[2] == ur5.lower[2] and upper[2] == ur5.upper[2]
    assert not bool(full_turns(load_robot("panda")).any())
    assert not bool(full_turns(load_robot("mobile_baxter")).any())


def test_fold_and_unfold_turns_keep_the_poses():
    """Folding into one turn and unfolding over the copies within the limits move joints by whole
    turns only (the same FK); with a reference the copy nearest it is taken, else every copy within
    the limits is drawn."""
    import math

    from ikdiffuser_ros.kinematics.joint_kinds import fold_turns, full_turns, learnt_box, unfold_turns
    from ikdiffuser_ros.robots import load_robot

    ur5 = load_robot("ur5")
    turns = full_turns(ur5)
    g = torch.Generator().manual_seed(0)
    q = ur5.lower + (ur5.upper - ur5.lower) * torch.rand(2000, 6, generator=g, dtype=torch.float64)
    box_lower, box_upper = learnt_box(ur5)
    folded = fold_turns(q, box_lower, turns)
    assert bool(((folded >= box_lower) & (folded < box_upper)).all())
    unfolded = unfold_turns(folded, ur5.lower, ur5.upper, turns, generator=g)
    assert bool(((unfolded >= ur5.lower - 1e-12) & (unfolded <= ur5.upper + 1e-12)).all())
    for other in (folded, unfolded):
        turns_moved = (other - q) / (2 * math.pi)
        torch.testing.assert_close(turns_moved, turns_moved.round(), atol=1e-9, rtol=0)
        torch.testing.assert_close(ur5.fk(other), ur5.fk(q), atol=1e-9, rtol=0)
    assert bool((unfolded[:, 0] > math.pi).any()) and bool((unfolded[:, 0] < -math.pi).any())
    reference = q + 0.01
    nearest = unfold_turns(folded, ur5.lower, ur5.upper, turns, reference=reference)
    torch.testing.assert_close(nearest, q, atol=1e-9, rtol=0)


def test_uniform_in_limits_fills_the_box_reproducibly():
    """Draws of one seed are the same, lie within the limits (float32 too), and cover each joint's range."""
    from ikdiffuser_ros.kinematics.joint_kinds import uniform_in_limits
    from ikdiffuser_ros.robots import load_robot

    m = load_robot("mobile_baxter")
    q = uniform_in_limits(m.lower, m.upper, 4000, torch.Generator().manual_seed(7))
    again = uniform_in_limits(m.lower, m.upper, 4000, torch.Generator().manual_seed(7))
    assert q.shape == (4000, m.n_joints) and q.dtype == torch.float64 and torch.equal(q, again)
    assert bool(((q >= m.lower) & (q <= m.upper)).all())
    span = m.upper - m.lower
    assert bool((q.amax(0) - q.amin(0) > 0.99 * span).all())
    q32 = uniform_in_limits(m.lower, m.upper, 10, torch.Generator().manual_seed(7), torch.float32)
    assert q32.dtype == torch.float32 and bool(((q32 >= m.lower.float()) & (q32 <= m.upper.float())).all())
