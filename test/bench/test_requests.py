"""Smoke test of ``ikdiffuser bench-request`` (ikdiffuser_ros/bench/requests.py): panda, 3 targets,
budgets 5 and 20 ms, ikdiffuser and one cheap peer (KDL; the bench skips it with a note when
python3-pykdl is not installed, as ``ikdiffuser bench`` does)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ikdiffuser_ros.bench.report import replace_section
from ikdiffuser_ros.bench.requests import BEGIN, END, LOCAL_ROW, MANY_ROW, OURS, SEED_ROW, plot_name
from ikdiffuser_ros.cli import main

MODELS = Path(__file__).resolve().parents[2] / "models"
BUDGETS = [0.005, 0.02]

pytestmark = pytest.mark.usefixtures("one_torch_thread_session")  # small tensors: one torch thread


def _check_row(row: dict) -> None:
    """A row ran (cells with consistent shares and latencies) or says why not."""
    assert bool(row["unavailable"]) == (not row["cells"]), row["solver"]
    for cell in row["cells"]:
        assert 0.0 <= cell["in_budget"] <= cell["success"] <= 1.0, row["solver"]
        assert 0.0 < cell["latency_median"] <= cell["latency_p95"], row["solver"]


@pytest.mark.skipif(not (MODELS / "panda" / "card.json").is_file(), reason="no shipped panda model")
def test_bench_request_runs_one_target_per_call(tmp_path):
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\nbefore\n")
    out = tmp_path / "request.json"
    rc = main(["bench-request", "--robots", "panda", "--targets", "3", "--budgets-ms", "5", "20", "--solvers",
               OURS, "kdl", "--json", str(out), "--docs", str(docs), "--plots", str(tmp_path / "img")])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["settings"]["budgets_s"] == BUDGETS and report["settings"]["targets"] == 3
    assert report["settings"]["command"].startswith("ikdiffuser bench-request")
    robot = report["robots"]["panda"]
    rows = {r["solver"]: r for r in robot["rows"]}
    skipped = {n.split(":")[0] for n in robot["notes"] if "skipped" in n}
    assert set(rows) | skipped == {OURS, SEED_ROW, LOCAL_ROW, MANY_ROW, "kdl"}
    assert set(robot["solvers"]) == {OURS} | ({"kdl"} & set(rows))
    for name in {OURS, SEED_ROW, "kdl"} & set(rows):
        assert [c["budget"] for c in rows[name]["cells"]] == BUDGETS
    for row in rows.values():
        _check_row(row)
    many = rows[MANY_ROW]["cells"][0]
    assert many["budget"] == 0.01 and 0 <= many["distinct_p10"] <= many["distinct_median"] <= 32
    text = docs.read_text()
    assert text.startswith("# Benchmarks\n\nbefore\n") and text.endswith(f"{END}\n") and f"| {OURS} |" in text
    assert (tmp_path / "img" / plot_name("panda")).stat().st_size > 0


def test_the_marked_section_is_replaced(tmp_path):
    path = tmp_path / "benchmarks.md"
    path.write_text("intro\n")
    replace_section(path, "one\n", BEGIN, END)
    replace_section(path, "two\n", BEGIN, END)
    assert path.read_text() == f"intro\n\n{BEGIN}\ntwo\n{END}\n"
