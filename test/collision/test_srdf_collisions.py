"""SRDF disabled-pair generator (collision/srdf_collisions.py) against example-robot-data's own SRDFs.

Reference: panda.srdf of example-robot-data was made with MoveIt Setup Assistant; its
``reason="Adjacent"`` and ``reason="Default"`` pairs do not depend on sampling.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

pytest.importorskip("fcl")

from ikdiffuser_ros.cli import main as cli_main  # noqa: E402
from ikdiffuser_ros.collision.fcl_checker import CollisionChecker  # noqa: E402
from ikdiffuser_ros.collision.srdf_collisions import (  # noqa: E402
    REASONS, compute_disabled_pairs, geometry_links, suspicious_default_pairs,
)
from ikdiffuser_ros.kinematics.srdf import parse_srdf  # noqa: E402
from ikdiffuser_ros.resources import resolve_uri  # noqa: E402
from ikdiffuser_ros.robots import load_robot, robot_config  # noqa: E402

PANDA_SRDF = "package://example-robot-data/robots/panda_description/srdf/panda.srdf"
GENERATED_DUAL_UR5 = "package://ikdiffuser_ros/config/srdf/dual_ur5_mobile_collisions.srdf"


def _pairs_with_reason(srdf_path) -> dict[tuple[str, str], str]:
    """Sorted link pair -> reason of every ``disable_collisions`` line of an SRDF file."""
    root = ET.parse(srdf_path).getroot()
    return {tuple(sorted((el.get("link1"), el.get("link2")))): el.get("reason")
            for el in root.iter("disable_collisions")}


@pytest.fixture(scope="module")
def panda_setup(panda):
    return compute_disabled_pairs(panda, samples=2000, seed=0)


def test_adjacent_pairs_are_links_joined_through_bare_links(panda, panda_setup):
    expected = {tuple(sorted(p)) for p in CollisionChecker(panda).adjacent}
    adjacent = {p for p, r in panda_setup.disabled.items() if r == "Adjacent"}
    assert adjacent and adjacent <= expected
    assert ("panda_hand", "panda_link7") in adjacent  # through the geometry-less panda_link8


def test_panda_agrees_with_example_robot_data(panda_setup):
    reference = _pairs_with_reason(resolve_uri(PANDA_SRDF))
    for reason in ("Adjacent", "Default"):
        pairs = {p for p, r in reference.items() if r == reason}
        assert pairs and all(panda_setup.disabled.get(p) == reason for p in pairs), reason
    # the sampled pairs: example-robot-data's "Never" pairs are disabled here too
    assert set(reference) <= set(panda_setup.disabled)


def test_reasons_match_the_sampled_rates(panda_setup):
    assert set(panda_setup.disabled.values()) <= set(REASONS)
    for pair, reason in panda_setup.disabled.items():
        if reason == "Never":
            assert panda_setup.rates[pair] == 0.0
        elif reason == "Always":
            assert panda_setup.rates[pair] >= panda_setup.always_fraction
    checked = [p for p in panda_setup.rates if p not in panda_setup.disabled]
    assert checked and all(panda_setup.rates[p] > 0 for p in checked)


def test_keep_leaves_a_default_pair_checked(panda, panda_setup):
    suspicious = suspicious_default_pairs(panda_setup)
    assert ("panda_hand", "panda_link5") in suspicious  # collides at zero, free in most samples
    kept = compute_disabled_pairs(panda, samples=200, seed=0, keep=[("panda_link5", "panda_hand")])
    assert ("panda_hand", "panda_link5") not in kept.disabled


def test_cli_writes_a_parseable_srdf(tmp_path, capsys):
    out = tmp_path / "panda_collisions.srdf"
    assert cli_main(["srdf-collisions", "--robot", "panda", "--samples", "100", "--out", str(out)]) == 0
    srdf = parse_srdf(out.read_text())
    assert srdf.name == "panda" and len(srdf.disabled_collisions) >= 10
    assert "link pairs disabled" in capsys.readouterr().err


def test_dual_ur5_mobile_merges_its_generated_srdf():
    config = robot_config("dual_ur5_mobile")
    assert resolve_uri(GENERATED_DUAL_UR5) in config.srdf
    model = load_robot("dual_ur5_mobile")
    generated = _pairs_with_reason(resolve_uri(GENERATED_DUAL_UR5))
    links = set(geometry_links(model))
    assert all(set(p) <= links for p in generated)
    assert {frozenset(p) for p in generated} <= model.srdf.disabled_collisions
    # kept on review: the right upper arm goes through the chest at zero, and in ~60 % of samples
    assert frozenset(("chest_link", "right_upper_arm_link")) not in model.srdf.disabled_collisions
