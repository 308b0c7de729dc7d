"""Pure message <-> array conversions for the ROS layer (no node, no I/O).

Everything here takes message objects (or plain values) and returns numpy
arrays / :mod:`ikdiffuser_ros.collision.world` dataclasses, raising
:class:`RequestError` (an :class:`~ikdiffuser_ros.errors.InvalidRequestError`
carrying an error code) on bad input, so the node can turn every problem into
an error code + message and never lets an exception escape a callback.

Conventions
-----------
* Poses are float64 ``(4, 4)`` homogeneous transforms; quaternions are ROS
  order ``(x, y, z, w)``.
* Quaternions: a norm within :data:`QUATERNION_NORM_TOLERANCE` of 1 is
  normalized silently; anything farther (including zero, NaN or infinite
  components) is rejected with :attr:`ErrorCode.INVALID_GOAL`.
* Frames (:class:`FrameResolver`): a ``header.frame_id`` may be empty (= the
  model's root frame), the root frame itself, or any link of the robot tree
  (a leading ``/`` is ignored). A link frame is placed with forward
  kinematics at a *reference* joint state: the request's seed state when it
  has one, else the robot's default state (0 clamped into the limits), so a
  pose stamped in a frame that moves with the arm is interpreted at that
  state. Anything else gives :attr:`ErrorCode.FRAME_TRANSFORM_FAILURE`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import torch

from ikdiffuser_ros.collision.world import Shape, WorldObject, mesh_obb, validated_shape
from ikdiffuser_ros.errors import InvalidRequestError

#: |‖q‖ - 1| up to this is normalized; beyond it the quaternion is rejected.
QUATERNION_NORM_TOLERANCE = 0.1


class ErrorCode(IntEnum):
    """Error codes of GetIKSolutions (values match moveit_msgs/MoveItErrorCodes where one exists)."""

    SUCCESS = 1
    FAILURE = 99999
    TIMED_OUT = -6
    INVALID_GROUP_NAME = -15
    INVALID_GOAL = -16  # MoveIt's INVALID_GOAL_CONSTRAINTS
    INVALID_ROBOT_STATE = -17
    INVALID_LINK_NAME = -18
    FRAME_TRANSFORM_FAILURE = -21
    COLLISION_CHECKING_UNAVAILABLE = -22
    NO_IK_SOLUTION = -31
    INVALID_REQUEST = -100


class RequestError(InvalidRequestError):
    """A bad request, with the error code to answer it with."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = int(code)
        self.message = message


# ---------------------------------------------------------------------- scalars
def duration_to_seconds(duration) -> float:
    """builtin_interfaces/Duration -> seconds (``sec`` may be negative; ``nanosec`` is added)."""
    return float(duration.sec) + float(duration.nanosec) * 1e-9


def seconds_to_duration_fields(seconds: float) -> tuple[int, int]:
    """Seconds -> (sec, nanosec) with 0 <= nanosec < 1e9."""
    sec = math.floor(seconds)
    nanosec = int(round((seconds - sec) * 1e9))
    if nanosec >= 1_000_000_000:
        sec, nanosec = sec + 1, nanosec - 1_000_000_000
    return int(sec), nanosec


# ---------------------------------------------------------------------- poses
def quaternion_to_matrix(x: float, y: float, z: float, w: float, what: str = "orientation") -> np.ndarray:
    """Validated quaternion (x, y, z, w) -> (3, 3) rotation (see module docstring for the tolerance)."""
    q = np.array([x, y, z, w], dtype=np.float64)
    if not np.all(np.isfinite(q)):
        raise RequestError(ErrorCode.INVALID_GOAL, f"{what}: quaternion has NaN or infinite components {q.tolist()}")
    norm = float(np.linalg.norm(q))
    if abs(norm - 1.0) > QUATERNION_NORM_TOLERANCE:
        raise RequestError(
            ErrorCode.INVALID_GOAL,
            f"{what}: quaternion norm {norm:.6g} is not close to 1 "
            f"(tolerance {QUATERNION_NORM_TOLERANCE}); send a unit quaternion (x, y, z, w)")
    x, y, z, w = q / norm
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def pose_to_matrix(pose, what: str = "pose") -> np.ndarray:
    """geometry_msgs/Pose -> validated (4, 4) float64."""
    p, o = pose.position, pose.orientation
    t = np.array([p.x, p.y, p.z], dtype=np.float64)
    if not np.all(np.isfinite(t)):
        raise RequestError(ErrorCode.INVALID_GOAL, f"{what}: position has NaN or infinite components {t.tolist()}")
    T = np.eye(4)
    T[:3, :3] = quaternion_to_matrix(o.x, o.y, o.z, o.w, what)
    T[:3, 3] = t
    return T


def transform_to_matrix(transform, what: str = "transform") -> np.ndarray:
    """geometry_msgs/Transform -> (4, 4)."""
    t, r = transform.translation, transform.rotation
    T = np.eye(4)
    T[:3, :3] = quaternion_to_matrix(r.x, r.y, r.z, r.w, what)
    T[:3, 3] = (t.x, t.y, t.z)
    if not np.all(np.isfinite(T)):
        raise RequestError(ErrorCode.INVALID_GOAL, f"{what}: NaN or infinite translation")
    return T


def matrix_to_quaternion(R: np.ndarray) -> tuple[float, float, float, float]:
    """(3, 3) rotation -> (x, y, z, w) with w >= 0."""
    from ikdiffuser_ros.kinematics.transforms import matrix_to_quat

    q = matrix_to_quat(torch.as_tensor(np.asarray(R, dtype=np.float64))).numpy()
    return float(q[0]), float(q[1]), float(q[2]), float(q[3])


def matrix_to_pose(T: np.ndarray):
    """(4, 4) -> geometry_msgs/Pose."""
    from geometry_msgs.msg import Pose

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

    def __init__(self, robot) -> None:
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
        # multi-DOF joints: name -> (type, [variable names])
        self.multi_dof: dict[str, list[str]] = {}
        for name in self.active:
            if "/" in name:
                joint, _, _suffix = name.rpartition("/")
                self.multi_dof.setdefault(joint, []).append(name)
        self.default = robot.default_positions().numpy().astype(np.float64)

    def known(self, name: str) -> bool:
        return name in self.index or name in self.passive

    def from_joint_state(self, msg, base: np.ndarray | None = None, what: str = "seed state"
                         ) -> tuple[np.ndarray, dict[str, float], list[str]]:
        """sensor_msgs/JointState -> ((n,) active values, {passive name: value}, names given).

        Active joints not named keep ``base`` (default: the default state).
        Unknown names, NaN values or a name/position length mismatch raise
        :attr:`ErrorCode.INVALID_ROBOT_STATE`.
        """
        q = (self.default if base is None else np.asarray(base, dtype=np.float64)).copy()
        passive: dict[str, float] = {}
        names = list(msg.name)
        positions = list(msg.position)
        if len(names) != len(positions):
            raise RequestError(ErrorCode.INVALID_ROBOT_STATE,
                               f"{what}: {len(names)} joint names but {len(positions)} positions")
        unknown = [n for n in names if not self.known(n)]
        if unknown:
            raise RequestError(ErrorCode.INVALID_ROBOT_STATE,
                               f"{what}: unknown joint(s) {unknown}; the robot's joints are {self.active}"
                               + (f" plus passive {sorted(self.passive)}" if self.passive else ""))
        if len(set(names)) != len(names):
            raise RequestError(ErrorCode.INVALID_ROBOT_STATE, f"{what}: a joint is named twice")
        for name, value in zip(names, positions):
            if not math.isfinite(value):
                raise RequestError(ErrorCode.INVALID_ROBOT_STATE, f"{what}: joint {name!r} has value {value}")
            if name in self.index:
                q[self.index[name]] = value
            else:
                passive[name] = float(value)
        return q, passive, names

    def from_multi_dof(self, msg, q: np.ndarray, what: str = "robot state") -> np.ndarray:
        """Apply sensor_msgs/MultiDOFJointState planar/floating joints onto ``q`` (in place, returned)."""
        if len(msg.joint_names) != len(msg.transforms):
            raise RequestError(ErrorCode.INVALID_ROBOT_STATE, f"{what}: multi-DOF names/transforms mismatch")
        for name, tf in zip(msg.joint_names, msg.transforms):
            if name not in self.multi_dof:
                raise RequestError(ErrorCode.INVALID_ROBOT_STATE, f"{what}: unknown multi-DOF joint {name!r}")
            T = transform_to_matrix(tf, f"{what}: {name}")
            yaw = math.atan2(T[1, 0], T[0, 0])
            values = {"x": T[0, 3], "y": T[1, 3], "z": T[2, 3], "theta": yaw, "yaw": yaw,
                      "pitch": math.asin(max(-1.0, min(1.0, -T[2, 0]))), "roll": math.atan2(T[2, 1], T[2, 2])}
            for var in self.multi_dof[name]:
                q[self.index[var]] = values[var.rpartition("/")[2]]
        return q

    def to_joint_state(self, q: np.ndarray, passive: dict[str, float] | None = None):
        """(n,) active values (+ passive values) -> (sensor_msgs/JointState, sensor_msgs/MultiDOFJointState)."""
        from geometry_msgs.msg import Transform
        from sensor_msgs.msg import JointState, MultiDOFJointState

        js = JointState()
        names, values = [], []
        for name, i in self.index.items():
            if "/" not in name:
                names.append(name)
                values.append(float(q[i]))
        for name, default in self.passive.items():
            names.append(name)
            values.append(float((passive or {}).get(name, default)))
        js.name, js.position = names, values
        mdof = MultiDOFJointState()
        for joint, variables in self.multi_dof.items():
            v = {var.rpartition("/")[2]: float(q[self.index[var]]) for var in variables}
            yaw = v.get("theta", v.get("yaw", 0.0))
            pitch, roll = v.get("pitch", 0.0), v.get("roll", 0.0)
            R = _rz(yaw) @ _ry(pitch) @ _rx(roll)
            tf = Transform()
            tf.translation.x, tf.translation.y, tf.translation.z = v.get("x", 0.0), v.get("y", 0.0), v.get("z", 0.0)
            tf.rotation.x, tf.rotation.y, tf.rotation.z, tf.rotation.w = matrix_to_quaternion(R)
            mdof.joint_names.append(joint)
            mdof.transforms.append(tf)
        return js, mdof


def _rz(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def _ry(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1.0, 0], [-s, 0, c]])


def _rx(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1.0, 0, 0], [0, c, -s], [0, s, c]])


# ---------------------------------------------------------------------- frames
class FrameResolver:
    """Transforms between the robot's frames (see the module docstring).

    ``T_root(frame, q)``: pose of ``frame`` in the root frame at joint state
    ``q`` ((n,) float64, default: the robot's default state).
    """

    def __init__(self, robot) -> None:
        self.robot = robot
        self.root = robot.root_frame
        self._links = set(robot.urdf.links)
        self._default = robot.default_positions()

    def normalize(self, frame: str) -> str:
        frame = frame.strip()
        if frame.startswith("/"):
            frame = frame[1:]
        return frame or self.root

    def known(self, frame: str) -> bool:
        frame = self.normalize(frame)
        return frame == self.root or frame in self._links

    def T_root(self, frame: str, q: np.ndarray | None = None) -> np.ndarray:
        frame = self.normalize(frame)
        if frame == self.root:
            return np.eye(4)
        if frame not in self._links:
            raise RequestError(ErrorCode.FRAME_TRANSFORM_FAILURE,
                               f"unknown frame {frame!r}: use the root frame {self.root!r}, an empty "
                               f"frame_id, or a link of robot {self.robot.name!r}")
        qt = self._default if q is None else torch.as_tensor(np.asarray(q, dtype=np.float64))
        return self.robot.fk_links(qt, [frame])[0].numpy().astype(np.float64)

    def T_root_links(self, links: Sequence[str], q: np.ndarray) -> np.ndarray:
        """(len(links), 4, 4) poses of links at ``q``."""
        return self.robot.fk_links(torch.as_tensor(np.asarray(q, dtype=np.float64)), list(links)).numpy()


def pose_stamped_to_root(msg, frames: FrameResolver, q_ref: np.ndarray | None = None, what: str = "pose"
                         ) -> np.ndarray:
    """geometry_msgs/PoseStamped -> (4, 4) in the root frame (validated)."""
    T = pose_to_matrix(msg.pose, what)
    frame = frames.normalize(msg.header.frame_id)
    if frame == frames.root:
        return T
    try:
        return frames.T_root(frame, q_ref) @ T
    except RequestError as exc:
        raise RequestError(exc.code, f"{what}: {exc.message}") from None


# ---------------------------------------------------------------------- tips
def rigid_offsets(robot) -> dict[str, tuple[str, np.ndarray]]:
    """Links rigidly attached to an end effector: ``link -> (end effector, T_ee_link)``.

    A link is rigidly attached to an end effector when the last moving joint
    on its path from the root is the same as the end effector's (e.g. a TCP
    frame on the same hand). The end effectors themselves map to identity.
    Computed once at the default state (the offset does not depend on it).
    """
    def last_moving(link: str):
        moving = [j.name for j in robot.urdf.path_from_root(link) if j.type != "fixed"]
        return moving[-1] if moving else None

    q0 = robot.default_positions()
    links = list(robot.urdf.links)
    ee_key = {ee: last_moving(ee) for ee in robot.end_effectors}
    out: dict[str, tuple[str, np.ndarray]] = {ee: (ee, np.eye(4)) for ee in robot.end_effectors}
    candidates = [(link, last_moving(link)) for link in links if link not in out]
    wanted = [(link, ee) for link, key in candidates for ee, k in ee_key.items() if k == key]
    if wanted:
        names = sorted({n for pair in wanted for n in pair})
        T = robot.fk_links(q0, names).numpy()
        idx = {n: i for i, n in enumerate(names)}
        for link, ee in wanted:
            if link in out:
                continue
            out[link] = (ee, np.linalg.inv(T[idx[ee]]) @ T[idx[link]])
    return out


# ---------------------------------------------------------------------- collision objects
_PRIMITIVE_KINDS = {1: "box", 2: "sphere", 3: "cylinder", 4: "cone"}
_PRIMITIVE_DIMS = {"box": 3, "sphere": 1, "cylinder": 2, "cone": 2}


def solid_primitive_to_shape(prim, T_root_shape: np.ndarray, what: str = "primitive") -> Shape:
    """shape_msgs/SolidPrimitive + its pose -> :class:`Shape` (box, sphere, cylinder, cone)."""
    kind = _PRIMITIVE_KINDS.get(int(prim.type))
    if kind is None:
        raise RequestError(ErrorCode.INVALID_REQUEST, f"{what}: unsupported SolidPrimitive type {prim.type}")
    dims = list(prim.dimensions)
    n = _PRIMITIVE_DIMS[kind]
    if len(dims) < n:
        raise RequestError(ErrorCode.INVALID_REQUEST, f"{what}: a {kind} needs {n} dimensions, got {dims}")
    try:
        return Shape(kind, np.asarray(dims[:n], dtype=np.float64), T_root_shape)
    except InvalidRequestError as exc:
        raise RequestError(ErrorCode.INVALID_REQUEST, f"{what}: {exc}") from None


@dataclass(frozen=True)
class SceneLimits:
    """What the scene mirror accepts per collision object (see :func:`collision_object_shapes`)."""

    #: [m] farthest a shape may reach from the frame it is expressed in (root or attachment link)
    max_extent: float = 1.0e4
    #: a mesh with more triangles is replaced by its oriented bounding box (conservative)
    max_mesh_triangles: int = 100_000


def mesh_to_shape(mesh, T_root_shape: np.ndarray, what: str = "mesh", max_triangles: int | None = None) -> Shape:
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
        raise RequestError(ErrorCode.INVALID_REQUEST, f"{what}: {exc}") from None


def collision_object_shapes(msg, T_frame: np.ndarray, limits: SceneLimits = SceneLimits(),
                            notes: list[str] | None = None) -> list[Shape]:
    """moveit_msgs/CollisionObject geometry -> validated shapes posed by ``T_frame @ pose @ shape_pose``.

    ``T_frame`` is the pose of ``msg.header.frame_id`` in the frame the shapes
    should be expressed in (the root frame for world objects, the attachment
    link for attached ones). Planes are skipped (infinite; not supported).
    Every shape passes :func:`~ikdiffuser_ros.collision.world.validated_shape`
    (``limits.max_extent``); one that does not makes the whole object refused
    (RequestError naming the object and the shape). A mesh beyond
    ``limits.max_mesh_triangles`` becomes its bounding box, with a line in ``notes``.
    """
    what = f"collision object {msg.id!r}"
    if len(msg.primitives) != len(msg.primitive_poses):
        raise RequestError(ErrorCode.INVALID_REQUEST, f"{what}: primitives and primitive_poses differ in length")
    if len(msg.meshes) != len(msg.mesh_poses):
        raise RequestError(ErrorCode.INVALID_REQUEST, f"{what}: meshes and mesh_poses differ in length")
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
    out = []
    for i, shape in enumerate(shapes):
        try:
            out.append(validated_shape(shape, limits.max_extent))
        except InvalidRequestError as exc:
            raise RequestError(ErrorCode.INVALID_REQUEST, f"{what}, shape {i}: {exc}") from None
    return out


def scene_pose_to_matrix(pose, what: str = "pose") -> np.ndarray:
    """Like :func:`pose_to_matrix`, but an all-zero quaternion (an unset field) means identity,
    as MoveIt's planning scene treats it (\"Empty quaternion found in pose message\")."""
    o = pose.orientation
    if o.x == 0 and o.y == 0 and o.z == 0 and o.w == 0:
        T = np.eye(4)
        T[:3, 3] = (pose.position.x, pose.position.y, pose.position.z)
        if not np.all(np.isfinite(T)):
            raise RequestError(ErrorCode.INVALID_REQUEST, f"{what}: NaN or infinite position")
        return T
    return pose_to_matrix(pose, what)


def world_object(msg, T_frame: np.ndarray) -> WorldObject:
    """moveit_msgs/CollisionObject (ADD) -> :class:`WorldObject` in the frame of ``T_frame``."""
    return WorldObject(msg.id, collision_object_shapes(msg, T_frame))


__all__ = [
    "ErrorCode", "RequestError", "QUATERNION_NORM_TOLERANCE", "duration_to_seconds", "seconds_to_duration_fields",
    "quaternion_to_matrix", "pose_to_matrix", "matrix_to_pose", "matrix_to_quaternion", "transform_to_matrix",
    "JointStateLayout", "FrameResolver", "pose_stamped_to_root", "rigid_offsets", "solid_primitive_to_shape",
    "mesh_to_shape", "collision_object_shapes", "world_object", "scene_pose_to_matrix", "SceneLimits",
]
