"""Peer IK solvers for ``ikdiffuser bench``: KDL, TRAC-IK, robotics-toolbox ``ik_LM`` (serial
chains) and pink (whole body, in :mod:`ikdiffuser_ros.bench.pink_peer`).

Every peer answers one *attempt*: ``attempt(targets (E, 4, 4), q0 (n,), deadline) -> q (n,) | None``,
starting from ``q0`` (our joint order, within limits) and returning a configuration the peer
itself calls a solution, or None. Random restarts and time budgets are the protocols' business
(:mod:`ikdiffuser_ros.bench.protocols`); the bench verifies every answer with our float64 FK.

The peers are optional (``requirements/bench.txt``; KDL is Debian's ``python3-pykdl``): they are
imported only when a peer is built, and :func:`~ikdiffuser_ros.bench.peer_registry.build_peers` skips the ones that fail to
import, with a note.

Peers see a *kinematic URDF* (:func:`kinematic_urdf`): the robot's URDF without visual or
collision geometry, with our joint limits written into every active joint (so no peer reads
limits of its own, e.g. TRAC-IK's zeros for joints with ``<safety_controller>``), and with an
SRDF planar virtual joint (dual_ur5_mobile's base) expanded into real joints ``<name>_x``,
``<name>_y`` (prismatic) and ``<name>_theta`` (continuous) under the virtual joint's parent frame.
Continuous joints are wrapped to [-pi, pi] in every answer.

Serial-chain peers solve a multi-arm target *arm after arm*, as a user of a chain solver would:
the first end effector's chain runs from the root; each later one starts at the deepest link
whose joints are already solved (a shared torso or mobile base keeps the first arm's values).
"""

from __future__ import annotations

import copy
import math
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from ikdiffuser_ros.kinematics import joint_names as jn
from ikdiffuser_ros.kinematics.robot_model import RobotModel
from ikdiffuser_ros.kinematics.urdf import JointSpec

DEBIAN_DIST_PACKAGES = "/usr/lib/python3/dist-packages"
#: Convergence tolerance handed to the peers (TRAC-IK / KDL eps; rtb and pink: error norm) [m, rad].
PEER_EPS = 1e-6


class Peer(Protocol):
    """What the protocols need from a peer."""

    name: str
    #: one line: algorithm and settings, for the docs.
    description: str
    #: our model of the kinematic URDF (same joint order as the benchmarked model).
    model: RobotModel

    def attempt(self, targets: np.ndarray, q0: np.ndarray, deadline: float) -> np.ndarray | None:
        """targets (E, 4, 4) in the root frame, q0 (n,) -> q (n,) the peer calls a solution, or None."""


# ---------------------------------------------------------------------------- kinematic URDF
def _planar_expansion(model: RobotModel) -> list[ET.Element]:
    """Links and joints replacing a moving SRDF planar virtual joint (empty when there is none)."""
    vj = model.virtual_joint
    if vj is None or vj.type == "fixed" or vj.name in model.locked_joints:
        return []
    if vj.type != "planar":
        raise ValueError(f"{model.name}: peers support a planar virtual joint only, not {vj.type!r}")
    variables = [jn.variable_name(vj.name, v.suffix) for v in jn.PLANAR]
    between = [f"{jn.flat_name(var)}_link" for var in variables[:-1]]  # links between the new joints
    elements = [ET.Element("link", name=name) for name in [vj.parent_frame] + between]
    for var, axis, parent, child in zip(variables, jn.PLANAR, [vj.parent_frame] + between, between + [vj.child_link]):
        joint = ET.Element("joint", name=jn.flat_name(var), type="prismatic" if axis.prismatic else "continuous")
        ET.SubElement(joint, "parent", link=parent)
        ET.SubElement(joint, "child", link=child)
        ET.SubElement(joint, "axis", xyz=" ".join("1" if a == axis.axis else "0" for a in "xyz"))
        k = model.index_of(var)
        ET.SubElement(joint, "limit", lower=repr(float(model.lower[k])), upper=repr(float(model.upper[k])),
                      effort="100", velocity="1")
        elements.append(joint)
    return elements


def kinematic_urdf(model: RobotModel, urdf_xml: str) -> str:
    """The URDF the peers load (see the module docstring): no geometry, our limits, planar base expanded."""
    root = ET.fromstring(urdf_xml)
    for tag in ("transmission", "gazebo"):
        for el in root.findall(tag):
            root.remove(el)
    for link in root.findall("link"):
        for tag in ("visual", "collision"):
            for el in link.findall(tag):
                link.remove(el)
    for joint in root.findall("joint"):
        name = joint.get("name")
        if name in model.joint_names and joint.get("type") in ("revolute", "prismatic"):
            for el in joint.findall("limit") + joint.findall("safety_controller"):
                joint.remove(el)
            k = model.index_of(name)
            ET.SubElement(joint, "limit", lower=repr(float(model.lower[k])), upper=repr(float(model.upper[k])),
                          effort="100", velocity="1")
    root.extend(_planar_expansion(model))
    return ET.tostring(root, encoding="unicode")


def peer_model(model: RobotModel, urdf_xml: str) -> RobotModel:
    """Our :class:`RobotModel` of the kinematic URDF; same joint order as ``model`` (multi-DOF variables
    named by :func:`~ikdiffuser_ros.kinematics.joint_names.flat_name`)."""
    kin = RobotModel.from_urdf(kinematic_urdf(model, urdf_xml), None, model.end_effectors,
                               name=model.name, locked_joints=model.locked_joints)
    expected = [jn.flat_name(n) for n in model.joint_names]
    if kin.joint_names != expected:
        raise ValueError(f"{model.name}: kinematic URDF joint order {kin.joint_names} != {expected}")
    return kin


# ---------------------------------------------------------------------------- serial chains
@dataclass
class ArmSegment:
    """One serial piece of the solve: joints from ``base`` to ``tip``.

    ``joints`` are the URDF joints on the path (fixed ones included);
    ``var_index`` maps each movable one to its column in the model's q.
    """

    ee_index: int
    base: str
    tip: str
    joints: list[JointSpec]
    var_index: list[int]


def arm_segments(model: RobotModel) -> list[ArmSegment]:
    """Split the model's end effectors into serial chains solved one after another."""
    solved: set[str] = set()
    segments = []
    for e, ee in enumerate(model.end_effectors):
        path = model.urdf.path_from_root(ee)
        start = max((i + 1 for i, j in enumerate(path) if j.name in solved), default=0)
        joints = path[start:]
        base = joints[0].parent if joints else ee
        movable = [j for j in joints if j.type != "fixed"]
        if any(j.mimic is not None for j in movable):
            raise ValueError(f"{model.name}: mimic joints on the arm chain are not supported by the peers")
        segments.append(ArmSegment(e, base, ee, joints, [model.index_of(j.name) for j in movable]))
        solved.update(j.name for j in movable)
    return segments


def wrap_continuous(model: RobotModel, q: np.ndarray) -> np.ndarray:
    """q (n,) with continuous joints wrapped to [-pi, pi] (in place, returned)."""
    for k, name in enumerate(model.joint_names):
        if model.urdf.joints[name].type == "continuous":
            q[k] = math.remainder(q[k], 2 * math.pi)
    return q


class SerialPeer:
    """Arm-after-arm solve over :func:`arm_segments`; subclasses set ``name`` and ``description``
    and implement :meth:`solve_chain`."""

    def __init__(self, model: RobotModel, urdf_xml: str) -> None:
        self.model = peer_model(model, urdf_xml)
        self.kin_xml = kinematic_urdf(model, urdf_xml)
        self.segments = arm_segments(self.model)
        self.lower, self.upper = self.model.lower.numpy(), self.model.upper.numpy()

    def solve_chain(self, k: int, T_base_target: np.ndarray, seed: np.ndarray, deadline: float) -> np.ndarray | None:
        """Segment ``k``: (4, 4) target in its base frame, seed (m,) -> (m,) joint values or None."""
        raise NotImplementedError

    def _base_pose(self, segment: ArmSegment, q: np.ndarray) -> np.ndarray:
        """(4, 4) pose of the segment base in the root frame at configuration q (n,)."""
        if segment.base == self.model.urdf.root:
            return np.eye(4)
        return self.model.fk_links(torch.from_numpy(q), [segment.base])[0].numpy()

    def attempt(self, targets: np.ndarray, q0: np.ndarray, deadline: float) -> np.ndarray | None:
        q = q0.copy()
        for k, seg in enumerate(self.segments):
            T_base_target = np.linalg.inv(self._base_pose(seg, q)) @ targets[seg.ee_index]
            sol = self.solve_chain(k, T_base_target, q[seg.var_index], deadline)
            if sol is None:
                return None
            q[seg.var_index] = sol
        return wrap_continuous(self.model, q)


def import_pykdl():
    """PyKDL module, or None when python3-pykdl is not installed."""
    try:
        import PyKDL

        return PyKDL
    except ImportError:
        if DEBIAN_DIST_PACKAGES not in sys.path:
            sys.path.append(DEBIAN_DIST_PACKAGES)
        try:
            import PyKDL

            return PyKDL
        except ImportError:
            return None


class KDLPeer(SerialPeer):
    """Orocos KDL ``ChainIkSolverPos_NR_JL`` (Newton-Raphson with joint limits), one chain per arm."""

    name = "kdl"

    def __init__(self, model: RobotModel, urdf_xml: str, max_iterations: int = 100) -> None:
        super().__init__(model, urdf_xml)
        kdl = import_pykdl()
        if kdl is None:
            raise ImportError("PyKDL is not available (apt-get install python3-pykdl)")
        self.kdl = kdl
        self.description = f"KDL ChainIkSolverPos_NR_JL, eps {PEER_EPS:g}, {max_iterations} iterations per attempt"
        self.solvers = []
        for seg in self.segments:
            chain = self._chain(seg)
            n = chain.getNrOfJoints()
            q_min, q_max = kdl.JntArray(n), kdl.JntArray(n)
            for k, v in enumerate(seg.var_index):
                q_min[k], q_max[k] = self.lower[v], self.upper[v]
            fk = kdl.ChainFkSolverPos_recursive(chain)
            vel = kdl.ChainIkSolverVel_pinv(chain)
            ik = kdl.ChainIkSolverPos_NR_JL(chain, q_min, q_max, fk, vel, max_iterations, PEER_EPS)
            # KDL solvers keep C++ references to the chain, limits and sub-solvers: keep them alive.
            self.solvers.append((ik, n, (chain, q_min, q_max, fk, vel)))

    def _frame(self, T: np.ndarray):
        kdl = self.kdl
        return kdl.Frame(kdl.Rotation(*T[:3, :3].ravel().tolist()), kdl.Vector(*T[:3, 3].tolist()))

    def _chain(self, seg: ArmSegment):
        kdl = self.kdl
        chain = kdl.Chain()
        for joint in seg.joints:
            origin = self._frame(joint.origin)
            axis = kdl.Vector(*joint.axis.tolist())
            if joint.type in ("revolute", "continuous"):
                kj = kdl.Joint(joint.name, origin.p, origin.M * axis, kdl.Joint.RotAxis)
            elif joint.type == "prismatic":
                kj = kdl.Joint(joint.name, origin.p, origin.M * axis, kdl.Joint.TransAxis)
            else:
                kj = kdl.Joint(joint.name, kdl.Joint.Fixed)
            chain.addSegment(kdl.Segment(joint.child, kj, origin))
        return chain

    def solve_chain(self, k, T_base_target, seed, deadline):
        ik, n, _ = self.solvers[k]
        q_in, q_out = self.kdl.JntArray(n), self.kdl.JntArray(n)
        for i, v in enumerate(seed):
            q_in[i] = v
        if ik.CartToJnt(q_in, self._frame(T_base_target), q_out) < 0:
            return None
        return np.array([q_out[i] for i in range(n)])


class TracIKPeer(SerialPeer):
    """TRAC-IK (``pytracik``, Speed mode: KDL Newton and NLopt SQP in two threads, each with its own
    random restarts, until one converges or the timeout), one chain per arm."""

    name = "trac_ik"

    def __init__(self, model: RobotModel, urdf_xml: str, timeout: float = 0.005) -> None:
        import pytracik

        super().__init__(model, urdf_xml)
        self.pytracik = pytracik
        self.description = (f"TRAC-IK (pytracik), Speed, eps {PEER_EPS:g}, timeout per call = the per-target "
                            f"budget ({timeout * 1e3:g} ms), our joint limits set explicitly")
        self.solvers = []
        for seg in self.segments:
            solver = pytracik.TRAC_IK(seg.base, seg.tip, self.kin_xml, timeout, PEER_EPS, pytracik.SolveType.Speed)
            if pytracik.get_num_joints(solver) != len(seg.var_index):
                raise ValueError(f"TRAC-IK chain {seg.base} -> {seg.tip} has an unexpected joint count")
            pytracik.set_joint_limits(solver, self.lower[seg.var_index].tolist(), self.upper[seg.var_index].tolist())
            self.solvers.append(solver)

    def solve_chain(self, k, T_base_target, seed, deadline):
        from scipy.spatial.transform import Rotation

        x, y, z, w = Rotation.from_matrix(T_base_target[:3, :3]).as_quat()
        p = T_base_target[:3, 3]
        r = self.pytracik.ik(self.solvers[k], np.ascontiguousarray(seed), p[0], p[1], p[2], x, y, z, w)
        return np.asarray(r[1:]) if r[0] >= 0 else None


class RTBPeer(SerialPeer):
    """robotics-toolbox-python ``ETS.ik_LM`` (C++ Levenberg-Marquardt, Chan's damping, joint
    limits on), one chain per arm, one search (``slimit=1``) per attempt."""

    name = "rtb_ik_LM"

    def __init__(self, model: RobotModel, urdf_xml: str, ilimit: int = 30) -> None:
        import roboticstoolbox as rtb
        from roboticstoolbox.models.URDF.URDFRobot import URDF_read

        super().__init__(model, urdf_xml)
        self.ilimit = ilimit
        # ik_LM's tol bounds E = 0.5 e^T e; PEER_EPS on |e| means tol = PEER_EPS^2 / 2.
        self.tol = PEER_EPS**2 / 2
        self.description = f"robotics-toolbox ETS.ik_LM, method chan, ilimit {ilimit}, slimit 1, |e| < {PEER_EPS:g}"
        with tempfile.NamedTemporaryFile("w", suffix=".urdf") as f:
            f.write(self.kin_xml)
            f.flush()
            links, name, _ = URDF_read(f.name)
        robot = rtb.Robot(links, name=name)
        self.chains = [self._chain(rtb, robot, seg) for seg in self.segments]

    def _chain(self, rtb, robot, seg: ArmSegment):
        """The segment's ETS, numbered from 0: the root -> tip ETS after the joints solved before it
        (rtb's ``ets(start=link)`` would include the joint that moves ``start``)."""
        elements = list(robot.ets(start=self.model.urdf.root, end=seg.tip))
        joints = [i for i, et in enumerate(elements) if et.isjoint]
        n_before = len(joints) - len(seg.var_index)
        if n_before < 0:
            raise ValueError(f"rtb chain to {seg.tip} has {len(joints)} joints, expected >= {len(seg.var_index)}")
        elements = [copy.deepcopy(et) for et in elements[joints[n_before - 1] + 1 if n_before else 0:]]
        for k, et in enumerate(e for e in elements if e.isjoint):
            et.jindex = k
        return rtb.ETS(elements)

    def solve_chain(self, k, T_base_target, seed, deadline):
        sol = self.chains[k].ik_LM(T_base_target, q0=seed, ilimit=self.ilimit, slimit=1, tol=self.tol,
                                   joint_limits=True)
        return np.asarray(sol.q, dtype=np.float64) if sol.success else None


def restart_until(peer: Peer, targets: np.ndarray, rng: np.random.Generator, deadline: float) -> np.ndarray | None:
    """Random restarts (uniform within limits) of ``peer`` until it answers or ``deadline``
    (``time.perf_counter()``). targets (E, 4, 4) -> q (n,) or None."""
    lower, upper = peer.model.lower.numpy(), peer.model.upper.numpy()
    while time.perf_counter() < deadline:
        q = peer.attempt(targets, lower + (upper - lower) * rng.random(lower.shape[0]), deadline)
        if q is not None:
            return q
    return None
