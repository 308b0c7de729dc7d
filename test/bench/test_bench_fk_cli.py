"""Smoke test of ``ikdiffuser bench-fk`` (ikdiffuser_ros/bench/fk.py): runs, prints a table and valid JSON."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread_session")  # small tensors: one torch thread


def _json_from_stdout(out: str) -> dict:
    return json.loads(out[out.index("\n{") + 1:])


@pytest.mark.parametrize("pk", [True, False])
def test_bench_fk_cli_prints_valid_json(pk, tmp_path, capsys):
    from ikdiffuser_ros.cli import main

    path = tmp_path / "fk.json"
    argv = ["bench-fk", "--robot", "panda", "--batch-sizes", "1", "10", "--repeats", "1", "--min-time", "0",
            "--json", str(path)] + ([] if pk else ["--no-pk"])
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| batch |" in out
    report = _json_from_stdout(out)
    assert report == json.loads(path.read_text())
    assert report["robot"] == "panda" and report["device"] == "cpu"
    assert [r["batch"] for r in report["results"]] == [1, 10]
    for row in report["results"]:
        assert row["ours_s"] > 0 and row["ours_configs_per_s"] > 0
        if pk:
            assert row["pk_s"] > 0 and row["speedup"] > 0
        else:
            assert "pk_s" not in row
