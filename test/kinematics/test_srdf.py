"""SRDF parsing of example-robot-data's panda.srdf and pr2_manipulation.srdf, and merging."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from ikdiffuser_ros.errors import RobotDescriptionError
from ikdiffuser_ros.kinematics.srdf import parse_srdf
from ikdiffuser_ros.robots import robot_config


def _srdf_text(robot: str, index: int = 0) -> str:
    return robot_config(robot).srdf_texts()[index]


@pytest.mark.parametrize("robot", ["panda", "pr2"])
def test_srdf_matches_its_xml(robot):
    text = _srdf_text(robot)
    root = ET.fromstring(text)
    srdf = parse_srdf(text)
    assert srdf.name == root.get("name")
    # disabled collisions: one unordered pair per element (no duplicates in these files)
    elements = root.findall("disable_collisions")
    pairs = {frozenset((e.get("link1"), e.get("link2"))) for e in elements}
    assert len(pairs) == len(elements)
    assert srdf.disabled_collisions == pairs
    # groups with their members as written
    groups = root.findall("group")
    assert list(srdf.groups) == [g.get("name") for g in groups]
    for g in groups:
        parsed = srdf.groups[g.get("name")]
        assert parsed.joints == [j.get("name") for j in g.findall("joint")]
        assert parsed.links == [link.get("name") for link in g.findall("link")]
        assert parsed.chains == [(c.get("base_link"), c.get("tip_link")) for c in g.findall("chain")]
        assert parsed.subgroups == [s.get("name") for s in g.findall("group")]
    assert [(e.name, e.group, e.parent_link, e.parent_group) for e in srdf.end_effectors] == [
        (e.get("name"), e.get("group"), e.get("parent_link"), e.get("parent_group", ""))
        for e in root.findall("end_effector")]
    assert [(v.name, v.type, v.parent_frame, v.child_link) for v in srdf.virtual_joints] == [
        (v.get("name"), v.get("type").lower(), v.get("parent_frame"), v.get("child_link"))
        for v in root.findall("virtual_joint")]
    assert len(srdf.group_states) == len(root.findall("group_state"))


def test_panda_srdf_content():
    srdf = parse_srdf(_srdf_text("panda"))
    assert len(srdf.disabled_collisions) == 35
    assert srdf.groups["arm"].joints == [f"panda_joint{i}" for i in range(1, 8)]
    assert srdf.groups["arm_and_hand"].subgroups == ["arm", "hand"]
    assert [e.parent_link for e in srdf.end_effectors] == ["panda_hand_tcp"]
    assert srdf.group_states[("default", "arm_and_hand")]["panda_joint4"] == [-2.35619]
    assert frozenset(("panda_link0", "panda_link1")) in srdf.disabled_collisions
    assert srdf.virtual_joints == []


def test_pr2_srdf_content():
    srdf = parse_srdf(_srdf_text("pr2"))
    assert len(srdf.disabled_collisions) > 1000
    (vj,) = srdf.virtual_joints
    assert (vj.name, vj.type, vj.child_link) == ("world_joint", "planar", "base_footprint")
    assert any(g.chains for g in srdf.groups.values())
    assert any(g.subgroups for g in srdf.groups.values())


def test_merge_mobile_baxter():
    """baxter_manipulation.srdf + this repo's mobile_baxter.srdf: the planar base is added."""
    base, extra = (parse_srdf(t) for t in robot_config("mobile_baxter").srdf_texts())
    merged = base.merge(extra)
    assert [v.name for v in merged.virtual_joints] == [v.name for v in base.virtual_joints
                                                       if v.name != "base_joint"] + ["base_joint"]
    assert merged.disabled_collisions == base.disabled_collisions | extra.disabled_collisions
    assert set(merged.groups) == set(base.groups) | set(extra.groups)


@pytest.mark.parametrize("text,needle", [
    ("<robot><virtual_joint name='v' type='spherical' parent_frame='a' child_link='b'/></robot>", "spherical"),
    ("<robot><disable_collisions link1='a'/></robot>", "link2"),
    ("<robot><group_state name='s' group='g'><joint name='j' value='x'/></group_state></robot>", "'s'"),
    ("<srdf/>", "<srdf>"),
    ("<robot>", "malformed"),
])
def test_bad_srdf(text, needle):
    with pytest.raises(RobotDescriptionError) as info:
        parse_srdf(text)
    assert needle in str(info.value)


def test_group_state_without_group_is_skipped_with_a_warning(caplog):
    """As srdfdom: example-robot-data's z1 and kinova SRDFs have such entries; the rest still parses."""
    xml = """<robot name="r"><group name="arm"><chain base_link="a" tip_link="b"/></group>
    <group_state name="home"><joint name="j1" value="0"/></group_state>
    <group_state name="up" group="arm"><joint name="j1" value="1"/></group_state>
    <disable_collisions link1="a" link2="b"/></robot>"""
    with caplog.at_level("WARNING", logger="ikdiffuser_ros"):
        srdf = parse_srdf(xml)
    assert list(srdf.group_states) == [("up", "arm")] and "arm" in srdf.groups
    assert "group_state 'home' has no group" in caplog.text
