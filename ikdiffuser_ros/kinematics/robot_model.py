"""RobotModel: URDF (+ SRDF) + chosen end effectors -> batched FK and Jacobians.

The *active joints* are exactly the joints that move at least one chosen
end-effector link: the non-fixed, non-mimic joints on the paths from the root
frame to those links, plus the leader of every mimic joint on those paths (even
when the leader itself is off the paths), each once (a shared torso or mobile
base appears once).
Their order, :attr:`RobotModel.joint_names`, is the order of every joint
vector in the project: for each end effector in turn, the joints on its path
from the root, skipping joints already listed.

Joint variables and units: revolute/continuous [rad], prismatic [m]. A planar
joint (URDF ``planar`` with axis z, or an SRDF planar virtual joint) gives
three variables ``<name>/x``, ``<name>/y`` [m] and ``<name>/theta`` [rad]; a
floating one gives ``<name>/x``, ``/y``, ``/z`` [m] and ``/yaw``, ``/pitch``,
``/roll`` [rad] (``R = Rz(yaw) Ry(pitch) Rx(roll)``); these names are built and
parsed only by :mod:`ikdiffuser_ros.kinematics.joint_names`.

Finite ranges for unbounded variables (documented defaults, overridable with
``joint_limits``): continuous joints and planar/floating yaw and roll
``[-pi, pi]``, floating pitch ``[-pi/2, pi/2]``, planar/floating translations
``[-1, 1]`` m.

Joints that are not active (a head pan, gripper fingers, or any joint named in
``locked_joints``, e.g. the SRDF's planar base of a robot used with a fixed
base) stay at their *passive* value: MoveIt's default state (0 when the range holds it, else
the middle of the range, as ``JointModel::getVariableDefaultPositions``).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from ikdiffuser_ros.errors import RobotDescriptionError
from ikdiffuser_ros.kinematics.joint_names import AxisVariable, axes, variable_name
from ikdiffuser_ros.kinematics.chain import FrameSpec, KinematicTree, MotionNode
from ikdiffuser_ros.kinematics.srdf import SRDFDescription, VirtualJoint, parse_srdf
from ikdiffuser_ros.kinematics.urdf import JointSpec, URDFDescription, parse_urdf

#: Default finite range of continuous joints [rad].
CONTINUOUS_RANGE = (-math.pi, math.pi)
#: Default range of planar/floating translation variables [m].
BASE_TRANSLATION_RANGE = (-1.0, 1.0)

#: Default range of a floating joint's pitch [rad].
PITCH_RANGE = (-math.pi / 2, math.pi / 2)

_AXES = {"x": np.array([1.0, 0.0, 0.0]), "y": np.array([0.0, 1.0, 0.0]), "z": np.array([0.0, 0.0, 1.0])}


def _default_range(var: AxisVariable) -> tuple[float, float]:
    """Default finite range of a multi-DOF joint's variable [m or rad]."""
    if var.prismatic:
        return BASE_TRANSLATION_RANGE
    return CONTINUOUS_RANGE if var.wraps else PITCH_RANGE


def load_description_text(path: str | Path, xacro_args: Mapping[str, str] | None = None) -> str:
    """Read a URDF/SRDF file; ``*.xacro`` files are expanded with the ``xacro`` package."""
    path = Path(path)
    if not path.is_file():
        raise RobotDescriptionError(f"robot description file not found: {path}")
    if path.suffix == ".xacro":
        import xacro

        try:
            doc = xacro.process_file(str(path), mappings={k: str(v) for k, v in (xacro_args or {}).items()})
        except Exception as exc:  # xacro raises its own XacroException and xml errors
            raise RobotDescriptionError(f"xacro failed on {path}: {exc}") from None
        return doc.toxml()
    return path.read_text()


class RobotModel:
    """Kinematics of a robot for a chosen set of end-effector links.

    Attributes:
        name: robot name from the URDF.
        root_frame: frame all poses are expressed in (the SRDF virtual joint's
            ``parent_frame`` if there is one, else the URDF root link).
        joint_names: active variables, length ``n`` (see module docstring).
        end_effectors: end-effector link names, length ``n_ee``.
        lower, upper: (n,) float64 limits [rad or m].
        urdf, srdf: the parsed descriptions.
    """

    def __init__(
        self,
        urdf: URDFDescription,
        srdf: SRDFDescription | None,
        end_effectors: Sequence[str],
        joint_limits: Mapping[str, Sequence[float]] | None = None,
        name: str | None = None,
        locked_joints: Sequence[str] = (),
    ) -> None:
        self.urdf = urdf
        self.locked_joints = frozenset(locked_joints)
        self.srdf = srdf or SRDFDescription()
        self.name = name or urdf.name
        self.virtual_joint = self._find_virtual_joint()
        known = set(urdf.joints) | {v.name for v in self.srdf.virtual_joints}
        for joint in self.locked_joints - known:
            raise RobotDescriptionError(f"locked joint {joint!r} is not a joint of {self.name!r}")
        self.root_frame = self.virtual_joint.parent_frame if self.virtual_joint else urdf.root
        if not end_effectors:
            raise RobotDescriptionError(
                f"robot {self.name!r}: no end effectors; pass end_effectors or an SRDF with <end_effector>"
            )
        for link in end_effectors:
            if link not in urdf.links:
                raise RobotDescriptionError(f"unknown end-effector link {link!r} in robot {self.name!r}")
        if len(set(end_effectors)) != len(end_effectors):
            raise RobotDescriptionError(f"end effectors listed twice: {list(end_effectors)}")
        self.end_effectors = list(end_effectors)
        self._resolve_variables(joint_limits or {})
        self._trees: dict[tuple[str, ...], KinematicTree] = {}
        self._ee_tree = self.tree(self.end_effectors)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_urdf(
        cls,
        urdf_xml: str,
        srdf_xml: str | Sequence[str] | None = None,
        end_effectors: Sequence[str] | None = None,
        joint_limits: Mapping[str, Sequence[float]] | None = None,
        name: str | None = None,
        locked_joints: Sequence[str] = (),
    ) -> "RobotModel":
        """Build a model from URDF text and optional SRDF text(s) (merged in order).

        ``end_effectors`` defaults to the SRDF ``<end_effector parent_link>``s;
        ``name`` defaults to the URDF robot name; ``locked_joints`` stay passive.
        """
        urdf = parse_urdf(urdf_xml)
        srdf = None
        for text in [srdf_xml] if isinstance(srdf_xml, str) else (srdf_xml or []):
            parsed = parse_srdf(text)
            srdf = parsed if srdf is None else srdf.merge(parsed)
        if end_effectors is None:
            end_effectors = list(dict.fromkeys(e.parent_link for e in (srdf.end_effectors if srdf else [])))
        return cls(urdf, srdf, end_effectors, joint_limits, name, locked_joints)

    @classmethod
    def from_files(
        cls,
        urdf_path: str | Path,
        srdf_paths: str | Path | Sequence[str | Path] | None = None,
        end_effectors: Sequence[str] | None = None,
        joint_limits: Mapping[str, Sequence[float]] | None = None,
        xacro_args: Mapping[str, str] | None = None,
    ) -> "RobotModel":
        """Like :meth:`from_urdf` from files; ``.xacro`` files are expanded with ``xacro_args``."""
        if isinstance(srdf_paths, (str, Path)):
            srdf_paths = [srdf_paths]
        srdf = [load_description_text(p, xacro_args) for p in (srdf_paths or [])]
        return cls.from_urdf(load_description_text(urdf_path, xacro_args), srdf or None, end_effectors, joint_limits)

    # ------------------------------------------------------------------ structure
    def _find_virtual_joint(self) -> VirtualJoint | None:
        matches = [v for v in self.srdf.virtual_joints if v.child_link == self.urdf.root]
        for v in self.srdf.virtual_joints:
            if v.child_link not in self.urdf.links:
                raise RobotDescriptionError(f"SRDF virtual joint {v.name!r} names unknown link {v.child_link!r}")
        return matches[0] if matches else None

    def _moving_virtual_joint(self) -> bool:
        vj = self.virtual_joint
        return vj is not None and vj.type != "fixed" and vj.name not in self.locked_joints

    def _leader(self, joint: JointSpec) -> tuple[JointSpec, float, float]:
        """Follow mimic chains: value(joint) = multiplier * value(leader) + offset."""
        multiplier, offset, seen = 1.0, 0.0, {joint.name}
        while joint.mimic is not None:
            mimic = joint.mimic
            offset = multiplier * mimic.offset + offset
            multiplier *= mimic.multiplier
            joint = self.urdf.joints[mimic.joint]
            if joint.name in seen:
                raise RobotDescriptionError(f"mimic cycle through joint {joint.name!r}")
            seen.add(joint.name)
        return joint, multiplier, offset

    def _resolve_variables(self, overrides: Mapping[str, Sequence[float]]) -> None:
        names: list[str] = []
        ranges: list[tuple[float, float]] = []

        def add(name: str, rng: tuple[float, float]) -> None:
            if name not in names:
                names.append(name)
                ranges.append(rng)

        if self._moving_virtual_joint():
            for var in axes(self.virtual_joint.type):
                add(variable_name(self.virtual_joint.name, var.suffix), _default_range(var))
        for ee in self.end_effectors:
            for joint in self.urdf.path_from_root(ee):
                if joint.type == "fixed":
                    continue
                leader, _, _ = self._leader(joint)
                if leader.name in self.locked_joints:
                    continue
                if leader.type in ("planar", "floating"):
                    for var in axes(leader.type):
                        add(variable_name(leader.name, var.suffix), _default_range(var))
                elif leader.type == "continuous":
                    add(leader.name, CONTINUOUS_RANGE)
                else:
                    add(leader.name, (leader.lower, leader.upper))
        for name, rng in overrides.items():
            if name not in names:
                raise RobotDescriptionError(f"joint_limits names {name!r}, which is not an active joint {names}")
            lo, hi = (float(v) for v in rng)
            if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
                raise RobotDescriptionError(f"joint_limits for {name!r}: bad range {rng}")
            ranges[names.index(name)] = (lo, hi)
        self.joint_names = names
        self._var_index = {n: i for i, n in enumerate(names)}
        self.lower = torch.tensor([r[0] for r in ranges], dtype=torch.float64)
        self.upper = torch.tensor([r[1] for r in ranges], dtype=torch.float64)

    def passive_value(self, joint: JointSpec) -> float:
        """Value of a joint that is not active: MoveIt's default (0 if within its limits, else their middle)."""
        if joint.lower is None:
            return 0.0
        return 0.0 if joint.lower <= 0.0 <= joint.upper else 0.5 * (joint.lower + joint.upper)

    def _build_tree(self, links: Sequence[str]) -> KinematicTree:
        """The :class:`KinematicTree` for these frames (links or the root frame); see :class:`_TreeBuilder`."""
        frame_names = [self.root_frame, *self.urdf.links]
        for link in links:
            if link not in frame_names:
                raise RobotDescriptionError(f"unknown link or frame {link!r} in robot {self.name!r}")
        builder = _TreeBuilder(self, links)
        root_parent = -1
        if self._moving_virtual_joint():
            root_parent = builder.add_axes(self.virtual_joint.name, self.virtual_joint.type, -1, np.eye(4))
        if self.root_frame in links:
            builder.frames[self.root_frame] = FrameSpec(self.root_frame, -1, np.eye(4))
        builder.visit(self.urdf.root, root_parent, np.eye(4))
        return KinematicTree(builder.nodes, [builder.frames[link] for link in links], len(self.joint_names))

    def tree(self, links: Sequence[str]) -> KinematicTree:
        """The compiled (cached) kinematic tree for these frames."""
        key = tuple(links)
        if key not in self._trees:
            self._trees[key] = self._build_tree(key)
        return self._trees[key]

    # ------------------------------------------------------------------ kinematics
    @property
    def n_joints(self) -> int:
        return len(self.joint_names)

    @property
    def link_names(self) -> list[str]:
        return list(self.urdf.links)

    def fk(self, q: torch.Tensor) -> torch.Tensor:
        """(..., n) joint values -> (..., n_ee, 4, 4) end-effector poses in :attr:`root_frame`."""
        return self._ee_tree.forward(q)

    def fk_links(self, q: torch.Tensor, links: Sequence[str]) -> torch.Tensor:
        """(..., n) joint values -> (..., len(links), 4, 4) poses of any links (or the root frame)."""
        return self.tree(links).forward(q)

    def jacobian(self, q: torch.Tensor) -> torch.Tensor:
        """(..., n) -> (..., n_ee, 6, n) geometric Jacobians in the root frame.

        Rows are (v, w): linear velocity of the end-effector origin [m/s per
        unit joint velocity] and angular velocity [rad/s], both in root axes.
        """
        return self._ee_tree.forward(q, with_jacobian=True)[1]

    def fk_and_jacobian(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both :meth:`fk` and :meth:`jacobian` from one pass."""
        return self._ee_tree.forward(q, with_jacobian=True)

    def limits(self, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu"):
        """(lower, upper), each (n,), as tensors of this dtype/device."""
        return self.lower.to(dtype=dtype, device=device), self.upper.to(dtype=dtype, device=device)

    def default_positions(self) -> torch.Tensor:
        """(n,) MoveIt's default state: 0 where the limits hold it, else the middle of the range
        (``JointModel::getVariableDefaultPositions`` of revolute, prismatic and planar/floating variables)."""
        zero_ok = (self.lower <= 0) & (self.upper >= 0)
        return torch.where(zero_ok, torch.zeros_like(self.lower), 0.5 * (self.lower + self.upper))

    def index_of(self, joint_name: str) -> int:
        """Position of an active variable in :attr:`joint_names`."""
        if joint_name not in self._var_index:
            raise RobotDescriptionError(f"{joint_name!r} is not an active joint of {self.name!r}")
        return self._var_index[joint_name]

    # ------------------------------------------------------------------ identity
    def fingerprint(self) -> str:
        """Stable hash of the kinematics (hex sha256, 16 chars).

        Covers every joint's type, parent, child, origin, axis, limits and
        mimic, the virtual joint, the end-effector list and the resolved active
        limits. Independent of XML element order, meshes, colours and inertia.
        """
        def num(x) -> str:
            return f"{float(x):.10g}"

        joints = []
        for joint in sorted(self.urdf.joints.values(), key=lambda j: j.name):
            joints.append([
                joint.name, joint.type, joint.parent, joint.child,
                [num(v) for v in joint.origin[:3].ravel()], [num(v) for v in joint.axis],
                None if joint.lower is None else [num(joint.lower), num(joint.upper)],
                None if joint.mimic is None else [joint.mimic.joint, num(joint.mimic.multiplier),
                                                  num(joint.mimic.offset)],
            ])
        vj = self.virtual_joint
        payload = {
            "locked": sorted(self.locked_joints),
            "joints": joints,
            "virtual_joint": None if vj is None else [vj.name, vj.type, vj.parent_frame, vj.child_link],
            "end_effectors": self.end_effectors,
            "variables": [[n, num(lo), num(hi)] for n, lo, hi in zip(self.joint_names, self.lower, self.upper)],
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def __repr__(self) -> str:
        return (f"RobotModel({self.name!r}, root={self.root_frame!r}, n_joints={self.n_joints}, "
                f"end_effectors={self.end_effectors})")


class _TreeBuilder:
    """Motion nodes and frames of a :class:`KinematicTree` for ``links``, from a walk down the URDF.

    Only the joints on the paths from the root to ``links`` are visited. Fixed
    and passive joints are folded into the ``pending`` (4, 4) transform that
    becomes the next node's origin (or a frame's offset).
    """

    def __init__(self, model: RobotModel, links: Sequence[str]) -> None:
        self.model = model
        self.links = links
        self.needed: set[str] = set()
        for link in links:
            self.needed.update(j.name for j in model.urdf.path_from_root(link))
        self.nodes: list[MotionNode] = []
        self.frames: dict[str, FrameSpec] = {}

    def add_axes(self, prefix: str, jtype: str, parent: int, origin: np.ndarray) -> int:
        """Chain the elementary axes of a planar/floating joint after node ``parent``; returns the last node."""
        for k, var in enumerate(axes(jtype)):
            name = variable_name(prefix, var.suffix)
            self.nodes.append(MotionNode(name, parent, origin if k == 0 else np.eye(4), var.prismatic,
                                         _AXES[var.axis], self.model._var_index[name]))
            parent = len(self.nodes) - 1
        return parent

    def visit(self, link: str, parent: int, pending: np.ndarray) -> None:
        """Add ``link``'s frame (if asked) and, recursively, the needed joints below it.

        ``parent``: node the link moves with (-1: the root); ``pending``: (4, 4)
        parent node frame -> link frame.
        """
        model = self.model
        if link in self.links:
            self.frames[link] = FrameSpec(link, parent, pending)
        for joint in model.urdf.children(link):
            if joint.name not in self.needed:
                continue
            T = pending @ joint.origin
            leader, mult, off = model._leader(joint)
            active = joint.type != "fixed" and (leader.name in model._var_index
                                                or f"{leader.name}/x" in model._var_index)
            if not active:
                value = mult * model.passive_value(leader) + off if joint.type != "fixed" else 0.0
                self.visit(joint.child, parent, T @ _motion(joint, value))
            elif joint.type in ("planar", "floating"):
                if joint.mimic is not None:
                    raise RobotDescriptionError(f"mimic multi-DOF joint {joint.name!r} is not supported")
                self.visit(joint.child, self.add_axes(joint.name, joint.type, parent, T), np.eye(4))
            else:
                self.nodes.append(MotionNode(joint.name, parent, T, joint.type == "prismatic", joint.axis,
                                             model._var_index[leader.name], mult, off))
                self.visit(joint.child, len(self.nodes) - 1, np.eye(4))


def _motion(joint: JointSpec, value: float) -> np.ndarray:
    """(4, 4) motion of a 1-DOF joint at ``value`` (identity for fixed and multi-DOF at rest)."""
    T = np.eye(4)
    if joint.type in ("revolute", "continuous"):
        K = np.array([[0, -joint.axis[2], joint.axis[1]], [joint.axis[2], 0, -joint.axis[0]],
                      [-joint.axis[1], joint.axis[0], 0]])
        T[:3, :3] = np.eye(3) + math.sin(value) * K + (1 - math.cos(value)) * K @ K
    elif joint.type == "prismatic":
        T[:3, 3] = joint.axis * value
    return T
