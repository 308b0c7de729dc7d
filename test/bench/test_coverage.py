"""The coverage protocol of ``ikdiffuser bench`` (ikdiffuser_ros/bench/coverage.py): the MMD against a
hand-computed case, a plain numpy transcription of HJCD-IK's ``compute_mmd_ikflow`` and its properties;
cluster coverage on toy sets; the arms of a multi-arm robot; and a tiny end-to-end run on panda."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ikdiffuser_ros.bench.coverage import found_clusters, mean_mmd, median_distance, mmd2, scopes
from ikdiffuser_ros.bench.coverage_report import BEGIN as COV_BEGIN
from ikdiffuser_ros.bench.coverage_report import END as COV_END
from ikdiffuser_ros.bench.coverage_report import PLOT
from ikdiffuser_ros.bench.report import BEGIN, END
from ikdiffuser_ros.cli import main
from ikdiffuser_ros.robots import robot_config

MODELS = Path(__file__).resolve().parents[2] / "models"


def _reference_mmd2(X: np.ndarray, Y: np.ndarray, beta: float = 0.5,
                    scales: tuple[float, ...] = (0.2, 0.5, 1.0, 2.0, 5.0)) -> float:
    """HJCD-IK benchmark/compute_mmd.py's estimator written out in numpy, step by step."""
    def sq(A, B):
        return np.maximum((A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2 * A @ B.T, 0.0)

    Z = np.vstack([X, Y])
    iu = np.triu_indices(len(Z), k=1)
    med = float(np.sqrt(np.median(sq(Z, Z)[iu])))
    cs = [med * s for s in scales]

    def k(A, B):
        return sum(np.power(sq(A, B) + c * c, -beta) for c in cs) / len(cs)

    m, n = len(X), len(Y)
    kxx, kyy, kxy = k(X, X), k(Y, Y), k(X, Y)
    v = ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
         - 2 * kxy.mean())
    return max(float(v), 0.0)


def test_mmd_matches_a_hand_computed_case():
    # x = {0, 1}, y = {3, 5}: pooled pairwise squared distances 1, 9, 25, 4, 16, 4 -> median 6.5
    x, y = torch.tensor([[0.0], [1.0]]), torch.tensor([[3.0], [5.0]])
    assert median_distance(x, y) == pytest.approx(math.sqrt(6.5))

    def k(d2):  # IMQ, beta 1/2, averaged over c = sqrt(6.5) * (0.2, 0.5, 1, 2, 5)
        return sum((d2 + 6.5 * s * s) ** -0.5 for s in (0.2, 0.5, 1.0, 2.0, 5.0)) / 5

    # unbiased: k_xx off the diagonal (d^2 = 1), k_yy (d^2 = 4), minus twice the mean cross term
    expected = k(1) + k(4) - 2 * (k(9) + k(25) + k(4) + k(16)) / 4
    assert expected > 0
    assert mmd2(x, y) == pytest.approx(expected, rel=1e-12)


def test_mmd_matches_the_reference_estimator_on_random_sets():
    g = np.random.default_rng(3)
    for m, n, d in [(50, 30, 7), (200, 50, 14), (2, 2, 3)]:
        X, Y = g.normal(size=(m, d)), g.normal(0.3, 1.2, size=(n, d))
        assert mmd2(torch.from_numpy(X), torch.from_numpy(Y)) == pytest.approx(_reference_mmd2(X, Y), rel=1e-9,
                                                                                abs=1e-12)


def test_mmd_properties():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(80, 7, generator=g, dtype=torch.float64)
    y = torch.randn(60, 7, generator=g, dtype=torch.float64)
    assert mmd2(x, x) == 0.0  # identical sets (the unbiased value is negative, clipped to 0)
    assert mmd2(x, y) == pytest.approx(mmd2(y, x), rel=1e-12)  # symmetric
    near, far = mmd2(x, y + 0.5), mmd2(x, y + 2.0)
    assert mmd2(x, y) < near < far  # larger for sets shifted further
    fresh = torch.randn(60, 7, generator=g, dtype=torch.float64)
    assert mmd2(x, fresh) < 0.2 * near  # two draws of one distribution score near 0
    assert math.isnan(mmd2(x, y[:1]))  # fewer than two rows: undefined
    m2, m, scored = mean_mmd([0.04, float("nan"), 0.0])
    assert (m2, m, scored) == (pytest.approx(0.02), pytest.approx(math.sqrt(0.02)), 2)


def test_cluster_coverage_on_a_toy_case():
    leaders = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]], dtype=torch.float64)
    tol = torch.tensor([0.3, 0.3], dtype=torch.float64)
    no_wrap = torch.tensor([False, False])
    sols = torch.tensor([[0.1, -0.2], [1.5, 1.5], [2.2, 1.9], [0.05, 0.0]], dtype=torch.float64)
    found, inside = found_clusters(sols, leaders, tol, no_wrap)
    assert found.tolist() == [True, False, True]
    assert inside.tolist() == [True, False, True, True]
    found, inside = found_clusters(sols[:0], leaders, tol, no_wrap)
    assert not found.any() and inside.numel() == 0
    # a wrapping joint: -pi + 0.05 is 0.1 rad from pi - 0.05
    wrap = torch.tensor([True, False])
    found, _ = found_clusters(torch.tensor([[-math.pi + 0.05, 0.0]], dtype=torch.float64),
                              torch.tensor([[math.pi - 0.05, 0.0]], dtype=torch.float64), tol, wrap)
    assert found.tolist() == [True]
    found, _ = found_clusters(torch.tensor([[-math.pi + 0.05, 0.0]], dtype=torch.float64),
                              torch.tensor([[math.pi - 0.05, 0.0]], dtype=torch.float64), tol, no_wrap)
    assert found.tolist() == [False]


def test_scopes_are_the_arms_of_a_multi_arm_robot():
    panda, baxter = robot_config("panda").load(), robot_config("baxter").load()
    assert scopes(panda) == {"all": list(range(panda.n_joints))}
    s = scopes(baxter)
    arms = [s[ee] for ee in baxter.end_effectors]
    assert set(s) == {"all", *baxter.end_effectors}
    assert all(len(a) == 7 for a in arms) and not set(arms[0]) & set(arms[1])


@pytest.mark.skipif(not (MODELS / "panda" / "card.json").is_file(), reason="no shipped panda model")
def test_coverage_runs_end_to_end_on_panda(tmp_path):
    torch.set_num_threads(1)
    docs = tmp_path / "benchmarks.md"
    docs.write_text(f"# Benchmarks\n\n{BEGIN}\nclassic\n{END}\n\n{COV_BEGIN}\nold\n{COV_END}\n\nafter\n")
    out = tmp_path / "bench.json"
    rc = main(["bench", "--robots", "panda", "--protocols", "coverage", "--solvers", "ikdiffuser", "uniform+LM",
               "trac_ik", "--coverage-targets", "2", "--coverage-gt-restarts", "1000", "--coverage-gt-tracik", "20",
               "--coverage-solutions", "30", "--coverage-mmd-k", "20", "--coverage-mmd-ref", "200",
               "--coverage-budget", "0.05", "--coverage-cap", "1", "--no-progress", "--json", str(out),
               "--docs", str(docs), "--plots", str(tmp_path / "img")])
    assert rc == 0
    robot = json.loads(out.read_text())["robots"]["panda"]
    assert robot["one_solution"] == [] and robot["many"] == []  # only the protocol asked for ran
    cov = robot["coverage"]
    gt = cov["ground_truth"]
    assert len(gt["distinct"]) == 2
    for i in range(2):
        assert 0 < gt["clusters"]["all"][i] <= gt["distinct"][i] <= gt["verified_lm"][i] + gt["verified_tracik"][i]
    rows = {r["solver"]: r for r in cov["solvers"]}
    assert {"ikdiffuser", "uniform+LM"} <= set(rows)
    for r in rows.values():
        assert all(v <= a <= 30 for v, a in zip(r["verified_n"], r["answers_n"]))
        s = r["scopes"]["all"]
        assert all(0.0 <= c <= 1.0 for c in s["coverage_n"] + s["coverage_budget"])
        assert all(m >= 0.0 for m in s["mmd2"] if not math.isnan(m))
        assert all(d <= v for d, v in zip(s["distinct_n"], r["verified_n"]))
    assert sum(rows["ikdiffuser"]["verified_n"]) > 0
    # uniform+LM draws from the ground truth's own restart distribution: near-zero MMD
    assert mean_mmd(rows["uniform+LM"]["scopes"]["all"]["mmd2"])[1] < 0.1
    text = docs.read_text()
    assert "classic" in text and "old" not in text and text.endswith("after\n")
    assert "| uniform+LM |" in text and "### Against the coverage goals of the issue" in text
    assert (tmp_path / "img" / PLOT).stat().st_size > 0
