"""Peer IK solvers for ``ikdiffuser bench``: Orocos KDL and pytorch_kinematics.

Both are serial-chain solvers. A multi-arm target is solved *arm after arm*:
the first end effector's chain runs from the root; each later one starts at
the deepest link whose joints are all solved already (shared torso joints keep
the first arm's values), as MoveIt's subgroup fallback does.

KDL is Debian's ``python3-pykdl`` (the Orocos KDL that MoveIt's default plugin
uses), built for the system Python 3.11; its folder is appended to
``sys.path`` when it is not importable otherwise.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ikdiffuser_ros.kinematics.robot_model import RobotModel
from ikdiffuser_ros.kinematics.urdf import JointSpec

DEBIAN_DIST_PACKAGES = "/usr/lib/python3/dist-packages"


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
    if model.virtual_joint is not None and any("/" in n for n in model.joint_names):
        raise ValueError(f"{model.name}: peers solve URDF chains only; a moving virtual joint is not supported")
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


def _base_pose(model: RobotModel, segment: ArmSegment, q: np.ndarray) -> np.ndarray:
    """(4, 4) pose of the segment base in the root frame at configuration ``q`` (n,)."""
    return model.fk_links(torch.as_tensor(q, dtype=torch.float64), [segment.base])[0].numpy()


class KDLPeer:
    """KDL ``ChainIkSolverPos_NR_JL`` (Newton-Raphson with joint limits) with random restarts."""

    name = "kdl"

    def __init__(self, model: RobotModel, max_iterations: int = 100, eps: float = 1e-6) -> None:
        kdl = import_pykdl()
        if kdl is None:
            raise RuntimeError("PyKDL is not available (apt-get install python3-pykdl)")
        self.kdl, self.model = kdl, model
        self.segments = arm_segments(model)
        self.solvers = []
        lower, upper = model.lower.numpy(), model.upper.numpy()
        for seg in self.segments:
            chain = self._chain(seg)
            n = chain.getNrOfJoints()
            q_min, q_max = kdl.JntArray(n), kdl.JntArray(n)
            for k, v in enumerate(seg.var_index):
                q_min[k], q_max[k] = lower[v], upper[v]
            fk = kdl.ChainFkSolverPos_recursive(chain)
            vel = kdl.ChainIkSolverVel_pinv(chain)
            ik = kdl.ChainIkSolverPos_NR_JL(chain, q_min, q_max, fk, vel, max_iterations, eps)
            # KDL solvers keep C++ references to the chain, limits and sub-solvers: keep them alive.
            self.solvers.append((ik, n, (chain, q_min, q_max, fk, vel)))

    def _frame(self, T: np.ndarray):
        kdl = self.kdl
        rot = kdl.Rotation(*T[:3, :3].ravel().tolist())
        return kdl.Frame(rot, kdl.Vector(*T[:3, 3].tolist()))

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

    def solve_one(self, targets: np.ndarray, rng: np.random.Generator, deadline: float,
                  max_attempts: int | None = None) -> np.ndarray | None:
        """One solution for (E, 4, 4) targets: random restarts until solved, ``deadline``
        (``time.perf_counter()`` value) or ``max_attempts``. Returns q (n,) or None."""
        kdl, model = self.kdl, self.model
        lower, upper = model.lower.numpy(), model.upper.numpy()
        attempts = 0
        while time.perf_counter() < deadline and (max_attempts is None or attempts < max_attempts):
            attempts += 1
            q = lower + (upper - lower) * rng.random(model.n_joints)
            ok = True
            for seg, (ik, n, _) in zip(self.segments, self.solvers):
                T_base_target = np.linalg.inv(_base_pose(model, seg, q)) @ targets[seg.ee_index]
                seed, out = kdl.JntArray(n), kdl.JntArray(n)
                for k, v in enumerate(seg.var_index):
                    seed[k] = q[v]
                if ik.CartToJnt(seed, self._frame(T_base_target), out) < 0:
                    ok = False
                    break
                for k, v in enumerate(seg.var_index):
                    q[v] = out[k]
            if ok:
                return q
        return None


class PytorchKinematicsPeer:
    """pytorch_kinematics ``PseudoInverseIK`` (batched, random restarts) per arm chain."""

    name = "pytorch_kinematics"

    def __init__(self, model: RobotModel, urdf_xml: str, num_retries: int = 32, max_iterations: int = 100,
                 pos_tolerance: float = 1e-5, rot_tolerance: float = 1e-4) -> None:
        import re

        import pytorch_kinematics as pk

        logging.getLogger("pytorch_kinematics").setLevel(logging.ERROR)
        self.model = model
        self.segments = arm_segments(model)
        xml = re.sub(r"<transmission.*?</transmission>", "", urdf_xml, flags=re.S).encode()
        self.iks = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for seg in self.segments:
                chain = pk.build_serial_chain_from_urdf(xml, seg.tip, seg.base).to(dtype=torch.float64)
                names = chain.get_joint_parameter_names()
                order = [model.index_of(nm) for nm in names]
                limits = torch.stack([model.lower[order], model.upper[order]], -1)
                ik = pk.PseudoInverseIK(chain, max_iterations=max_iterations, num_retries=num_retries,
                                        joint_limits=limits, early_stopping_any_converged=True,
                                        pos_tolerance=pos_tolerance, rot_tolerance=rot_tolerance)
                self.iks.append((seg, order, ik))
        self.pk = pk

    def solve_batch(self, targets: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, E, 4, 4) targets -> (q (B, n), converged (B,)) taking the best retry per target."""
        B = targets.shape[0]
        lower, upper = self.model.lower, self.model.upper
        q = lower + (upper - lower) * torch.rand(B, self.model.n_joints, generator=generator, dtype=torch.float64)
        ok = torch.ones(B, dtype=torch.bool)
        for seg, order, ik in self.iks:
            T_root_base = self.model.fk_links(q, [seg.base])[:, 0]
            T_base_target = torch.linalg.inv(T_root_base) @ targets[:, seg.ee_index]
            sol = ik.solve(self.pk.Transform3d(matrix=T_base_target, dtype=torch.float64))
            err = sol.err_pos + sol.err_rot  # (B, retries)
            best = err.argmin(-1)
            q[:, order] = sol.solutions[torch.arange(B), best].to(torch.float64)
            ok &= sol.converged[torch.arange(B), best]
        return q, ok

    def solve_many(self, target: torch.Tensor, num: int, generator: torch.Generator) -> torch.Tensor:
        """``num`` solutions (num, n) for one (E, 4, 4) target from ``num`` random initial configurations.

        pytorch_kinematics shares its retry configurations across problems, so an
        arm whose base does not move with earlier arms is solved as *one* problem
        with ``num`` retries; an arm on a base that earlier arms moved (a shared
        torso) is solved as ``num`` problems sharing one random initial guess.
        """
        lower, upper = self.model.lower, self.model.upper
        q = lower + (upper - lower) * torch.rand(num, self.model.n_joints, generator=generator, dtype=torch.float64)
        for seg, order, ik in self.iks:
            T_root_base = self.model.fk_links(q, [seg.base])[:, 0]
            T_base_target = torch.linalg.inv(T_root_base) @ target[seg.ee_index]
            if torch.allclose(T_root_base, T_root_base[:1].expand_as(T_root_base)):
                saved = (ik.num_retries, ik.initial_config, ik.early_stopping_any_converged)
                ik.num_retries, ik.initial_config, ik.early_stopping_any_converged = num, q[:, order].clone(), False
                sol = ik.solve(self.pk.Transform3d(matrix=T_base_target[:1], dtype=torch.float64))
                ik.num_retries, ik.initial_config, ik.early_stopping_any_converged = saved
                q[:, order] = sol.solutions[0].to(torch.float64)
            else:
                sol = ik.solve(self.pk.Transform3d(matrix=T_base_target, dtype=torch.float64))
                q[:, order] = sol.solutions[:, 0].to(torch.float64)
        return q
