"""RobotModel.fingerprint(): stable, blind to cosmetics, sensitive to kinematics."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from ikdiffuser_ros.kinematics.robot_model import RobotModel
from ikdiffuser_ros.robots import load_robot, robot_config

EE = ["panda_hand_tcp"]


@pytest.fixture(scope="module")
def panda_xml() -> str:
    return robot_config("panda").urdf_text()


def fingerprint(xml: str, end_effectors=EE) -> str:
    return RobotModel.from_urdf(xml, end_effectors=end_effectors).fingerprint()


def edit(xml: str, fn) -> str:
    root = ET.fromstring(xml)
    fn(root)
    return ET.tostring(root, encoding="unicode")


def joint(root, name):
    return root.find(f"joint[@name='{name}']")


def test_stable_across_loads(panda_xml):
    a, b = load_robot("panda").fingerprint(), load_robot("panda").fingerprint()
    assert a == b and len(a) == 16
    assert fingerprint(panda_xml) == fingerprint(panda_xml)


def _reorder_joints(root):
    joints = root.findall("joint")
    for j in joints:
        root.remove(j)
    for j in reversed(joints):
        root.append(j)


def _mesh(root):
    root.find(".//mesh").set("filename", "package://elsewhere/meshes/other.stl")


def _colour(root):
    visual = root.find(".//visual")
    material = ET.SubElement(visual, "material", name="hot_pink")
    ET.SubElement(material, "color", rgba="1 0.4 0.7 1")


def _inertia(root):
    root.find(".//inertia").set("ixx", "123.0")
    root.find(".//inertial/mass").set("value", "42.0")


@pytest.mark.parametrize("change", [_reorder_joints, _mesh, _colour, _inertia],
                         ids=["reorder-joints", "mesh", "colour", "inertia"])
def test_unchanged_by_cosmetics(panda_xml, change):
    edited = edit(panda_xml, change)
    assert edited != panda_xml
    assert fingerprint(edited) == fingerprint(panda_xml)


def _origin(root):
    joint(root, "panda_joint4").find("origin").set("xyz", "0.0825 0 0.0001")


def _origin_rpy(root):
    joint(root, "panda_joint2").find("origin").set("rpy", "-1.5707963 0 0")


def _axis(root):
    joint(root, "panda_joint3").find("axis").set("xyz", "0 1 0")


def _type(root):
    joint(root, "panda_joint1").set("type", "continuous")


def _limit(root):
    joint(root, "panda_joint5").find("limit").set("upper", "2.5")


def _fixed_joint_origin(root):  # not a moving joint, but it moves the EE frame
    joint(root, "panda_hand_tcp_joint").find("origin").set("xyz", "0 0 0.2")


@pytest.mark.parametrize("change", [_origin, _origin_rpy, _axis, _type, _limit, _fixed_joint_origin],
                         ids=["origin-xyz", "origin-rpy", "axis", "type", "limit", "fixed-origin"])
def test_changed_by_kinematics(panda_xml, change):
    assert fingerprint(edit(panda_xml, change)) != fingerprint(panda_xml)


def test_changed_by_end_effector_set(panda_xml):
    base = fingerprint(panda_xml)
    assert fingerprint(panda_xml, ["panda_link8"]) != base
    assert fingerprint(panda_xml, ["panda_hand_tcp", "panda_link8"]) != base
