import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ikdiffuser_ros.model.checkpoint import load_checkpoint
from ikdiffuser_ros.robots import load_robot
from ikdiffuser_ros.training.trainer import TrainConfig, random_masks, train

REPO = Path(__file__).resolve().parents[2]


def _fixed_batch_loss(model_dir, robot, seed=123, B=512):
    """Loss of the checkpointed (EMA) model on a fixed batch of noised held-out rows."""
    from ikdiffuser_ros.data.generate import sample_fk

    loaded = load_checkpoint(model_dir, robot)
    g = torch.Generator().manual_seed(seed)
    q, pos, rot6d = sample_fk(robot, B, g)
    x0 = loaded.normalizer.normalize_joints(q)
    t = torch.randint(0, loaded.schedule.num_train_steps, (B,), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    x_t = loaded.schedule.add_noise(x0, eps, t)
    mask = torch.ones(B, pos.shape[1], dtype=torch.bool)
    with torch.no_grad():
        pred = loaded.denoiser(x_t, t, loaded.normalizer.normalize_pos(pos), rot6d, mask, ~mask)
    return F.mse_loss(pred, eps).item()


def test_random_masks_keep_at_least_one():
    g = torch.Generator().manual_seed(0)
    keep, pos_only = random_masks(5000, 2, 0.3, 0.5, g)
    assert keep.any(1).all() and not (pos_only & ~keep).any()
    assert (~keep).any() and pos_only.any()
    keep1, _ = random_masks(100, 1, 0.0, 0.0, g)
    assert keep1.all()
    # a factorized network's chains (talos: both hands, then each foot): every chain keeps a target
    keep, _ = random_masks(5000, 4, 0.3, 0.0, g, chains=[0, 0, 1, 2])
    assert keep[:, :2].any(1).all() and keep[:, 2].all() and keep[:, 3].all() and not keep[:, :2].all(1).all()


def test_tiny_training_reduces_loss_and_resume_continues(tmp_path, panda):
    out = tmp_path / "run"
    cfg = TrainConfig.preset("tiny", robot="panda", out_dir=str(out), max_steps=1, seed=0)
    train(cfg, progress=False)
    loss_start = _fixed_batch_loss(out, panda)
    shutil.rmtree(out)
    cfg.max_steps = 80
    result = train(cfg, progress=False)
    assert result["step"] == 80
    loss_trained = _fixed_batch_loss(out, panda)
    assert loss_trained < 0.8 * loss_start
    state = json.loads((out / "train_state.json").read_text())
    assert state["step"] == 80
    card = json.loads((out / "card.json").read_text())
    assert card["training"]["steps"] == 80 and "pos_mm_median" in card["eval"]
    assert card["training"]["hardware"]["torch"] == torch.__version__
    # resume: the step counter, optimizer and EMA continue
    cfg.max_steps = 100
    result = train(cfg, resume=True, progress=False)
    assert result["step"] == 100
    assert json.loads((out / "train_state.json").read_text())["step"] == 100
    assert json.loads((out / "card.json").read_text())["training"]["steps"] == 100
    assert len((out / "metrics.jsonl").read_text().splitlines()) >= 3
    assert not list(out.glob("*.pt")) and not list(out.glob("*.pkl"))


def test_resume_is_equivalent_to_one_run(tmp_path):
    """40 steps, then resume to 60 == 60 steps in one go (same data, noise and optimizer state).

    The learning rate is made constant after warmup (lr_min = lr): the cosine decay depends on max_steps.
    """
    kw = dict(robot="panda", seed=1, eval_every=1000, ckpt_every=1000, lr_min=3e-3)
    one = TrainConfig.preset("tiny", out_dir=str(tmp_path / "one"), max_steps=60, **kw)
    train(one, progress=False)
    two = TrainConfig.preset("tiny", out_dir=str(tmp_path / "two"), max_steps=40, **kw)
    train(two, progress=False)
    two.max_steps = 60
    train(two, resume=True, progress=False)
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "one" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)


def test_config_yaml_and_cli_args(tmp_path):
    from ikdiffuser_ros.cli import build_parser
    from ikdiffuser_ros.training.trainer import config_from_args

    y = tmp_path / "c.yaml"
    y.write_text("robot: baxter\nmodel: {type: IKMLPDenoiser, d_model: 48}\nbatch_size: 32\n")
    cfg = TrainConfig.from_yaml(y, max_steps=5)
    assert (cfg.model["d_model"], cfg.batch_size, cfg.max_steps) == (48, 32, 5)
    assert cfg.build_denoiser(14, 2).config.d_model == 48  # named as the card's architecture
    y.write_text("d_modle: 3\n")
    with pytest.raises(ValueError, match="d_modle"):
        TrainConfig.from_yaml(y)
    y.write_text("d_model: 3\n")
    with pytest.raises(ValueError, match="belong under 'model:'"):
        TrainConfig.from_yaml(y)
    y.write_text("model: {type: IKMLPDenoiser, n_heads: 4}\n")
    with pytest.raises(ValueError, match=r"unknown keys \['n_heads'\] for type IKMLPDenoiser"):
        TrainConfig.from_yaml(y)
    y.write_text("extends: " + str(Path(__file__).resolve().parents[2] / "config/training/recipe.yaml")
                 + "\nmodel: {n_blocks: 2}\n")
    assert TrainConfig.from_yaml(y).model == {"type": "IKMLPDenoiser", "d_model": 256, "n_blocks": 2,
                                              "fk_feedback": True, "factorize": True}  # merged into the recipe's
    args = build_parser().parse_args(["train", "--robot", "baxter", "--max-minutes", "2", "--seed", "4"])
    cfg = config_from_args(args)  # picks config/training/baxter.yaml
    assert cfg.robot == "baxter" and cfg.max_minutes == 2 and cfg.seed == 4 and cfg.out_dir == "runs/baxter"
    assert cfg.lr == TrainConfig.from_yaml(REPO / "config/training/recipe.yaml").lr
    args = build_parser().parse_args(["train", "--robot", "baxter", "--resume-from", "models/baxter", "--lr", "3e-4"])
    assert config_from_args(args).lr == 3e-4 and config_from_args(args).init_from == "models/baxter"
    for robot in ("panda", "baxter", "dual_ur5_mobile"):
        TrainConfig.from_yaml(REPO / "config" / "training" / f"{robot}.yaml")


def test_precision_resolves_and_bf16_learns(tmp_path, panda):
    """``precision``: fp32 and bf16 as asked, auto by the hardware, anything else refused by name; a bf16 run
    (autocast network passes, float32 weights) learns as the fp32 one does and says so in its card."""
    from ikdiffuser_ros.training.trainer import uses_bf16

    cpu = torch.device("cpu")
    assert not uses_bf16("fp32", cpu) and uses_bf16("bf16", cpu)
    assert uses_bf16("auto", cpu) == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    with pytest.raises(ValueError, match="precision = 'fp16'"):
        TrainConfig(precision="fp16")
    losses = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        cfg = TrainConfig.preset("tiny", robot="panda", out_dir=str(out), max_steps=80, seed=0, precision=precision)
        train(cfg, progress=False)
        card = json.loads((out / "card.json").read_text())
        assert card["training"]["precision"] == precision
        assert all(v.dtype == torch.float32 for v in load_checkpoint(out, panda).denoiser.state_dict().values())
        losses[precision] = _fixed_batch_loss(out, panda)
    assert losses["bf16"] < 1.15 * losses["fp32"]


def test_factorized_training_takes_the_chains_from_the_robot(tmp_path, baxter):
    """``model: {factorize: true}``: the trainer fills in baxter's two chains, the card records them, and the
    shipped weights load with the cross-chain blocks at zero."""
    out = tmp_path / "run"
    cfg = TrainConfig.preset("tiny", robot="baxter", out_dir=str(out), max_steps=5, eval_every=5, ckpt_every=5,
                             model=dict(type="IKMLPDenoiser", d_model=32, n_blocks=1, factorize=True))
    train(cfg, progress=False)
    arch = json.loads((out / "card.json").read_text())["architecture"]
    assert arch["factorize"] and arch["joint_groups"] == [0] * 7 + [1] * 7 and arch["ee_groups"] == [0, 1]
    net = load_checkpoint(out, baxter).denoiser
    assert net.inp.weight[:16, 7:14].abs().max() == 0 and net.head.weight[:7, 16:].abs().max() == 0
    assert net.inp.weight[:16, :7].abs().max() > 0
    from ikdiffuser_ros.training.learning_curve import plot

    assert plot([out], tmp_path / "arms.png", x="steps", per_end_effector=True).read_bytes()[:4] == b"\x89PNG"
    # a single chain has nothing to split: the dense network (so a dense checkpoint still warm-starts it)
    cfg = TrainConfig.preset("tiny", robot="panda", out_dir=str(tmp_path / "panda"), max_steps=2, eval_every=2,
                             ckpt_every=2, model=dict(type="IKMLPDenoiser", d_model=32, n_blocks=1, factorize=True))
    train(cfg, progress=False)
    arch = json.loads((tmp_path / "panda" / "card.json").read_text())["architecture"]
    assert not arch["factorize"] and arch["joint_groups"] is None


def test_resuming_a_checkpoint_of_another_architecture_names_the_fields_that_differ(tmp_path):
    """A dense two-arm checkpoint warm-started by a factorized config: a clear error, not a state-dict dump."""
    dense = dict(type="IKMLPDenoiser", d_model=32, n_blocks=1, factorize=False)
    cfg = TrainConfig.preset("tiny", robot="baxter", out_dir=str(tmp_path / "dense"), max_steps=2, eval_every=2,
                             ckpt_every=2, model=dense)
    train(cfg, progress=False)
    cfg = TrainConfig.preset("tiny", robot="baxter", out_dir=str(tmp_path / "again"), max_steps=2, eval_every=2,
                             ckpt_every=2, init_from=str(tmp_path / "dense"), model={**dense, "factorize": True})
    with pytest.raises(ValueError, match=r"differs from the configured one in ee_groups .*factorize \(False there, "
                                         r"True configured\).*set those under model:"):
        train(cfg, progress=False)


def test_factorized_mobile_robot_has_a_trunk_and_trains_with_free_arms(tmp_path):
    """mobile_baxter factorized: the base is the trunk (group -1) under one branch per arm; its training rows
    still leave an arm free (both arms are one chain for the masks: a query on one arm leaves the other)."""
    from ikdiffuser_ros.training.trainer import _mask_chains

    out = tmp_path / "mb"
    cfg = TrainConfig.preset("tiny", robot="mobile_baxter", out_dir=str(out), max_steps=3, eval_every=3,
                             ckpt_every=3, model=dict(type="IKMLPDenoiser", d_model=48, n_blocks=1, factorize=True))
    train(cfg, progress=False)
    arch = json.loads((out / "card.json").read_text())["architecture"]
    assert arch["joint_groups"] == [-1] * 3 + [0] * 7 + [1] * 7 and arch["ee_groups"] == [0, 1]
    robot = load_robot("mobile_baxter")
    net = load_checkpoint(out, robot).denoiser
    assert net.ln_out.segments == [0, 16, 32, 48] and _mask_chains(net, robot) == [0, 0]


def test_training_from_generated_shards(tmp_path, baxter):
    from ikdiffuser_ros.data.generate import generate_dataset

    generate_dataset(baxter, 3000, tmp_path / "data", seed=0, shard_size=1000, progress=False)
    cfg = TrainConfig.preset("tiny", robot="baxter", data_dir=str(tmp_path / "data"), out_dir=str(tmp_path / "run"),
                             max_steps=5, eval_every=5, ckpt_every=5)
    train(cfg, progress=False)
    card = json.loads((tmp_path / "run" / "card.json").read_text())
    assert card["training"]["dataset"]["size"] == 3000
    per_ee = card["eval"]["pos_mm_median_per_ee"]  # each arm's own median, none above the worst-of-both median
    assert len(per_ee) == 2 and max(per_ee) <= card["eval"]["pos_mm_median"] + 1e-9


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path):
    """torchrun --nproc_per_node=2 (gloo on CPU): ranks stay in step and rank 0 writes the checkpoint."""
    pytest.importorskip("torch.distributed.run")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    code = ("from ikdiffuser_ros.training.trainer import TrainConfig, train; "
            f"train(TrainConfig.preset('tiny', robot='panda', out_dir={str(tmp_path)!r}, max_steps=6, "
            "eval_every=6, ckpt_every=6, threads=1), progress=False)")
    script = tmp_path / "run_ddp.py"
    script.write_text(code + "\n")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    card = json.loads((tmp_path / "card.json").read_text())
    assert card["training"]["world_size"] == 2 and card["training"]["steps"] == 6


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_stop_signal_ends_training_with_a_resumable_checkpoint(tmp_path, sig):
    """Ctrl-C (SIGINT) or ``kill`` (SIGTERM) during ``ikdiffuser train``: the step finishes, the run evaluates
    and saves as at its end, exits 0, and ``--resume`` continues from the saved step."""
    import signal
    import time

    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "ikdiffuser_ros.cli", "train", "--robot", "panda", "--config", "tiny", "--out",
           str(out), "--threads", "1", "--no-progress"]
    proc = subprocess.Popen(cmd + ["--max-steps", "1000000"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:  # the loop runs once a step is logged
        if line.startswith("[train] step"):
            break
    time.sleep(0.5)
    proc.send_signal(getattr(signal, sig))
    rest = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, rest[-2000:]
    assert f"[train] {sig}: stopping after this step" in rest and "[done]" in rest
    step = json.loads((out / "train_state.json").read_text())["step"]
    assert 10 <= step < 1000000
    assert json.loads((out / "card.json").read_text())["training"]["steps"] == step
    resumed = subprocess.run(cmd + ["--resume", "--max-steps", str(step + 5)], env=env, capture_output=True,
                             text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((out / "train_state.json").read_text())["step"] == step + 5


def test_full_turn_joints_are_learnt_in_one_turn(tmp_path, monkeypatch):
    """UR5 (+-2 pi joints): the normalizer spans one turn for them (learnt_box) and every training row
    reaches the network folded into it; fold_full_turns=False keeps the limits."""
    from ikdiffuser_ros.kinematics.joint_kinds import learnt_box
    from ikdiffuser_ros.model.normalizer import Normalizer
    from ikdiffuser_ros.robots import load_robot

    ur5 = load_robot("ur5")
    seen = []
    normalize = Normalizer.normalize_joints

    def spy(self, q):
        seen.append(q.detach().clone())
        return normalize(self, q)

    monkeypatch.setattr(Normalizer, "normalize_joints", spy)
    for fold, (lower, upper) in ((True, learnt_box(ur5)), (False, ur5.limits())):
        out = tmp_path / f"fold_{fold}"
        cfg = TrainConfig.preset("tiny", robot="ur5", out_dir=str(out), max_steps=3, eval_every=1000,
                                 fold_full_turns=fold)
        seen.clear()
        train(cfg, progress=False)
        loaded = load_checkpoint(out, ur5)
        torch.testing.assert_close(loaded.normalizer.lower.double(), lower, atol=1e-6, rtol=0)
        torch.testing.assert_close(loaded.normalizer.upper.double(), upper, atol=1e-6, rtol=0)
        rows = torch.cat([q for q in seen if q.shape[-1] == 6])
        inside = (rows >= lower.to(rows) - 1e-5) & (rows <= upper.to(rows) + 1e-5)
        assert bool(inside.all())
        if fold:
            assert json.loads((out / "card.json").read_text())["training"]["config"]["fold_full_turns"] is True


def test_train_called_from_python_leaves_signal_handlers_alone(tmp_path, monkeypatch):
    """Only the ``ikdiffuser train`` command takes over SIGINT / SIGTERM: train() in a process that owns its
    handlers (rclpy's node tests, a notebook) installs none."""
    import signal

    def refuse(*args):
        raise AssertionError(f"train() called signal.signal{args}")

    monkeypatch.setattr(signal, "signal", refuse)
    cfg = TrainConfig.preset("tiny", robot="panda", out_dir=str(tmp_path / "run"), max_steps=3, eval_every=3,
                             ckpt_every=3)
    assert train(cfg, progress=False)["step"] == 3


def test_tail_share_draws_that_share_of_timesteps_from_the_low_noise_tail():
    """``tail_share``: that share of a batch's timesteps lies in the sampler's tail ``0 .. TAIL_T_MAX``, the rest
    uniform over ``0 .. T-1``; 0 draws exactly what a plain uniform run draws (resumed runs keep their stream);
    a share outside [0, 1) is refused by name."""
    from ikdiffuser_ros.sampling.sampler import TAIL_T_MAX
    from ikdiffuser_ros.training.trainer import draw_timesteps

    t = draw_timesteps(4000, 100, 0.5, torch.Generator().manual_seed(0))
    assert t[:2000].max() <= TAIL_T_MAX and t[:2000].min() == 0 and t[2000:].max() > 90
    assert 0.5 < (t <= TAIL_T_MAX).float().mean() < 0.6  # half, plus the uniform half's 11 %
    plain = torch.randint(0, 100, (64,), generator=torch.Generator().manual_seed(3))
    assert torch.equal(draw_timesteps(64, 100, 0.0, torch.Generator().manual_seed(3)), plain)
    assert draw_timesteps(64, 5, 0.9, torch.Generator().manual_seed(3)).max() <= 4
    for bad in (-0.1, 1.0, float("nan")):
        with pytest.raises(ValueError, match="tail_share"):
            TrainConfig(tail_share=bad)


def test_head_share_draws_that_share_of_timesteps_from_the_high_noise_half():
    """``head_share``: that share of a batch's timesteps lies in ``T // 2 .. T-1`` (where the first passes choose
    a sample's basin), after the tail's share; 0 leaves the draws untouched; shares that are bad alone or that
    sum to 1 with ``tail_share`` are refused by name."""
    from ikdiffuser_ros.sampling.sampler import TAIL_T_MAX
    from ikdiffuser_ros.training.trainer import draw_timesteps

    t = draw_timesteps(4000, 100, 0.25, torch.Generator().manual_seed(0), head_share=0.5)
    assert t[:1000].max() <= TAIL_T_MAX and t[1000:3000].min() == 50 and t[1000:3000].max() == 99
    assert 0.6 < (t >= 50).float().mean() < 0.7  # half, plus the uniform quarter's half
    plain = draw_timesteps(64, 100, 0.0, torch.Generator().manual_seed(3))
    assert torch.equal(draw_timesteps(64, 100, 0.0, torch.Generator().manual_seed(3), head_share=0.0), plain)
    for bad in ({"head_share": -0.1}, {"head_share": 1.0}, {"head_share": float("nan")},
                {"head_share": 0.5, "tail_share": 0.5}):
        with pytest.raises(ValueError, match="head_share"):
            TrainConfig(**bad)
