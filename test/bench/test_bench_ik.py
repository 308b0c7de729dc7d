"""Smoke test of ``ikdiffuser bench``: every solver runs on the same few panda targets and the
reported success agrees with an independent FK check (pytorch_kinematics-verified FK is tested in
test/kinematics); KDL is skipped when python3-pykdl is missing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ikdiffuser_ros.bench.ik import markdown_table, SolverReport
from ikdiffuser_ros.bench.peers import import_pykdl
from ikdiffuser_ros.cli import main

MODELS = Path(__file__).resolve().parents[2] / "models"


@pytest.mark.skipif(not (MODELS / "panda" / "card.json").is_file(), reason="no shipped panda model")
def test_bench_runs_all_solvers_on_the_same_targets(tmp_path, capsys):
    torch.set_num_threads(1)
    solvers = ["ikdiffuser_raw", "ikdiffuser", "pytorch_kinematics"] + (["kdl"] if import_pykdl() else [])
    out = tmp_path / "bench.json"
    rc = main(["bench", "--robot", "panda", "--num-targets", "4", "--num-solutions", "8",
               "--diversity-targets", "1", "--diversity-solutions", "16", "--many-targets", "4",
               "--steps", "3", "--solvers", *solvers, "--json", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    reports = {r["solver"]: r for r in result["reports"]}
    assert set(reports) == set(solvers)
    # refinement reaches 1e-5 m / 1e-4 rad on FK-reachable targets; raw samples do not
    assert reports["ikdiffuser"]["success_rate"] > 0.5
    assert reports["ikdiffuser"]["median_pos_err_mm"] < reports["ikdiffuser_raw"]["median_pos_err_mm"]
    if "kdl" in reports:
        assert reports["kdl"]["success_rate"] == 1.0
    table = markdown_table([SolverReport(**r) for r in result["reports"]])
    assert table.count("\n") == len(solvers) + 1
    assert "| ikdiffuser |" in capsys.readouterr().out
