"""Learning curves of shipped checkpoints: hours from the metrics lines (or from the card), and the PNG."""

import json
import shutil

from ikdiffuser_ros.training.learning_curve import CURVE_FILE, plot, read_curve, table
from ikdiffuser_ros.training.trainer import TrainConfig, train


def test_curve_has_cumulative_hours_and_plots(tmp_path):
    run = tmp_path / "run"
    train(TrainConfig.preset("tiny", robot="panda", model=dict(type="IKMLPDenoiser", d_model=32, n_blocks=1), max_steps=30,
                             eval_every=10, out_dir=str(run)), progress=False)
    shipped = tmp_path / "panda"
    shipped.mkdir()
    shutil.copy(run / "card.json", shipped)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    old = json.loads(lines[0])
    old.pop("total_hours")  # a line from an older run: hours come from the card's totals
    (shipped / CURVE_FILE).write_text("\n".join([json.dumps(old), *lines[1:]]) + "\n")
    rows = read_curve(shipped)
    assert [r["step"] for r in rows] == [10, 20, 30]
    hours = [r["total_hours"] for r in rows]
    assert hours == sorted(hours) and all(h >= 0 for h in hours)
    for x in ("hours", "steps"):
        out = plot([shipped], tmp_path / f"curves_{x}.png", x=x)
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot([shipped], tmp_path / "per_ee.png", x="steps", per_end_effector=True).is_file()
    # what ship measures, recorded by every CPU evaluation, in its own view
    assert all(0.0 <= r["one_sample_lm"] <= 1.0 and r["shipped_pos_mm_median"] > 0 for r in rows)
    assert plot([shipped], tmp_path / "shipped.png", view="shipped").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a run directory (no learning_curve.jsonl yet) is read from its metrics.jsonl
    assert [r["step"] for r in read_curve(run)] == [10, 20, 30]


def test_table_gives_the_steps_to_50_mm_of_the_shipped_panda():
    """The shipped panda's curve first reads <= 50 mm at 6 000 steps (docs/training.md's table)."""
    from pathlib import Path

    panda = Path(__file__).resolve().parents[2] / "models" / "panda"
    row = table([panda]).splitlines()[2]
    assert row.startswith("| panda | 6,000 |")
    assert "not yet" in table([panda], mm=0.1)
