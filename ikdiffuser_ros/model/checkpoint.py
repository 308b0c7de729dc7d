"""Checkpoint format: ``model.safetensors`` + ``card.json`` in one directory. Never pickled.

``model.safetensors`` holds the (EMA) denoiser weights under ``denoiser.*`` and the normalizer
buffers under ``normalizer.*``. ``card.json`` is the self-describing model card::

    {"format_version": 1, "architecture": {"type": NAME, **config}, "schedule": {ScheduleConfig},
     "normalization": {lower, upper, pos_mean, pos_std}, "robot": {name, fingerprint, joint_names,
     end_effectors}, "training": {dataset_size, steps, wall_time_s, hardware, command, ...},
     "eval": {...}}

``architecture.type`` names one of :data:`ARCHITECTURES` (a card without it is an ``IKDenoiser``).

Checkpoints are untrusted input. :func:`load_checkpoint` checks, in this order, and raises one
:class:`CheckpointError` line naming the file and the field at the first failure:

1. files: regular files only (a symlink to one is fine; a FIFO, device, directory or symlink loop is
   refused without opening it for a blocking read), at most :data:`MAX_CARD_BYTES` /
   :data:`MAX_WEIGHTS_BYTES`;
2. the card, before anything is allocated: ``format_version``; no key the loader does not know (at
   the top level: :data:`CARD_SECTIONS` and the informational :data:`INFORMATIONAL_KEYS`; inside
   ``robot``, ``architecture``, ``schedule``, ``normalization`` and ``sampling``: their fields), so a
   misspelt or foreign field is refused rather than silently ignored; ``robot`` an object whose
   ``fingerprint`` equals the robot's; ``architecture`` and ``schedule`` objects whose fields have the
   right JSON types (:func:`~ikdiffuser_ros.model.validation.check_fields`) and sane ranges (the
   config class's ``validate()``); joint and end-effector counts equal the robot's; at most
   :data:`MAX_PARAMETERS` parameters (counted on a ``meta``-device copy of the network);
3. the weights: tensor names and shapes equal those of that freshly built network and the
   normalizer (read from the safetensors header before the data), every value finite, joint limits
   ordered, position scales positive (the denoiser's tensors may be stored as float16, see
   :func:`store_weights_as`: they are computed in float32 after loading);
4. a self-test: raw samples for a few known targets (FK of random configurations) are finite and so
   are their pose errors.
"""

from __future__ import annotations

import json
import math
import os
import stat
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

from ikdiffuser_ros.errors import CheckpointError
from ikdiffuser_ros.kinematics.joint_kinds import uniform_in_limits
from ikdiffuser_ros.kinematics.planar_base import PlanarBase
from ikdiffuser_ros.machine import cpu_model
from ikdiffuser_ros.model.denoiser import DenoiserConfig, IKDenoiser
from ikdiffuser_ros.model.feedback import KinematicFeedback
from ikdiffuser_ros.model.mlp_denoiser import IKMLPDenoiser, MLPDenoiserConfig
from ikdiffuser_ros.model.normalizer import Normalizer
from ikdiffuser_ros.model.schedule import NoiseSchedule, ScheduleConfig
from ikdiffuser_ros.model.validation import check_fields

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "card.json"
#: largest card.json read [bytes]
MAX_CARD_BYTES = 16 << 20
#: largest model.safetensors read [bytes]
MAX_WEIGHTS_BYTES = 1 << 30
#: largest network built from a card (parameters; 50 M float32 = 200 MB)
MAX_PARAMETERS = 50_000_000
#: raw-sample pose errors [m] beyond this fail the self-test (no robot arm reaches that far)
SELF_TEST_MAX_ERROR = 100.0
#: card ``architecture.type`` -> (config class, network class).
ARCHITECTURES = {
    "IKDenoiser": (DenoiserConfig, IKDenoiser),
    "IKMLPDenoiser": (MLPDenoiserConfig, IKMLPDenoiser),
}
Denoiser = IKDenoiser | IKMLPDenoiser
#: storage dtypes of the denoiser's tensors (name -> dtype); the normalizer is always float32
WEIGHT_DTYPES = {"float32": torch.float32, "float16": torch.float16}
#: top-level card keys the loader reads
CARD_SECTIONS = ("format_version", "architecture", "schedule", "normalization", "robot", "sampling")
#: top-level card keys that only inform people (written by the trainer and ``model_card``; never read
#: by the loader, so their contents are free-form)
INFORMATIONAL_KEYS = ("training", "eval", "hardware")
#: keys of the card's ``robot`` section (:func:`build_card`)
ROBOT_KEYS = ("name", "fingerprint", "joint_names", "end_effectors", "root_frame")
#: keys of the card's optional ``sampling`` section -> their integer range
SAMPLING_RANGES = {"steps": (1, 1000), "tail_steps": (0, 100), "refined_steps": (1, 1000),
                   "refined_tail_steps": (0, 100), "harvest_steps": (1, 1000)}
#: the card's optional ``sampling.temperature``: the standard deviation of the sampler's initial noise, in (0, 1]
SAMPLING_TEMPERATURE = "temperature"


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
    #: the robot's planar base, which the sampler places in closed form (None: it has none)
    planar_base: PlanarBase | None = field(init=False)

    def __post_init__(self):
        if self.feedback is None and getattr(self.denoiser, "needs_feedback", False):
            self.feedback = KinematicFeedback(self.robot, self.normalizer)
        self.planar_base = PlanarBase.of(self.robot)

    @property
    def n_joints(self) -> int:
        return self.denoiser.config.n_joints

    @property
    def n_ee(self) -> int:
        return self.denoiser.config.n_ee


def hardware_info(device: str | torch.device = "cpu") -> dict:
    """CPU model, thread count, torch version and device name, for the card."""
    info = {"cpu": cpu_model(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
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
        "robot": dict(zip(ROBOT_KEYS, (getattr(robot, "name", None), robot.fingerprint(), list(robot.joint_names),
                                       list(robot.end_effectors), getattr(robot, "root_frame", None)))),
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


def store_weights_as(weights: Path, dtype: str) -> int:
    """Rewrite the checkpoint weights file ``weights`` with the denoiser's tensors stored as ``dtype`` (a key of
    :data:`WEIGHT_DTYPES`; the normalizer stays float32), in place through a renamed temporary.

    float16 halves the file; the loader computes in float32 whatever the storage. The file is left readable by
    every user (0644: a model folder is read by the node, maybe as another user). Returns its size [bytes]. Raises CheckpointError if a value does not fit ``dtype`` (beyond float16's 65504), leaving the
    file as it was.
    """
    from safetensors.torch import load_file, save_file

    if dtype not in WEIGHT_DTYPES:
        raise CheckpointError(f"unknown weights dtype {dtype!r}; one of {sorted(WEIGHT_DTYPES)}")
    tensors = load_file(str(weights), device="cpu")
    for name, t in tensors.items():
        if name.startswith("denoiser."):
            tensors[name] = t.to(WEIGHT_DTYPES[dtype]).contiguous()
            if not bool(torch.isfinite(tensors[name]).all()):
                raise CheckpointError(f"checkpoint weights {weights}: tensor {name} does not fit {dtype} "
                                      f"(largest magnitude {float(t.abs().max()):.3g})")
    tmp = weights.with_name(weights.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "ikdiffuser", "format_version": str(FORMAT_VERSION)})
    os.chmod(tmp, 0o644)
    tmp.replace(weights)
    return weights.stat().st_size


def stored_weights_dtype(directory: str | Path) -> str:
    """How a checkpoint stores its denoiser's tensors: a key of :data:`WEIGHT_DTYPES` (read from the
    safetensors header of a checkpoint :func:`load_checkpoint` accepted)."""
    from safetensors import safe_open

    with safe_open(str(Path(directory) / WEIGHTS_FILE), framework="pt", device="cpu") as f:
        dtype = f.get_slice("denoiser.head.weight").get_dtype()
    return {"F32": "float32", "F16": "float16"}[dtype]


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def regular_file_size(path: Path, what: str, max_bytes: int) -> int:
    """Size [bytes] of ``path`` if it is a regular file (or a symlink to one) of at most ``max_bytes``.

    Raises CheckpointError naming ``what`` and ``path``: missing ("not found"), unreadable (a symlink
    loop, permissions), not a regular file (FIFO, device, directory), or too large. Never opens it.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise CheckpointError(f"{what} not found: {path}") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise CheckpointError(f"{what} {path} is {_file_kind(st.st_mode)}, not a regular file")
    if st.st_size > max_bytes:
        raise CheckpointError(f"{what} {path} has {st.st_size} bytes, more than the {max_bytes} allowed")
    return st.st_size


def read_regular_file(path: Path, what: str, max_bytes: int) -> bytes:
    """The bytes of a regular file checked by :func:`regular_file_size` (opened non-blocking, re-checked
    after opening, so a file swapped for a FIFO cannot hang the read)."""
    regular_file_size(path, what, max_bytes)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise CheckpointError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise CheckpointError(f"{what} {path} is not a regular file")
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise CheckpointError(f"{what} {path} has more than the {max_bytes} bytes allowed")
    return data


def read_card(directory: str | Path) -> dict:
    """The parsed ``card.json`` of ``directory`` (format version checked; see the module docstring)."""
    path = Path(directory) / CARD_FILE
    raw = read_regular_file(path, "checkpoint card", MAX_CARD_BYTES)
    try:
        card = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(f"corrupt checkpoint card {path}: {exc}") from None
    if not isinstance(card, dict) or card.get("format_version") != FORMAT_VERSION \
            or isinstance(card.get("format_version"), bool):
        raise CheckpointError(f"unsupported checkpoint card {path}: format_version "
                              f"{card.get('format_version') if isinstance(card, dict) else None!r}, "
                              f"expected {FORMAT_VERSION}")
    return card


def card_fingerprint(card: dict) -> str | None:
    """The robot fingerprint a card was trained for (``robot.fingerprint``), or None."""
    robot = card.get("robot")
    value = robot.get("fingerprint") if isinstance(robot, dict) else card.get("fingerprint")
    return value if isinstance(value, str) else None


@dataclass
class CardSpec:
    """What a validated card says to build: architecture, its config and the schedule."""

    arch_type: str
    config: object  # DenoiserConfig | MLPDenoiserConfig
    schedule: ScheduleConfig


def _card_error(path: Path, message: str) -> CheckpointError:
    """``"checkpoint card <path>: <message>"``."""
    return CheckpointError(f"checkpoint card {path}: {message}")


def _card_section(card: dict, path: Path, name: str, default=None) -> dict:
    """``card[name]`` (``default`` when absent), which must be a JSON object."""
    value = card.get(name, default)
    if not isinstance(value, dict):
        raise _card_error(path, f"{name} must be an object, got {type(value).__name__} {value!r}")
    return value


def _refuse_unknown_keys(section: dict, known, path: Path, name: str) -> None:
    """CheckpointError ``"<name> has unknown keys [...]; known: [...]"`` when ``section`` holds a key not in ``known``."""
    known = sorted(known)
    unknown = sorted(set(section) - set(known))
    if unknown:
        raise _card_error(path, f"{name} has unknown keys {unknown}; known: {known}")


def _check_top_level(card: dict, path: Path) -> None:
    """Every top-level key is a section the loader reads or an informational one; ``normalization``
    (written for people; the loader takes the statistics from the weights) holds the normalizer's fields."""
    _refuse_unknown_keys(card, CARD_SECTIONS + INFORMATIONAL_KEYS, path, "the card")
    normalization = _card_section(card, path, "normalization", {})
    _refuse_unknown_keys(normalization, Normalizer.empty(1, 1).state_dict(), path, "normalization")


def _check_robot(card: dict, path: Path, robot) -> None:
    """The card's ``robot`` section is an object of :data:`ROBOT_KEYS` and its fingerprint is
    ``robot.fingerprint()`` (naming both if not)."""
    info = _card_section(card, path, "robot")
    _refuse_unknown_keys(info, ROBOT_KEYS, path, "robot")
    want, have = card_fingerprint(card), robot.fingerprint()
    if want != have:
        raise CheckpointError(
            f"checkpoint {path.parent} was trained for robot {info.get('name')!r} (fingerprint {want}), "
            f"but robot {getattr(robot, 'name', '?')!r} has fingerprint {have}: joints, limits or "
            f"end effectors differ; retrain or load the matching robot")


def _card_architecture(card: dict, path: Path, robot) -> tuple[str, object]:
    """(architecture type, its validated config) from the card's ``architecture`` section; the config's
    n_joints and n_ee must be those of ``robot``."""
    arch = _card_section(card, path, "architecture")
    arch_type = arch.get("type", "IKDenoiser")
    if not isinstance(arch_type, str) or arch_type not in ARCHITECTURES:
        raise _card_error(path, f"architecture.type = {arch_type!r} is not a known architecture "
                                f"({sorted(ARCHITECTURES)})")
    config_cls, _ = ARCHITECTURES[arch_type]
    _refuse_unknown_keys(arch, ("type", *(f.name for f in fields(config_cls))), path, "architecture")
    try:
        config = config_cls(**check_fields(config_cls, arch))
        config.validate()
    except ValueError as exc:
        raise _card_error(path, f"architecture.{exc}") from None
    n, E = len(robot.joint_names), len(robot.end_effectors)
    if (config.n_joints, config.n_ee) != (n, E):
        raise _card_error(path, f"architecture.n_joints = {config.n_joints}, n_ee = {config.n_ee}, but the robot "
                                f"has {n} joints and {E} end effectors")
    return arch_type, config


def _card_schedule(card: dict, path: Path) -> ScheduleConfig:
    """The validated ScheduleConfig of the card's ``schedule`` section (defaults when absent)."""
    section = _card_section(card, path, "schedule", {})
    _refuse_unknown_keys(section, [f.name for f in fields(ScheduleConfig)], path, "schedule")
    try:
        schedule = ScheduleConfig(**check_fields(ScheduleConfig, section))
        schedule.validate()
    except ValueError as exc:
        raise _card_error(path, f"schedule.{exc}") from None
    return schedule


def _check_sampling(card: dict, path: Path) -> None:
    """The card's optional ``sampling`` defaults: integer ``steps``, ``refined_steps`` and ``harvest_steps`` in
    [1, 1000], ``tail_steps`` and ``refined_tail_steps`` in [0, 100], ``temperature`` a number in (0, 1]; no other
    key."""
    sampling = _card_section(card, path, "sampling", {})
    _refuse_unknown_keys(sampling, (*SAMPLING_RANGES, SAMPLING_TEMPERATURE), path, "sampling")
    for key, (lo, hi) in SAMPLING_RANGES.items():
        value = sampling.get(key, lo)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise _card_error(path, f"sampling.{key} = {value!r} must be an integer in [{lo}, {hi}]")
    tau = sampling.get(SAMPLING_TEMPERATURE, 1.0)
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not 0.0 < tau <= 1.0:  # NaN fails too
        raise _card_error(path, f"sampling.temperature = {tau!r} must be a number in (0, 1]")


def validate_card(card: dict, path: Path, robot) -> CardSpec:
    """Check a card's fields against ``robot`` before anything is allocated (module docstring, step 2).

    Raises CheckpointError ``"checkpoint card <path>: <section>.<field> = <value> ..."``, or
    ``"... <section> has unknown keys [...]; known: [...]"``.
    """
    _check_top_level(card, path)
    _check_robot(card, path, robot)
    arch_type, config = _card_architecture(card, path, robot)
    schedule = _card_schedule(card, path)
    _check_sampling(card, path)
    return CardSpec(arch_type, config, schedule)


def _expected_shapes(spec: CardSpec, path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of the network a card describes, counted on the ``meta`` device (no memory)."""
    _, net_cls = ARCHITECTURES[spec.arch_type]
    with torch.device("meta"):
        meta = net_cls(spec.config)
    count = sum(p.numel() for p in meta.parameters())
    if count > MAX_PARAMETERS:
        raise CheckpointError(f"checkpoint card {path}: architecture describes {count:.3g} parameters, more than "
                              f"the {MAX_PARAMETERS:.3g} allowed")
    shapes = {f"denoiser.{k}": tuple(v.shape) for k, v in meta.state_dict().items()}
    norm = Normalizer.empty(spec.config.n_joints, spec.config.n_ee)
    shapes.update({f"normalizer.{k}": tuple(v.shape) for k, v in norm.state_dict().items()})
    return shapes


def _check_weight_shapes(wpath: Path, expected: dict[str, tuple[int, ...]], directory: Path) -> None:
    """Tensor names and shapes in the safetensors header against ``expected`` (data not read)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(wpath), framework="pt", device="cpu") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"corrupt checkpoint weights {wpath}: {exc}") from None
    missing = sorted(set(expected) - set(shapes))
    extra = sorted(set(shapes) - set(expected))
    wrong = [k for k in expected if k in shapes and shapes[k] != expected[k]]
    if missing or extra or wrong:
        parts = ([f"missing tensors {missing[:3]}"] if missing else []) + \
                ([f"unexpected tensors {extra[:3]}"] if extra else []) + \
                [f"tensor {k} has shape {list(shapes[k])}, the card's architecture needs {list(expected[k])}"
                 for k in wrong[:1]]
        raise CheckpointError(f"checkpoint {directory} does not match its card: {wpath}: " + "; ".join(parts))


def _check_values(tensors: dict[str, torch.Tensor], wpath: Path) -> None:
    """Every tensor float32 (the denoiser's also float16) and finite; joint limits ordered; position scales
    positive."""
    for name, t in tensors.items():
        allowed = WEIGHT_DTYPES if name.startswith("denoiser.") else {"float32": torch.float32}
        if t.dtype not in allowed.values():
            raise CheckpointError(f"checkpoint weights {wpath}: tensor {name} has dtype {t.dtype}, expected "
                                  f"{' or '.join(allowed)}")
        bad = int((~torch.isfinite(t)).sum())
        if bad:
            raise CheckpointError(f"checkpoint weights {wpath}: tensor {name} has {bad} of {t.numel()} values "
                                  f"NaN or infinite")
    if not bool((tensors["normalizer.upper"] > tensors["normalizer.lower"]).all()):
        raise CheckpointError(f"checkpoint weights {wpath}: tensor normalizer.upper is not above normalizer.lower")
    if not bool((tensors["normalizer.pos_std"] > 0).all()):
        raise CheckpointError(f"checkpoint weights {wpath}: tensor normalizer.pos_std has values <= 0")


def self_test(loaded: "LoadedModel", directory: Path, targets: int = 4) -> None:
    """Raw samples (2 per target, 5 DDIM steps) for ``targets`` known poses (FK of seeded random
    configurations) must be finite, and so must their position errors (below :data:`SELF_TEST_MAX_ERROR`
    m). Raises CheckpointError naming the checkpoint."""
    from ikdiffuser_ros.sampling.sampler import sample, targets_from_poses

    robot = loaded.robot
    g = torch.Generator().manual_seed(0)
    lo, hi = robot.limits()
    q = uniform_in_limits(lo, hi, targets, g)
    T = robot.fk(q)
    pos, rot = targets_from_poses(T)
    try:
        raw = sample(loaded, pos.float(), rot.float(), num_solutions=2, steps=5,
                     generator=g if loaded.device.type == "cpu" else None).cpu()
        err = (robot.fk(raw.reshape(-1, len(lo)).double())[..., :3, 3]
               - pos.repeat_interleave(2, dim=0)).norm(dim=-1)
    except Exception as exc:  # noqa: BLE001 - any failure of an untrusted model is its fault
        raise CheckpointError(f"checkpoint {directory} fails its self-test: {type(exc).__name__}: {exc}") from None
    worst = float(err.max()) if err.numel() else math.nan
    if not bool(torch.isfinite(raw).all()) or not math.isfinite(worst) or worst > SELF_TEST_MAX_ERROR:
        raise CheckpointError(f"checkpoint {directory} fails its self-test: raw samples for {targets} known targets "
                              f"are not finite or not plausible (largest position error {worst:.3g} m)")


def _load_weights(directory: Path, spec: CardSpec) -> dict[str, torch.Tensor]:
    """The tensors of ``directory/model.safetensors`` on the CPU, after checking the file (regular, size), its
    tensor names and shapes against the card's architecture (header only) and then every value."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    expected = _expected_shapes(spec, directory / CARD_FILE)
    wpath = directory / WEIGHTS_FILE
    regular_file_size(wpath, "checkpoint weights", MAX_WEIGHTS_BYTES)
    _check_weight_shapes(wpath, expected, directory)
    try:
        tensors = load_file(str(wpath), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"corrupt checkpoint weights {wpath}: {exc}") from None
    _check_values(tensors, wpath)
    return tensors


def _build_model(spec: CardSpec, tensors: dict[str, torch.Tensor], directory: Path):
    """(denoiser, normalizer, noise schedule) of the card, the weights loaded (on the CPU, still trainable)."""
    _, net_cls = ARCHITECTURES[spec.arch_type]
    schedule = NoiseSchedule(spec.schedule)
    if not bool((schedule.alphas_cumprod > 0).all()):
        raise CheckpointError(f"checkpoint card {directory / CARD_FILE}: schedule leaves no signal "
                              f"(alphas_cumprod reaches 0)")
    try:
        model = net_cls(spec.config)
        normalizer = Normalizer.empty(spec.config.n_joints, spec.config.n_ee)
        model.load_state_dict({k[9:]: v for k, v in tensors.items() if k.startswith("denoiser.")})
        normalizer.load_state_dict({k[11:]: v for k, v in tensors.items() if k.startswith("normalizer.")})
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint {directory} does not match its card: "
                              f"{' '.join(str(exc).split())}") from None
    return model, normalizer, schedule


def load_checkpoint(directory: str | Path, robot, device: str | torch.device = "cpu",
                    run_self_test: bool = True) -> LoadedModel:
    """Load a checkpoint directory for ``robot`` (a RobotModel) onto ``device``, validating it first
    (module docstring; ``run_self_test=False`` skips step 4).

    Raises:
        CheckpointError: one line naming the file and field: missing, unreadable or non-regular files,
            bad card fields, a robot fingerprint that differs from ``robot.fingerprint()`` (naming
            both), weights that do not match the card, non-finite values, a failed self-test.
    """
    directory = Path(directory)
    card = read_card(directory)
    spec = validate_card(card, directory / CARD_FILE, robot)
    model, normalizer, schedule = _build_model(spec, _load_weights(directory, spec), directory)
    device = torch.device(device)
    model.to(device).eval()
    normalizer.to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    loaded = LoadedModel(model, normalizer, schedule, card, robot, device)
    if run_self_test:
        self_test(loaded, directory)
    return loaded
