"""SRDF XML -> plain dataclasses (srdfdom conventions, see docs/moveit notes).

Several SRDF documents can be merged (e.g. example-robot-data's baxter SRDF
plus this repo's file adding a planar virtual joint for ``mobile_baxter``).
"""

from __future__ import annotations

import logging

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from ikdiffuser_ros.errors import RobotDescriptionError
from ikdiffuser_ros.kinematics.urdf import robot_element

VIRTUAL_JOINT_TYPES = ("fixed", "planar", "floating")


@dataclass(frozen=True)
class VirtualJoint:
    """``parent_frame`` (external, e.g. ``odom``) -> ``child_link`` (URDF root)."""

    name: str
    type: str
    parent_frame: str
    child_link: str


@dataclass
class Group:
    """A planning group as written: its links, joints, chains and subgroups."""

    name: str
    links: list[str] = field(default_factory=list)
    joints: list[str] = field(default_factory=list)
    chains: list[tuple[str, str]] = field(default_factory=list)  # (base_link, tip_link)
    subgroups: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class EndEffector:
    name: str
    group: str
    parent_link: str
    parent_group: str = ""


@dataclass
class SRDFDescription:
    name: str = ""
    virtual_joints: list[VirtualJoint] = field(default_factory=list)
    groups: dict[str, Group] = field(default_factory=dict)
    group_states: dict[tuple[str, str], dict[str, list[float]]] = field(default_factory=dict)
    end_effectors: list[EndEffector] = field(default_factory=list)
    disabled_collisions: set[frozenset[str]] = field(default_factory=set)

    def merge(self, other: "SRDFDescription") -> "SRDFDescription":
        """A new description with ``other``'s entries added (``other`` wins on name clashes)."""
        groups = {**self.groups, **other.groups}
        names = {v.name for v in other.virtual_joints}
        return SRDFDescription(
            name=self.name or other.name,
            virtual_joints=[v for v in self.virtual_joints if v.name not in names] + other.virtual_joints,
            groups=groups,
            group_states={**self.group_states, **other.group_states},
            end_effectors=self.end_effectors + other.end_effectors,
            disabled_collisions=self.disabled_collisions | other.disabled_collisions,
        )


def _required(el: ET.Element, attr: str) -> str:
    value = el.get(attr)
    if not value:
        raise RobotDescriptionError(f"SRDF <{el.tag} {' '.join(f'{k}={v!r}' for k, v in el.attrib.items())}> "
                                    f"lacks attribute {attr!r}")
    return value


def parse_srdf(srdf_xml: str) -> SRDFDescription:
    """Parse SRDF text. Raises :class:`RobotDescriptionError` for malformed XML or missing attributes."""
    root = robot_element(srdf_xml, "SRDF")
    srdf = SRDFDescription(name=root.get("name", ""))
    for el in root.findall("virtual_joint"):
        srdf.virtual_joints.append(_virtual_joint(el))
    for el in root.findall("group"):
        group = _group(el)
        srdf.groups[group.name] = group
    for el in root.findall("group_state"):
        if not el.get("group"):  # as srdfdom: skipped, with a warning (some published SRDFs have them)
            logging.getLogger("ikdiffuser_ros").warning(f"SRDF group_state {el.get('name', '')!r} has no group: skipped")
            continue
        values = _group_state_values(el)
        srdf.group_states[(_required(el, "name"), _required(el, "group"))] = values
    for el in root.findall("end_effector"):
        srdf.end_effectors.append(
            EndEffector(
                _required(el, "name"), _required(el, "group"), _required(el, "parent_link"),
                el.get("parent_group", ""),
            )
        )
    for el in root.findall("disable_collisions"):
        srdf.disabled_collisions.add(frozenset((_required(el, "link1"), _required(el, "link2"))))
    return srdf


def _virtual_joint(el: ET.Element) -> VirtualJoint:
    """A ``<virtual_joint>``; its type is matched case-insensitively and stored lower-case."""
    vtype = _required(el, "type").lower()
    if vtype not in VIRTUAL_JOINT_TYPES:
        raise RobotDescriptionError(
            f"SRDF virtual joint {el.get('name')!r} has unknown type {vtype!r} "
            f"(supported: {', '.join(VIRTUAL_JOINT_TYPES)})"
        )
    return VirtualJoint(_required(el, "name"), vtype, _required(el, "parent_frame"), _required(el, "child_link"))


def _group(el: ET.Element) -> Group:
    """A ``<group>`` with its links, joints, chains and subgroups in document order (other tags ignored)."""
    group = Group(_required(el, "name"))
    for child in el:
        if child.tag == "link":
            group.links.append(_required(child, "name"))
        elif child.tag == "joint":
            group.joints.append(_required(child, "name"))
        elif child.tag == "chain":
            group.chains.append((_required(child, "base_link"), _required(child, "tip_link")))
        elif child.tag == "group":
            group.subgroups.append(_required(child, "name"))
    return group


def _group_state_values(el: ET.Element) -> dict[str, list[float]]:
    """A ``<group_state>``'s joint values by joint name, each a list [rad or m] (several for multi-DOF joints)."""
    values: dict[str, list[float]] = {}
    for joint in el.findall("joint"):
        try:
            values[_required(joint, "name")] = [float(v) for v in _required(joint, "value").split()]
        except ValueError:  # also a missing attribute: RobotDescriptionError is a ValueError
            raise RobotDescriptionError(f"SRDF group_state {el.get('name')!r}: bad joint value") from None
    return values
