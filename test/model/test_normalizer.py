import torch

from ikdiffuser_ros.data.generate import sample_fk
from ikdiffuser_ros.model.normalizer import Normalizer


def test_joint_round_trip_and_range(baxter):
    q, pos, _ = sample_fk(baxter, 1000, torch.Generator().manual_seed(0))
    norm = Normalizer.fit(baxter.lower, baxter.upper, pos)
    x = norm.normalize_joints(q)
    assert x.min() >= -1 - 1e-6 and x.max() <= 1 + 1e-6
    torch.testing.assert_close(norm.denormalize_joints(x), q, atol=1e-5, rtol=0)
    lo = torch.as_tensor(baxter.lower, dtype=torch.float32)
    hi = torch.as_tensor(baxter.upper, dtype=torch.float32)
    torch.testing.assert_close(norm.normalize_joints(lo), -torch.ones_like(lo))
    torch.testing.assert_close(norm.normalize_joints(hi), torch.ones_like(hi))


def test_position_standardized_round_trip(baxter):
    _, pos, _ = sample_fk(baxter, 4000, torch.Generator().manual_seed(1))
    norm = Normalizer.fit(baxter.lower, baxter.upper, pos)
    z = norm.normalize_pos(pos)
    torch.testing.assert_close(z.mean(0), torch.zeros(2, 3), atol=1e-4, rtol=0)
    torch.testing.assert_close(z.std(0), torch.ones(2, 3), atol=1e-4, rtol=0)
    torch.testing.assert_close(norm.denormalize_pos(z), pos, atol=1e-5, rtol=0)


def test_stats_are_state_dict_buffers(panda):
    pos = torch.randn(100, 1, 3)
    norm = Normalizer.fit(panda.lower, panda.upper, pos)
    sd = norm.state_dict()
    assert set(sd) == {"lower", "upper", "pos_mean", "pos_std"}
    other = Normalizer.empty(7, 1)
    other.load_state_dict(sd)
    torch.testing.assert_close(other.pos_std, norm.pos_std)
    assert list(norm.parameters()) == []
