"""pink (differential IK as a QP on pinocchio) as a peer of ``ikdiffuser bench``: one frame task
per end effector, all solved in *one* whole-body QP per iteration (shared torso and mobile base
included), iterated from the start configuration until every frame is within
:data:`~ikdiffuser_ros.bench.peers.PEER_EPS`, the iteration limit, a stall, or the deadline.

The pinocchio model is the kinematic URDF of :mod:`ikdiffuser_ros.bench.peers` with every joint
that is not one of ours locked at its passive value (``buildReducedModel``); continuous joints
are pinocchio's (cos, sin) pairs, converted here.
"""

from __future__ import annotations

import time

import numpy as np

from ikdiffuser_ros.bench.peers import PEER_EPS, kinematic_urdf, peer_model, wrap_continuous
from ikdiffuser_ros.kinematics.robot_model import RobotModel


class PinkPeer:
    """pink ``solve_ik`` with daqp, ``FrameTask`` per end effector, ``ConfigurationLimit``."""

    name = "pink"

    def __init__(self, model: RobotModel, urdf_xml: str, max_iterations: int = 100, patience: int = 10) -> None:
        import pinocchio as pin
        import pink
        import pink.exceptions
        from pink.limits import ConfigurationLimit
        from pink.tasks import FrameTask

        self.pin, self.pink = pin, pink
        self.model = peer_model(model, urdf_xml)
        self.max_iterations, self.patience = max_iterations, patience
        self.description = (f"pink {pink.__version__} solve_ik (daqp), one FrameTask per end effector in one QP, "
                            f"ConfigurationLimit, dt 1, up to {max_iterations} iterations per attempt, "
                            f"|e| < {PEER_EPS:g}")
        full = pin.buildModelFromXML(kinematic_urdf(model, urdf_xml))
        ours = set(self.model.joint_names)
        q_ref = pin.neutral(full)
        lock = []
        for jid in range(1, full.njoints):
            if full.names[jid] not in ours:
                lock.append(jid)
                joint = self.model.urdf.joints.get(full.names[jid])
                if joint is not None and full.joints[jid].nq == 1:
                    q_ref[full.joints[jid].idx_q] = self.model.passive_value(joint)
        self.pin_model = pin.buildReducedModel(full, lock, q_ref)
        self.data = self.pin_model.createData()
        self.slots = [(self.pin_model.joints[self.pin_model.getJointId(n)].idx_q,
                       self.pin_model.joints[self.pin_model.getJointId(n)].nq) for n in self.model.joint_names]
        self.tasks = [FrameTask(ee, position_cost=1.0, orientation_cost=1.0) for ee in self.model.end_effectors]
        self.limits = [ConfigurationLimit(self.pin_model)]

    def _to_pin(self, q: np.ndarray) -> np.ndarray:
        """Our q (n,) -> pinocchio configuration (nq,)."""
        out = np.zeros(self.pin_model.nq)
        for v, (i, nq) in zip(q, self.slots):
            out[i:i + nq] = v if nq == 1 else (np.cos(v), np.sin(v))
        return out

    def _from_pin(self, x: np.ndarray) -> np.ndarray:
        """pinocchio configuration (nq,) -> our q (n,)."""
        return np.array([x[i] if nq == 1 else np.arctan2(x[i + 1], x[i]) for i, nq in self.slots])

    def _error(self, configuration, targets: list) -> float:
        """Largest position [m] or rotation [rad] error over the end effectors."""
        worst = 0.0
        for task, target in zip(self.tasks, targets):
            T = configuration.get_transform_frame_to_world(task.frame)
            pos = np.linalg.norm(T.translation - target.translation)
            rot = np.linalg.norm(self.pin.log3(T.rotation.T @ target.rotation))
            worst = max(worst, pos, rot)
        return worst

    def attempt(self, targets: np.ndarray, q0: np.ndarray, deadline: float) -> np.ndarray | None:
        pin, pink = self.pin, self.pink
        goals = [pin.SE3(T[:3, :3].copy(), T[:3, 3].copy()) for T in targets]
        for task, goal in zip(self.tasks, goals):
            task.set_target(goal)
        configuration = pink.Configuration(self.pin_model, self.data, self._to_pin(q0))
        best, stalled = np.inf, 0
        for _ in range(self.max_iterations):
            err = self._error(configuration, goals)
            if err < PEER_EPS:
                return wrap_continuous(self.model, self._from_pin(configuration.q))
            stalled = 0 if err < 0.9 * best else stalled + 1
            best = min(best, err)
            if stalled > self.patience or time.perf_counter() > deadline:
                return None
            try:
                v = pink.solve_ik(configuration, self.tasks, 1.0, solver="daqp", limits=self.limits,
                                  safety_break=False)
            except pink.exceptions.NoSolutionFound:
                return None
            configuration.integrate_inplace(v, 1.0)
        return None
