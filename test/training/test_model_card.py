import json

import torch

from ikdiffuser_ros.model.checkpoint import save_checkpoint
from ikdiffuser_ros.model.schedule import ScheduleConfig
from ikdiffuser_ros.training.learning_curve import CURVE_FILE
from ikdiffuser_ros.training.model_card import (evaluate_checkpoint, held_out_median, held_out_one_sample, main, readme,
                                                shipped_sampling, solved_targets)
from ikdiffuser_ros.training.trainer import TrainConfig, train


def test_evaluate_and_readme(tmp_path, baxter, make_loaded):
    loaded = make_loaded(baxter)
    save_checkpoint(tmp_path, loaded.denoiser, loaded.normalizer, ScheduleConfig(num_train_steps=20), baxter,
                    {"training": {"steps": 3, "batch_size": 8, "samples_seen": 24, "parameters": 1,
                                  "command": "ikdiffuser train --robot baxter"},
                     "sampling": {"steps": 3, "tail_steps": 2}})
    m = evaluate_checkpoint(tmp_path, baxter, num_targets=20, best_of=4, best_of_targets=5)
    assert m["sampler"] == "ddim-3 + tail-2"
    assert m["all_end_effectors"]["num_targets"] == m["all_end_effectors_ddim20"]["num_targets"] == 20
    assert set(m["single_end_effector"]) == set(baxter.end_effectors)
    assert m["best_of_4"]["pos_mm_median"] <= m["best_of_4"]["pos_mm_p90"]
    assert 0.0 <= m["self_collision_free_share"] <= 1.0 and 0.0 <= m["self_collision_free_share_feasible_targets"] <= 1.0

    assert held_out_median(tmp_path, baxter, 20) == m["all_end_effectors"]["pos_mm_median"]  # what ship compares
    ok = held_out_one_sample(tmp_path, baxter, 20)  # ... and the targets it solves, as the evaluation lists them
    assert torch.equal(solved_targets(m["one_sample_lm"]), ok) and m["one_sample_lm"]["success"] == ok.double().mean()

    text = readme(json.loads((tmp_path / "card.json").read_text()), m, "ikdiffuser train --robot baxter")
    assert "Not met" in text and "ikdiffuser train --robot baxter" in text and "left_gripper" in text
    assert "total training" in text


def test_ship_only_when_better(tmp_path):
    run = tmp_path / "run"
    train(TrainConfig.preset("tiny", robot="panda", model=dict(type="IKMLPDenoiser", d_model=32, n_blocks=1), max_steps=10,
                             eval_every=10, out_dir=str(run)), progress=False)
    dest = tmp_path / "models" / "panda"
    assert main([str(run), "--ship", str(dest), "--steps", "3", "--tail-steps", "2"]) == 0
    card = json.loads((dest / "card.json").read_text())
    assert card["sampling"] == {"steps": 3, "tail_steps": 2, "refined_steps": 3, "refined_tail_steps": 1,
                                "temperature": 0.5, "harvest_steps": 6}  # a single arm's harvests: fewer steps
    assert "harvest_steps" not in shipped_sampling(n_end_effectors=2)  # several end effectors: the diverse plan
    assert json.loads((dest / "eval.json").read_text())["sampler"] == "ddim-3 + tail-2, temperature 0.5"
    assert {"README.md", "eval.json", CURVE_FILE, "model.safetensors"} <= {p.name for p in dest.iterdir()}
    # the same run again is not better: refused, the shipped folder untouched; --force replaces it. The shipped
    # model is measured anew (a stale eval.json, e.g. from before a change of the sampler, decides nothing)
    stale = json.loads((dest / "eval.json").read_text())
    stale["all_end_effectors"]["pos_mm_median"] = 1e6
    (dest / "eval.json").write_text(json.dumps(stale))
    before = (dest / "eval.json").read_text()
    assert main([str(run), "--ship", str(dest), "--steps", "3", "--tail-steps", "2"]) == 1
    assert (dest / "eval.json").read_text() == before and not (dest.parent / "panda.staging").exists()
    assert main([str(run), "--ship", str(dest), "--steps", "4", "--tail-steps", "0", "--force", "--temperature", "1"]) == 0
    assert json.loads((dest / "card.json").read_text())["sampling"] == {"steps": 4, "tail_steps": 0, "refined_steps": 3,
                                                                        "refined_tail_steps": 1, "temperature": 1.0,
                                                                        "harvest_steps": 6}
    assert json.loads((dest / "eval.json").read_text())["sampler"] == "ddim-4"
    # float16 storage: the evaluation is of the stored weights, and eval.json and the README say so
    f32 = (dest / "model.safetensors").stat().st_size
    assert main([str(run), "--ship", str(dest), "--force"]) == 0  # the legacy entry keeps float32
    from ikdiffuser_ros.cli import main as cli

    assert cli(["ship", str(run), "--out", str(dest), "--force", "--weights-dtype", "float16",
                "--num-targets", "50"]) == 0
    assert (dest / "model.safetensors").stat().st_size < 0.6 * f32
    assert json.loads((dest / "eval.json").read_text())["weights_dtype"] == "float16"
    assert "stored as float16" in (dest / "README.md").read_text()


def test_shipped_curve_follows_the_runs_it_warm_started_from(tmp_path):
    """A run resumed from another run (not from the model folder it is shipped to) ships both runs' curves,
    never the curve of whatever model the folder held before."""
    cfg = dict(robot="panda", model=dict(type="IKMLPDenoiser", d_model=32, n_blocks=1), max_steps=10, eval_every=5)
    first, second = tmp_path / "first", tmp_path / "second"
    train(TrainConfig.preset("tiny", out_dir=str(first), **cfg), progress=False)
    train(TrainConfig.preset("tiny", out_dir=str(second), init_from=str(first), **cfg), progress=False)
    dest = tmp_path / "models" / "panda"
    dest.mkdir(parents=True)
    (dest / CURVE_FILE).write_text('{"step": 1, "note": "another lineage"}\n')
    assert main([str(second), "--ship", str(dest), "--force"]) == 0
    shipped = (dest / CURVE_FILE).read_text()
    assert shipped == (first / "metrics.jsonl").read_text() + (second / "metrics.jsonl").read_text()
    assert "another lineage" not in shipped


def test_a_resumed_warm_start_keeps_its_lineage_and_a_new_run_its_own_curve(tmp_path):
    """A run warm-started from a model folder, stopped and continued with ``--resume``, still names that folder
    (its card, the curve it ships: the folder's curve, then the run's own evaluations), and keeps the
    normalizer it trained with even when another model has been shipped into that folder since. A new run
    written into an old run's folder starts a new curve (it appended to the old one)."""
    import torch
    from safetensors.torch import load_file

    cfg = dict(robot="panda", model=dict(type="IKMLPDenoiser", d_model=32, n_blocks=1), eval_every=5)
    first, second, dest = tmp_path / "first", tmp_path / "second", tmp_path / "models" / "panda"
    train(TrainConfig.preset("tiny", out_dir=str(first), max_steps=10, **cfg), progress=False)
    assert main([str(first), "--ship", str(dest), "--force"]) == 0
    source_curve = (dest / CURVE_FILE).read_text()
    train(TrainConfig.preset("tiny", out_dir=str(second), init_from=str(dest), max_steps=5, **cfg), progress=False)
    normalizer = {k: v for k, v in load_file(str(second / "model.safetensors")).items() if k.startswith("normalizer.")}
    other = tmp_path / "other"  # another lineage shipped into the folder meanwhile (other data: another normalizer)
    train(TrainConfig.preset("tiny", out_dir=str(other), max_steps=5, seed=7, **cfg), progress=False)
    assert main([str(other), "--ship", str(dest), "--force"]) == 0
    shipped_since = load_file(str(dest / "model.safetensors"))
    assert not all(torch.equal(shipped_since[k], v) for k, v in normalizer.items())
    (dest / CURVE_FILE).write_text(source_curve)  # the folder's curve as the run found it
    train(TrainConfig.preset("tiny", out_dir=str(second), max_steps=10, **cfg), resume=True, progress=False)
    card = json.loads((second / "card.json").read_text())
    assert card["training"]["cumulative"]["warm_started_from"] == str(dest)
    assert card["training"]["cumulative"]["steps"] == 20 and card["training"]["cumulative"]["runs"] == 2
    resumed = load_file(str(second / "model.safetensors"))
    assert all(torch.equal(resumed[k], v) for k, v in normalizer.items())
    assert main([str(second), "--ship", str(dest), "--force"]) == 0
    assert (dest / CURVE_FILE).read_text() == source_curve + (second / "metrics.jsonl").read_text()
    steps = [json.loads(line)["total_steps"] for line in (dest / CURVE_FILE).read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == 20
    train(TrainConfig.preset("tiny", out_dir=str(second), max_steps=5, **cfg), progress=False)
    assert [json.loads(line)["step"] for line in (second / "metrics.jsonl").read_text().splitlines()] == [5]


def test_readme_without_samples_seen_or_steps():
    """Regression: a card whose training section lacks samples_seen / steps reads '?' (no ValueError)."""
    from ikdiffuser_ros.resources import package_share

    shipped = package_share() / "models" / "baxter"
    card = json.loads((shipped / "card.json").read_text())
    metrics = json.loads((shipped / "eval.json").read_text())
    full = readme(card, metrics, "ikdiffuser train --robot baxter")
    assert f"{card['training']['samples_seen']:,} samples seen" in full
    for missing in (["samples_seen"], ["steps"], ["samples_seen", "steps", "cumulative"]):
        partial = json.loads(json.dumps(card))
        for key in missing:
            del partial["training"][key]
        text = readme(partial, metrics, "ikdiffuser train --robot baxter")
        if "samples_seen" in missing:
            assert "? samples seen" in text
        if "steps" in missing:
            assert "- ? AdamW steps" in text
    card["training"] = {}
    assert "? samples seen" in readme(card, metrics, "ikdiffuser train --robot baxter")


def test_ship_refuses_a_more_accurate_model_that_one_sample_lm_solves_less_often(tmp_path, monkeypatch):
    """A lower held-out median is not enough: a model that one sample + LM solves significantly fewer of the same
    held-out targets with (paired count) is refused and the shipped folder kept; --force replaces it."""
    from ikdiffuser_ros.training import model_card

    def solved(lost, won, both=900, K=1000):  # (new_ok, old_ok) with `lost` targets only the old one solves
        new, old = torch.zeros(K, dtype=torch.bool), torch.zeros(K, dtype=torch.bool)
        new[:both], old[:both] = True, True
        old[both:both + lost], new[both + lost:both + lost + won] = True, True
        return new, old

    assert model_card.one_sample_regressed(*solved(28, 15))  # 13 > sqrt(43): the tail-weighted panda
    assert not model_card.one_sample_regressed(*solved(30, 25)) and not model_card.one_sample_regressed(*solved(5, 30))
    run = tmp_path / "run"
    train(TrainConfig.preset("tiny", robot="panda", model=dict(type="IKMLPDenoiser", d_model=32, n_blocks=1), max_steps=5,
                             eval_every=5, out_dir=str(run)), progress=False)
    dest = tmp_path / "models" / "panda"
    assert main([str(run), "--ship", str(dest), "--steps", "3", "--tail-steps", "2"]) == 0
    before = (dest / "eval.json").read_text()
    monkeypatch.setattr(model_card, "held_out_median", lambda *a: 1e6)  # the new model is more accurate ...
    shipped = str(dest)
    new_ok = model_card.solved_targets(json.loads(before)["one_sample_lm"])  # the tiny model's own evaluation
    assert not new_ok.all()

    def shipped_solves_all(d, robot, K):  # ... but the shipped one solves every target (the staged one is not re-run)
        assert str(d) == shipped, f"{d}: the staged model's one-sample rate was measured twice"
        return torch.ones(K, dtype=torch.bool)

    monkeypatch.setattr(model_card, "held_out_one_sample", shipped_solves_all)
    assert main([str(run), "--ship", str(dest), "--steps", "3", "--tail-steps", "2"]) == 1
    assert (dest / "eval.json").read_text() == before and not (dest.parent / "panda.staging").exists()
    assert main([str(run), "--ship", str(dest), "--steps", "3", "--tail-steps", "2", "--force"]) == 0


def test_ship_refuses_a_temperature_outside_0_1_before_evaluating_anything(tmp_path, capsys):
    """``--temperature`` must be a number in (0, 1]: argparse's error (exit 2) names it, nothing is staged."""
    import pytest

    for bad in ("0", "1.5", "nan", "warm"):
        with pytest.raises(SystemExit) as exc:
            main([str(tmp_path / "run"), "--ship", str(tmp_path / "out"), "--temperature", bad])
        assert exc.value.code == 2 and f"{bad!r} is not a number in (0, 1]" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_the_trainer_logs_what_ship_measures(tmp_path):
    """Each periodic evaluation of a CPU run carries ``as_shipped_metrics``: the raw median of the plan ``ship`` writes
    and one sample + LM, which on ship's held-out targets equal what ``ship`` then puts into eval.json."""
    from ikdiffuser_ros.model.checkpoint import load_checkpoint
    from ikdiffuser_ros.robots import load_robot
    from ikdiffuser_ros.training.model_card import _held_out_targets, as_shipped_metrics

    run = tmp_path / "run"
    train(TrainConfig.preset("tiny", robot="panda", model=dict(type="IKMLPDenoiser", d_model=32, n_blocks=1), max_steps=6,
                             eval_every=3, out_dir=str(run)), progress=False)
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and all(0.0 <= m["one_sample_lm"] <= 1.0 and m["shipped_pos_mm_median"] > 0 for m in lines)
    dest = tmp_path / "models" / "panda"
    assert main([str(run), "--ship", str(dest), "--num-targets", "40"]) == 0
    shipped = json.loads((dest / "eval.json").read_text())
    assert shipped["sampler"] == "ddim-4 + tail-15, temperature 0.5"  # ship's defaults, as the ikdiffuser command's
    robot = load_robot("panda")
    m = as_shipped_metrics(load_checkpoint(run, robot), _held_out_targets(robot, 40)[0])
    assert m["shipped_pos_mm_median"] == shipped["all_end_effectors"]["pos_mm_median"]
    assert m["one_sample_lm"] == shipped["one_sample_lm"]["success"]
