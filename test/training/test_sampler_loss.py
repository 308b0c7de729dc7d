"""The loss on the LM-ready plan's samples (ikdiffuser_ros/training/sampler_loss.py)."""

import json
from pathlib import Path

import pytest
import torch

from ikdiffuser_ros.data.generate import sample_fk
from ikdiffuser_ros.model.checkpoint import load_checkpoint
from ikdiffuser_ros.sampling.sampler import sample, sampling_plan, targets_from_poses
from ikdiffuser_ros.training.sampler_loss import POS_SCALE, chain_samples, pose_loss
from ikdiffuser_ros.training.trainer import TrainConfig, train

REPO = Path(__file__).resolve().parents[2]


def test_the_chain_is_the_samplers_plan(baxter):
    """With the same initial noise, the differentiable chain returns the sampler's samples (DDIM-3 + one tail pass,
    the shipped baxter model), and its gradient reaches the weights."""
    loaded = load_checkpoint(REPO / "models" / "baxter", baxter)
    loaded.denoiser.requires_grad_(True)
    q_ref = sample_fk(baxter, 16, torch.Generator().manual_seed(5))[0]
    pos, rot6d = targets_from_poses(baxter.fk(q_ref).float())
    keep, pos_only = torch.ones(16, 2, dtype=torch.bool), torch.zeros(16, 2, dtype=torch.bool)
    expected = sample(loaded, pos, rot6d, steps=3, tail_steps=1, temperature=0.5, place_base=False,
                      generator=torch.Generator().manual_seed(9))[:, 0]
    noise = torch.randn(16, 14, generator=torch.Generator().manual_seed(9)) * 0.5
    x = chain_samples(loaded.denoiser, loaded.normalizer, loaded.schedule, loaded.feedback,
                      sampling_plan(loaded.schedule, 3, 1), noise, pos, rot6d, keep, pos_only)
    q = loaded.normalizer.denormalize_joints(x.clamp(-1, 1))
    assert (q - expected).abs().max() < 1e-4
    pose_loss(baxter, q, pos, rot6d, keep, pos_only).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in loaded.denoiser.head.parameters())
    assert loaded.denoiser.head.weight.grad.abs().max() > 0


def test_pose_loss_counts_only_the_constrained_errors(panda):
    """0 (up to its smoothing) at the targets' own joints; 1 cm off counts one unit; a position-only target ignores
    rotation, a free one everything."""
    q = sample_fk(panda, 8, torch.Generator().manual_seed(1))[0].float()
    pos, rot6d = targets_from_poses(panda.fk(q))
    keep, pos_only = torch.ones(8, 1, dtype=torch.bool), torch.zeros(8, 1, dtype=torch.bool)
    assert pose_loss(panda, q, pos, rot6d, keep, pos_only) < 0.01
    shifted = pos + torch.tensor([POS_SCALE, 0.0, 0.0])
    assert abs(pose_loss(panda, q, shifted, rot6d, keep, pos_only).item() - 1.0) < 0.01
    turned = -rot6d
    assert pose_loss(panda, q, pos, turned, keep, pos_only) > 10
    assert pose_loss(panda, q, pos, turned, keep, ~pos_only) < 0.01
    assert pose_loss(panda, q, shifted, turned, ~keep, pos_only) == 0


def test_training_with_the_sampler_loss(tmp_path):
    """``sampler_loss_weight`` > 0 trains (the MLP with kinematic feedback on baxter, two chains) and records it."""
    out = tmp_path / "run"
    cfg = TrainConfig.preset("tiny", robot="baxter", out_dir=str(out), max_steps=4, eval_every=4, ckpt_every=4,
                             model=dict(type="IKMLPDenoiser", d_model=32, n_blocks=1, factorize=True),
                             sampler_loss_weight=1e-3, sampler_loss_rows=16)
    metrics = train(cfg, progress=False)
    assert metrics["step"] == 4 and torch.isfinite(torch.tensor(metrics["metrics"]["pos_mm_median"]))
    assert json.loads((out / "card.json").read_text())["training"]["config"]["sampler_loss_weight"] == 1e-3


def test_bad_sampler_loss_settings_are_named():
    for bad in (dict(sampler_loss_weight=-1.0), dict(sampler_loss_weight=float("nan")), dict(sampler_loss_rows=0),
                dict(sampler_loss_plan=(0, 1)), dict(sampler_loss_plan=(3,)), dict(sampler_loss_temperature=(1.0, 0.5)),
                dict(sampler_loss_temperature=(0.0, 1.0))):
        with pytest.raises(ValueError, match=next(iter(bad))):
            TrainConfig(**bad)
    assert TrainConfig(sampler_loss_plan=[4, 0]).sampler_loss_plan == (4, 0)
