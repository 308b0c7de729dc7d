"""Smoke test of ``ikdiffuser bench`` with tiny sizes: every installed solver runs on the same panda
targets, the protocols' numbers are consistent, and the docs section and plots are written.
Peers that are not installed (requirements/bench.txt, python3-pykdl) are skipped by the bench."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ikdiffuser_ros.bench.peer_registry import build_peers
from ikdiffuser_ros.bench.peers import restart_until
from ikdiffuser_ros.bench.protocols import random_targets, verified
from ikdiffuser_ros.bench.report import BEGIN, END, PLOT_FREE, PLOT_SUCCESS
from ikdiffuser_ros.cli import main
from ikdiffuser_ros.robots import robot_config

MODELS = Path(__file__).resolve().parents[2] / "models"
PEER_NAMES = ["trac_ik", "rtb_ik_LM", "pink", "kdl"]


@pytest.mark.skipif(not (MODELS / "panda" / "card.json").is_file(), reason="no shipped panda model")
def test_bench_runs_every_solver_on_the_same_targets(tmp_path):
    torch.set_num_threads(1)
    docs = tmp_path / "benchmarks.md"
    docs.write_text(f"# Benchmarks\n\n{BEGIN}\nold\n{END}\n\nafter\n")
    out = tmp_path / "bench.json"
    rc = main(["bench", "--robots", "panda", "--one-targets", "4", "--budgets-ms", "5", "50",
               "--main-budget-ms", "50", "--many-targets", "1", "--many-budget", "0.3", "--chunk", "32",
               "--max-checks", "20", "--json", str(out), "--docs", str(docs), "--plots", str(tmp_path / "img")])
    assert rc == 0
    robot = json.loads(out.read_text())["robots"]["panda"]
    one = {r["solver"]: r for r in robot["one_solution"]}
    many = {r["solver"]: r for r in robot["many"]}
    assert {"ikdiffuser", "uniform+LM"} <= set(one) and set(one) == set(many)
    skipped = {n.split(":")[0] for n in robot["notes"] if "skipped" in n}
    assert set(one) | skipped == {"ikdiffuser", "uniform+LM", *PEER_NAMES}
    for r in one.values():
        assert r["success"][0] <= r["success"][1] or r["solver"] in ("ikdiffuser", "uniform+LM")
    for r in many.values():
        assert r["distinct"] <= r["verified"] <= r["answers"]
        assert r["self_free"] <= r["distinct"] + 1e-9 and r["scene_free"] <= r["self_free"] + 1e-9
    assert many["uniform+LM"]["distinct"] > 0
    text = docs.read_text()
    assert "old" not in text and text.endswith("after\n") and "| uniform+LM |" in text
    assert "panda: one sample + LM >= 99.5 % (the goal for 1 end effector(s))" in text
    assert "diversity of self-coll-free [rad]" in text
    assert (tmp_path / "img" / PLOT_SUCCESS).stat().st_size > 0 and (tmp_path / "img" / PLOT_FREE).stat().st_size > 0


@pytest.mark.skipif(not (MODELS / "panda" / "card.json").is_file(), reason="no shipped panda model")
def test_bench_of_many_solutions_alone_reports_its_goals(tmp_path):
    """``--protocols many`` writes its tables and goals without protocol 1's (it used to fail on the missing
    one-solution rows)."""
    torch.set_num_threads(1)
    docs = tmp_path / "benchmarks.md"
    rc = main(["bench", "--robots", "panda", "--protocols", "many", "--solvers", "ikdiffuser", "rtb_ik_LM",
               "--many-targets", "1", "--many-budget", "0.2", "--max-checks", "20", "--docs", str(docs)])
    assert rc == 0
    text = docs.read_text()
    assert "One solution per target" not in text and "Many solutions per target" in text
    if "rtb_ik_LM: skipped" not in text:
        assert "panda: diversity of the self-collision-free solutions >= every peer's" in text


@pytest.mark.parametrize("robot", ["panda", "baxter"])
def test_installed_peers_answers_verify(robot):
    """Each installed peer's answers pass our float64 FK check (limits passed to the peers hold)."""
    cfg = robot_config(robot)
    model = cfg.load()
    peers, _ = build_peers(PEER_NAMES, model, cfg.urdf_text(), 0.05)
    if not peers:
        pytest.skip("no peer installed")
    _, targets = random_targets(model, 3, 7)
    for peer in peers:
        rng = np.random.default_rng(0)
        for T in targets:
            q = restart_until(peer, T.numpy(), rng, time.perf_counter() + 0.5)
            if q is not None:
                assert verified(model, torch.from_numpy(q), T), peer.name
