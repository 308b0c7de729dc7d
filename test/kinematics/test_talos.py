"""The talos humanoid (config/robots/talos.yaml): fixed base, torso + arms + legs, hands and feet."""
from __future__ import annotations

import torch

from ikdiffuser_ros.resources import resolve_uri

TALOS_JOINTS = (["torso_1_joint", "torso_2_joint"]
                + [f"arm_{side}_{i}_joint" for side in ("left", "right") for i in range(1, 8)]
                + [f"leg_{side}_{i}_joint" for side in ("left", "right") for i in range(1, 7)])


def test_talos_is_a_fixed_base_28_dof_humanoid(robot):
    model = robot("talos")
    assert model.virtual_joint is None and model.root_frame == "base_link"
    assert model.joint_names == TALOS_JOINTS
    assert model.end_effectors == ["wrist_left_ft_tool_link", "wrist_right_ft_tool_link",
                                   "left_sole_link", "right_sole_link"]
    # at zero (arm_*_2 at its limit next to 0) the hands hang beside the hips and the soles are 1.08 m
    # below the pelvis
    near_zero = torch.zeros_like(model.lower).clamp(model.lower, model.upper)
    p = model.fk(near_zero[None])[0, :, :3, 3]
    torch.testing.assert_close(p[:, 1], torch.tensor([0.2992, -0.2992, 0.085, -0.085], dtype=p.dtype), atol=1e-3,
                               rtol=0)
    assert (p[2:, 2] < -1.0).all()


def test_triple_slash_package_uris_resolve():
    """talos_full_v2.urdf names some meshes ``package:///example-robot-data/...``."""
    uri = "example-robot-data/robots/talos_data/meshes/arm/arm_1_collision.STL"
    assert resolve_uri(f"package:///{uri}") == resolve_uri(f"package://{uri}")
    assert resolve_uri(f"package:///{uri}").is_file()
