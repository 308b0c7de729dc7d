"""Checkpoint format: ``model.safetensors`` + ``card.json`` in one directory. Never pickled.

``model.safetensors`` holds the (EMA) denoiser weights under ``denoiser.*`` and the normalizer
buffers under ``normalizer.*``. ``card.json`` is the self-describing model card::

    {"format_version": 1, "architecture": {"type": NAME, **config}, "schedule": {ScheduleConfig},
     "normalization": {lower, upper, pos_mean, pos_std}, "robot": {name, fingerprint, joint_names,
     end_effectors}, "training": {dataset_size, steps, wall_time_s, hardware, command, ...},
     "eval": {...}}

:func:`load_checkpoint` refuses a checkpoint whose robot fingerprint differs from the robot's.
``architecture.type`` names one of :data:`ARCHITECTURES` (a card without it is an ``IKDenoiser``).
"""

from __future__ import annotations

import json
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ikdiffuser_ros.errors import CheckpointError
from ikdiffuser_ros.model.denoiser import DenoiserConfig, IKDenoiser
from ikdiffuser_ros.model.feedback import KinematicFeedback
from ikdiffuser_ros.model.mlp_denoiser import IKMLPDenoiser, MLPDenoiserConfig
from ikdiffuser_ros.model.normalizer import Normalizer
from ikdiffuser_ros.model.schedule import NoiseSchedule, ScheduleConfig

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "card.json"
#: card ``architecture.type`` -> (config class, network class).
ARCHITECTURES = {
    "IKDenoiser": (DenoiserConfig, IKDenoiser),
    "IKMLPDenoiser": (MLPDenoiserConfig, IKMLPDenoiser),
}
Denoiser = IKDenoiser | IKMLPDenoiser


@dataclass
class LoadedModel:
    """A checkpoint ready for sampling (denoiser in eval mode, on ``device``).

    ``feedback`` is built from ``robot`` and ``normalizer`` when the denoiser conditions on
    kinematic feedback, else None.
    """

    denoiser: Denoiser
    normalizer: Normalizer
    schedule: NoiseSchedule
    card: dict
    robot: object  # RobotModel
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    feedback: KinematicFeedback | None = None

    def __post_init__(self):
        if self.feedback is None and getattr(self.denoiser, "needs_feedback", False):
            self.feedback = KinematicFeedback(self.robot, self.normalizer)

    @property
    def n_joints(self) -> int:
        return self.denoiser.config.n_joints

    @property
    def n_ee(self) -> int:
        return self.denoiser.config.n_ee


def hardware_info(device: str | torch.device = "cpu") -> dict:
    """CPU model, thread count, torch version and device name, for the card."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": sys.version.split()[0], "device": str(device)}
    if str(device).startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def build_card(model: Denoiser, normalizer: Normalizer, schedule_config: ScheduleConfig, robot,
               card_extra: dict | None = None) -> dict:
    card = {
        "format_version": FORMAT_VERSION,
        "architecture": {"type": type(model).__name__, **model.config.to_dict()},
        "schedule": schedule_config.to_dict(),
        "normalization": normalizer.stats(),
        "robot": {"name": getattr(robot, "name", None), "fingerprint": robot.fingerprint(), "joint_names": list(robot.joint_names),
                  "end_effectors": list(robot.end_effectors), "root_frame": getattr(robot, "root_frame", None)},
    }
    for k, v in (card_extra or {}).items():
        if isinstance(v, dict) and isinstance(card.get(k), dict):
            card[k] = {**card[k], **v}
        else:
            card[k] = v
    return card


def save_checkpoint(directory: str | Path, model: Denoiser, normalizer: Normalizer,
                    schedule_config: ScheduleConfig, robot, card_extra: dict | None = None) -> Path:
    """Write ``model.safetensors`` (pass the EMA denoiser) and ``card.json`` into ``directory``.

    ``card_extra`` is merged into the card (e.g. ``{"training": {...}, "eval": {...}}``).
    Files are written to temporaries and renamed, so a crash never leaves a half checkpoint.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"denoiser.{k}": v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"normalizer.{k}": v.detach().float().cpu().contiguous()
                    for k, v in normalizer.state_dict().items()})
    card = build_card(model, normalizer, schedule_config, robot, card_extra)
    tmp_w, tmp_c = directory / (WEIGHTS_FILE + ".tmp"), directory / (CARD_FILE + ".tmp")
    save_file(tensors, str(tmp_w), metadata={"format": "ikdiffuser", "format_version": str(FORMAT_VERSION)})
    tmp_c.write_text(json.dumps(card, indent=2) + "\n")
    tmp_w.replace(directory / WEIGHTS_FILE)
    tmp_c.replace(directory / CARD_FILE)
    return directory


def read_card(directory: str | Path) -> dict:
    path = Path(directory) / CARD_FILE
    if not path.is_file():
        raise CheckpointError(f"checkpoint card not found: {path}")
    try:
        card = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"corrupt checkpoint card {path}: {exc}") from None
    if not isinstance(card, dict) or card.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"unsupported checkpoint card {path}: format_version "
                              f"{card.get('format_version') if isinstance(card, dict) else None!r}, "
                              f"expected {FORMAT_VERSION}")
    return card


def load_checkpoint(directory: str | Path, robot, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a checkpoint directory for ``robot`` (a RobotModel) onto ``device``.

    Raises:
        CheckpointError: missing/corrupt files (naming the path), unsupported format, or a robot
            fingerprint that differs from ``robot.fingerprint()`` (naming both).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    card = read_card(directory)
    info = card.get("robot", {})
    want, have = info.get("fingerprint"), robot.fingerprint()
    if want != have:
        raise CheckpointError(
            f"checkpoint {directory} was trained for robot {info.get('name')!r} (fingerprint {want}), "
            f"but robot {getattr(robot, 'name', '?')!r} has fingerprint {have}: joints, limits or "
            f"end effectors differ; retrain or load the matching robot")
    wpath = directory / WEIGHTS_FILE
    if not wpath.is_file():
        raise CheckpointError(f"checkpoint weights not found: {wpath}")
    try:
        tensors = load_file(str(wpath), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"corrupt checkpoint weights {wpath}: {exc}") from None
    arch = card.get("architecture")
    arch_type = arch.get("type", "IKDenoiser") if isinstance(arch, dict) else None
    if arch_type not in ARCHITECTURES:
        raise CheckpointError(f"checkpoint {directory}: unknown architecture.type {arch_type!r} "
                              f"(known: {sorted(ARCHITECTURES)})")
    config_cls, net_cls = ARCHITECTURES[arch_type]
    try:
        config = config_cls.from_dict(card["architecture"])
        model = net_cls(config)
        normalizer = Normalizer.empty(config.n_joints, config.n_ee)
        model.load_state_dict({k[9:]: v for k, v in tensors.items() if k.startswith("denoiser.")})
        normalizer.load_state_dict({k[11:]: v for k, v in tensors.items() if k.startswith("normalizer.")})
        schedule = NoiseSchedule(ScheduleConfig(**card.get("schedule", {})))
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint {directory} does not match its card: {exc}") from None
    if config.n_joints != len(robot.joint_names) or config.n_ee != len(robot.end_effectors):
        raise CheckpointError(f"checkpoint {directory} has {config.n_joints} joints / {config.n_ee} end effectors, "
                              f"robot has {len(robot.joint_names)} / {len(robot.end_effectors)}")
    device = torch.device(device)
    model.to(device).eval()
    normalizer.to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    return LoadedModel(model, normalizer, schedule, card, robot, device)
