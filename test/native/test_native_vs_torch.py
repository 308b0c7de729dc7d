"""The compiled small-batch path (ikdiffuser_ros.native) against the torch path, on every shipped robot."""

import copy
import dataclasses

import numpy as np
import pytest
import torch

from ikdiffuser_ros import native
from ikdiffuser_ros.kinematics.joint_kinds import joint_kinds
from ikdiffuser_ros.model.checkpoint import load_checkpoint
from ikdiffuser_ros.robots import available_robots, load_robot
from ikdiffuser_ros.sampling.lm import RefineConfig, refine
from ikdiffuser_ros.sampling.sampler import step_noise, default_sampling, sample, sampling_plan, targets_from_poses
from ikdiffuser_ros.solver import IKDiffuserSolver, SolveBatch, SolverConfig

pytestmark = pytest.mark.skipif(not native.available(), reason=native.unavailable_reason)
ROBOTS = available_robots()  #: FK, Jacobians and LM: every robot config
SHIPPED = ["panda", "baxter", "dual_ur5_mobile", "talos", "ur5", "mobile_baxter", "kinova"]  #: the sampler: every shipped model


def _in_float64(loaded):
    """The same model with its network in float64: the torch sampler's exact reference (the same float32 noise)."""
    exact = dataclasses.replace(loaded)
    exact.denoiser = copy.deepcopy(loaded.denoiser).double()
    return exact


def _assert_rounding_only(got, ref, exact):
    """The compiled float32 samples ``got`` are as close to the float64 samples ``exact`` as torch's float32
    samples ``ref`` are: float32 rounding of the network, amplified through the passes (a DDIM step at high noise
    divides the noise estimate's error by sqrt(abar_t)), and by as much on a few rows whatever the summation order
    (64 rows of dual_ur5_mobile's factorized 256-unit model: torch 1.1e-3, compiled 0.9e-3 row by row and 3.6e-3 as
    one matrix product at most, medians 1e-5 to 2e-5), so: 2e-3, or 4x torch's own largest deviation where that is
    larger. An error in the compiled arithmetic moves every row: the median row's deviation is below 1e-4, or within
    4x torch's own median row's where a few rows hold sensitive samples (the same network 98 k steps later, the
    test's 3 rows at temperature 0.5: two of them 1.2e-4 and 6.2e-4 from float64 in torch, 4.0e-4 and 2.2e-4
    compiled)."""
    torch_rows, got_rows = ((x.double() - exact).abs().amax(-1) for x in (ref, got))
    assert got_rows.max() < max(2e-3, 4 * torch_rows.max()), (got_rows, torch_rows)
    assert got_rows.median() < max(1e-4, 4 * torch_rows.median()), (got_rows, torch_rows)


def _uniform(robot, num, seed):
    g = torch.Generator().manual_seed(seed)
    return robot.lower + (robot.upper - robot.lower) * torch.rand(num, robot.n_joints, generator=g, dtype=torch.float64)


@pytest.fixture(scope="module", params=ROBOTS)
def robot(request):
    return load_robot(request.param)


def test_fk_and_jacobian_match_torch(robot):
    q = _uniform(robot, 64, 0)
    T, J = robot.fk_and_jacobian(q)
    Tn, Jn = native.NativeKinematics(robot).fk_and_jacobian(q.numpy())
    assert np.abs(T.numpy() - Tn).max() < 1e-9
    assert np.abs(J.numpy() - Jn).max() < 1e-9


def test_lm_matches_torch_with_tips_frozen_joints_and_position_only(robot):
    """Same iterations, same answers: perturbed starts, a TCP offset, a frozen joint, one free end effector."""
    q_true = _uniform(robot, 48, 1)
    T = robot.fk(q_true)
    g = torch.Generator().manual_seed(2)
    q0 = q_true + 0.2 * torch.randn(q_true.shape, generator=g, dtype=torch.float64)
    E = len(robot.end_effectors)
    mask = torch.ones(48, E, dtype=torch.bool)
    pos_only = torch.zeros(48, E, dtype=torch.bool)
    if E > 1:
        mask[::3, 0] = False
        pos_only[1::3, -1] = True
    tips = torch.tensor([[0.0, 0.0, 0.1]] * E, dtype=torch.float64)
    frozen = torch.zeros(robot.n_joints, dtype=torch.bool)
    frozen[0] = True
    q0[:, 0] = q_true[:, 0]
    kw = dict(target_mask=mask, position_only=pos_only, config=RefineConfig(), frozen=frozen, tip_points=tips)
    ref = refine(robot, q0, T, **kw)
    got = native.NativeKinematics(robot).refine(q0, T, **kw)
    assert torch.equal(ref.converged, got.converged)
    assert torch.equal(ref.iterations, got.iterations)
    assert (ref.q - got.q).abs().max() < 1e-8
    assert (ref.position_error - got.position_error).abs().max() < 1e-9
    assert torch.equal(got.q[:, 0], q0[:, 0])  # frozen


def test_lm_stays_in_a_narrowed_box(robot):
    q_true = _uniform(robot, 1, 3)[0]
    wrap = joint_kinds(robot)[1]
    lower = torch.where(wrap, robot.lower, torch.maximum(robot.lower, q_true - 0.3))
    upper = torch.where(wrap, robot.upper, torch.minimum(robot.upper, q_true + 0.3))
    g = torch.Generator().manual_seed(6)
    q0 = (q_true + 0.6 * torch.rand(16, robot.n_joints, generator=g, dtype=torch.float64) - 0.3).clamp(lower, upper)
    T = robot.fk(q_true)
    res = native.NativeKinematics(robot).refine(q0, T, bounds=(lower, upper))
    assert ((res.q >= lower - 1e-12) & (res.q <= upper + 1e-12)).all()
    assert res.converged.float().mean() > 0.5
    ref = refine(robot, q0, T, bounds=(lower, upper))
    assert (ref.q - res.q).abs().max() < 1e-8


@pytest.mark.parametrize("eta, rows, temperature", [(0.0, 8, 1.0), (1.0, 8, 1.0), (0.0, 3, 1.0), (0.0, 3, 0.5)])
@pytest.mark.parametrize("name", SHIPPED)
def test_sampler_matches_torch(name, eta, rows, temperature):
    """The compiled DDIM + tail loop gives the torch sampler's samples (float32 network, float64 feedback), as
    close to the float64 sampler's as torch's own (:func:`_assert_rounding_only`);
    stochastic DDIM (eta 1, the diversity plan: more steps, no tail) with the same step noise too; a batch of 3
    rows (multiplied row by row in C++) as well as one of 8 (one matrix product); the torch sampler's ``temperature``
    is the compiled one's initial noise scaled by it."""
    robot = load_robot(name)
    loaded = load_checkpoint(f"models/{robot.name}", robot)
    T = robot.fk(_uniform(robot, rows, 4))
    E = len(robot.end_effectors)
    mask = torch.ones(rows, E, dtype=torch.bool)
    pos_only = torch.zeros(rows, E, dtype=torch.bool)
    if E > 1:
        mask[0, 0] = False
        pos_only[1, -1] = True
    steps, tail = default_sampling(loaded, refined=True) if eta == 0 else (10, 0)
    pos, rot6d = targets_from_poses(T.float())
    ref, exact = (sample(model, pos, rot6d, mask, pos_only, 1, steps=steps, tail_steps=tail, eta=eta,
                         generator=torch.Generator().manual_seed(5), place_base=False,  # the solver places it (below)
                         temperature=temperature)[:, 0] for model in (loaded, _in_float64(loaded)))
    gen = torch.Generator().manual_seed(5)
    x = temperature * torch.randn(rows, robot.n_joints, generator=gen)
    plan = sampling_plan(loaded.schedule, steps, tail)
    sampler = native.NativeSampler(loaded, native.NativeKinematics(robot))
    got = sampler.sample(x, T, mask, pos_only, plan, eta=eta, noise=step_noise(x, len(plan), "ddim", eta, gen))
    _assert_rounding_only(got, ref, exact)


@pytest.mark.parametrize("rows", [8, 2])
@pytest.mark.parametrize("name", ["baxter", "mobile_baxter", "talos"])
def test_sampler_matches_torch_on_a_factorized_network(name, rows):
    """A factorized network samples the same in C++ as in torch: baxter (one branch per arm: cross-branch
    weights zero, a layer norm per branch; the compiled hidden layers block by block), mobile_baxter (a trunk,
    the base, whose units reach both arms: most weights nonzero, the compiled hidden layers whole) and talos
    (the torso a trunk under two arms and two legs: block by block, the trunk's blocks included)."""
    from ikdiffuser_ros.data.generate import sample_fk
    from ikdiffuser_ros.kinematics.groups import trunk_and_branches
    from ikdiffuser_ros.model.checkpoint import LoadedModel
    from ikdiffuser_ros.model.mlp_denoiser import IKMLPDenoiser, MLPDenoiserConfig
    from ikdiffuser_ros.model.normalizer import Normalizer
    from ikdiffuser_ros.model.schedule import NoiseSchedule, ScheduleConfig

    robot = load_robot(name)
    joint_groups, ee_groups = trunk_and_branches(robot)
    n = robot.n_joints
    torch.manual_seed(0)
    E = len(ee_groups)
    net = IKMLPDenoiser(MLPDenoiserConfig(n, E, d_model=48, n_blocks=2, factorize=True, joint_groups=joint_groups,
                                          ee_groups=ee_groups)).eval()
    with torch.no_grad():  # make each chain's layer norms differ from the plain one's
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p) * (p != 0))
    assert net.ln_out.segments == {"baxter": [0, 24, 48], "mobile_baxter": [0, 16, 32, 48],
                                   "talos": [0, 10, 20, 31, 39, 48]}[name]
    pos = sample_fk(robot, 500, torch.Generator().manual_seed(0))[1]
    loaded = LoadedModel(net, Normalizer.fit(robot.lower, robot.upper, pos),
                         NoiseSchedule(ScheduleConfig(num_train_steps=20)), {}, robot)
    T = robot.fk(_uniform(robot, rows, 4))
    mask, pos_only = torch.ones(rows, E, dtype=torch.bool), torch.zeros(rows, E, dtype=torch.bool)
    p, r = targets_from_poses(T.float())
    ref = sample(loaded, p, r, mask, pos_only, 1, steps=4, tail_steps=2, generator=torch.Generator().manual_seed(5),
                 place_base=False)[:, 0]
    x = torch.randn(rows, n, generator=torch.Generator().manual_seed(5))
    got = native.NativeSampler(loaded, native.NativeKinematics(robot)).sample(
        x, T, mask, pos_only, sampling_plan(loaded.schedule, 4, 2))
    assert (ref - got).abs().max() < 2e-3


@pytest.mark.parametrize("name", ["mobile_baxter", "dual_ur5_mobile"])
def test_raw_samples_of_a_mobile_robot_place_the_base_on_both_paths(name):
    """Raw samples (no LM) through the solver: the compiled path places the planar base as the torch sampler does
    (the same rows), and differs from the compiled sampler's own rows only in the base."""
    robot = load_robot(name)
    loaded = load_checkpoint(f"models/{robot.name}", robot)
    batch = SolveBatch.of(robot.fk(_uniform(robot, 8, 6)), 2, robot.n_joints)
    compiled = IKDiffuserSolver.from_model(loaded, robot).run(batch, refine=False, random_seed=3)["q"]
    torch_path = IKDiffuserSolver.from_model(loaded, robot, SolverConfig(native=False)).run(
        batch, refine=False, random_seed=3)["q"]
    assert (compiled - torch_path).abs().max() < 2e-3
    placed = loaded.planar_base.indices
    unplaced = IKDiffuserSolver.from_model(loaded, robot)
    unplaced.loaded = dataclasses.replace(loaded)
    unplaced.loaded.planar_base = None
    raw = unplaced.run(batch, refine=False, random_seed=3)["q"]
    arms = [i for i in range(robot.n_joints) if i not in placed]
    assert torch.equal(raw[:, arms], compiled[:, arms]) and not torch.equal(raw[:, placed], compiled[:, placed])
