"""Pure message <-> array conversions for the ROS layer (no node, no I/O).

Everything here takes message objects (or plain values) and returns numpy
arrays / :mod:`ikdiffuser_ros.collision.world` dataclasses. Bad input raises
the core's typed errors (:mod:`ikdiffuser_ros.errors`); the node maps them to
error codes in one table (:mod:`ikdiffuser_ros.ros.error_codes`).

Conventions are the core's: poses are float64 ``(4, 4)`` transforms, quaternions
ROS order ``(x, y, z, w)``, validated by :func:`ikdiffuser_ros.kinematics.frames.pose_matrix`
(norm within :data:`~ikdiffuser_ros.kinematics.frames.QUATERNION_NORM_TOLERANCE` of 1);
Euler angles of planar/floating joints are ``Rz(yaw) Ry(pitch) Rx(roll)``
(:func:`ikdiffuser_ros.kinematics.transforms.euler_zyx_to_matrix`).
"""

from __future__ import annotations

import array
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from geometry_msgs.msg import Pose, Transform
from sensor_msgs.msg import JointState, MultiDOFJointState

from ikdiffuser_ros.collision.world import Shape, WorldObject, mesh_obb, validated_shape
from ikdiffuser_ros.errors import InvalidRequestError, InvalidRobotStateError
from ikdiffuser_ros.kinematics.frames import pose_matrix
from ikdiffuser_ros.kinematics.joint_names import axis_of, split
from ikdiffuser_ros.kinematics.transforms import euler_zyx_to_matrix, matrix_to_euler_zyx, matrix_to_quat

if TYPE_CHECKING:  # message types used in annotations only (moveit_msgs is optional at run time)
    from builtin_interfaces.msg import Duration
    from moveit_msgs.msg import CollisionObject
    from shape_msgs.msg import Mesh, SolidPrimitive

    from ikdiffuser_ros.kinematics.robot_model import RobotModel

#: Axis letters in coordinate order: a translation along ``"y"`` is ``T[1, 3]``.
_AXES = "xyz"


# ---------------------------------------------------------------------- scalars
def duration_to_seconds(duration: Duration) -> float:
    """builtin_interfaces/Duration -> seconds (``sec`` may be negative; ``nanosec`` is added)."""
    return float(duration.sec) + float(duration.nanosec) * 1e-9


def seconds_to_duration_fields(seconds: float) -> tuple[int, int]:
    """Seconds -> (sec, nanosec) with 0 <= nanosec < 1e9."""
    sec = math.floor(seconds)
    nanosec = int(round((seconds - sec) * 1e9))
    if nanosec >= 1_000_000_000:
        sec, nanosec = sec + 1, nanosec - 1_000_000_000
    return int(sec), nanosec


def budget_window(budget: float, cap: float, start: float | None, received: float | None
                  ) -> tuple[float | None, float]:
    """(``IKQuery.start``, ``IKQuery.timeout``) of a request: ``budget`` [s] from ``start`` (when its solve
    starts, ``time.monotonic()``), but ending at most ``cap`` [s] after ``received`` (when it arrived), so
    a request that waited for the solver is still answered within ``cap`` of its arrival. ``start``
    None: ``budget`` from when the pipeline starts; ``received`` None: it arrived at ``start``."""
    if start is None:
        return None, min(budget, cap)
    received = start if received is None else received
    return received, min(start - received + budget, cap)


# ---------------------------------------------------------------------- poses
def pose_values(pose: Pose) -> np.ndarray:
    """geometry_msgs/Pose -> (7,) ``(x, y, z, qx, qy, qz, qw)`` as sent (not validated)."""
    p, o = pose.position, pose.orientation
    return np.array([p.x, p.y, p.z, o.x, o.y, o.z, o.w], dtype=np.float64)


def pose_to_matrix(pose: Pose, what: str = "pose") -> np.ndarray:
    """geometry_msgs/Pose -> validated (4, 4) float64 (InvalidGoalError on NaN or a bad quaternion)."""
    return pose_matrix(pose_values(pose), what)


def transform_to_matrix(transform: Transform, what: str = "transform") -> np.ndarray:
    """geometry_msgs/Transform -> validated (4, 4)."""
    t, r = transform.translation, transform.rotation
    return pose_matrix(np.array([t.x, t.y, t.z, r.x, r.y, r.z, r.w], dtype=np.float64), what)


def matrix_to_quaternion(R: np.ndarray) -> tuple[float, float, float, float]:
    """(3, 3) rotation -> (x, y, z, w) with w >= 0."""
    q = matrix_to_quat(torch.as_tensor(np.asarray(R, dtype=np.float64))).numpy()
    return float(q[0]), float(q[1]), float(q[2]), float(q[3])


def matrix_to_pose(T: np.ndarray) -> Pose:
    """(4, 4) -> geometry_msgs/Pose."""
    pose = Pose()
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in T[:3, 3])
    (pose.orientation.x, pose.orientation.y, pose.orientation.z,
     pose.orientation.w) = matrix_to_quaternion(T[:3, :3])
    return pose


# ---------------------------------------------------------------------- robot state
class JointStateLayout:
    """How joint names in messages map onto a :class:`RobotModel`'s variables.

    ``joint_names`` (active variables, the solver's order) plus the *passive*
    single-DOF URDF joints (head, fingers...) that a full MoveIt RobotState
    also carries. Multi-DOF variables (``base/x``...) are active variables too.
    """

    def __init__(self, robot: RobotModel) -> None:
        self.robot = robot
        self.active = list(robot.joint_names)
        self.index = {n: i for i, n in enumerate(self.active)}
        self.passive: dict[str, float] = {}
        for joint in robot.urdf.joints.values():
            if joint.type in ("fixed", "planar", "floating") or joint.name in self.index:
                continue
            if joint.mimic is not None:
                continue
            self.passive[joint.name] = robot.passive_value(joint)
        # multi-DOF joints: joint name -> its variables' names (kinematics/joint_names.py)
        self.multi_dof: dict[str, list[str]] = {}
        for name in self.active:
            joint, axis = split(name)
            if axis is not None:
                self.multi_dof.setdefault(joint, []).append(name)
        self.default = robot.default_positions().numpy().astype(np.float64)

    def known(self, name: str) -> bool:
        return name in self.index or name in self.passive

    def from_joint_state(self, msg: JointState, base: np.ndarray | None = None, what: str = "seed state"
                         ) -> tuple[np.ndarray, dict[str, float], list[str]]:
        """sensor_msgs/JointState -> ((n,) active values, {passive name: value}, names given).

        Active joints not named keep ``base`` (default: the default state).
        Unknown names, NaN values or a name/position length mismatch raise
        :class:`InvalidRobotStateError`.
        """
        q = (self.default if base is None else np.asarray(base, dtype=np.float64)).copy()
        passive: dict[str, float] = {}
        names = list(msg.name)
        positions = list(msg.position)
        if len(names) != len(positions):
            raise InvalidRobotStateError(f"{what}: {len(names)} joint names but {len(positions)} positions")
        unknown = [n for n in names if not self.known(n)]
        if unknown:
            raise InvalidRobotStateError(f"{what}: unknown joint(s) {unknown}; the robot's joints are {self.active}"
                               + (f" plus passive {sorted(self.passive)}" if self.passive else ""))
        if len(set(names)) != len(names):
            raise InvalidRobotStateError(f"{what}: a joint is named twice")
        for name, value in zip(names, positions):
            if not math.isfinite(value):
                raise InvalidRobotStateError(f"{what}: joint {name!r} has value {value}")
            if name in self.index:
                q[self.index[name]] = value
            else:
                passive[name] = float(value)
        return q, passive, names

    def from_multi_dof(self, msg: MultiDOFJointState, q: np.ndarray, what: str = "robot state") -> np.ndarray:
        """Apply sensor_msgs/MultiDOFJointState planar/floating joints onto ``q`` (in place, returned)."""
        if len(msg.joint_names) != len(msg.transforms):
            raise InvalidRobotStateError(f"{what}: multi-DOF names/transforms mismatch")
        for name, tf in zip(msg.joint_names, msg.transforms):
            if name not in self.multi_dof:
                raise InvalidRobotStateError(f"{what}: unknown multi-DOF joint {name!r}")
            T = transform_to_matrix(tf, f"{what}: {name}")
            yaw, pitch, roll = (float(a) for a in matrix_to_euler_zyx(torch.from_numpy(T[:3, :3])))
            angle = {"z": yaw, "y": pitch, "x": roll}  # the angle about each axis, Rz(yaw) Ry(pitch) Rx(roll)
            for var in self.multi_dof[name]:
                axis = axis_of(var)
                q[self.index[var]] = T[_AXES.index(axis.axis), 3] if axis.prismatic else angle[axis.axis]
        return q

    def to_joint_state(self, q: np.ndarray, passive: dict[str, float] | None = None
                       ) -> tuple[JointState, MultiDOFJointState]:
        """(n,) active values (+ passive values) -> (sensor_msgs/JointState, sensor_msgs/MultiDOFJointState)."""
        js = JointState()
        names, values = [], []
        for name, i in self.index.items():
            if axis_of(name) is None:
                names.append(name)
                values.append(float(q[i]))
        for name, default in self.passive.items():
            names.append(name)
            values.append(float((passive or {}).get(name, default)))
        js.name, js.position = names, values
        mdof = MultiDOFJointState()
        for joint, variables in self.multi_dof.items():
            mdof.joint_names.append(joint)
            mdof.transforms.append(self._joint_transform(q, variables))
        return js, mdof

    def to_joint_states(self, q: np.ndarray, passive: dict[str, float] | None = None, frame_id: str = ""
                        ) -> list[JointState]:
        """(k, n) active values (+ passive values) -> k sensor_msgs/JointState naming every variable of the
        robot: the active ones in the solver's order (multi-DOF variables by their names, ``base/x``...,
        as :meth:`from_joint_state` reads them back), then the passive joints (``passive``, else their
        default). ``header.frame_id`` = ``frame_id``."""
        q = np.asarray(q, dtype=np.float64).reshape(-1, len(self.active))
        names = self.active + list(self.passive)
        tail = [float((passive or {}).get(name, default)) for name, default in self.passive.items()]
        out = []
        for row in q.tolist():
            js = JointState()
            js.header.frame_id, js.name, js.position = frame_id, list(names), array.array("d", row + tail)
            out.append(js)
        return out

    def _joint_transform(self, q: np.ndarray, variables: list[str]) -> Transform:
        """geometry_msgs/Transform of a multi-DOF joint from its ``variables``' values in ``q``
        (a variable it does not have is 0)."""
        shift, angle = {a: 0.0 for a in _AXES}, {a: 0.0 for a in _AXES}
        for var in variables:
            axis = axis_of(var)
            (shift if axis.prismatic else angle)[axis.axis] = float(q[self.index[var]])
        R = euler_zyx_to_matrix(*(torch.tensor(angle[a], dtype=torch.float64) for a in "zyx")).numpy()
        tf = Transform()
        tf.translation.x, tf.translation.y, tf.translation.z = shift["x"], shift["y"], shift["z"]
        tf.rotation.x, tf.rotation.y, tf.rotation.z, tf.rotation.w = matrix_to_quaternion(R)
        return tf


# ---------------------------------------------------------------------- collision objects
_PRIMITIVE_KINDS = {1: "box", 2: "sphere", 3: "cylinder", 4: "cone"}
_PRIMITIVE_DIMS = {"box": 3, "sphere": 1, "cylinder": 2, "cone": 2}


def solid_primitive_to_shape(prim: SolidPrimitive, T_root_shape: np.ndarray, what: str = "primitive") -> Shape:
    """shape_msgs/SolidPrimitive + its pose -> :class:`Shape` (box, sphere, cylinder, cone)."""
    kind = _PRIMITIVE_KINDS.get(int(prim.type))
    if kind is None:
        raise InvalidRequestError(f"{what}: unsupported SolidPrimitive type {prim.type}")
    dims = list(prim.dimensions)
    n = _PRIMITIVE_DIMS[kind]
    if len(dims) < n:
        raise InvalidRequestError(f"{what}: a {kind} needs {n} dimensions, got {dims}")
    try:
        return Shape(kind, np.asarray(dims[:n], dtype=np.float64), T_root_shape)
    except InvalidRequestError as exc:
        raise InvalidRequestError(f"{what}: {exc}") from None


@dataclass(frozen=True)
class SceneLimits:
    """What the scene mirror accepts per collision object (see :func:`collision_object_shapes`)."""

    #: [m] largest dimension of a shape (box extent, radius, height), and farthest it may reach from the
    #: frame it is expressed in (root or attachment link)
    max_extent: float = 1.0e4
    #: a mesh with more triangles is replaced by its oriented bounding box (conservative)
    max_mesh_triangles: int = 100_000


def mesh_to_shape(mesh: Mesh, T_root_shape: np.ndarray, what: str = "mesh",
                  max_triangles: int | None = None) -> Shape:
    """shape_msgs/Mesh -> mesh :class:`Shape`; with more than ``max_triangles`` triangles, a box
    :class:`Shape`: the mesh's oriented bounding box (contains it, so collision checks stay conservative)."""
    vertices = np.array([(p.x, p.y, p.z) for p in mesh.vertices], dtype=np.float64).reshape(-1, 3)
    try:
        if max_triangles is not None and len(mesh.triangles) > max_triangles and len(vertices):
            if not np.all(np.isfinite(vertices)):
                raise InvalidRequestError("mesh vertices must be finite")
            extents, T_box = mesh_obb(vertices)
            return Shape.box(extents, T_root_shape @ T_box)
        triangles = np.array([t.vertex_indices for t in mesh.triangles], dtype=np.int64).reshape(-1, 3)
        return Shape.mesh(vertices, triangles, T_root_shape)
    except InvalidRequestError as exc:
        raise InvalidRequestError(f"{what}: {exc}") from None


def collision_object_shapes(msg: CollisionObject, T_frame: np.ndarray, limits: SceneLimits = SceneLimits(),
                            notes: list[str] | None = None) -> list[Shape]:
    """moveit_msgs/CollisionObject geometry -> validated shapes posed by ``T_frame @ pose @ shape_pose``.

    ``T_frame`` is the pose of ``msg.header.frame_id`` in the frame the shapes
    should be expressed in (the root frame for world objects, the attachment
    link for attached ones). Planes are skipped (infinite; not supported).
    Every shape passes :func:`~ikdiffuser_ros.collision.world.validated_shape`
    (``limits.max_extent``); one that does not makes the whole object refused
    (InvalidRequestError naming the object and the shape). A mesh beyond
    ``limits.max_mesh_triangles`` becomes its bounding box, with a line in ``notes``.
    """
    what = f"collision object {msg.id!r}"
    if len(msg.primitives) != len(msg.primitive_poses):
        raise InvalidRequestError(f"{what}: primitives and primitive_poses differ in length")
    if len(msg.meshes) != len(msg.mesh_poses):
        raise InvalidRequestError(f"{what}: meshes and mesh_poses differ in length")
    T_obj = T_frame @ scene_pose_to_matrix(msg.pose, what)
    shapes = [solid_primitive_to_shape(p, T_obj @ scene_pose_to_matrix(pp, what), f"{what}, primitive {i}")
              for i, (p, pp) in enumerate(zip(msg.primitives, msg.primitive_poses))]
    for i, (m, mp) in enumerate(zip(msg.meshes, msg.mesh_poses)):
        shape = mesh_to_shape(m, T_obj @ scene_pose_to_matrix(mp, what), f"{what}, mesh {i}",
                              limits.max_mesh_triangles)
        if shape.kind == "box" and notes is not None:
            notes.append(f"{what}, mesh {i}: {len(m.triangles)} triangles exceed max_mesh_triangles="
                         f"{limits.max_mesh_triangles}; replaced by its oriented bounding box "
                         f"{np.round(shape.dims, 3).tolist()} m")
        shapes.append(shape)
    return validated_shapes(shapes, limits, what)


def validated_shapes(shapes: list[Shape], limits: SceneLimits, what: str) -> list[Shape]:
    """Every shape through :func:`~ikdiffuser_ros.collision.world.validated_shape` (``limits.max_extent``),
    or InvalidRequestError naming ``what`` and the shape's index."""
    out = []
    for i, shape in enumerate(shapes):
        try:
            out.append(validated_shape(shape, limits.max_extent))
        except InvalidRequestError as exc:
            raise InvalidRequestError(f"{what}, shape {i}: {exc}") from None
    return out


def scene_pose_to_matrix(pose: Pose, what: str = "pose") -> np.ndarray:
    """Like :func:`pose_to_matrix`, but an all-zero quaternion (an unset field) means identity,
    as MoveIt's planning scene treats it (\"Empty quaternion found in pose message\")."""
    o = pose.orientation
    if o.x == 0 and o.y == 0 and o.z == 0 and o.w == 0:
        T = np.eye(4)
        T[:3, 3] = (pose.position.x, pose.position.y, pose.position.z)
        if not np.all(np.isfinite(T)):
            raise InvalidRequestError(f"{what}: NaN or infinite position")
        return T
    return pose_to_matrix(pose, what)


def world_object(msg: CollisionObject, T_frame: np.ndarray) -> WorldObject:
    """moveit_msgs/CollisionObject (ADD) -> :class:`WorldObject` in the frame of ``T_frame``."""
    return WorldObject(msg.id, collision_object_shapes(msg, T_frame))


__all__ = [
    "duration_to_seconds", "seconds_to_duration_fields", "budget_window", "pose_values", "pose_to_matrix", "matrix_to_pose",
    "matrix_to_quaternion", "transform_to_matrix", "JointStateLayout", "solid_primitive_to_shape", "mesh_to_shape",
    "collision_object_shapes", "validated_shapes", "world_object", "scene_pose_to_matrix", "SceneLimits",
]
