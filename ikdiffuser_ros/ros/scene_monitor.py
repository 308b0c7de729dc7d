"""A thread-safe mirror of the MoveIt planning scene as a :class:`~ikdiffuser_ros.collision.world.World`.

Fed with ``moveit_msgs`` messages (full scenes and diffs from
``/monitored_planning_scene``, ``/planning_scene``, ``/collision_object``,
``/attached_collision_object``, the ``/get_planning_scene`` answer) from the
scene callback group, and read by solves from another thread:

* every update happens under one lock and bumps a version;
* :meth:`SceneMonitor.snapshot` returns an immutable-by-convention
  :class:`World` built once per version (copy on write): a solve keeps the
  snapshot it started with, so an update during a solve never changes the
  world under it, and the next solve sees the update.

Frames: object poses stamped in a robot link frame are placed with forward
kinematics at the scene's robot state (``PlanningScene.robot_state`` when one
was received, else the default state). Attached objects are stored relative
to their link, so they move with it.

Validation, per object (:class:`~ikdiffuser_ros.ros.conversions.SceneLimits`,
:func:`~ikdiffuser_ros.collision.world.validated_shape`): an object with an
unknown frame, non-finite or absurd coordinates (beyond ``max_extent``, also
after a MOVE), an absurd size (a box extent, radius or height beyond
``max_extent``), an empty mesh, a mesh of only degenerate triangles or a zero-size primitive is
refused and not added (a CollisionObject message raises InvalidRequestError naming
it; in a PlanningScene it is skipped, named in the returned warnings, and the
rest of the scene applies); degenerate triangles are dropped, flat meshes and
plane-like boxes are kept, a mesh beyond ``max_mesh_triangles`` becomes its
oriented bounding box (a warning says so).

MoveIt semantics mirrored (moveit.md §1): ADD replaces an object with the same
id, APPEND adds shapes (creating the object), MOVE re-poses an object, REMOVE
removes one object (an empty id: all world objects); attaching an object
without geometry takes it out of the world; detaching puts it back into the
world at its current pose; REMOVE of an attached object with an empty id
detaches every object of that link (all links when the link is empty too).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ikdiffuser_ros.collision.world import AllowedCollisionMatrix, AttachedObject, Shape, World, WorldObject
from ikdiffuser_ros.errors import InvalidRequestError, UnknownFrameError, UnknownLinkError
from ikdiffuser_ros.kinematics.frames import FrameResolver
from ikdiffuser_ros.ros.conversions import (
    JointStateLayout, SceneLimits, collision_object_shapes, scene_pose_to_matrix, validated_shapes,
)

if TYPE_CHECKING:  # message types used in annotations only
    from moveit_msgs.msg import AllowedCollisionMatrix as AllowedCollisionMatrixMsg
    from moveit_msgs.msg import AttachedCollisionObject, CollisionObject, PlanningScene, RobotState

    from ikdiffuser_ros.kinematics.robot_model import RobotModel

ADD, REMOVE, APPEND, MOVE = 0, 1, 2, 3


@dataclass
class _Attached:
    link: str
    object: WorldObject  # shapes relative to the link
    touch_links: frozenset


class SceneMonitor:
    """World mirror; see the module docstring. All public methods are thread safe."""

    def __init__(self, robot: RobotModel, limits: SceneLimits = SceneLimits()) -> None:
        self.robot = robot
        self.limits = limits
        self._notes: list[str] = []  # warnings of the update in progress (lock held)
        self.frames = FrameResolver(robot)
        self.layout = JointStateLayout(robot)
        self._lock = threading.Lock()
        self._objects: dict[str, WorldObject] = {}
        self._attached: dict[str, _Attached] = {}
        self._acm = AllowedCollisionMatrix()
        self._q = self.layout.default.copy()
        self._version = 0
        self._snapshot: tuple[int, World] | None = None
        self.updates = 0

    # ------------------------------------------------------------------ reading
    @property
    def version(self) -> int:
        return self._version

    def snapshot(self) -> World:
        """The current world (do not modify it; a new object is built after each update)."""
        with self._lock:
            if self._snapshot is None or self._snapshot[0] != self._version:
                world = World(
                    [WorldObject(o.id, list(o.shapes)) for o in self._objects.values()],
                    [AttachedObject(a.link, WorldObject(a.object.id, list(a.object.shapes)), a.touch_links)
                     for a in self._attached.values()],
                    self._acm,  # replaced, never changed in place: shared by the snapshots
                )
                self._snapshot = (self._version, world)
            return self._snapshot[1]

    def object_ids(self) -> list[str]:
        with self._lock:
            return sorted(self._objects)

    def attached_ids(self) -> list[str]:
        with self._lock:
            return sorted(self._attached)

    # ------------------------------------------------------------------ helpers (lock held)
    def _T_frame(self, frame_id: str, what: str) -> np.ndarray:
        """Pose (4, 4) of a robot frame at the scene's robot state; InvalidRequestError naming ``what`` if unknown."""
        frame = self.frames.normalize(frame_id)
        if frame in self._objects or frame.partition("/")[0] in self._objects:
            raise UnknownFrameError(frame, self.frames.valid_frames(),
                                    f"{what} (an object frame; stamp collision objects in a robot frame)")
        return self.frames.T_root(frame, self._q, what)

    def _T_link(self, link: str) -> np.ndarray:
        return self.frames.T_root(link, self._q)

    def _bump(self) -> None:
        self._version += 1
        self.updates += 1

    def _apply_object(self, msg: CollisionObject) -> None:
        op = int.from_bytes(msg.operation, "little") if isinstance(msg.operation, bytes) else int(msg.operation)
        oid = msg.id
        if op == REMOVE:
            if oid:
                self._objects.pop(oid, None)
            else:
                self._objects.clear()
            return
        if not oid:
            raise InvalidRequestError("collision object without an id")
        if op == MOVE:
            if oid not in self._objects:
                raise InvalidRequestError(f"MOVE of unknown collision object {oid!r}")
            old = self._objects[oid]
            # New pose of the object frame; shapes keep their offset from the old object frame.
            what = f"collision object {oid!r}"
            T_new = self._T_frame(msg.header.frame_id, what) @ scene_pose_to_matrix(msg.pose, f"object {oid!r}")
            T_old = getattr(old, "_T_obj", None)
            delta = T_new @ np.linalg.inv(T_old) if T_old is not None else T_new
            moved = WorldObject(oid, _moved(old.shapes, delta, self.limits, what))
            moved._T_obj = T_new  # type: ignore[attr-defined]
            self._objects[oid] = moved
            return
        if op not in (ADD, APPEND):
            raise InvalidRequestError(f"collision object {oid!r}: unknown operation {op}")
        T_frame = self._T_frame(msg.header.frame_id, f"collision object {oid!r}")
        shapes = collision_object_shapes(msg, T_frame, self.limits, self._notes)
        if op == APPEND and oid in self._objects:
            obj = WorldObject(oid, list(self._objects[oid].shapes) + shapes)
            obj._T_obj = getattr(self._objects[oid], "_T_obj", None)  # type: ignore[attr-defined]
        else:
            obj = WorldObject(oid, shapes)
            obj._T_obj = T_frame @ scene_pose_to_matrix(msg.pose, f"object {oid!r}")  # type: ignore[attr-defined]
        self._attached.pop(oid, None)
        self._objects[oid] = obj

    def _apply_attached(self, msg: AttachedCollisionObject) -> None:
        obj = msg.object
        op = int.from_bytes(obj.operation, "little") if isinstance(obj.operation, bytes) else int(obj.operation)
        link = msg.link_name
        if op == REMOVE:
            ids = [obj.id] if obj.id else [k for k, a in self._attached.items() if not link or a.link == link]
            for oid in ids:
                att = self._attached.pop(oid, None)
                if att is None:
                    continue
                T = self._T_link(att.link)  # back into the world at its current pose
                self._objects[oid] = WorldObject(oid, [_reposed(s, T @ s.pose) for s in att.object.shapes])
            return
        if link not in self.robot.urdf.links:
            raise UnknownLinkError(link, sorted(self.robot.urdf.links), "is not a link of the robot",
                                   f"attached object {obj.id!r}")
        if not obj.id:
            raise InvalidRequestError("attached collision object without an id")
        T_link_root = np.linalg.inv(self._T_link(link))
        has_geometry = bool(obj.primitives) or bool(obj.meshes)
        if has_geometry:
            T_frame = self._T_frame(obj.header.frame_id, f"attached object {obj.id!r}")
            shapes = collision_object_shapes(obj, T_link_root @ T_frame, self.limits, self._notes)
        elif obj.id in self._objects:  # attach an existing world object
            shapes = [_reposed(s, T_link_root @ s.pose) for s in self._objects[obj.id].shapes]
        elif obj.id in self._attached:
            shapes = list(self._attached[obj.id].object.shapes)
        else:
            raise InvalidRequestError(f"attached object {obj.id!r} has no geometry and is not in the world")
        if op == APPEND and obj.id in self._attached:
            shapes = list(self._attached[obj.id].object.shapes) + shapes
        self._objects.pop(obj.id, None)
        self._attached[obj.id] = _Attached(link, WorldObject(obj.id, shapes), frozenset(msg.touch_links))

    def _apply_acm(self, msg: AllowedCollisionMatrixMsg) -> None:
        acm = AllowedCollisionMatrix.from_message_fields(
            list(msg.entry_names), [list(e.enabled) for e in msg.entry_values],
            list(msg.default_entry_names), list(msg.default_entry_values))
        self._acm = acm

    def _apply_robot_state(self, state: RobotState, is_diff: bool) -> None:
        if state.joint_state.name:
            try:
                q, _, _ = self.layout.from_joint_state(state.joint_state, self._q, "scene robot state")
                self._q = q
            except InvalidRequestError:
                # a scene may carry joints this model does not know (other robots, grippers...): keep known ones
                for name, value in zip(state.joint_state.name, state.joint_state.position):
                    if name in self.layout.index and np.isfinite(value):
                        self._q[self.layout.index[name]] = value
        if not is_diff:
            self._attached.clear()
        for att in state.attached_collision_objects:
            self._apply_attached(att)

    # ------------------------------------------------------------------ updates
    @contextmanager
    def _update(self) -> Iterator[list[str]]:
        """One update, under the lock, all or nothing: an exception restores the mirror as it was
        and propagates; else the version is bumped. Yields the update's warnings (a list it fills)."""
        with self._lock:
            self._notes = []
            backup = (dict(self._objects), dict(self._attached), self._acm, self._q.copy())
            try:
                yield self._notes
            except Exception:
                self._objects, self._attached, self._acm, self._q = backup
                raise
            self._bump()

    def apply_collision_object(self, msg: CollisionObject) -> list[str]:
        """moveit_msgs/CollisionObject. Raises InvalidRequestError (nothing changed) on a bad message;
        returns warnings about what was changed on the way in (a mesh replaced by its box)."""
        with self._update() as notes:
            self._apply_object(msg)
        return notes

    def apply_attached_collision_object(self, msg: AttachedCollisionObject) -> list[str]:
        """moveit_msgs/AttachedCollisionObject (raises and returns as :meth:`apply_collision_object`)."""
        with self._update() as notes:
            self._apply_attached(msg)
        return notes

    def apply_planning_scene(self, msg: PlanningScene) -> list[str]:
        """moveit_msgs/PlanningScene, full (``is_diff`` false: replaces everything) or a diff.

        A bad robot state, attached object or ACM leaves the mirror as it was and raises. A bad
        world collision object is skipped (not added; a returned warning names it and says why)
        and the rest applies. Returns the warnings.
        """
        with self._update() as notes:
            if not msg.is_diff:
                self._objects.clear()
                self._acm = AllowedCollisionMatrix()
            self._apply_robot_state(msg.robot_state, msg.is_diff)
            for obj in msg.world.collision_objects:
                self._apply_object_or_skip(obj)
            if msg.allowed_collision_matrix.entry_names or msg.allowed_collision_matrix.default_entry_names \
                    or not msg.is_diff:
                self._apply_acm(msg.allowed_collision_matrix)
        return notes

    def _apply_object_or_skip(self, msg: CollisionObject) -> None:
        """One world object of a PlanningScene; a bad one is noted and leaves the mirror unchanged."""
        backup = (dict(self._objects), dict(self._attached))
        try:
            self._apply_object(msg)
        except InvalidRequestError as exc:
            self._objects, self._attached = backup
            self._notes.append(f"refused: {exc}")

    def clear(self) -> None:
        with self._lock:
            self._objects.clear()
            self._attached.clear()
            self._acm = AllowedCollisionMatrix()
            self._bump()


def _moved(shapes: list[Shape], delta: np.ndarray, limits: SceneLimits, what: str) -> list[Shape]:
    """``shapes`` moved by ``delta`` (4, 4), validated as new ones (InvalidRequestError naming ``what``)."""
    try:
        moved = [_reposed(s, delta @ s.pose) for s in shapes]
    except InvalidRequestError as exc:
        raise InvalidRequestError(f"{what}: {exc}") from None
    return validated_shapes(moved, limits, what)


def _reposed(shape: Shape, pose: np.ndarray) -> Shape:
    return Shape(shape.kind, shape.dims, pose, shape.vertices, shape.triangles)
