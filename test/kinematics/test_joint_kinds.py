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
