import json
import sys
import types

import pytest
import torch
from safetensors.torch import load_file

from ikdiffuser_ros.data.generate import generate_dataset, load_shards
from ikdiffuser_ros.errors import IKDiffuserError
from ikdiffuser_ros.kinematics.transforms import matrix_to_rot6d


def _gen(robot, out, **kw):
    kw = {"num_samples": 2500, "seed": 3, "shard_size": 1000, "progress": False, **kw}
    return generate_dataset(robot, out_dir=out, **kw)


def test_same_seed_gives_identical_shards(tmp_path, baxter):
    m1 = _gen(baxter, tmp_path / "a")
    _gen(baxter, tmp_path / "b")
    assert [s["count"] for s in m1["shards"]] == [1000, 1000, 500]
    assert [s["seed"] for s in m1["shards"]] == [3, 4, 5]
    for s in m1["shards"]:
        a, b = load_file(str(tmp_path / "a" / s["file"])), load_file(str(tmp_path / "b" / s["file"]))
        for k in ("q", "pos", "rot6d"):
            assert torch.equal(a[k], b[k])
    other = _gen(baxter, tmp_path / "c", seed=4)
    # shard k uses seed S + k: seed 4's first shard is seed 3's second
    c0 = load_file(str(tmp_path / "c" / other["shards"][0]["file"]))
    assert torch.equal(c0["q"], load_file(str(tmp_path / "a" / m1["shards"][1]["file"]))["q"])


def test_manifest_and_poses_equal_fk(tmp_path, baxter):
    m = _gen(baxter, tmp_path)
    disk = json.loads((tmp_path / "manifest.json").read_text())
    assert disk["complete"] and disk["fingerprint"] == baxter.fingerprint()
    assert disk["joint_names"] == list(baxter.joint_names) and disk["num_samples"] == 2500
    data = load_shards(tmp_path, baxter)
    q = data["q"]
    assert q.dtype == torch.float32 and q.shape == (2500, 14) and data["pos"].shape == (2500, 2, 3)
    lo, hi = torch.as_tensor(baxter.lower).float(), torch.as_tensor(baxter.upper).float()
    assert ((q >= lo) & (q <= hi)).all()
    T = baxter.fk(q.double())
    torch.testing.assert_close(data["pos"].double(), T[..., :3, 3], atol=1e-5, rtol=0)
    torch.testing.assert_close(data["rot6d"].double(), matrix_to_rot6d(T[..., :3, :3]), atol=1e-5, rtol=0)
    assert m["shards"] == disk["shards"]


def test_resume_skips_complete_shards(tmp_path, panda):
    _gen(panda, tmp_path)
    first = tmp_path / "shard_00000.safetensors"
    mtime = first.stat().st_mtime_ns
    original = load_file(str(tmp_path / "shard_00001.safetensors"))["q"]
    (tmp_path / "shard_00001.safetensors").unlink()
    _gen(panda, tmp_path)
    assert first.stat().st_mtime_ns == mtime  # untouched
    assert torch.equal(load_file(str(tmp_path / "shard_00001.safetensors"))["q"], original)  # rebuilt identically
    with pytest.raises(IKDiffuserError, match="seed"):
        _gen(panda, tmp_path, seed=9)


def test_reject_self_collision_uses_the_sphere_model_hook(tmp_path, panda, monkeypatch):
    fake = types.ModuleType("ikdiffuser_ros.collision.spheres")
    fake.self_collision_mask = lambda model, q: q[:, 0] > 0  # "collides" when joint 1 > 0
    monkeypatch.setitem(sys.modules, "ikdiffuser_ros.collision.spheres", fake)
    _gen(panda, tmp_path, num_samples=700, shard_size=1000, reject_self_collision=True)
    q = load_shards(tmp_path)["q"]
    assert q.shape == (700, 7) and (q[:, 0] <= 0).all()


def test_reject_self_collision_without_module_is_a_clear_error(tmp_path, panda, monkeypatch):
    monkeypatch.setitem(sys.modules, "ikdiffuser_ros.collision.spheres", None)  # import fails
    with pytest.raises(IKDiffuserError, match="self_collision_mask"):
        _gen(panda, tmp_path, reject_self_collision=True)


def test_cli_generate(tmp_path, capsys):
    from ikdiffuser_ros.cli import main

    assert main(["generate", "--robot", "panda", "--num-samples", "1_200", "--out", str(tmp_path), "--seed", "1",
                 "--shard-size", "500", "--no-progress"]) == 0
    assert "1200 samples in 3 shards" in capsys.readouterr().out


@pytest.mark.parametrize("kw", [{"num_samples": 0}, {"num_samples": -5}, {"shard_size": 0}])
def test_no_samples_is_a_clear_error(tmp_path, panda, kw):
    """Regression: num_samples=0 raised UnboundLocalError; it (and a shard size < 1) is now a ValueError
    naming the argument, and nothing is written."""
    name = next(iter(kw))
    with pytest.raises(ValueError, match=f"{name} must be at least 1"):
        _gen(panda, tmp_path / "out", **kw)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag, value", [("--num-samples", "0"), ("--num-samples", "-3"), ("--shard-size", "0"),
                                         ("--num-samples", "1e6")])
def test_cli_generate_refuses_no_samples(tmp_path, capsys, flag, value):
    from ikdiffuser_ros.cli import main

    args = {"--num-samples": "10", "--shard-size": "5", flag: value}
    with pytest.raises(SystemExit) as exc:
        main(["generate", "--robot", "panda", "--out", str(tmp_path / "out"), "--no-progress",
              *[x for kv in args.items() for x in kv]])
    assert exc.value.code == 2
    assert f"argument {flag}" in capsys.readouterr().err and not (tmp_path / "out").exists()
