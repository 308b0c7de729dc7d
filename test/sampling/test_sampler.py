import pytest
import torch
from torch import nn

from ikdiffuser_ros.model.denoiser import DenoiserConfig
from ikdiffuser_ros.sampling.sampler import sample, targets_from_poses


class _ExactPointDenoiser(nn.Module):
    """The optimal eps-predictor when the data is one point x* (normalized units) for every target."""

    def __init__(self, schedule, x_star):
        super().__init__()
        self.config = DenoiserConfig(n_joints=x_star.shape[0], n_ee=1)
        self.schedule = schedule
        self.register_buffer("x_star", x_star)
        self.dummy = nn.Parameter(torch.zeros(1))

    def encode_targets(self, ee_pos, ee_rot6d, ee_mask, pos_only):
        return ee_pos

    def forward(self, x_t, t, ee_pos, ee_rot6d, ee_mask, pos_only, ctx=None):
        ab = self.schedule.abar(t, x_t)
        return (x_t - ab.sqrt() * self.x_star) / (1 - ab).sqrt()


def _targets(robot, B, seed=0):
    from ikdiffuser_ros.data.generate import sample_fk

    _, pos, rot6d, = sample_fk(robot, B, torch.Generator().manual_seed(seed))
    return pos, rot6d


@pytest.mark.parametrize("method", ["ddim", "ddpm"])
def test_exact_predictor_recovers_the_point_in_joint_units(panda, method, make_loaded):
    loaded = make_loaded(panda)
    x_star = torch.linspace(-0.8, 0.8, 7)
    loaded.denoiser = _ExactPointDenoiser(loaded.schedule, x_star)
    pos, rot6d = _targets(panda, 2)
    q = sample(loaded, pos, rot6d, num_solutions=4, method=method, steps=10, generator=torch.Generator().manual_seed(1))
    expected = loaded.normalizer.denormalize_joints(x_star)
    torch.testing.assert_close(q, expected.expand(2, 4, 7), atol=1e-5, rtol=0)


def test_shapes_limits_and_reproducibility(baxter, make_loaded):
    loaded = make_loaded(baxter)
    pos, rot6d = _targets(baxter, 3)
    mask = torch.tensor([[True, True], [True, False], [False, True]])
    kw = dict(ee_mask=mask, num_solutions=5, steps=4)
    a = sample(loaded, pos, rot6d, generator=torch.Generator().manual_seed(7), **kw)
    b = sample(loaded, pos, rot6d, generator=torch.Generator().manual_seed(7), **kw)
    c = sample(loaded, pos, rot6d, generator=torch.Generator().manual_seed(8), **kw)
    assert a.shape == (3, 5, 14) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    lo, hi = loaded.normalizer.lower, loaded.normalizer.upper
    assert ((a >= lo) & (a <= hi)).all()
    d = sample(loaded, pos, rot6d, method="ddpm", generator=torch.Generator().manual_seed(7), **kw)
    assert d.shape == (3, 5, 14) and ((d >= lo) & (d <= hi)).all()


def test_rows_are_independent_of_the_other_targets(baxter, make_loaded):
    """Row layout b * N + k: changing target 0 leaves target 1's solutions unchanged (same noise)."""
    loaded = make_loaded(baxter)
    pos, rot6d = _targets(baxter, 2)
    a = sample(loaded, pos, rot6d, num_solutions=3, steps=3, generator=torch.Generator().manual_seed(3))
    pos2 = pos.clone()
    pos2[0] += 0.3
    b = sample(loaded, pos2, rot6d, num_solutions=3, steps=3, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a[1], b[1])
    assert not torch.allclose(a[0], b[0])


def test_guidance_pulls_samples_towards_low_cost(panda, make_loaded):
    loaded = make_loaded(panda)
    pos, rot6d = _targets(panda, 4)
    goal = torch.as_tensor(panda.lower + 0.3 * (panda.upper - panda.lower)).float()
    cost = lambda q: ((q - goal) ** 2).sum(-1)  # noqa: E731
    kw = dict(num_solutions=8, steps=10)
    free = sample(loaded, pos, rot6d, generator=torch.Generator().manual_seed(0), **kw)
    guided = sample(loaded, pos, rot6d, generator=torch.Generator().manual_seed(0), guidance=cost,
                    guidance_scale=0.5, **kw)
    assert cost(guided.reshape(-1, 7)).mean() < 0.7 * cost(free.reshape(-1, 7)).mean()


def test_bad_inputs(panda, make_loaded):
    loaded = make_loaded(panda)
    pos, rot6d = _targets(panda, 2)
    with pytest.raises(ValueError):
        sample(loaded, pos[:, :, :2], rot6d)
    with pytest.raises(ValueError):
        sample(loaded, pos, rot6d, method="euler")


def test_targets_from_poses(panda):
    T = panda.fk(torch.zeros(2, 7, dtype=torch.float64))
    pos, rot6d = targets_from_poses(T)
    assert pos.shape == (2, 1, 3) and rot6d.shape == (2, 1, 6)
    torch.testing.assert_close(rot6d[..., :3], T[..., :3, 0])


def test_passed_deadline_stops_after_one_step_with_the_clean_estimate(panda, make_loaded):
    import time

    loaded = make_loaded(panda)
    x_star = torch.linspace(-0.8, 0.8, 7)
    loaded.denoiser = _ExactPointDenoiser(loaded.schedule, x_star)
    calls = []
    forward = loaded.denoiser.forward
    loaded.denoiser.forward = lambda *a, **k: calls.append(1) or forward(*a, **k)
    pos, rot6d = _targets(panda, 2)
    q = sample(loaded, pos, rot6d, num_solutions=3, steps=50, generator=torch.Generator().manual_seed(1),
               deadline=time.monotonic() - 1.0)
    assert len(calls) == 1
    # the exact predictor's clean estimate after one step is already x*
    torch.testing.assert_close(q, loaded.normalizer.denormalize_joints(x_star).expand(2, 3, 7), atol=1e-3, rtol=0)


def test_low_noise_tail_keeps_a_fixed_point_and_follows_the_card(panda, make_loaded):
    from ikdiffuser_ros.sampling.sampler import TAIL_T_MAX, default_sampling, tail_timesteps

    ts = tail_timesteps(9)
    assert ts[0] == TAIL_T_MAX and ts[-1] == 0 and ts == sorted(ts, reverse=True) and tail_timesteps(0) == []
    loaded = make_loaded(panda)
    assert default_sampling(loaded) == (20, 0)
    loaded.card = {"sampling": {"steps": 6, "tail_steps": 9}}
    assert default_sampling(loaded) == (6, 9)
    x_star = torch.linspace(-0.8, 0.8, 7)
    loaded.denoiser = _ExactPointDenoiser(loaded.schedule, x_star)
    pos, rot6d = _targets(panda, 2)
    q = sample(loaded, pos, rot6d, num_solutions=3, steps=4, tail_steps=5, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(q, loaded.normalizer.denormalize_joints(x_star).expand(2, 3, 7), atol=1e-5, rtol=0)


def test_samples_of_a_mobile_robot_get_the_base_that_fits_their_arms(make_loaded):
    """mobile_baxter (planar base): the same draws with and without ``place_base`` differ only in the base, and the
    placed base brings every sample's worst end effector at least as near its target (an untrained network:
    the samples are far off, the fit still applies)."""
    from ikdiffuser_ros.robots import load_robot

    robot = load_robot("mobile_baxter")
    loaded = make_loaded(robot)
    assert loaded.planar_base is not None
    pos, rot6d = _targets(robot, 16, seed=3)
    kw = dict(num_solutions=2, steps=4)
    placed = sample(loaded, pos, rot6d, generator=torch.Generator().manual_seed(5), **kw).reshape(32, -1)
    plain = sample(loaded, pos, rot6d, generator=torch.Generator().manual_seed(5), place_base=False, **kw).reshape(32, -1)
    arms = [i for i in range(robot.n_joints) if i not in loaded.planar_base.indices]
    assert torch.equal(placed[:, arms], plain[:, arms]) and not torch.equal(placed, plain)

    def worst(q):
        return (robot.fk(q.double())[..., :3, 3] - pos.repeat_interleave(2, 0).double()).norm(dim=-1).amax(-1)

    assert (worst(placed) <= worst(plain) + 1e-6).all()
    assert worst(placed).median() < 0.8 * worst(plain).median()
