"""The worst-over-end-effectors raw error against each end effector's own (docs/training.md, learning speed).

    python scripts/study_per_end_effector.py baxter mobile_baxter talos dual_ur5_mobile

Plain DDIM-20 samples of the shipped models on 500 held-out targets (the model card's, seed 2 000 003):
the median of the worst end effector with every one constrained, each end effector's median in those
samples, and each one's median when it alone is constrained.
"""

from __future__ import annotations

import sys

import torch

from ikdiffuser_ros.kinematics.transforms import pose_errors
from ikdiffuser_ros.model.checkpoint import load_checkpoint
from ikdiffuser_ros.robots import load_robot
from ikdiffuser_ros.sampling.sampler import sample
from ikdiffuser_ros.training.model_card import _held_out_targets


def position_errors_mm(loaded, robot, pos, rot6d, T_ref, mask=None) -> torch.Tensor:
    """(K, E) position errors [mm] of one DDIM-20 sample per target."""
    q = sample(loaded, pos, rot6d, ee_mask=mask, num_solutions=1, method="ddim", steps=20,
               generator=torch.Generator().manual_seed(0))[:, 0]
    return pose_errors(robot.fk(q.double()), T_ref)[0] * 1000


def main(names: list[str]) -> None:
    torch.set_num_threads(1)
    for name in names:
        robot = load_robot(name)
        loaded = load_checkpoint(f"models/{name}", robot)
        _, T_ref, pos, rot6d = _held_out_targets(robot, 500)
        dp = position_errors_mm(loaded, robot, pos, rot6d, T_ref)
        print(f"{name}: all constrained, worst {dp.amax(-1).median():.1f} mm; per end effector "
              f"{[round(x, 1) for x in dp.median(0).values.tolist()]} mm")
        for e, link in enumerate(robot.end_effectors if len(robot.end_effectors) > 1 else []):
            mask = torch.zeros(pos.shape[0], len(robot.end_effectors), dtype=torch.bool)
            mask[:, e] = True
            alone = position_errors_mm(loaded, robot, pos, rot6d, T_ref, mask)[:, e]
            print(f"  {link} alone: {alone.median():.1f} mm")


if __name__ == "__main__":
    main(sys.argv[1:] or ["baxter", "mobile_baxter", "talos", "dual_ur5_mobile"])
