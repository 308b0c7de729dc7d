"""Untrusted checkpoints (issue 9): every kind of tampered copy is refused with one line naming the
file and the field, before anything big is allocated, without hanging, and never half-loaded."""
from __future__ import annotations

import json
import math
import os
import shutil
import threading
import time

import pytest
import torch

from ikdiffuser_ros.errors import CheckpointError
from ikdiffuser_ros.model.checkpoint import load_checkpoint, save_checkpoint
from ikdiffuser_ros.model.schedule import ScheduleConfig


@pytest.fixture
def good(tmp_path_factory, baxter, make_loaded):
    path = tmp_path_factory.mktemp("good_ckpt")
    loaded = make_loaded(baxter)
    save_checkpoint(path, loaded.denoiser, loaded.normalizer, ScheduleConfig(num_train_steps=20), baxter)
    return path


@pytest.fixture
def copy(good, tmp_path):
    path = tmp_path / "ckpt"
    shutil.copytree(good, path)
    return path


def _edit_card(path, edit) -> None:
    card = json.loads((path / "card.json").read_text())
    edit(card)
    (path / "card.json").write_text(json.dumps(card))  # json writes NaN for float('nan')


def _edit_tensors(path, edit) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(path / "model.safetensors"))


def _refused(path, robot, *words: str, within: float = 10.0) -> str:
    """load_checkpoint raises CheckpointError within ``within`` s; the one-line message holds ``words``."""
    out: dict = {}

    def run():
        try:
            load_checkpoint(path, robot)
            out["error"] = None
        except Exception as exc:  # noqa: BLE001 - the test checks the type
            out["error"] = exc

    t0 = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(within)
    assert not thread.is_alive(), f"load_checkpoint still running after {within} s"
    exc = out["error"]
    assert isinstance(exc, CheckpointError), f"accepted or wrong error type: {exc!r}"
    msg = str(exc)
    assert "\n" not in msg and all(w in msg for w in words), msg
    assert time.monotonic() - t0 < within
    return msg


CARD_CASES = {
    "robot_is_a_string": (lambda c: c.update(robot="baxter"), ("card.json", "robot must be an object")),
    "architecture_null": (lambda c: c.update(architecture=None), ("card.json", "architecture must be an object")),
    "unknown_architecture": (lambda c: c["architecture"].update(type="ResNet"), ("card.json", "architecture.type")),
    "n_heads_0": (lambda c: c["architecture"].update(n_heads=0), ("card.json", "architecture.n_heads = 0")),
    "n_layers_1e7_float": (lambda c: c["architecture"].update(n_layers=1e7), ("architecture.n_layers", "integer")),
    "n_layers_1e7": (lambda c: c["architecture"].update(n_layers=10**7), ("architecture.n_layers = 10000000",)),
    "n_layers_true": (lambda c: c["architecture"].update(n_layers=True), ("architecture.n_layers",)),
    "d_model_string": (lambda c: c["architecture"].update(d_model="32"), ("architecture.d_model",)),
    "d_model_not_divisible": (lambda c: c["architecture"].update(d_model=33), ("architecture.", "divisible")),
    "too_many_parameters": (lambda c: c["architecture"].update(d_model=4096, n_heads=64, n_layers=64, ff_mult=16),
                            ("card.json", "parameters")),
    "dropout_nan": (lambda c: c["architecture"].update(dropout=math.nan), ("architecture.dropout",)),
    "n_joints_of_another_robot": (lambda c: c["architecture"].update(n_joints=7), ("architecture.n_joints = 7",)),
    "num_train_steps_0": (lambda c: c["schedule"].update(num_train_steps=0), ("schedule.num_train_steps = 0",)),
    "num_train_steps_1e9": (lambda c: c["schedule"].update(num_train_steps=10**9), ("schedule.num_train_steps",)),
    "max_beta_nan": (lambda c: c["schedule"].update(max_beta=math.nan), ("schedule.max_beta",)),
    "max_beta_1": (lambda c: c["schedule"].update(max_beta=1.0), ("schedule.max_beta = 1.0",)),
    "cosine_s_negative": (lambda c: c["schedule"].update(cosine_s=-1.0), ("schedule.cosine_s = -1.0",)),
    "schedule_kind": (lambda c: c["schedule"].update(kind="linear"), ("schedule.kind",)),
    "schedule_list": (lambda c: c.update(schedule=[1, 2]), ("schedule must be an object",)),
    "format_version_true": (lambda c: c.update(format_version=True), ("card.json", "format_version")),
    "sampling_steps_0": (lambda c: c.update(sampling={"steps": 0}), ("card.json", "sampling.steps = 0")),
    "sampling_tail_huge": (lambda c: c.update(sampling={"steps": 6, "tail_steps": 10**9}), ("sampling.tail_steps",)),
    "sampling_list": (lambda c: c.update(sampling=[6]), ("sampling must be an object",)),
    "sampling_harvest_steps_0": (lambda c: c.update(sampling={"harvest_steps": 0}), ("sampling.harvest_steps = 0",)),
    "sampling_harvest_steps_text": (lambda c: c.update(sampling={"harvest_steps": "6"}), ("harvest_steps = '6'",)),
    "sampling_temperature_0": (lambda c: c.update(sampling={"steps": 4, "temperature": 0}), ("temperature = 0",)),
    "sampling_temperature_2": (lambda c: c.update(sampling={"temperature": 2.0}), ("sampling.temperature = 2.0",)),
    "sampling_temperature_nan": (lambda c: c.update(sampling={"temperature": math.nan}), ("temperature = nan",)),
    "sampling_temperature_text": (lambda c: c.update(sampling={"temperature": "0.5"}), ("temperature = '0.5'",)),
    "other_robot_fingerprint": (lambda c: c["robot"].update(fingerprint="0123456789abcdef"),
                                ("0123456789abcdef", "fingerprint")),
    # unknown keys: refused, naming the key and the known ones (never silently ignored)
    "schedule_unknown_key": (lambda c: c["schedule"].update(beta_schedule="linear"),
                             ("card.json", "schedule has unknown keys ['beta_schedule']", "'num_train_steps'")),
    "architecture_unknown_key": (lambda c: c["architecture"].update(n_layer=2),
                                 ("architecture has unknown keys ['n_layer']", "'n_layers'", "'type'")),
    "top_level_unknown_key": (lambda c: c.update(sampler={"steps": 4}),
                              ("the card has unknown keys ['sampler']", "'sampling'", "'training'")),
    "robot_unknown_key": (lambda c: c["robot"].update(joints=["a"]), ("robot has unknown keys ['joints']",
                                                                       "'joint_names'")),
    "normalization_unknown_key": (lambda c: c["normalization"].update(scale=[1.0]),
                                  ("normalization has unknown keys ['scale']", "'pos_std'")),
    "sampling_unknown_key": (lambda c: c.update(sampling={"steps": 4, "tails": 2}),
                             ("sampling has unknown keys ['tails']", "'tail_steps'")),
}


@pytest.mark.parametrize("case", sorted(CARD_CASES))
def test_hostile_card_values(copy, baxter, case):
    edit, words = CARD_CASES[case]
    _edit_card(copy, edit)
    _refused(copy, baxter, *words, within=10.0)


def _scale(name, factor):
    return lambda t: t.__setitem__(name, t[name] * factor)


TENSOR_CASES = {
    "denoiser_nan": (lambda t: t["denoiser.head.weight"].fill_(math.nan), ("denoiser.head.weight", "NaN")),
    "all_denoiser_nan": (lambda t: [v.fill_(math.nan) for k, v in t.items() if k.startswith("denoiser.")],
                         ("model.safetensors", "NaN")),
    "normalizer_nan": (lambda t: t["normalizer.pos_mean"].fill_(math.nan), ("normalizer.pos_mean", "NaN")),
    "normalizer_inf": (lambda t: t["normalizer.upper"].fill_(math.inf), ("normalizer.upper",)),
    "limits_swapped": (lambda t: t.update({"normalizer.lower": t["normalizer.upper"].clone(),
                                           "normalizer.upper": t["normalizer.lower"].clone()}), ("normalizer.upper",)),
    "pos_std_zero": (lambda t: t["normalizer.pos_std"].zero_(), ("normalizer.pos_std",)),
    "wrong_shape": (lambda t: t.update({"denoiser.head.weight": torch.zeros(3, 3)}),
                    ("does not match its card", "denoiser.head.weight")),
    "missing_tensor": (lambda t: t.pop("denoiser.head.bias"), ("does not match its card", "denoiser.head.bias")),
    "extra_tensor": (lambda t: t.update({"denoiser.evil": torch.zeros(1)}), ("does not match its card", "denoiser.evil")),
    "integer_tensor": (lambda t: t.update({"normalizer.pos_std": torch.ones(2, 3, dtype=torch.int64)}),
                       ("normalizer.pos_std", "dtype")),
    "float64_weights": (lambda t: t.update({"denoiser.head.weight": t["denoiser.head.weight"].double()}),
                        ("denoiser.head.weight", "dtype", "float32 or float16")),
    "float16_normalizer": (lambda t: t.update({"normalizer.upper": t["normalizer.upper"].half()}),
                           ("normalizer.upper", "dtype", "expected float32")),
    "float16_inf": (lambda t: t.update({"denoiser.head.weight": t["denoiser.head.weight"].half().fill_(math.inf)}),
                    ("denoiser.head.weight", "NaN or infinite")),
    "absurd_weights": (lambda t: [v.fill_(3e38) for k, v in t.items() if k.startswith("denoiser.") and "weight" in k],
                       ("self-test",)),
}


@pytest.mark.parametrize("case", sorted(TENSOR_CASES))
def test_tampered_weights(copy, baxter, case):
    edit, words = TENSOR_CASES[case]
    _edit_tensors(copy, edit)
    _refused(copy, baxter, *words)


def test_missing_files(copy, baxter):
    (copy / "model.safetensors").unlink()
    _refused(copy, baxter, "model.safetensors", "not found")
    (copy / "card.json").unlink()
    _refused(copy, baxter, "card.json", "not found")
    _refused(copy / "nowhere", baxter, "not found")


@pytest.mark.parametrize("name", ["card.json", "model.safetensors"])
def test_fifo_does_not_hang(copy, baxter, name):
    (copy / name).unlink()
    os.mkfifo(copy / name)
    _refused(copy, baxter, name, "FIFO", within=5.0)


@pytest.mark.parametrize("name", ["card.json", "model.safetensors"])
def test_symlink_loop(copy, baxter, name):
    (copy / name).unlink()
    os.symlink(copy / "loop_b", copy / name)
    os.symlink(copy / name, copy / "loop_b")
    _refused(copy, baxter, name, "symbolic links", within=5.0)


def test_directory_instead_of_a_file_and_symlinked_files(copy, baxter, tmp_path):
    real = tmp_path / "real_weights.safetensors"
    shutil.move(copy / "model.safetensors", real)
    os.symlink(real, copy / "model.safetensors")  # a symlink to a regular file is fine
    assert load_checkpoint(copy, baxter).n_joints == baxter.n_joints
    (copy / "model.safetensors").unlink()
    (copy / "model.safetensors").mkdir()
    _refused(copy, baxter, "model.safetensors", "directory")


def test_another_robots_model(tmp_path, panda, baxter, make_loaded):
    loaded = make_loaded(panda)
    save_checkpoint(tmp_path, loaded.denoiser, loaded.normalizer, ScheduleConfig(num_train_steps=20), panda)
    _refused(tmp_path, baxter, panda.fingerprint(), baxter.fingerprint(), str(tmp_path))


def test_hostile_mlp_card(tmp_path, baxter):
    from ikdiffuser_ros.model.mlp_denoiser import IKMLPDenoiser, MLPDenoiserConfig
    from ikdiffuser_ros.model.normalizer import Normalizer

    n, E = baxter.n_joints, len(baxter.end_effectors)
    model = IKMLPDenoiser(MLPDenoiserConfig(n, E, d_model=32, n_blocks=1)).eval()
    norm = Normalizer(baxter.lower, baxter.upper, torch.zeros(E, 3), torch.ones(E, 3))
    save_checkpoint(tmp_path, model, norm, ScheduleConfig(num_train_steps=20), baxter)
    assert load_checkpoint(tmp_path, baxter).denoiser.config.d_model == 32  # valid: loads, passes its self-test
    for field, value, words in [("n_blocks", 0, ("architecture.n_blocks = 0",)),
                                ("d_model", 10**6, ("architecture.d_model",)),
                                ("fk_feedback", "yes", ("architecture.fk_feedback",)),
                                ("joint_groups", [[0]] * 14, ("joint_groups",)),
                                ("factorize", True, ("factorize needs joint_groups",))]:
        _edit_card(tmp_path, lambda c: c["architecture"].update({field: value}))
        _refused(tmp_path, baxter, "card.json", *words)
        _edit_card(tmp_path, lambda c: c["architecture"].update({field: model.config.to_dict()[field]}))


def test_valid_checkpoint_still_loads_quickly(good, baxter):
    t0 = time.monotonic()
    loaded = load_checkpoint(good, baxter)
    assert loaded.n_joints == baxter.n_joints and time.monotonic() - t0 < 10.0


def test_informational_sections_are_free_form(copy, baxter):
    """training, eval and hardware are for people: anything in them loads."""
    _edit_card(copy, lambda c: c.update(training={"anything": [1, {"x": None}]}, eval={"note": "free"},
                                        hardware={"gpu": "none"}))
    assert load_checkpoint(copy, baxter).n_joints == baxter.n_joints


def test_shipped_cards_hold_only_known_keys(baxter):
    """Every models/*/card.json passes validate_card (unknown keys included) for its robot."""
    from pathlib import Path

    from ikdiffuser_ros.model.checkpoint import read_card, validate_card
    from ikdiffuser_ros.robots import load_robot

    cards = sorted((Path(__file__).resolve().parents[2] / "models").glob("*/card.json"))
    if not cards:
        pytest.skip("no shipped models")
    for path in cards:
        card = read_card(path.parent)
        validate_card(card, path, load_robot(card["robot"]["name"]))
