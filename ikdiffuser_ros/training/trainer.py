"""Training loop of the IKDiffuser denoiser: ``ikdiffuser train --robot NAME ...``.

Data: ``--data DIR`` reads the shards written by ``ikdiffuser generate`` (loaded into memory,
float32); without it the trainer draws its own dataset in-process with the same generator code:
``dataset_size > 0`` samples once into memory (seeded, reproducible), ``dataset_size == 0`` draws
fresh uniform joint samples and their FK for every batch (an unlimited stream). A disjoint held-out
set (seed ``seed + 7_919``) of FK targets is used for the periodic evaluation: median / p90 of the
worst-over-end-effectors position and rotation error of raw DDIM samples (EMA weights, one sample
per target, all end effectors constrained), no refinement.

Each batch row constrains a random subset of end effectors (each kept with ``p_keep_ee``, at least
one kept) and makes a kept one position-only with ``p_pos_only``; one model then answers
both-arms, left-only and right-only (and position-only) queries.

Optimisation: AdamW, linear warmup then cosine decay to ``lr_min`` where the progress is
``max(step / max_steps, elapsed / max_minutes)`` (so a wall-clock budget still anneals), gradient
clipping, EMA of the weights (the EMA weights are what is checkpointed).

Outputs in ``out_dir``: ``model.safetensors`` + ``card.json`` (the EMA checkpoint, every
``ckpt_every`` steps and at the end), ``train_state.safetensors`` (raw weights, EMA, AdamW moments,
RNG states) + ``train_state.json`` (step, elapsed time, config) for ``--resume``, and
``metrics.jsonl`` (one JSON line per evaluation). No pickle anywhere.

Multi-GPU: launched by ``torchrun`` (``WORLD_SIZE > 1``) the trainer initialises the process group
(NCCL on CUDA, gloo on CPU), wraps the model in DDP, seeds each rank's data stream differently (each
rank draws its own batches: the unbiased analogue of a DistributedSampler for i.i.d. batches), and
only rank 0 evaluates, logs and saves. ``batch_size`` is per rank.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F

from ikdiffuser_ros.kinematics.joint_kinds import fold_turns, full_turns, learnt_box
from ikdiffuser_ros.model.checkpoint import ARCHITECTURES, LoadedModel, hardware_info, save_checkpoint
from ikdiffuser_ros.model.denoiser import IKDenoiser
from ikdiffuser_ros.model.feedback import FeedbackTargets, KinematicFeedback
from ikdiffuser_ros.model.mlp_denoiser import IKMLPDenoiser
from ikdiffuser_ros.model.normalizer import Normalizer
from ikdiffuser_ros.model.schedule import NoiseSchedule, ScheduleConfig
from ikdiffuser_ros.sampling.sampler import TAIL_T_MAX

HELD_OUT_SEED_OFFSET = 7_919


#: values of :attr:`TrainConfig.precision`.
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class TrainConfig:
    """Everything that defines a training run (YAML keys = field names)."""

    #: robot name in config/robots/.
    robot: str = "panda"
    # -- model
    #: the denoiser, named as the checkpoint card's ``architecture`` section names it: ``type``
    #: (``IKMLPDenoiser``: the shipped residual MLP with kinematic feedback; ``IKDenoiser``: the paper's
    #: token transformer) and that architecture's own fields (MLPDenoiserConfig: d_model, n_blocks,
    #: fk_feedback; DenoiserConfig: d_model, n_heads, n_layers, ff_mult, dropout), each defaulting to its
    #: config class's; n_joints and n_ee come from the robot.
    model: dict = field(default_factory=lambda: {"type": "IKMLPDenoiser"})
    #: checkpoint directory to warm-start from (e.g. models/<robot>); its training hours carry over.
    init_from: str | None = None
    #: diffusion steps T.
    num_train_steps: int = 100
    #: share of each batch whose timestep is drawn from the low-noise tail ``0 .. TAIL_T_MAX`` that the
    #: sampler's tail passes use (the rest uniform over ``0 .. T-1``): weights the loss toward the last passes.
    tail_share: float = 0.0
    #: share of each batch whose timestep is drawn from the high-noise half ``T // 2 .. T-1``, where the
    #: sampler's first passes choose a sample's basin (the rest uniform): weights the loss toward those passes.
    head_share: float = 0.0
    # -- data
    #: directory of shards from `ikdiffuser generate`; None = generate in-process.
    data_dir: str | None = None
    #: in-process dataset size (0 = fresh samples every batch).
    dataset_size: int = 0
    #: number of held-out FK targets for evaluation.
    eval_samples: int = 512
    #: probability that an end effector is constrained in a training row (>= 1 always kept).
    p_keep_ee: float = 0.7
    #: probability that a constrained end effector is position-only.
    p_pos_only: float = 0.1
    #: train only on configurations free of self collision, by ``collision_filter``.
    reject_self_collision: bool = False
    #: ``spheres`` (fast, conservative vs FCL) or ``fcl`` (exact; for robots the sphere model over-flags).
    collision_filter: str = "spheres"
    #: learn joints whose range spans more than a turn (``+-2 pi``) in one turn around the middle of
    #: their range (:func:`~ikdiffuser_ros.kinematics.joint_kinds.learnt_box`): the copies 2 pi apart
    #: are removed from the data, the solver spreads the samples back over them.
    fold_full_turns: bool = True
    # -- optimisation
    batch_size: int = 512
    lr: float = 1e-3
    lr_min: float = 1e-5
    weight_decay: float = 1e-4
    warmup_steps: int = 500
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    #: stop after this many optimizer steps (None = only the time budget).
    max_steps: int | None = 100_000
    #: stop after this many minutes of training (None = only max_steps).
    max_minutes: float | None = None
    # -- bookkeeping
    eval_every: int = 1000
    #: DDIM steps of the evaluation sampler.
    eval_sampler_steps: int = 20
    ckpt_every: int = 1000
    log_every: int = 100
    seed: int = 0
    device: str = "cpu"
    #: torch intra-op threads (0 = torch default).
    threads: int = 0
    #: arithmetic of the network's forward and backward passes: ``fp32``; ``bf16`` (autocast: matrix products in
    #: bfloat16, weights, optimizer, loss and the kinematic feedback in float32); ``auto`` = bf16 where the
    #: device multiplies bfloat16 in hardware (CPUs with AMX or AVX512-BF16, CUDA GPUs with bf16), else fp32.
    precision: str = "auto"
    out_dir: str = "runs/panda"

    def __post_init__(self) -> None:
        self.model = dict(self.model)
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision = {self.precision!r}: choose one of {list(PRECISIONS)}")
        if not 0.0 <= self.tail_share < 1.0:  # NaN fails too
            raise ValueError(f"tail_share = {self.tail_share!r}: a share of the batch in [0, 1)")
        if not (0.0 <= self.head_share < 1.0 and self.tail_share + self.head_share < 1.0):
            raise ValueError(f"head_share = {self.head_share!r}: a share of the batch in [0, 1), "
                             f"with tail_share ({self.tail_share}) below 1 together")
        self.model_config(1, 1)  # ValueError naming an unknown type or key, or a bad value

    def model_config(self, n_joints: int, n_ee: int):
        """The validated config of :attr:`model` for a robot of ``n_joints`` joints and ``n_ee`` end effectors."""
        kind = self.model.get("type")
        if kind not in ARCHITECTURES:
            raise ValueError(f"model.type = {kind!r}: choose one of {sorted(ARCHITECTURES)}")
        config_cls = ARCHITECTURES[kind][0]
        allowed = [f.name for f in fields(config_cls) if f.name not in ("n_joints", "n_ee")]
        unknown = sorted(set(self.model) - {"type", *allowed})
        if unknown:
            raise ValueError(f"model has unknown keys {unknown} for type {kind}: allowed {allowed}")
        fields_ = {k: v for k, v in self.model.items() if k != "type"}
        if fields_.get("factorize") and fields_.get("joint_groups") is None:  # one chain until the robot's fill it
            fields_.update(joint_groups=[0] * n_joints, ee_groups=[0] * n_ee)
        config = config_cls(n_joints=n_joints, n_ee=n_ee, **fields_)
        config.validate()
        return config

    def build_denoiser(self, n_joints: int, n_ee: int) -> IKDenoiser | IKMLPDenoiser:
        """A freshly initialised denoiser of :attr:`model`."""
        return ARCHITECTURES[self.model["type"]][1](self.model_config(n_joints, n_ee))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        moved = sorted(set(d) & MODEL_KEYS)
        if moved:
            raise ValueError(f"training config keys {moved} belong under 'model:' (e.g. model: {{type: IKMLPDenoiser, "
                             f"d_model: 256, n_blocks: 4}}), named as the checkpoint card's architecture")
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown training config keys: {sorted(unknown)}")
        return cls(**d)

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides) -> "TrainConfig":
        """A YAML file of fields; ``extends: <file>`` (relative to it) loads that file's fields first."""
        data = _merged(_yaml_fields(Path(path)), {k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(data)

    @classmethod
    def preset(cls, name: str, **overrides) -> "TrainConfig":
        """Named presets: ``tiny`` (seconds on a CPU, for tests) and ``default``."""
        presets = {
            "default": {},
            "tiny": dict(model=dict(type="IKDenoiser", d_model=32, n_heads=2, n_layers=1, ff_mult=2), batch_size=64,
                         lr=3e-3, warmup_steps=10,
                         max_steps=60, eval_every=30, ckpt_every=30, log_every=10, eval_samples=32,
                         eval_sampler_steps=5, num_train_steps=20, ema_decay=0.9),
        }
        if name not in presets:
            raise ValueError(f"unknown preset {name!r}; choose from {sorted(presets)}")
        return cls(**_merged(presets[name], overrides))


def _yaml_fields(path: Path, depth: int = 0) -> dict:
    """The fields of a training YAML, those of the file it ``extends`` first (at most 4 levels)."""
    import yaml

    data = yaml.safe_load(path.read_text()) or {}
    base = data.pop("extends", None)
    if base is None:
        return data
    if depth >= 4:
        raise ValueError(f"{path}: 'extends' nested too deeply")
    from ikdiffuser_ros.resources import resolve_uri  # a path relative to this file, or a package:// URI

    return _merged(_yaml_fields(resolve_uri(str(base), path.parent), depth + 1), data)


#: the architecture fields, which live under ``model:`` (as the card's ``architecture`` section)
MODEL_KEYS = {"architecture", "d_model", "n_heads", "n_layers", "ff_mult", "dropout", "n_blocks", "fk_feedback"}


def _merged(base: dict, update: dict) -> dict:
    """``base`` updated by ``update``; ``model`` sections merge key by key, unless ``update`` changes the type
    (then its own section replaces the base's)."""
    out = {**base, **update}
    if isinstance(base.get("model"), dict) and isinstance(update.get("model"), dict) and \
            update["model"].get("type", base["model"].get("type")) == base["model"].get("type"):
        out["model"] = {**base["model"], **update["model"]}
    return out


#: The recipe every shipped model uses, the default for a robot without its own training config.
RECIPE = "recipe.yaml"


# ----------------------------------------------------------------------------------------- data


class BatchSource:
    """Training rows: q (M, n) and target poses (pos (M, E, 3), rot6d (M, E, 6)), float32.

    Either an in-memory table (``q``/``pos``/``rot6d`` given) sampled with replacement, or an
    unlimited stream of fresh uniform joint samples + FK (``robot`` only; with ``collision_fn``
    only samples it finds free of self collision).
    """

    def __init__(self, robot, generator: torch.Generator, q=None, pos=None, rot6d=None, collision_fn=None):
        self.robot, self.generator = robot, generator
        self.q, self.pos, self.rot6d = q, pos, rot6d
        self.collision_fn = collision_fn

    @property
    def size(self) -> int:
        return 0 if self.q is None else self.q.shape[0]

    def batch(self, B: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.q is None:
            from ikdiffuser_ros.data.generate import sample_fk

            return sample_fk(self.robot, B, self.generator, reject_self_collision=self.collision_fn is not None,
                             collision_fn=self.collision_fn)
        idx = torch.randint(0, self.q.shape[0], (B,), generator=self.generator)
        return self.q[idx], self.pos[idx], self.rot6d[idx]


def random_masks(B: int, E: int, p_keep: float, p_pos_only: float, generator: torch.Generator,
                 chains: list[int] | None = None):
    """(B, E) bool constrained mask (>= 1 True per row) and (B, E) bool position-only mask. ``chains`` (E,):
    the chain of each end effector in a factorized network; then >= 1 True per row in every chain, so each
    chain trains on its targets as a robot of that chain alone would (a chain left without targets is a
    joint distribution no query needs: joints outside a query's group are locked)."""
    keep = torch.rand(B, E, generator=generator) < p_keep
    for members in _chain_members(E, chains):
        forced = members[torch.randint(0, len(members), (B,), generator=generator)]
        keep[torch.arange(B), forced] |= ~keep[:, members].any(1)
    pos_only = (torch.rand(B, E, generator=generator) < p_pos_only) & keep
    return keep, pos_only


def _chain_members(E: int, chains: list[int] | None) -> list[torch.Tensor]:
    """End-effector indices of each chain (one chain of all E when ``chains`` is None)."""
    ids = torch.as_tensor(chains if chains is not None else [0] * E)
    return [torch.nonzero(ids == g).flatten() for g in ids.unique()]


# ----------------------------------------------------------------------------------------- eval


@torch.no_grad()
def evaluate(loaded: LoadedModel, q_ref: torch.Tensor, steps: int, seed: int = 0) -> dict:
    """Raw-sample accuracy on held-out FK targets of ``q_ref`` (K, n): one DDIM sample per target.

    Returns median / p90 of the worst-over-end-effectors position [mm] and rotation [deg] error and, with
    several end effectors, each one's own median position error [mm] (``pos_mm_median_per_ee``, in
    ``robot.end_effectors`` order: the worst of several is about twice each one's, docs/training.md).
    """
    from ikdiffuser_ros.kinematics.transforms import pose_errors
    from ikdiffuser_ros.sampling.sampler import sample, targets_from_poses

    robot = loaded.robot
    T_ref = robot.fk(q_ref.double())
    pos, rot6d = targets_from_poses(T_ref.float())
    gen = torch.Generator(device=loaded.device).manual_seed(seed)
    q = sample(loaded, pos, rot6d, num_solutions=1, method="ddim", steps=steps, generator=gen)[:, 0]
    T = robot.fk(q.double().cpu())
    dp_ee, dr = pose_errors(T, T_ref)
    dp, dr = dp_ee.amax(-1) * 1000, torch.rad2deg(dr.amax(-1))
    out = {"pos_mm_median": dp.median().item(), "pos_mm_p90": dp.quantile(0.9).item(),
           "rot_deg_median": dr.median().item(), "rot_deg_p90": dr.quantile(0.9).item(),
           "num_targets": int(q_ref.shape[0]), "sampler": f"ddim-{steps}"}
    if dp_ee.shape[-1] > 1:
        out["pos_mm_median_per_ee"] = (dp_ee * 1000).median(0).values.tolist()
    return out


# ----------------------------------------------------------------------------------------- state


def _save_state(out: Path, model, ema, opt, step: int, elapsed: float, config: TrainConfig, gens: dict,
                extra: dict) -> None:
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema.state_dict().items()})
    osd = opt.state_dict()
    for idx, st in osd["state"].items():
        for k, v in st.items():
            tensors[f"opt.{idx}.{k}"] = torch.as_tensor(v).detach().cpu().contiguous()
    for name, g in gens.items():
        tensors[f"rng.{name}"] = g.get_state().cpu()
    meta = {"step": step, "elapsed_s": elapsed, "config": config.to_dict(),
            "param_groups": osd["param_groups"], **extra}
    save_file(tensors, str(out / "train_state.safetensors.tmp"))
    (out / "train_state.json.tmp").write_text(json.dumps(meta, indent=2) + "\n")
    (out / "train_state.safetensors.tmp").replace(out / "train_state.safetensors")
    (out / "train_state.json.tmp").replace(out / "train_state.json")


def _load_state(out: Path, model, ema, opt, gens: dict) -> dict:
    from safetensors.torch import load_file

    meta = json.loads((out / "train_state.json").read_text())
    tensors = load_file(str(out / "train_state.safetensors"))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
    state: dict = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, idx, name = k.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    for name, g in gens.items():
        if f"rng.{name}" in tensors:
            g.set_state(tensors[f"rng.{name}"])
    return meta


# ----------------------------------------------------------------------------------------- loop


def _lr(config: TrainConfig, step: int, elapsed: float) -> float:
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = 0.0
    if config.max_steps:
        progress = max(progress, (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps))
    if config.max_minutes:
        progress = max(progress, elapsed / (config.max_minutes * 60))
    progress = min(progress, 1.0)
    return config.lr_min + 0.5 * (config.lr - config.lr_min) * (1 + math.cos(math.pi * progress))


@dataclass
class _Run:
    """Everything a training run holds (built by :func:`_setup`)."""

    config: TrainConfig
    robot: object
    device: torch.device
    world: int
    rank: int
    source: BatchSource
    dataset_desc: dict
    normalizer: Normalizer
    schedule_config: ScheduleConfig
    abar: torch.Tensor
    model: torch.nn.Module
    ema: torch.nn.Module
    net: torch.nn.Module
    opt: torch.optim.Optimizer
    gens: dict
    q_eval: torch.Tensor
    feedback: object = None
    #: (lower (n,), turns (n,) bool) of :func:`fold_turns` when full turns are folded, else None
    fold: tuple[torch.Tensor, torch.Tensor] | None = None
    step: int = 0
    elapsed_before: float = 0.0
    history: list = field(default_factory=list)
    prior: dict = field(default_factory=dict)
    #: (E,) chain of each end effector for :func:`random_masks` (a factorized network's), else None
    mask_chains: list[int] | None = None
    #: the network's passes autocast to bfloat16 (:attr:`TrainConfig.precision` resolved)
    bf16: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _init_distributed(config: TrainConfig) -> tuple[int, int, torch.device]:
    """(world size, rank, device); initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = torch.device(config.device)
    if world > 1:
        import torch.distributed as dist

        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return world, rank, device


def _data(config: TrainConfig, robot, data_gen: torch.Generator) -> tuple[BatchSource, dict, torch.Tensor]:
    """The batch source, its description for the card, and (M, E, 3) positions for the statistics."""
    from ikdiffuser_ros.data.generate import load_shards, sample_fk, self_collision_fn

    collision_fn = self_collision_fn(robot, config.collision_filter) if config.reject_self_collision else None
    if config.data_dir:
        shards = load_shards(config.data_dir, robot)
        source = BatchSource(robot, data_gen, shards["q"], shards["pos"], shards["rot6d"])
        desc = {"source": f"shards {config.data_dir}", "size": source.size,
                "manifest_seed": shards["manifest"].get("seed")}
    elif config.dataset_size > 0:
        q, pos, rot6d = sample_fk(robot, config.dataset_size, torch.Generator().manual_seed(config.seed),
                                  reject_self_collision=collision_fn is not None, collision_fn=collision_fn)
        source = BatchSource(robot, data_gen, q, pos, rot6d)
        desc = {"source": "in-process uniform samples", "size": config.dataset_size}
    else:
        source = BatchSource(robot, data_gen, collision_fn=collision_fn)
        desc = {"source": "in-process fresh uniform samples per batch", "size": None}
    desc["self_collision_free"] = config.collision_filter if config.reject_self_collision else False
    if source.size:
        return source, desc, source.pos[: 200_000]
    return source, desc, sample_fk(robot, 100_000, torch.Generator().manual_seed(config.seed + 1))[1]


def _warm_start(config: TrainConfig, robot, model, ema, device) -> tuple[Normalizer, dict]:
    """Load ``config.init_from`` into ``model`` and ``ema``; returns its normalizer and its training totals."""
    from ikdiffuser_ros.model.checkpoint import load_checkpoint

    loaded = load_checkpoint(config.init_from, robot, device="cpu")
    if loaded.denoiser.config != model.config:
        theirs, ours = asdict(loaded.denoiser.config), asdict(model.config)
        differ = {k: (theirs.get(k), ours.get(k)) for k in sorted(set(theirs) | set(ours)) if theirs.get(k) != ours.get(k)}
        raise ValueError(f"--resume-from {config.init_from}: its architecture differs from the configured one in "
                         + ", ".join(f"{k} ({a!r} there, {b!r} configured)" for k, (a, b) in differ.items())
                         + "; set those under model: in the training config (--config) to continue it")
    model.load_state_dict(loaded.denoiser.state_dict())
    ema.load_state_dict(loaded.denoiser.state_dict())
    return loaded.normalizer.to(device), cumulative_training(loaded.card)


def cumulative_training(card: dict) -> dict:
    """Training totals of a checkpoint card: ``{"steps", "hours", "runs"}`` over all warm-started runs."""
    tr = card.get("training", {}) if isinstance(card, dict) else {}
    total = tr.get("cumulative")
    if isinstance(total, dict):
        return total
    return {"steps": int(tr.get("steps", 0) or 0), "hours": round(float(tr.get("wall_time_s", 0) or 0) / 3600, 3),
            "runs": 1 if tr else 0}


def _init_process(config: TrainConfig) -> tuple[int, int, torch.device]:
    """Check that the run can stop, join the process group under torchrun, set the torch threads, create
    ``out_dir`` (rank 0) and seed torch; returns (world size, rank, device)."""
    if config.max_steps is None and config.max_minutes is None:
        raise ValueError("set max_steps or max_minutes")
    world, rank, device = _init_distributed(config)
    if config.threads:
        torch.set_num_threads(config.threads)
    if rank == 0:
        Path(config.out_dir).mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed + rank)
    return world, rank, device


def _model_and_ema(config: TrainConfig, robot, device: torch.device) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The configured denoiser for ``robot`` on ``device`` (freshly initialised) and a frozen copy of it for the EMA."""
    if config.model.get("factorize") and config.model.get("joint_groups") is None:
        from ikdiffuser_ros.kinematics.groups import trunk_and_branches

        joint_groups, ee_groups = trunk_and_branches(robot)
        if max(ee_groups) == 0:  # one end effector: the dense network
            config.model["factorize"] = False
        else:
            config.model["joint_groups"], config.model["ee_groups"] = joint_groups, ee_groups
    model = config.build_denoiser(len(robot.joint_names), len(robot.end_effectors)).to(device)
    ema = copy.deepcopy(model).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    return model, ema


def _normalizer_and_prior(config: TrainConfig, robot, model, ema, stat_pos: torch.Tensor,
                          device: torch.device) -> tuple[Normalizer, dict]:
    """With ``init_from``: warm-start ``model`` and ``ema``, its normalizer and training totals; else a normalizer
    fitted to the joint limits and the (M, E, 3) end-effector positions ``stat_pos`` [m], and no totals."""
    if config.init_from:
        return _warm_start(config, robot, model, ema, device)
    lower, upper = learnt_box(robot) if config.fold_full_turns else robot.limits()
    return Normalizer.fit(lower, upper, stat_pos).to(device), {}


def _own_normalizer(out: Path, robot, device: torch.device) -> tuple[Normalizer, dict]:
    """A resumed run's normalizer: the one of its own checkpoint (``out``), whatever its warm start's folder
    holds now (a model shipped over it); its totals come with the train state (:func:`_resume_state`)."""
    from ikdiffuser_ros.model.checkpoint import load_checkpoint

    return load_checkpoint(out, robot, device="cpu").normalizer.to(device), {}


def _resume_state(run: _Run, out: Path) -> None:
    """Continue from ``out/train_state.*``: weights, EMA, optimizer and generators, step, elapsed time [s],
    evaluation history and the totals of earlier runs."""
    meta = _load_state(out, run.model, run.ema, run.opt, run.gens)
    run.step, run.elapsed_before = meta["step"], meta["elapsed_s"]
    run.history, run.prior = meta.get("history", []), meta.get("prior", run.prior)


def uses_bf16(precision: str, device: torch.device) -> bool:
    """Whether training autocasts to bfloat16: ``precision`` "bf16", or "auto" on a device that multiplies
    bfloat16 in hardware (oneDNN's check on CPU: AMX or AVX512-BF16; ``is_bf16_supported`` on CUDA)."""
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _setup(config: TrainConfig, resume: bool) -> _Run:
    """Robot, data, normalizer, model, EMA, optimizer, warm start or resume."""
    from ikdiffuser_ros.data.generate import sample_fk
    from ikdiffuser_ros.robots import load_robot

    out = Path(config.out_dir)
    resuming = resume and (out / "train_state.json").is_file()
    if resuming and config.init_from is None:  # the warm start of the run's first segment (its card, its curve)
        config = copy.copy(config)
        config.init_from = json.loads((out / "train_state.json").read_text())["config"].get("init_from")
    world, rank, device = _init_process(config)
    if rank == 0 and not resuming:  # a new run in an old run's folder: a new learning curve
        (out / "metrics.jsonl").unlink(missing_ok=True)
    robot = load_robot(config.robot)
    data_gen = torch.Generator().manual_seed(config.seed + 1000 * rank)
    noise_gen = torch.Generator().manual_seed(config.seed + 1000 * rank + 1)
    source, desc, stat_pos = _data(config, robot, data_gen)
    model, ema = _model_and_ema(config, robot, device)
    normalizer, prior = (_own_normalizer(out, robot, device) if resuming
                         else _normalizer_and_prior(config, robot, model, ema, stat_pos, device))
    schedule_config = ScheduleConfig(num_train_steps=config.num_train_steps)
    abar = NoiseSchedule(schedule_config).alphas_cumprod.float().to(device)
    # fused: one kernel over every tensor (CPU, 950 k parameters: 5.8 -> 1.9 ms a step of ~55)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                            fused=device.type in ("cpu", "cuda"))
    q_eval = sample_fk(robot, config.eval_samples, torch.Generator().manual_seed(config.seed + HELD_OUT_SEED_OFFSET))[0]
    feedback = KinematicFeedback(robot, normalizer) if model.needs_feedback else None
    run = _Run(config, robot, device, world, rank, source, desc, normalizer, schedule_config, abar, model, ema, model,
               opt, {"data": data_gen, "noise": noise_gen}, q_eval, feedback, prior=prior,
               fold=(learnt_box(robot)[0], full_turns(robot)) if config.fold_full_turns else None,
               bf16=uses_bf16(config.precision, device), mask_chains=_mask_chains(model, robot))
    if resuming:
        _resume_state(run, out)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        run.net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return run


def _mask_chains(model: torch.nn.Module, robot) -> list[int] | None:
    """The chain of each end effector (:func:`~ikdiffuser_ros.kinematics.groups.independent_chains`) when the
    network is factorized, else None: every training row then constrains >= 1 end effector of every chain
    (:func:`random_masks`). Chains, not branches: end effectors under a common trunk may be left free, as a
    query on one arm of a mobile manipulator leaves the other."""
    if not getattr(model.config, "factorize", False):
        return None
    from ikdiffuser_ros.kinematics.groups import independent_chains

    return independent_chains(robot)[1]


def draw_timesteps(B: int, T: int, tail_share: float, generator: torch.Generator,
                   head_share: float = 0.0) -> torch.Tensor:
    """(B,) int64 training timesteps: uniform over ``0 .. T-1``, then the first ``round(tail_share * B)``
    redrawn uniform over the sampler's low-noise tail ``0 .. TAIL_T_MAX`` and the next ``round(head_share * B)``
    uniform over the high-noise half ``T // 2 .. T-1`` (with both shares 0 the draws are those of a plain
    uniform run, so older runs resume on the same random stream)."""
    t = torch.randint(0, T, (B,), generator=generator)
    n_tail, n_head = round(tail_share * B), round(head_share * B)
    if n_tail:
        t[:n_tail] = torch.randint(0, min(TAIL_T_MAX, T - 1) + 1, (n_tail,), generator=generator)
    if n_head:
        t[n_tail:n_tail + n_head] = torch.randint(T // 2, T, (n_head,), generator=generator)
    return t


def _train_step(run: _Run, lr: float) -> float:
    """One AdamW step on a fresh batch (+ EMA update); returns the loss."""
    c, dev = run.config, run.device
    for g in run.opt.param_groups:
        g["lr"] = lr
    E = len(run.robot.end_effectors)
    q, pos, rot6d = run.source.batch(c.batch_size)
    keep, pos_only = random_masks(c.batch_size, E, c.p_keep_ee, c.p_pos_only, run.gens["data"], run.mask_chains)
    q, pos, rot6d, keep, pos_only = (x.to(dev) for x in (q, pos, rot6d, keep, pos_only))
    if run.fold is not None:
        q = fold_turns(q, *run.fold)
    x0 = run.normalizer.normalize_joints(q)
    t = draw_timesteps(c.batch_size, c.num_train_steps, c.tail_share, run.gens["noise"], c.head_share).to(dev)
    eps = torch.randn(x0.shape, generator=run.gens["noise"]).to(dev)
    ab = run.abar[t][:, None]
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    extra = {}
    if run.feedback is not None:
        with torch.no_grad():
            extra["feedback"] = run.feedback(x_t, FeedbackTargets.build(pos, rot6d, keep, pos_only))
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=run.bf16):
        pred = run.net(x_t, t, run.normalizer.normalize_pos(pos), rot6d, keep, pos_only, **extra)
    loss = F.mse_loss(pred.float(), eps)
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    if c.grad_clip:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), c.grad_clip)
    run.opt.step()
    run.step += 1
    decay = min(c.ema_decay, (1 + run.step) / (10 + run.step))
    with torch.no_grad():
        torch._foreach_lerp_(list(run.ema.parameters()), list(run.model.parameters()), 1 - decay)
    return loss.item()


def _card_extra(run: _Run, metrics: dict, wall_s: float, command: str | None) -> dict:
    """The ``training`` and ``eval`` sections of the card, with totals over warm-started runs."""
    c = run.config
    this_steps = run.step
    cumulative = {"steps": run.prior.get("steps", 0) + this_steps,
                  "hours": round(run.prior.get("hours", 0.0) + wall_s / 3600, 3),
                  "runs": run.prior.get("runs", 0) + 1, "warm_started_from": c.init_from}
    n_params = sum(p.numel() for p in run.model.parameters())
    return {"training": {"dataset": run.dataset_desc, "steps": this_steps, "batch_size": c.batch_size,
                         "world_size": run.world, "samples_seen": this_steps * c.batch_size * run.world,
                         "precision": "bf16" if run.bf16 else "fp32",
                         "wall_time_s": round(wall_s, 1), "cumulative": cumulative, "parameters": n_params,
                         "hardware": hardware_info(run.device), "config": c.to_dict(),
                         "command": command or shlex.join(sys.argv)},
            "eval": metrics}


def _evaluate(run: _Run, wall_s: float) -> dict:
    """Held-out raw-sample metrics of the EMA weights, appended to ``metrics.jsonl``: the DDIM-20 curve and, on CPU,
    what ``ikdiffuser ship`` would measure (the shipped plan's raw median, one sample + LM: ``as_shipped_metrics``).

    ``total_hours`` / ``total_steps`` count the warm-started runs before this one too (learning curves).
    """
    loaded = LoadedModel(run.ema, run.normalizer, NoiseSchedule(run.schedule_config), {}, run.robot, run.device,
                         run.feedback)
    metrics = {"step": run.step, "total_steps": run.prior.get("steps", 0) + run.step,
               "total_hours": round(run.prior.get("hours", 0.0) + wall_s / 3600, 4),
               **evaluate(loaded, run.q_eval, run.config.eval_sampler_steps)}
    if run.device.type == "cpu":  # the compiled sampler and LM of the solver (CPU)
        from ikdiffuser_ros.training.model_card import as_shipped_metrics

        metrics.update(as_shipped_metrics(loaded, run.q_eval))
    run.history.append(metrics)
    with open(Path(run.config.out_dir) / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps(metrics) + "\n")
    return metrics


def _save(run: _Run, metrics: dict, wall_s: float, command: str | None) -> None:
    out = Path(run.config.out_dir)
    save_checkpoint(out, run.ema, run.normalizer, run.schedule_config, run.robot,
                    _card_extra(run, metrics, wall_s, command))
    _save_state(out, run.model, run.ema, run.opt, run.step, wall_s, run.config, run.gens,
                {"history": run.history, "prior": run.prior})


class StopSignals:
    """While entered (in the main thread), SIGINT (Ctrl-C) and SIGTERM (``kill``, a scheduler's stop) ask
    the training loop to stop after the current step; the run then evaluates and saves as at its end, so
    ``--resume`` continues it. A second signal interrupts at once (KeyboardInterrupt). Entered by the
    ``ikdiffuser train`` command only: :func:`train` called from Python leaves the process's handlers alone
    (rclpy's, a notebook's) unless given one."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def _handle(self, signum: int, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(f"[train] {signal.Signals(signum).name}: stopping after this step and saving a resumable "
              "checkpoint (send it again to abort without saving)", file=sys.stderr, flush=True)


def _should_stop(run: _Run, elapsed: float, signals: StopSignals | None) -> bool:
    c = run.config
    stop = (signals is not None and signals.requested) or (c.max_steps is not None and run.step >= c.max_steps) or (
        c.max_minutes is not None and elapsed >= c.max_minutes * 60)
    if run.world > 1:
        flag = torch.tensor([float(stop)], device=run.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        stop = bool(flag.item())
    return stop


def _progress_bar(run: _Run, progress: bool):
    """A tqdm bar on the main process when ``progress`` is set, else None: over ``max_steps``, or in
    per-mille of the budget when ``max_minutes`` ends the run first (:func:`_budget_used`), so its
    ETA is the budget's."""
    if not (run.is_main and progress):
        return None
    from tqdm import tqdm

    timed = run.config.max_minutes is not None
    return tqdm(total=1000 if timed else run.config.max_steps, initial=0 if timed else run.step,
                desc=f"train {run.config.robot}", unit="‰" if timed else "step", dynamic_ncols=True,
                mininterval=1.0 if sys.stderr.isatty() else 30.0)


def _budget_used(config: "TrainConfig", step: int, start_step: int, elapsed: float) -> float:
    """Share in [0, 1] of this run's budget spent: its steps of ``max_steps``, or its time of ``max_minutes``."""
    used = 0.0
    if config.max_steps:
        used = max(used, (step - start_step) / config.max_steps)
    if config.max_minutes:
        used = max(used, elapsed / (config.max_minutes * 60))
    return min(used, 1.0)


def _logger(run: _Run, pbar) -> Callable[[str], None]:
    """``log(msg)``: on the main process, print ``msg`` (through ``pbar`` when there is one) and flush stdout."""
    def log(msg: str) -> None:
        if run.is_main:
            (pbar.write if pbar is not None else print)(msg)
            sys.stdout.flush()

    return log


def _log_start(run: _Run, log: Callable[[str], None]) -> None:
    """The first log line: robot, architecture, parameter count, data, device, processes, threads, start step."""
    config = run.config
    n_params = sum(p.numel() for p in run.model.parameters())
    log(f"[train] robot={config.robot} model={config.model['type']} params={n_params} data={run.dataset_desc} "
        f"device={run.device} world={run.world} threads={torch.get_num_threads()} "
        f"precision={'bf16' if run.bf16 else 'fp32'} start_step={run.step} prior={run.prior}")


def _after_step(run: _Run, loss_avg: float, elapsed: float, metrics: dict, wall: Callable[[], float],
                command: str | None, log: Callable[[str], None]) -> dict:
    """Main process, after step ``run.step``: log the smoothed loss every ``log_every`` steps, evaluate every
    ``eval_every`` steps at ``elapsed`` [s], checkpoint every ``ckpt_every`` steps at ``wall()`` [s] of training.

    Returns the latest metrics (``metrics`` when this step was not evaluated).
    """
    config = run.config
    if run.step % config.log_every == 0:
        log(f"[train] step {run.step} loss {loss_avg:.4f} elapsed {elapsed / 60:.1f} min")
    if run.step % config.eval_every == 0:
        metrics = {**_evaluate(run, elapsed), "loss": loss_avg}
        log(f"[eval] step {run.step}: raw DDIM-{config.eval_sampler_steps} median {metrics['pos_mm_median']:.1f} "
            f"mm / {metrics['rot_deg_median']:.2f} deg (p90 {metrics['pos_mm_p90']:.1f} mm / "
            f"{metrics['rot_deg_p90']:.2f} deg){_as_shipped(metrics)}")
    if run.step % config.ckpt_every == 0:
        _save(run, metrics, wall(), command)
    return metrics


def _as_shipped(metrics: dict) -> str:
    """``"; shipped plan 3.3 mm, one sample + LM 96.7 %"`` from an evaluation that has them (CPU runs), else ""."""
    if "one_sample_lm" not in metrics:
        return ""
    return (f"; shipped plan {metrics['shipped_pos_mm_median']:.1f} mm, one sample + LM "
            f"{100 * metrics['one_sample_lm']:.1f} %")


def _finish(run: _Run, metrics: dict, loss_avg: float | None, wall_s: float, command: str | None,
            log: Callable[[str], None]) -> dict:
    """Main process, at the end: evaluate (unless the last step was), save the checkpoint at ``wall_s`` [s] of
    training, log the final numbers. Returns the final metrics."""
    if not metrics or metrics.get("step") != run.step:
        metrics = {**_evaluate(run, wall_s), "loss": loss_avg}
    _save(run, metrics, wall_s, command)
    log(f"[done] step {run.step} wall {wall_s / 60:.1f} min; final raw median {metrics['pos_mm_median']:.1f} mm / "
        f"{metrics['rot_deg_median']:.2f} deg{_as_shipped(metrics)} -> {run.config.out_dir}")
    return metrics


def _loop(run: _Run, pbar, log: Callable[[str], None], wall: Callable[[], float], signals: StopSignals | None,
          command: str | None) -> tuple[dict, float | None]:
    """Training steps until the budget is spent or a stop signal came; ``wall()`` [s] of training so far.
    Returns the latest metrics and the smoothed loss (None when no step ran)."""
    config = run.config
    metrics: dict = run.history[-1] if run.history else {}
    loss_avg = None
    start_step, wall_before = run.step, run.elapsed_before
    run.model.train()
    while not _should_stop(run, elapsed := wall(), signals):
        lv = _train_step(run, _lr(config, run.step, elapsed))
        loss_avg = lv if loss_avg is None else 0.98 * loss_avg + 0.02 * lv
        if pbar is not None:
            if config.max_minutes is None:
                pbar.update(1)
            else:
                pbar.update(int(1000 * _budget_used(config, run.step, start_step, wall() - wall_before)) - pbar.n)
        if run.is_main:
            metrics = _after_step(run, loss_avg, elapsed, metrics, wall, command, log)
    return metrics, loss_avg


def train(config: TrainConfig, resume: bool = False, command: str | None = None, progress: bool = True,
          signals: StopSignals | None = None) -> dict:
    """Run (or resume) a training run; returns the final evaluation metrics and counters.

    ``max_steps`` counts the steps of this run (a warm start from ``init_from`` begins at 0). With entered
    ``signals`` (the ``ikdiffuser train`` command), SIGINT / SIGTERM end it early with a resumable checkpoint.
    """
    run = _setup(config, resume)
    pbar = _progress_bar(run, progress)
    log = _logger(run, pbar)
    _log_start(run, log)
    t_start = time.time()

    def wall() -> float:
        """Training time [s] so far, including the runs that this one resumes."""
        return run.elapsed_before + time.time() - t_start

    metrics, loss_avg = _loop(run, pbar, log, wall, signals, command)
    if pbar is not None:
        pbar.close()
    if run.is_main:
        metrics = _finish(run, metrics, loss_avg, wall(), command, log)
    if run.world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return {"step": run.step, "metrics": metrics, "out_dir": str(config.out_dir)}


# ----------------------------------------------------------------------------------------- CLI


def register(subparsers) -> None:
    """Add ``train`` to the ``ikdiffuser`` command."""
    p = subparsers.add_parser("train", help="train the diffusion IK model for a robot",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--robot", required=True)
    p.add_argument("--config", help="YAML file of TrainConfig fields (default: the robot's own, "
                                    "config/training/<robot>.yaml or <stem>.training.yaml next to a robot YAML, "
                                    "if it exists, else config/training/recipe.yaml, the recipe of every "
                                    "shipped model), or a preset name: tiny, default")
    p.add_argument("--data", help="dataset directory from `ikdiffuser generate` (default: generate in-process)")
    p.add_argument("--out", help="output directory (default runs/<robot>)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/train_state.*")
    p.add_argument("--resume-from", dest="init_from", metavar="CHECKPOINT",
                   help="warm-start from a checkpoint directory (e.g. models/<robot>); training hours add up")
    p.add_argument("--max-steps", type=int)
    p.add_argument("--max-minutes", type=float)
    p.add_argument("--lr", type=float, help="peak learning rate of the cosine schedule (default the config's; a "
                                            "continued model keeps more of what it learnt with a smaller one)")
    p.add_argument("--device", help="cpu | cuda | cuda:K")
    p.add_argument("--seed", type=int)
    p.add_argument("--threads", type=int, help="torch intra-op threads")
    p.add_argument("--precision", choices=PRECISIONS, help="network arithmetic (default auto: bf16 where the "
                                                           "hardware multiplies bfloat16, else fp32)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar (log lines only)")
    p.set_defaults(func=_main)


def config_from_args(args) -> TrainConfig:
    overrides = {"robot": args.robot, "data_dir": args.data, "out_dir": args.out, "max_steps": args.max_steps,
                 "max_minutes": args.max_minutes, "device": args.device, "seed": args.seed,
                 "threads": args.threads, "init_from": args.init_from, "precision": args.precision, "lr": args.lr}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if args.config in ("tiny", "default"):
        config = TrainConfig.preset(args.config, **overrides)
    else:
        path = args.config
        if path is None:  # the robot's own (next to a robot YAML, or config/training/<robot>.yaml), else the recipe
            from ikdiffuser_ros.robots import training_config_for

            path = training_config_for(args.robot)
            print(f"[train] config {path}", flush=True)
        config = TrainConfig.from_yaml(path, **overrides)
    if args.out is None and "out_dir" not in overrides:
        config.out_dir = f"runs/{Path(config.robot).stem}"
    return config


def _main(args) -> int:
    config = config_from_args(args)
    with StopSignals() as signals:
        train(config, resume=args.resume, command=shlex.join(["ikdiffuser", *sys.argv[1:]]),
              progress=not args.no_progress, signals=signals)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ikdiffuser-train")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(["train", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)
