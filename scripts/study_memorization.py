"""Does a shipped model memorize its training rows? Its denoising loss on rows of the data set the trainer
draws (``dataset_size`` rows, seed ``TrainConfig.seed``: every continued run draws the same ones) against
fresh rows of the same distribution (docs/training.md, "Learning speed across robots").

    python scripts/study_memorization.py --robot dual_ur5_mobile --rows 20000
"""

from __future__ import annotations

import argparse

import torch

from ikdiffuser_ros.data.generate import sample_fk, self_collision_fn
from ikdiffuser_ros.model.checkpoint import load_checkpoint
from ikdiffuser_ros.model.feedback import FeedbackTargets
from ikdiffuser_ros.robots import load_robot
from ikdiffuser_ros.training.trainer import TrainConfig


@torch.no_grad()
def denoising_loss(loaded, rows: tuple, seed: int, chunk: int = 1024) -> float:
    """Mean epsilon-prediction MSE over ``rows`` (q (K, n), pos (K, E, 3), rot6d (K, E, 6)), every end effector
    constrained, timesteps and noise drawn from ``seed`` (the same draws for every set of the same size)."""
    q, pos, rot6d = rows
    g = torch.Generator().manual_seed(seed)
    K, E = q.shape[0], pos.shape[1]
    keep, pos_only = torch.ones(K, E, dtype=torch.bool), torch.zeros(K, E, dtype=torch.bool)
    norm, schedule = loaded.normalizer, loaded.schedule
    x0 = norm.normalize_joints(q)
    t = torch.randint(0, schedule.num_train_steps, (K,), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    x_t = schedule.add_noise(x0, eps, t)
    total = 0.0
    for s in range(0, K, chunk):
        sl = slice(s, s + chunk)
        extra = {} if loaded.feedback is None else \
            {"feedback": loaded.feedback(x_t[sl], FeedbackTargets.build(pos[sl], rot6d[sl], keep[sl], pos_only[sl]))}
        pred = loaded.denoiser(x_t[sl], t[sl], norm.normalize_pos(pos[sl]), rot6d[sl], keep[sl], pos_only[sl], **extra)
        total += float(((pred.float() - eps[sl]) ** 2).mean(-1).sum())
    return total / K


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--robot", default="dual_ur5_mobile")
    parser.add_argument("--rows", type=int, default=20000, help="rows of each set compared")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = TrainConfig.from_yaml(f"config/training/{args.robot}.yaml")
    robot = load_robot(args.robot)
    if cfg.dataset_size <= 0:
        raise SystemExit(f"{args.robot} trains on fresh rows per batch: nothing to memorize")
    cf = self_collision_fn(robot, cfg.collision_filter) if cfg.reject_self_collision else None
    draw = lambda k, seed: sample_fk(robot, k, torch.Generator().manual_seed(seed),  # noqa: E731
                                     reject_self_collision=cf is not None, collision_fn=cf)
    train = draw(cfg.dataset_size, cfg.seed)
    pick = torch.randperm(cfg.dataset_size, generator=torch.Generator().manual_seed(1))[: args.rows]
    seen, fresh = tuple(x[pick] for x in train), draw(args.rows, 12345)
    loaded = load_checkpoint(f"models/{args.robot}", robot)
    for seed in (7, 8):
        a, b = denoising_loss(loaded, seen, seed), denoising_loss(loaded, fresh, seed)
        print(f"{args.robot}: loss on training rows {a:.4f}, on fresh rows {b:.4f} ({100 * (b / a - 1):+.1f} %)")


if __name__ == "__main__":
    main()
