"""ROS-free mirror of a MoveIt planning scene: world objects, attached objects, ACM.

Plain data (numpy float64), no torch and no ROS, shared by the exact checker
(:mod:`ikdiffuser_ros.collision.fcl_checker`), the differentiable sphere model
(:mod:`ikdiffuser_ros.collision.spheres`) and the ROS node (which converts
``moveit_msgs/PlanningScene`` into a :class:`World`).

Frames and conventions
----------------------
* Every :class:`WorldObject` shape pose is the pose of the shape in the robot's
  **root frame** (``RobotModel.root_frame``): the ROS layer composes
  ``header.frame_id -> object pose -> primitive pose`` before building it.
* Every :class:`AttachedObject` shape pose is relative to the **attachment
  link** frame (``AttachedObject.link``); the object moves with that link.
* Shape geometry follows ``shape_msgs/SolidPrimitive`` (units: metres), every
  shape centred on its pose origin:

  ========== ======================= ==========================================
  kind       dims                    geometry in the shape frame
  ========== ======================= ==========================================
  box        (x, y, z) full extents  ``|x| <= dims[0]/2`` etc.
  sphere     (radius,)               ``|p| <= radius``
  cylinder   (height, radius)        axis z, ``|z| <= height/2``
  cone       (height, radius)        axis z, base radius at ``z = -height/2``,
                                     apex at ``z = +height/2``
  mesh       ()                      ``vertices`` (V, 3) [m] already scaled,
                                     ``triangles`` (F, 3) int indices
  ========== ======================= ==========================================

Allowed collision matrix (MoveIt semantics)
-------------------------------------------
Names are robot link names and object ids (world and attached). ``entries``
maps ``frozenset({a, b})`` to ``True`` (collision allowed, pair not checked)
or ``False`` (checked). When a pair has no entry, ``default_entries`` decides:
if only one of the names has a default, its value is used; if both do, the two
values are ANDed; if neither, the pair is checked (not allowed). SRDF
``disable_collisions`` pairs are *not* put in the ACM by this module: the
collision checkers skip them themselves (they are robot-internal and static).
Attached objects may always touch their own ``link`` and their ``touch_links``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ikdiffuser_ros.errors import InvalidRequestError

#: Shape kinds, as in shape_msgs/SolidPrimitive plus ``mesh``.
SHAPE_KINDS = ("box", "sphere", "cylinder", "cone", "mesh")
_NUM_DIMS = {"box": 3, "sphere": 1, "cylinder": 2, "cone": 2, "mesh": 0}
#: names of each kind's dims, for messages
_DIM_NAMES = {"box": ("x", "y", "z"), "sphere": ("radius",), "cylinder": ("height", "radius"),
              "cone": ("height", "radius"), "mesh": ()}
#: [m] largest size (a dimension, a mesh vertex's coordinate) or position coordinate any :class:`Shape`
#: may have: beyond it the collision checkers' arithmetic overflows or loses the robot (FCL reported a
#: robot inside a 1e100 m sphere as free). Scene mirrors refuse much less (:func:`validated_shape`'s
#: ``max_extent``; the node's ``max_scene_extent`` is at most this).
MAX_EXTENT = 1.0e9


@dataclass
class Shape:
    """One primitive or mesh with a pose (see the module docstring for frames and dims).

    Attributes:
        kind: one of :data:`SHAPE_KINDS`.
        dims: float64 (k,) dimensions [m] (box: 3 full extents; sphere: radius;
            cylinder / cone: height, radius; mesh: empty).
        pose: float64 (4, 4) pose of the shape frame (root frame for world
            objects, attachment link frame for attached objects).
        vertices: mesh only, float64 (V, 3) [m] in the shape frame.
        triangles: mesh only, int64 (F, 3) vertex indices.
    """

    kind: str
    dims: np.ndarray = field(default_factory=lambda: np.zeros(0))
    pose: np.ndarray = field(default_factory=lambda: np.eye(4))
    vertices: np.ndarray | None = None
    triangles: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.kind not in SHAPE_KINDS:
            raise InvalidRequestError(f"unknown shape kind {self.kind!r}; expected one of {SHAPE_KINDS}")
        self.dims = np.asarray(self.dims, dtype=np.float64).reshape(-1)
        self.pose = np.asarray(self.pose, dtype=np.float64)
        if self.dims.shape != (_NUM_DIMS[self.kind],):
            raise InvalidRequestError(
                f"{self.kind} needs {_NUM_DIMS[self.kind]} dims, got {self.dims.tolist()}")
        if not np.all(np.isfinite(self.dims)) or np.any(self.dims < 0):
            raise InvalidRequestError(f"{self.kind} dims must be finite and >= 0, got {self.dims.tolist()}")
        if np.any(self.dims > MAX_EXTENT):
            raise InvalidRequestError(f"absurd size: {self.kind} {_dims_text(self)} m, beyond the {MAX_EXTENT:g} m "
                                      "any shape may have")
        if self.pose.shape != (4, 4) or not np.all(np.isfinite(self.pose)):
            raise InvalidRequestError(f"shape pose must be a finite (4, 4) transform, got shape {self.pose.shape}")
        if np.any(np.abs(self.pose[:3, 3]) > MAX_EXTENT):
            raise InvalidRequestError(f"absurd coordinates: {self.kind} at {self.pose[:3, 3].tolist()} m, beyond the "
                                      f"{MAX_EXTENT:g} m any shape may have")
        if self.kind == "mesh":
            self._check_mesh()

    def _check_mesh(self) -> None:
        """Vertices (V, 3) float64 finite and within :data:`MAX_EXTENT`; triangles (F, 3) int64 indexing them."""
        if self.vertices is None or self.triangles is None:
            raise InvalidRequestError("a mesh shape needs vertices and triangles")
        self.vertices = np.asarray(self.vertices, dtype=np.float64).reshape(-1, 3)
        self.triangles = np.asarray(self.triangles, dtype=np.int64).reshape(-1, 3)
        if not np.all(np.isfinite(self.vertices)):
            raise InvalidRequestError("mesh vertices must be finite")
        if self.vertices.size and np.abs(self.vertices).max() > MAX_EXTENT:
            raise InvalidRequestError(f"absurd size: mesh vertices reach {np.abs(self.vertices).max():.3g} m, beyond "
                                      f"the {MAX_EXTENT:g} m any shape may have")
        if self.triangles.size and (self.triangles.min() < 0 or self.triangles.max() >= len(self.vertices)):
            raise InvalidRequestError("mesh triangle indices out of range")

    # convenience constructors ------------------------------------------------
    @classmethod
    def box(cls, size: Sequence[float], pose: np.ndarray | None = None) -> "Shape":
        """Box with full extents ``size`` (x, y, z) [m]."""
        return cls("box", np.asarray(size, dtype=np.float64), np.eye(4) if pose is None else pose)

    @classmethod
    def sphere(cls, radius: float, pose: np.ndarray | None = None) -> "Shape":
        return cls("sphere", np.array([radius], dtype=np.float64), np.eye(4) if pose is None else pose)

    @classmethod
    def cylinder(cls, height: float, radius: float, pose: np.ndarray | None = None) -> "Shape":
        return cls("cylinder", np.array([height, radius], dtype=np.float64), np.eye(4) if pose is None else pose)

    @classmethod
    def cone(cls, height: float, radius: float, pose: np.ndarray | None = None) -> "Shape":
        return cls("cone", np.array([height, radius], dtype=np.float64), np.eye(4) if pose is None else pose)

    @classmethod
    def mesh(cls, vertices: np.ndarray, triangles: np.ndarray, pose: np.ndarray | None = None) -> "Shape":
        return cls("mesh", np.zeros(0), np.eye(4) if pose is None else pose, vertices, triangles)


#: doubled triangle area [m^2] at or below which a mesh triangle counts as degenerate
DEGENERATE_AREA = 1e-12


def mesh_obb(vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Oriented bounding box of points along their principal axes.

    Args:
        vertices: (V, 3) float64 points [m], V >= 1.

    Returns:
        ``(extents (3,) full box extents [m], pose (4, 4) of the box centre in the points' frame)``.
        Contains every point; exact for flat or collinear point sets (extents 0 there), where
        hull-based boxes (qhull) fail.
    """
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    centre = v.mean(axis=0)
    x = v - centre
    _, axes = np.linalg.eigh(x.T @ x)
    if np.linalg.det(axes) < 0:
        axes[:, 0] = -axes[:, 0]
    local = x @ axes
    lo, hi = local.min(axis=0), local.max(axis=0)
    pose = np.eye(4)
    pose[:3, :3] = axes
    pose[:3, 3] = centre + axes @ ((lo + hi) / 2)
    return hi - lo, pose


def _dims_text(shape: "Shape") -> str:
    """``"x 1e+300, y 1, z 1"``: a primitive's dims by name."""
    return ", ".join(f"{name} {value:g}" for name, value in zip(_DIM_NAMES[shape.kind], shape.dims))


def _zero_size(shape: "Shape") -> bool:
    """A primitive with no extent in two or more directions (a point or a line)."""
    d = shape.dims
    if shape.kind == "box":
        return int(np.sum(d == 0)) >= 2
    if shape.kind == "sphere":
        return bool(d[0] == 0)
    return bool(d[0] == 0 or d[1] == 0)  # cylinder, cone: height, radius


def validated_shape(shape: "Shape", max_extent: float = 1.0e4) -> "Shape":
    """``shape`` made safe for the collision checkers, or InvalidRequestError saying what is wrong.

    * zero-size primitives (sphere radius 0, cylinder / cone height or radius 0, a box with two or
      three zero extents) are refused; a box with one zero extent (a plane-like box) is kept;
    * absurd sizes: every dimension (box extent, sphere radius, cylinder / cone height and radius)
      must be at most ``max_extent`` [m] (the checkers overflow on larger ones and would call a robot
      inside a huge object free);
    * a mesh without vertices or triangles is refused; degenerate triangles (a repeated vertex, or a
      doubled area <= :data:`DEGENERATE_AREA` m^2) are dropped, and a mesh left without triangles is
      refused; a flat mesh is kept;
    * every coordinate must lie within ``max_extent`` [m] of the frame's origin: the pose
      translation plus the farthest vertex or the largest dimension.

    Returns the same object when nothing is dropped, else a new mesh shape.
    """
    with np.errstate(over="ignore"):
        reach = float(np.linalg.norm(shape.pose[:3, 3]))
    size = _checked_size(shape, max_extent)
    if not reach + size <= max_extent:
        raise InvalidRequestError(f"{shape.kind} reaches {reach + size:.3g} m from its frame's origin, beyond "
                                  f"the {max_extent:g} m limit (absurd coordinates)")
    return shape if shape.kind != "mesh" else _without_degenerate_triangles(shape)


def _checked_size(shape: "Shape", max_extent: float) -> float:
    """How far [m] the shape reaches from its own origin (the norm of a primitive's dimensions, a mesh's
    farthest vertex); InvalidRequestError for a zero-size or absurdly large primitive or an empty mesh."""
    if shape.kind != "mesh":
        if _zero_size(shape):
            raise InvalidRequestError(f"zero-size {shape.kind} (dims {shape.dims.tolist()})")
        if np.any(shape.dims > max_extent):
            raise InvalidRequestError(f"absurd size: {shape.kind} {_dims_text(shape)} m, beyond the {max_extent:g} m "
                                      "limit")
        with np.errstate(over="ignore"):
            return float(np.linalg.norm(shape.dims))
    if len(shape.vertices) == 0 or len(shape.triangles) == 0:
        raise InvalidRequestError(f"empty mesh ({len(shape.vertices)} vertices, {len(shape.triangles)} "
                                  "triangles)")
    with np.errstate(over="ignore"):
        return float(np.linalg.norm(shape.vertices, axis=-1).max())


def _without_degenerate_triangles(shape: "Shape") -> "Shape":
    """The mesh without its degenerate triangles (the same object when it has none);
    InvalidRequestError when none is left."""
    tri = shape.triangles
    a, b, c = (shape.vertices[tri[:, k]] for k in range(3))
    area2 = np.linalg.norm(np.cross(b - a, c - a), axis=-1)
    keep = (tri[:, 0] != tri[:, 1]) & (tri[:, 1] != tri[:, 2]) & (tri[:, 0] != tri[:, 2]) & (area2 > DEGENERATE_AREA)
    if not keep.any():
        raise InvalidRequestError(f"mesh has only degenerate triangles ({len(tri)} of zero area)")
    if keep.all():
        return shape
    return Shape.mesh(shape.vertices, tri[keep], shape.pose)


def translation(x: float, y: float, z: float) -> np.ndarray:
    """(4, 4) pure translation [m]; a helper for building poses in tests and examples."""
    T = np.eye(4)
    T[:3, 3] = (x, y, z)
    return T


@dataclass
class WorldObject:
    """A named collision object of the world (shape poses in the robot root frame)."""

    id: str
    shapes: list[Shape] = field(default_factory=list)


@dataclass
class AttachedObject:
    """An object rigidly attached to a robot link (shape poses relative to ``link``).

    ``touch_links``: links the object may touch besides ``link`` itself (e.g.
    the gripper fingers), as ``AttachedCollisionObject.touch_links``.
    """

    link: str
    object: WorldObject
    touch_links: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        self.touch_links = frozenset(self.touch_links)

    def may_touch(self, link: str) -> bool:
        """True when contact between the object and ``link`` is always allowed."""
        return link == self.link or link in self.touch_links


class _MatrixEntries(Mapping):
    """Read-only ``frozenset({a, b}) -> bool`` view of a square ACM matrix (message form).

    O(n) to build and O(1) per lookup, where a dict of every pair of a 1500-name matrix takes
    seconds. Entry (i, j) with j >= i decides the pair (the upper triangle, as MoveIt writes it).
    """

    def __init__(self, names: list[str], matrix: np.ndarray) -> None:
        self._names = names
        self._index = {name: i for i, name in enumerate(names)}
        self._matrix = matrix

    def __getitem__(self, key: frozenset[str]) -> bool:
        pair = tuple(key)
        if len(pair) not in (1, 2):
            raise KeyError(key)
        i, j = sorted((self._index[pair[0]], self._index[pair[-1]]))  # KeyError when a name is unknown
        return bool(self._matrix[i, j])

    def __iter__(self) -> Iterator[frozenset[str]]:
        n = len(self._names)
        return (frozenset((self._names[i], self._names[j])) for i in range(n) for j in range(i, n))

    def __len__(self) -> int:
        return len(self._names) * (len(self._names) + 1) // 2

    def key(self) -> tuple:
        """Hashable identity of the (read-only) contents, without listing every pair."""
        return ("matrix", id(self))


@dataclass
class AllowedCollisionMatrix:
    """MoveIt's AllowedCollisionMatrix: ``True`` = collision allowed (not checked).

    ``entries``: ``frozenset({a, b}) -> bool``; ``default_entries``: ``name -> bool``
    (see the module docstring for how a missing pair is decided).
    """

    entries: dict[frozenset[str], bool] = field(default_factory=dict)
    default_entries: dict[str, bool] = field(default_factory=dict)

    def set_entry(self, a: str, b: str, allowed: bool) -> None:
        if not isinstance(self.entries, dict):  # a read-only matrix view (from a message): copy on write
            self.entries = dict(self.entries)
        self.entries[frozenset((a, b))] = bool(allowed)

    def set_default(self, name: str, allowed: bool) -> None:
        self.default_entries[name] = bool(allowed)

    def key(self) -> tuple:
        """Hashable value of the contents, for caches (cheap for matrices read from a message)."""
        entries = self.entries.key() if isinstance(self.entries, _MatrixEntries) else frozenset(self.entries.items())
        return entries, frozenset(self.default_entries.items())

    def lookup(self, a: str, b: str) -> bool | None:
        """The entry or default-derived value for (a, b), or None when nothing is said."""
        value = self.entries.get(frozenset((a, b)))
        if value is not None:
            return value
        da, db = self.default_entries.get(a), self.default_entries.get(b)
        if da is None and db is None:
            return None
        if da is None or db is None:
            return da if db is None else db
        return da and db

    def allowed(self, a: str, b: str) -> bool:
        """True when a collision between ``a`` and ``b`` is allowed (the pair is not checked)."""
        return bool(self.lookup(a, b))

    @classmethod
    def from_message_fields(
        cls,
        entry_names: Sequence[str],
        entry_values: Sequence[Sequence[bool]],
        default_entry_names: Sequence[str] = (),
        default_entry_values: Sequence[bool] = (),
    ) -> "AllowedCollisionMatrix":
        """From the fields of ``moveit_msgs/AllowedCollisionMatrix`` (entry_values[i][j] = enabled)."""
        if len(entry_values) != len(entry_names) or any(len(row) != len(entry_names) for row in entry_values):
            raise InvalidRequestError("AllowedCollisionMatrix entry_values must be square, sized like entry_names")
        if len(default_entry_names) != len(default_entry_values):
            raise InvalidRequestError("default_entry_names and default_entry_values differ in length")
        acm = cls()
        if len(entry_names):
            acm.entries = _MatrixEntries(list(entry_names), np.asarray(entry_values, dtype=bool))
        for name, value in zip(default_entry_names, default_entry_values):
            acm.set_default(name, bool(value))
        return acm


@dataclass
class World:
    """The scene the solver checks against.

    Attributes:
        objects: world objects (shape poses in the robot root frame).
        attached: objects attached to robot links (shape poses in the link frame).
        acm: allowed collision matrix over link names and object ids.
    """

    objects: list[WorldObject] = field(default_factory=list)
    attached: list[AttachedObject] = field(default_factory=list)
    acm: AllowedCollisionMatrix = field(default_factory=AllowedCollisionMatrix)

    def __post_init__(self) -> None:
        ids = Counter([o.id for o in self.objects] + [a.object.id for a in self.attached])
        dup = {i for i, count in ids.items() if count > 1}  # one pass: a scene has thousands of objects
        if dup:
            raise InvalidRequestError(f"duplicate collision object ids: {sorted(dup)}")

    @property
    def is_empty(self) -> bool:
        return not self.objects and not self.attached

    def object_ids(self) -> list[str]:
        return [o.id for o in self.objects]

    def get(self, object_id: str) -> WorldObject:
        for obj in self.objects:
            if obj.id == object_id:
                return obj
        raise KeyError(object_id)

    def iter_world_shapes(self) -> Iterator[tuple[str, Shape]]:
        """(object id, shape) for every shape of every world (not attached) object."""
        for obj in self.objects:
            for shape in obj.shapes:
                yield obj.id, shape

    def link_object_allowed(self, link: str, object_id: str) -> bool:
        """True when robot ``link`` may touch world object ``object_id`` (ACM only)."""
        return self.acm.allowed(link, object_id)

    @classmethod
    def from_objects(cls, objects: Iterable[WorldObject], attached: Iterable[AttachedObject] = (),
                     acm: AllowedCollisionMatrix | Mapping | None = None) -> "World":
        """Convenience constructor; ``acm`` may be an ACM or a ``{frozenset pair: bool}`` dict."""
        if acm is None:
            acm = AllowedCollisionMatrix()
        elif not isinstance(acm, AllowedCollisionMatrix):
            acm = AllowedCollisionMatrix(entries={frozenset(k): bool(v) for k, v in dict(acm).items()})
        return cls(list(objects), list(attached), acm)
