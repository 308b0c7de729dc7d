"""URDF XML -> plain dataclasses (no torch).

Only what kinematics and collision checking need is kept: the link tree,
joint origins/axes/limits/mimics and each link's collision geometry. Every
malformed or unsupported element raises :class:`RobotDescriptionError` (a
``ValueError``) that names the element.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import numpy as np

from ikdiffuser_ros.errors import RobotDescriptionError

#: Joint types accepted in a URDF. ``planar`` must have its axis along z.
SUPPORTED_JOINT_TYPES = ("revolute", "continuous", "prismatic", "fixed", "planar", "floating")


def rpy_to_matrix(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """URDF fixed-axis roll/pitch/yaw [rad] -> (3, 3) rotation ``Rz(yaw) Ry(pitch) Rx(roll)``."""
    cr, sr = math.cos(roll), math.sin(roll)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cy, sy = math.cos(yaw), math.sin(yaw)
    return np.array(
        [
            [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
            [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
            [-sp, cp * sr, cp * cr],
        ]
    )


def make_transform(xyz: np.ndarray, rpy: np.ndarray) -> np.ndarray:
    """(3,) translation [m] and (3,) rpy [rad] -> (4, 4) homogeneous transform."""
    T = np.eye(4)
    T[:3, :3] = rpy_to_matrix(*rpy)
    T[:3, 3] = xyz
    return T


@dataclass(frozen=True)
class Mimic:
    """``value = multiplier * value(joint) + offset``."""

    joint: str
    multiplier: float = 1.0
    offset: float = 0.0


@dataclass(frozen=True)
class JointSpec:
    """One URDF joint. ``origin`` is parent-link frame -> joint frame, (4, 4)."""

    name: str
    type: str
    parent: str
    child: str
    origin: np.ndarray
    axis: np.ndarray  # (3,) unit vector in the joint frame
    lower: float | None = None  # [rad] or [m]; None for continuous/fixed
    upper: float | None = None
    velocity: float | None = None
    mimic: Mimic | None = None


@dataclass(frozen=True)
class Geometry:
    """A collision or visual shape in its link frame.

    ``kind`` is ``box`` (size = full extents, m), ``sphere`` (radius),
    ``cylinder`` (radius, length; axis z) or ``mesh`` (filename URI, scale).
    """

    kind: str
    origin: np.ndarray  # (4, 4) link frame -> shape frame
    size: tuple[float, ...] = ()
    radius: float = 0.0
    length: float = 0.0
    filename: str = ""
    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)


@dataclass
class LinkSpec:
    name: str
    collisions: list[Geometry] = field(default_factory=list)


@dataclass
class URDFDescription:
    """The parsed link tree. ``joints`` is keyed by joint name, ``child_joint`` by child link."""

    name: str
    links: dict[str, LinkSpec]
    joints: dict[str, JointSpec]
    root: str
    child_joint: dict[str, JointSpec]
    children_of: dict[str, list[JointSpec]] = field(default_factory=dict)

    def children(self, link: str) -> list[JointSpec]:
        """Joints whose parent is ``link``, in name order (deterministic)."""
        return self.children_of.get(link, [])

    def path_from_root(self, link: str) -> list[JointSpec]:
        """Joints from the root down to ``link`` (root first)."""
        path = []
        while link in self.child_joint:
            joint = self.child_joint[link]
            path.append(joint)
            link = joint.parent
        return path[::-1]


def _floats(text: str | None, n: int, what: str, default: tuple[float, ...]) -> np.ndarray:
    if text is None:
        return np.array(default, dtype=float)
    try:
        values = [float(v) for v in text.split()]
    except ValueError:
        raise RobotDescriptionError(f"{what}: {text!r} is not a list of numbers") from None
    if len(values) != n or not all(math.isfinite(v) for v in values):
        raise RobotDescriptionError(f"{what}: expected {n} finite numbers, got {text!r}")
    return np.array(values, dtype=float)


def _float_attr(el: ET.Element, attr: str, what: str, default: float | None = None) -> float | None:
    text = el.get(attr)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise RobotDescriptionError(f"{what}: attribute {attr}={text!r} is not a number") from None
    if not math.isfinite(value):
        raise RobotDescriptionError(f"{what}: attribute {attr}={text!r} is not finite")
    return value


def _origin(el: ET.Element | None, what: str) -> np.ndarray:
    origin = None if el is None else el.find("origin")
    if origin is None:
        return np.eye(4)
    xyz = _floats(origin.get("xyz"), 3, f"{what} <origin xyz>", (0.0, 0.0, 0.0))
    rpy = _floats(origin.get("rpy"), 3, f"{what} <origin rpy>", (0.0, 0.0, 0.0))
    return make_transform(xyz, rpy)


def _geometry(el: ET.Element, what: str) -> Geometry | None:
    geom = el.find("geometry")
    if geom is None or len(geom) == 0:
        return None
    shape = geom[0]
    origin = _origin(el, what)
    if shape.tag == "box":
        size = tuple(_floats(shape.get("size"), 3, f"{what} <box size>", (0.0, 0.0, 0.0)))
        return Geometry("box", origin, size=size)
    if shape.tag == "sphere":
        return Geometry("sphere", origin, radius=_float_attr(shape, "radius", what, 0.0))
    if shape.tag == "cylinder":
        return Geometry(
            "cylinder",
            origin,
            radius=_float_attr(shape, "radius", what, 0.0),
            length=_float_attr(shape, "length", what, 0.0),
        )
    if shape.tag == "mesh":
        filename = shape.get("filename")
        if not filename:
            raise RobotDescriptionError(f"{what}: <mesh> without a filename")
        scale = tuple(_floats(shape.get("scale"), 3, f"{what} <mesh scale>", (1.0, 1.0, 1.0)))
        return Geometry("mesh", origin, filename=filename, scale=scale)
    raise RobotDescriptionError(f"{what}: unsupported geometry <{shape.tag}>")


def _joint(el: ET.Element) -> JointSpec:
    name = el.get("name")
    if not name:
        raise RobotDescriptionError("URDF <joint> without a name")
    what = f"joint {name!r}"
    jtype = el.get("type")
    if jtype not in SUPPORTED_JOINT_TYPES:
        raise RobotDescriptionError(
            f"{what} has unsupported type {jtype!r} (supported: {', '.join(SUPPORTED_JOINT_TYPES)})"
        )
    parent, child = el.find("parent"), el.find("child")
    if parent is None or not parent.get("link") or child is None or not child.get("link"):
        raise RobotDescriptionError(f"{what} needs <parent link=...> and <child link=...>")
    axis = _joint_axis(el, jtype, what)
    lower, upper, velocity = _joint_limits(el, jtype, what)
    mimic = _mimic(el, what)
    return JointSpec(
        name=name,
        type=jtype,
        parent=parent.get("link"),
        child=child.get("link"),
        origin=_origin(el, what),
        axis=axis,
        lower=lower,
        upper=upper,
        velocity=velocity,
        mimic=mimic,
    )


def _joint_axis(el: ET.Element, jtype: str, what: str) -> np.ndarray:
    """The joint's (3,) unit ``<axis xyz>`` (default x; a zero axis is kept for fixed/floating joints)."""
    axis_el = el.find("axis")
    axis = _floats(None if axis_el is None else axis_el.get("xyz"), 3, f"{what} <axis>", (1.0, 0.0, 0.0))
    norm = float(np.linalg.norm(axis))
    if jtype not in ("fixed", "floating") and norm < 1e-9:
        raise RobotDescriptionError(f"{what} has a zero <axis>")
    axis = axis / norm if norm > 0 else axis
    if jtype == "planar" and not np.allclose(axis, [0.0, 0.0, 1.0]):
        raise RobotDescriptionError(f"{what}: planar joints are supported with axis 0 0 1 only")
    return axis


def _joint_limits(el: ET.Element, jtype: str, what: str) -> tuple[float | None, float | None, float | None]:
    """(lower, upper, velocity) from ``<limit>``: [rad or m], [rad/s or m/s]; None where not given.

    Revolute and prismatic joints need the ``<limit>`` (missing bounds read as 0).
    """
    lower = upper = velocity = None
    limit = el.find("limit")
    if jtype in ("revolute", "prismatic"):
        if limit is None:
            raise RobotDescriptionError(f"{what} of type {jtype} needs a <limit lower=... upper=...>")
        lower = _float_attr(limit, "lower", what, 0.0)
        upper = _float_attr(limit, "upper", what, 0.0)
        if lower > upper:
            raise RobotDescriptionError(f"{what} has lower limit {lower} > upper limit {upper}")
    if limit is not None:
        velocity = _float_attr(limit, "velocity", what)
    return lower, upper, velocity


def _mimic(el: ET.Element, what: str) -> Mimic | None:
    """The joint's ``<mimic>``, if any (the leader is checked later, once all joints are known)."""
    mimic_el = el.find("mimic")
    if mimic_el is None:
        return None
    if not mimic_el.get("joint"):
        raise RobotDescriptionError(f"{what}: <mimic> without a joint")
    return Mimic(
        mimic_el.get("joint"),
        _float_attr(mimic_el, "multiplier", what, 1.0),
        _float_attr(mimic_el, "offset", what, 0.0),
    )


def robot_element(xml_text: str, kind: str) -> ET.Element:
    """The ``<robot>`` root element of URDF or SRDF text (``kind``, "URDF" or "SRDF", names it in the
    errors); :class:`RobotDescriptionError` for malformed XML or another root element."""
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as exc:
        raise RobotDescriptionError(f"malformed {kind} XML: {exc}") from None
    if root.tag != "robot":
        raise RobotDescriptionError(f"{kind} root element is <{root.tag}>, expected <robot>")
    return root


def parse_urdf(urdf_xml: str) -> URDFDescription:
    """Parse URDF text (already xacro-expanded) into a :class:`URDFDescription`.

    Raises :class:`RobotDescriptionError` for malformed XML, a root element other
    than ``<robot>``, duplicate names, joints naming missing links, kinematic
    loops (a link with two parent joints, or a cycle), several or no root links,
    unsupported joint types or geometry, and mimics of unknown joints.
    """
    root = robot_element(urdf_xml, "URDF")
    links = _links(root)
    joints, child_joint = _joints(root, links)
    root_link = _root_link(links, child_joint)
    children_of: dict[str, list[JointSpec]] = {}
    for joint in sorted(joints.values(), key=lambda j: j.name):
        children_of.setdefault(joint.parent, []).append(joint)
    description = URDFDescription(root.get("name", ""), links, joints, root_link, child_joint, children_of)
    _check_connected(description)
    return description


def _links(root: ET.Element) -> dict[str, LinkSpec]:
    """The ``<link>``s by name, with their collision geometry (at least one link)."""
    links: dict[str, LinkSpec] = {}
    for el in root.findall("link"):
        name = el.get("name")
        if not name:
            raise RobotDescriptionError("URDF <link> without a name")
        if name in links:
            raise RobotDescriptionError(f"duplicate link {name!r}")
        collisions = [
            g for i, c in enumerate(el.findall("collision"))
            if (g := _geometry(c, f"link {name!r} <collision> #{i}")) is not None
        ]
        links[name] = LinkSpec(name, collisions)
    if not links:
        raise RobotDescriptionError("URDF has no <link>")
    return links


def _joints(root: ET.Element, links: dict[str, LinkSpec]) -> tuple[dict[str, JointSpec], dict[str, JointSpec]]:
    """(joints by name, joints by child link): each between known links, one parent joint per link."""
    joints: dict[str, JointSpec] = {}
    child_joint: dict[str, JointSpec] = {}
    for el in root.findall("joint"):
        joint = _joint(el)
        if joint.name in joints:
            raise RobotDescriptionError(f"duplicate joint {joint.name!r}")
        for role, link in (("parent", joint.parent), ("child", joint.child)):
            if link not in links:
                raise RobotDescriptionError(f"joint {joint.name!r} names missing {role} link {link!r}")
        if joint.child in child_joint:
            raise RobotDescriptionError(
                f"kinematic loop: link {joint.child!r} is the child of joints "
                f"{child_joint[joint.child].name!r} and {joint.name!r}"
            )
        joints[joint.name] = joint
        child_joint[joint.child] = joint
    for joint in joints.values():
        if joint.mimic is not None and joint.mimic.joint not in joints:
            raise RobotDescriptionError(f"joint {joint.name!r} mimics unknown joint {joint.mimic.joint!r}")
    return joints, child_joint


def _root_link(links: dict[str, LinkSpec], child_joint: dict[str, JointSpec]) -> str:
    """The one link without a parent joint."""
    roots = [name for name in links if name not in child_joint]
    if len(roots) != 1:
        if not roots:
            raise RobotDescriptionError("kinematic loop: every link has a parent joint (no root link)")
        raise RobotDescriptionError(f"URDF has several root links: {', '.join(sorted(roots))}")
    return roots[0]


def _check_connected(description: URDFDescription) -> None:
    """Every link is reached from the root (else the rest closes a cycle)."""
    reached = {description.root}
    stack = [description.root]
    while stack:
        for joint in description.children(stack.pop()):
            reached.add(joint.child)
            stack.append(joint.child)
    if len(reached) != len(description.links):
        cyc = sorted(set(description.links) - reached)
        raise RobotDescriptionError(f"kinematic loop: links {', '.join(cyc)} are not connected to the root")
