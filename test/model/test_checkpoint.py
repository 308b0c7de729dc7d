import json

import pytest
import torch

from ikdiffuser_ros.errors import CheckpointError
from ikdiffuser_ros.model.checkpoint import load_checkpoint, save_checkpoint, store_weights_as, stored_weights_dtype
from ikdiffuser_ros.model.schedule import ScheduleConfig
from ikdiffuser_ros.sampling.sampler import sample


@pytest.fixture()
def saved(tmp_path, baxter, make_loaded):
    loaded = make_loaded(baxter)
    save_checkpoint(tmp_path, loaded.denoiser, loaded.normalizer, ScheduleConfig(num_train_steps=20), baxter,
                    {"training": {"steps": 7, "command": "ikdiffuser train --robot baxter"}, "eval": {"x": 1}})
    return tmp_path, loaded


def _draw(loaded):
    g = torch.Generator().manual_seed(0)
    pos = torch.tensor([[[0.6, 0.3, 0.2], [0.6, -0.3, 0.2]]])
    rot = torch.tensor([[[1.0, 0, 0, 0, 1, 0]] * 2])
    return sample(loaded, pos, rot, num_solutions=3, steps=5, generator=g)


def test_round_trip_reproduces_samples_and_card(saved, baxter):
    path, loaded = saved
    back = load_checkpoint(path, baxter)
    assert not back.denoiser.training
    torch.testing.assert_close(_draw(back), _draw(loaded))
    torch.testing.assert_close(back.normalizer.pos_mean, loaded.normalizer.pos_mean)
    card = back.card
    assert card["format_version"] == 1 and card["robot"]["fingerprint"] == baxter.fingerprint()
    assert card["robot"]["joint_names"] == list(baxter.joint_names)
    assert card["robot"]["end_effectors"] == list(baxter.end_effectors)
    assert card["architecture"]["d_model"] == 32 and card["schedule"]["num_train_steps"] == 20
    assert card["training"]["steps"] == 7 and card["eval"] == {"x": 1}
    assert set(card["normalization"]) == {"lower", "upper", "pos_mean", "pos_std"}


def test_files_are_safetensors_and_json_only(saved):
    path, _ = saved
    assert sorted(p.name for p in path.iterdir()) == ["card.json", "model.safetensors"]
    raw = (path / "model.safetensors").read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + header_len])
    assert "denoiser.head.weight" in header and "normalizer.pos_mean" in header
    assert b"\x80\x02" not in raw[:2] and not raw.startswith(b"PK")  # not a pickle / torch zip


def test_fingerprint_mismatch_names_both(saved, panda, baxter):
    path, _ = saved
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, panda)
    msg = str(err.value)
    assert baxter.fingerprint() in msg and panda.fingerprint() in msg and str(path) in msg


def test_corrupt_or_missing_files(saved, baxter):
    path, _ = saved
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_checkpoint(path, baxter)
    weights.unlink()
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(path, baxter)
    (path / "card.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="card.json"):
        load_checkpoint(path, baxter)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(path / "nowhere", baxter)


def test_weights_that_do_not_match_the_card(saved, baxter):
    path, _ = saved
    card = json.loads((path / "card.json").read_text())
    card["architecture"]["d_model"] = 64
    (path / "card.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="does not match its card"):
        load_checkpoint(path, baxter)


def test_float16_storage_halves_the_file_and_samples_as_before(saved, baxter):
    """float16 storage (``ikdiffuser ship --weights-dtype float16``): about half the bytes, loaded into float32
    as the float32 weights rounded to float16, the normalizer untouched. (What the rounding does to a trained
    model's accuracy is measured by ``ship``'s evaluation: docs/training.md.)"""
    path, loaded = saved
    before = (path / "model.safetensors").stat().st_size
    size = store_weights_as(path / "model.safetensors", "float16")
    assert size < 0.6 * before and stored_weights_dtype(path) == "float16"
    assert (path / "model.safetensors").stat().st_mode & 0o777 == 0o644
    back = load_checkpoint(path, baxter)
    assert all(p.dtype == torch.float32 for p in back.denoiser.parameters())
    torch.testing.assert_close(back.normalizer.pos_std, loaded.normalizer.pos_std, rtol=0, atol=0)
    for name, p in loaded.denoiser.state_dict().items():
        torch.testing.assert_close(back.denoiser.state_dict()[name], p.half().float(), rtol=0, atol=0)
    assert torch.isfinite(_draw(back)).all()
    assert store_weights_as(path / "model.safetensors", "float32") == before  # and back (values stay rounded)
    assert stored_weights_dtype(path) == "float32"


def test_float16_storage_refuses_values_it_cannot_hold(saved):
    from safetensors.torch import load_file, save_file

    path, _ = saved
    weights = path / "model.safetensors"
    tensors = load_file(str(weights))
    tensors["denoiser.head.weight"][0, 0] = 1e6
    save_file(tensors, str(weights))
    kept = weights.read_bytes()
    with pytest.raises(CheckpointError, match="denoiser.head.weight does not fit float16"):
        store_weights_as(weights, "float16")
    assert weights.read_bytes() == kept
    with pytest.raises(CheckpointError, match="unknown weights dtype 'int8'"):
        store_weights_as(weights, "int8")
