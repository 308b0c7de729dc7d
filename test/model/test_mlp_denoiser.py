"""IKMLPDenoiser and its kinematic feedback: shapes, masking semantics, the feedback's geometry,
checkpoint round trip, and warm-started training whose hours add up."""

import json

import pytest
import torch

from ikdiffuser_ros.data.generate import sample_fk
from ikdiffuser_ros.kinematics.transforms import matrix_to_rot6d
from ikdiffuser_ros.model.checkpoint import LoadedModel, load_checkpoint, save_checkpoint
from ikdiffuser_ros.model.feedback import FeedbackTargets, KinematicFeedback, feature_width, rot6d_to_matrix
from ikdiffuser_ros.model.mlp_denoiser import IKMLPDenoiser, MLPDenoiserConfig
from ikdiffuser_ros.model.normalizer import Normalizer
from ikdiffuser_ros.model.schedule import NoiseSchedule, ScheduleConfig
from ikdiffuser_ros.sampling.sampler import sample, targets_from_poses
from ikdiffuser_ros.training.trainer import TrainConfig, train


def _mlp_loaded(robot, fk_feedback=True, seed=0) -> LoadedModel:
    torch.manual_seed(seed)
    n, E = len(robot.joint_names), len(robot.end_effectors)
    model = IKMLPDenoiser(MLPDenoiserConfig(n, E, d_model=32, n_blocks=2, fk_feedback=fk_feedback)).eval()
    pos = sample_fk(robot, 2000, torch.Generator().manual_seed(seed))[1]
    normalizer = Normalizer.fit(robot.lower, robot.upper, pos)
    return LoadedModel(model, normalizer, NoiseSchedule(ScheduleConfig(num_train_steps=20)), {}, robot)


def _rows(robot, B, seed=1):
    q, pos, rot6d = sample_fk(robot, B, torch.Generator().manual_seed(seed))
    return q, pos, rot6d


def test_rot6d_round_trip(baxter):
    q, _, _ = _rows(baxter, 16)
    R = baxter.fk(q.double())[..., :3, :3]
    torch.testing.assert_close(rot6d_to_matrix(matrix_to_rot6d(R)), R)


def test_feedback_vanishes_at_a_solution_and_points_back(baxter):
    loaded = _mlp_loaded(baxter)
    fb: KinematicFeedback = loaded.feedback
    n, E = baxter.n_joints, len(baxter.end_effectors)
    assert fb.width == feature_width(n, E) == 15 * E + n
    q, pos, rot6d = _rows(baxter, 64)
    mask = torch.ones(64, E, dtype=torch.bool)
    targets = FeedbackTargets.build(pos, rot6d, mask, ~mask)
    x = loaded.normalizer.normalize_joints(q)
    feats = fb(x, targets)
    assert feats.shape == (64, fb.width)
    errors = feats[:, :15 * E].view(64, E, 15)[..., 9:]
    assert errors.abs().max() < 1e-3 and feats[:, 15 * E:].abs().max() < 1e-2
    # a small joint offset: the least-squares step points back towards the solution
    dx = 0.02 * torch.randn(64, n, generator=torch.Generator().manual_seed(3))
    step = fb(x + dx, targets)[:, 15 * E:]
    cos = torch.nn.functional.cosine_similarity(step, -dx, dim=-1)
    assert cos.median() > 0.5


def test_free_and_position_only_targets_are_ignored(baxter):
    loaded = _mlp_loaded(baxter)
    model, norm = loaded.denoiser, loaded.normalizer
    q, pos, rot6d = _rows(baxter, 8)
    x = norm.normalize_joints(q) + 0.1
    t = torch.full((8,), 5)
    mask = torch.tensor([[True, False]] * 8)
    pos_only = torch.tensor([[True, False]] * 8)

    def eps(p, r):
        fb = loaded.feedback(x, FeedbackTargets.build(p, r, mask, pos_only))
        return model(x, t, norm.normalize_pos(p), r, mask, pos_only, feedback=fb)

    p2, r2 = pos.clone(), rot6d.clone()
    p2[:, 1] += 0.3                               # free end effector moved
    r2[:, 0] = torch.tensor([0.0, 1, 0, -1, 0, 0])  # rotation of a position-only target changed
    torch.testing.assert_close(eps(pos, rot6d), eps(p2, r2))
    p3 = pos.clone()
    p3[:, 0] += 0.1                               # the constrained position matters
    assert (eps(pos, rot6d) - eps(p3, rot6d)).abs().max() > 1e-4


def _factorized(robot, d_model=32, seed=0) -> LoadedModel:
    from ikdiffuser_ros.kinematics.groups import independent_chains

    joint_groups, ee_groups = independent_chains(robot)
    torch.manual_seed(seed)
    config = MLPDenoiserConfig(robot.n_joints, len(robot.end_effectors), d_model=d_model, n_blocks=2, factorize=True,
                               joint_groups=joint_groups, ee_groups=ee_groups)
    loaded = _mlp_loaded(robot, seed=seed)
    return LoadedModel(IKMLPDenoiser(config).eval(), loaded.normalizer, loaded.schedule, {}, robot)


def test_factorized_network_keeps_each_chain_to_itself(baxter):
    """A factorized baxter network: each arm's noise estimate depends on its own joints, target and feedback
    only, exactly (the other arm moved, retargeted, freed), before and after AdamW steps; a dense state
    dict loaded into it keeps the cross-chain weights at zero."""
    loaded = _factorized(baxter)
    model, norm = loaded.denoiser, loaded.normalizer
    q, pos, rot6d = _rows(baxter, 8)
    t = torch.full((8,), 5)
    mask = torch.ones(8, 2, dtype=torch.bool)

    def eps(x, p, m):
        fb = loaded.feedback(x, FeedbackTargets.build(p, rot6d, m, ~mask))
        return model(x, t, norm.normalize_pos(p), rot6d, m, ~mask, feedback=fb)

    def right_arm_changed():
        x = norm.normalize_joints(q)
        x2, p2, m2 = x.clone(), pos.clone(), mask.clone()
        x2[:, 7:] += 0.3
        p2[:, 1] += 0.2
        m2[:, 1] = False
        with torch.no_grad():
            a, b = eps(x, pos, mask), eps(x2, p2, m2)
        return (a[:, :7] - b[:, :7]).abs().max().item(), (a[:, 7:] - b[:, 7:]).abs().max().item()

    left, right = right_arm_changed()
    assert left < 1e-6 < 1e-3 < right
    opt = torch.optim.AdamW(model.parameters(), 1e-2, weight_decay=1e-2)
    for _ in range(3):
        x = norm.normalize_joints(q) + 0.1 * torch.randn(8, 14)
        opt.zero_grad()
        eps(x, pos, mask).pow(2).mean().backward()
        opt.step()
    left, right = right_arm_changed()
    assert left < 1e-6 < 1e-3 < right
    model.load_state_dict({k: torch.randn_like(v) for k, v in model.state_dict().items()})
    assert right_arm_changed()[0] < 1e-6


def test_trunk_reaches_every_branch_and_branches_only_their_own():
    """dual_ur5_mobile factorized: base and waist are the trunk. A branch's units read their own arm's joints,
    target and feedback, the trunk's joints and the trunk's units, never the other arm's; the trunk's units
    read everything; a trunk joint's output comes from the trunk's units only. The masked weights stay zero
    through AdamW and loads."""
    from ikdiffuser_ros.kinematics.groups import TRUNK, trunk_and_branches
    from ikdiffuser_ros.model.mlp_denoiser import structure_masks, unit_groups
    from ikdiffuser_ros.robots import load_robot

    dual = load_robot("dual_ur5_mobile")
    jg, eg = trunk_and_branches(dual)
    config = MLPDenoiserConfig(dual.n_joints, 2, d_model=60, n_blocks=2, factorize=True, joint_groups=jg, ee_groups=eg)
    units = unit_groups(config)
    assert [int((units == g).sum()) for g in (TRUNK, 0, 1)] == [20, 20, 20]  # the trunk as wide as an arm
    m = structure_masks(config)
    jg_t = torch.tensor(jg)
    feat = torch.cat([jg_t, torch.tensor(eg).repeat_interleave(11), torch.tensor(eg).repeat_interleave(15), jg_t])
    left, right, trunk = units == 0, units == 1, units == TRUNK
    assert m["inp"][left][:, feat == 1].sum() == 0 and m["inp"][left][:, (feat == 0) | (feat == TRUNK)].all()
    assert m["inp"][trunk].all() and m["hidden"][trunk].all()
    assert m["hidden"][left][:, right].sum() == 0 and m["hidden"][left][:, left | trunk].all()
    assert m["head"][jg_t == TRUNK][:, ~trunk].sum() == 0 and m["head"][jg_t == 0][:, left | trunk].all()
    assert m["head"][jg_t == 0][:, right].sum() == 0
    model = IKMLPDenoiser(config)
    opt = torch.optim.AdamW(model.parameters(), 1e-2, weight_decay=1e-2)
    for _ in range(2):
        opt.zero_grad()
        B = 4
        out = model(torch.randn(B, dual.n_joints), torch.full((B,), 3), torch.randn(B, 2, 3), torch.randn(B, 2, 6),
                    torch.ones(B, 2, dtype=torch.bool), torch.zeros(B, 2, dtype=torch.bool),
                    feedback=torch.randn(B, config.input_width() - dual.n_joints - 22))
        out.pow(2).mean().backward()
        opt.step()
    model.load_state_dict({k: v + 1.0 for k, v in model.state_dict().items()})
    for w, mask in model._masked():
        assert (w[mask == 0] == 0).all() and (w[mask == 1] != 0).any()


def test_factorize_needs_its_groups():
    with pytest.raises(ValueError, match="factorize needs joint_groups"):
        IKMLPDenoiser(MLPDenoiserConfig(14, 2, factorize=True))
    with pytest.raises(ValueError, match="joint_groups needs 14 ids"):
        MLPDenoiserConfig(14, 2, factorize=True, joint_groups=[0] * 7, ee_groups=[0, 1]).validate()
    with pytest.raises(ValueError, match="group ids must be"):
        MLPDenoiserConfig(2, 2, factorize=True, joint_groups=[0, 2], ee_groups=[0, 2]).validate()
    with pytest.raises(ValueError, match="group ids must be"):  # -1 is the trunk's; no other negative id
        MLPDenoiserConfig(3, 2, factorize=True, joint_groups=[-2, 0, 1], ee_groups=[0, 1]).validate()
    MLPDenoiserConfig(3, 2, factorize=True, joint_groups=[-1, 0, 1], ee_groups=[0, 1]).validate()


def test_feedback_is_required_when_configured(panda):
    loaded = _mlp_loaded(panda)
    with pytest.raises(ValueError, match="feedback"):
        loaded.denoiser(torch.zeros(2, 7), torch.zeros(2, dtype=torch.long), torch.zeros(2, 1, 3),
                        torch.zeros(2, 1, 6), torch.ones(2, 1, dtype=torch.bool), torch.zeros(2, 1, dtype=torch.bool))
    assert _mlp_loaded(panda, fk_feedback=False).feedback is None


@pytest.mark.parametrize("factorize", [False, True])
def test_checkpoint_round_trip_and_sampling(tmp_path, baxter, factorize):
    loaded = _factorized(baxter) if factorize else _mlp_loaded(baxter)
    save_checkpoint(tmp_path, loaded.denoiser, loaded.normalizer, ScheduleConfig(num_train_steps=20), baxter)
    back = load_checkpoint(tmp_path, baxter)
    assert back.card["architecture"]["type"] == "IKMLPDenoiser" and back.feedback is not None
    q, _, _ = _rows(baxter, 3)
    pos, rot6d = targets_from_poses(baxter.fk(q.double()).float())

    def draw(m):
        return sample(m, pos, rot6d, num_solutions=4, steps=5, generator=torch.Generator().manual_seed(0))

    out = draw(back)
    torch.testing.assert_close(out, draw(loaded))
    assert out.shape == (3, 4, baxter.n_joints)
    assert ((out >= baxter.lower.float() - 1e-6) & (out <= baxter.upper.float() + 1e-6)).all()


def test_warm_start_adds_up_training_and_checks_architecture(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    tiny = dict(robot="panda", model=dict(type="IKMLPDenoiser", d_model=32, n_blocks=1), max_steps=20, eval_every=20)
    train(TrainConfig.preset("tiny", out_dir=str(first), **tiny), progress=False)
    train(TrainConfig.preset("tiny", out_dir=str(second), init_from=str(first), **tiny), progress=False)
    card = json.loads((second / "card.json").read_text())
    total = card["training"]["cumulative"]
    assert total["steps"] == 40 and total["runs"] == 2 and total["warm_started_from"] == str(first)
    assert total["hours"] >= json.loads((first / "card.json").read_text())["training"]["cumulative"]["hours"]
    other = dict(tiny, model=dict(type="IKMLPDenoiser", d_model=16, n_blocks=1))
    with pytest.raises(ValueError, match="architecture"):
        train(TrainConfig.preset("tiny", out_dir=str(tmp_path / "c"), init_from=str(first), **other), progress=False)
