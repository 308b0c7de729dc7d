"""Frames of a robot: where named frames are, which links can carry an IK target, and pose values.

* :func:`pose_matrix`: a pose given as a (4, 4) matrix or as ``(x, y, z, qx, qy, qz, qw)`` (ROS
  quaternion order) -> validated float64 (4, 4) (:func:`pose_matrices`: many at once). A quaternion whose norm is within
  :data:`QUATERNION_NORM_TOLERANCE` of 1 is normalized; anything else (zero, NaN, far from unit)
  raises :class:`~ikdiffuser_ros.errors.InvalidGoalError`.
* :class:`FrameResolver`: the pose of any frame of the robot tree in the root frame at a joint
  state. An empty frame name (or a leading ``/``) means the root frame. Frames outside the robot
  (``world``, ``map``, ``odom``) are resolved from ``external``: ``{name: T_root_frame (4, 4)}``, which
  the caller fills (the ROS node from tf2 or its fixed-transform parameter).
* :func:`rigid_offsets`: the links that are rigidly attached to an end effector of the model (the
  end effectors themselves included), with their fixed offset ``T_ee_link``: these are the links
  an IK target may name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from ikdiffuser_ros.errors import InvalidGoalError, UnknownFrameError
from ikdiffuser_ros.kinematics.transforms import quat_to_matrix

#: |‖q‖ - 1| up to this is normalized; beyond it the quaternion is rejected.
QUATERNION_NORM_TOLERANCE = 0.1
#: Largest |R^T R - I| entry and |det R - 1| accepted in a pose given as a matrix.
ORTHONORMAL_TOLERANCE = 1e-4


def quaternion_matrix(quat, what: str = "orientation") -> np.ndarray:
    """Validated quaternion ``(x, y, z, w)`` -> (3, 3) float64 rotation (see the module docstring)."""
    q = np.asarray(quat, dtype=np.float64).reshape(-1)
    if q.shape != (4,) or not np.all(np.isfinite(q)):
        raise InvalidGoalError(f"{what}: quaternion must be 4 finite numbers (x, y, z, w), got {q.tolist()}")
    norm = float(np.linalg.norm(q))
    if abs(norm - 1.0) > QUATERNION_NORM_TOLERANCE:
        raise InvalidGoalError(f"{what}: quaternion norm {norm:.6g} is not close to 1 (tolerance "
                               f"{QUATERNION_NORM_TOLERANCE}); send a unit quaternion (x, y, z, w)")
    return quat_to_matrix(q / norm)


def _is_rotation(R: list[list[float]]) -> bool:
    """Whether the 3 x 3 ``R`` (rows as lists) is orthonormal with determinant 1, within ORTHONORMAL_TOLERANCE
    (plain Python: on 9 numbers it is 5x faster than numpy's products, and this runs for every pose of every
    request)."""
    cols = list(zip(*R))
    for i in range(3):
        for j in range(i, 3):
            dot = cols[i][0] * cols[j][0] + cols[i][1] * cols[j][1] + cols[i][2] * cols[j][2]
            if abs(dot - (i == j)) > ORTHONORMAL_TOLERANCE:
                return False
    (a, b, c), (d, e, f), (g, h, k) = R
    return abs(a * (e * k - f * h) - b * (d * k - f * g) + c * (d * h - e * g) - 1) <= ORTHONORMAL_TOLERANCE


def pose_matrix(pose, what: str = "pose") -> np.ndarray:
    """(4, 4) matrix or (7,) ``(x, y, z, qx, qy, qz, qw)`` [m] -> validated (4, 4) float64."""
    try:
        a = np.asarray(pose, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidGoalError(f"{what}: a pose is a (4, 4) matrix or 7 numbers (x, y, z, qx, qy, qz, qw), "
                               f"got {type(pose).__name__}") from None
    if a.shape == (7,):
        if not np.all(np.isfinite(a[:3])):
            raise InvalidGoalError(f"{what}: position has NaN or infinite components {a[:3].tolist()}")
        T = np.eye(4)
        T[:3, :3] = quaternion_matrix(a[3:], what)
        T[:3, 3] = a[:3]
        return T
    if a.shape != (4, 4):
        raise InvalidGoalError(f"{what}: a pose is a (4, 4) matrix or (x, y, z, qx, qy, qz, qw), got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise InvalidGoalError(f"{what}: pose has NaN or infinite entries")
    rows = a.tolist()  # the last row within np.allclose's default tolerances of 0 0 0 1
    if not _is_rotation([r[:3] for r in rows[:3]]) or \
            any(abs(x - y) > 1e-8 + 1e-5 * y for x, y in zip(rows[3], (0, 0, 0, 1))):
        raise InvalidGoalError(f"{what}: not a rigid transform (rotation not orthonormal with det 1 within "
                               f"{ORTHONORMAL_TOLERANCE}, or last row not 0 0 0 1)")
    return a.copy()


def pose_matrices(poses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`pose_matrix` of many poses at once: (..., 7) or (..., 4, 4) float64 -> ((..., 4, 4), ok (...) bool),
    ok False where :func:`pose_matrix` would raise (those rows' matrices are meaningless: give them to
    :func:`pose_matrix` for the error). One numpy pass (64 targets of 2 poses: ~0.1 ms against ~6 ms one at a
    time)."""
    a = np.asarray(poses, dtype=np.float64)
    if a.shape[-1:] == (7,):
        quat = a[..., 3:]
        norm = np.linalg.norm(quat, axis=-1)
        ok = np.isfinite(a).all(-1) & (np.abs(norm - 1.0) <= QUATERNION_NORM_TOLERANCE)
        T = np.zeros((*a.shape[:-1], 4, 4))
        T[..., :3, :3] = quat_to_matrix(quat / np.where(ok, norm, 1.0)[..., None])
        T[..., :3, 3], T[..., 3, 3] = a[..., :3], 1.0
        return T, ok
    if a.shape[-2:] != (4, 4):
        raise ValueError(f"poses of shape {a.shape}: (..., 7) or (..., 4, 4)")
    R = np.nan_to_num(a[..., :3, :3])
    gram = np.abs(np.swapaxes(R, -1, -2) @ R - np.eye(3)).max((-2, -1))
    last = np.abs(a[..., 3, :] - (0, 0, 0, 1)) <= 1e-8 + 1e-5 * np.array([0, 0, 0, 1])
    ok = np.isfinite(a).all((-2, -1)) & (gram <= ORTHONORMAL_TOLERANCE) & last.all(-1) \
        & (np.abs(np.linalg.det(R) - 1) <= ORTHONORMAL_TOLERANCE)
    return a.copy(), ok


class FrameResolver:
    """Poses of the robot's frames in its root frame (see the module docstring).

    ``T_root(frame, q)``: (4, 4) pose of ``frame`` at joint state ``q`` ((n,) float64, default: the
    robot's default state). Unknown frames raise :class:`UnknownFrameError` listing the valid ones.
    """

    def __init__(self, robot) -> None:
        self.robot = robot
        self.root = robot.root_frame
        self._links = set(robot.urdf.links)
        self._default = robot.default_positions()

    def normalize(self, frame: str) -> str:
        """Strip blanks and a leading ``/``; empty -> the root frame."""
        frame = frame.strip()
        if frame.startswith("/"):
            frame = frame[1:]
        return frame or self.root

    def known(self, frame: str) -> bool:
        frame = self.normalize(frame)
        return frame == self.root or frame in self._links

    def valid_frames(self) -> list[str]:
        return [self.root] + sorted(self._links - {self.root})

    def T_root(self, frame: str, q: np.ndarray | None = None, what: str = "",
               external: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """(4, 4) pose of ``frame`` in the root frame at ``q`` (a robot link), or ``external[frame]`` (a frame
        outside the robot, validated); :class:`UnknownFrameError` lists the valid ones."""
        frame = self.normalize(frame)
        if frame == self.root:
            return np.eye(4)
        if frame not in self._links:
            if external and frame in external:
                return pose_matrix(external[frame], f"{what}: transform of frame {frame!r} into the root frame")
            raise UnknownFrameError(frame, self.valid_frames() + sorted(external or {}), what)
        qt = self._default if q is None else torch.as_tensor(np.asarray(q, dtype=np.float64))
        return self.robot.fk_links(qt, [frame])[0].numpy().astype(np.float64)

    def T_root_links(self, links: Sequence[str], q: np.ndarray) -> np.ndarray:
        """(len(links), 4, 4) poses of links at ``q``."""
        return self.robot.fk_links(torch.as_tensor(np.asarray(q, dtype=np.float64)), list(links)).numpy()

    def to_root(self, pose, frame: str, q_ref: np.ndarray | None = None, what: str = "pose",
                external: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """A pose (see :func:`pose_matrix`) expressed in ``frame`` -> validated (4, 4) in the root frame."""
        T = pose_matrix(pose, what)
        if frame == self.root or frame in ("", "/"):  # most requests: no frame to resolve, no product
            return T
        return self.T_root(frame, q_ref, what, external) @ T


def rigid_offsets(robot) -> dict[str, tuple[str, np.ndarray]]:
    """Links rigidly attached to an end effector: ``link -> (end effector, (4, 4) T_ee_link)``.

    A link is rigidly attached to an end effector when the last moving joint on its path from the
    root is the same as the end effector's (e.g. a TCP frame on the same hand). The end effectors
    themselves map to identity. Computed once at the default state (the offset does not depend on it).
    """
    def last_moving(link: str):
        moving = [j.name for j in robot.urdf.path_from_root(link) if j.type != "fixed"]
        return moving[-1] if moving else None

    ee_key = {ee: last_moving(ee) for ee in robot.end_effectors}
    out: dict[str, tuple[str, np.ndarray]] = {ee: (ee, np.eye(4)) for ee in robot.end_effectors}
    wanted = [(link, ee) for link in robot.urdf.links if link not in out
              for ee, key in ee_key.items() if key == last_moving(link)]
    if wanted:
        names = sorted({n for pair in wanted for n in pair})
        T = robot.fk_links(robot.default_positions(), names).numpy()
        idx = {n: i for i, n in enumerate(names)}
        for link, ee in wanted:
            out.setdefault(link, (ee, np.linalg.inv(T[idx[ee]]) @ T[idx[link]]))
    return out
