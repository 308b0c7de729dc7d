from ikdiffuser_ros.model.checkpoint import save_checkpoint
from ikdiffuser_ros.model.schedule import ScheduleConfig
from ikdiffuser_ros.training.model_card import evaluate_checkpoint, readme


def test_evaluate_and_readme(tmp_path, baxter, make_loaded):
    loaded = make_loaded(baxter)
    save_checkpoint(tmp_path, loaded.denoiser, loaded.normalizer, ScheduleConfig(num_train_steps=20), baxter,
                    {"training": {"steps": 3, "batch_size": 8, "samples_seen": 24, "parameters": 1,
                                  "command": "ikdiffuser train --robot baxter"}})
    m = evaluate_checkpoint(tmp_path, baxter, num_targets=20, best_of=4, best_of_targets=5, steps=3)
    assert m["all_end_effectors"]["num_targets"] == 20
    assert set(m["single_end_effector"]) == set(baxter.end_effectors)
    assert m["best_of_4"]["pos_mm_median"] <= m["best_of_4"]["pos_mm_p90"]
    import json

    text = readme(json.loads((tmp_path / "card.json").read_text()), m, "ikdiffuser train --robot baxter")
    assert "Not met" in text and "ikdiffuser train --robot baxter" in text and "left_gripper" in text
