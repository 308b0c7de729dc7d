"""Exact collision checks with python-fcl on the URDF collision geometry, batched over candidates.

:class:`CollisionChecker` turns every URDF link's ``<collision>`` geometry into an
FCL object once (box / sphere / cylinder as FCL primitives, meshes as
``fcl.BVHModel`` built from trimesh, loaded once per file) and answers, for ``M``
candidate configurations at once, "is this configuration in collision, with
itself or with the :class:`~ikdiffuser_ros.collision.world.World`, and which
pairs collide?".

Pipeline of :meth:`CollisionChecker.check` for ``q`` (M, n):

1. one batched FK call for every link carrying geometry (or an attached object);
2. shape poses ``T_root_shape = T_root_link @ T_link_shape`` for all M at once;
3. broad phase, vectorised over M in numpy: world-axis AABB overlap of the
   candidate pairs (pairs whose collision is allowed were removed once, up
   front, see below); for world objects, first only the objects whose box
   overlaps the whole robot's box in some configuration (so thousands of far
   objects cost little);
4. narrow phase: ``fcl.collide`` on the overlapping pairs only (the FCL object
   transforms are updated lazily, only for shapes that take part).

(FCL's own ``DynamicAABBTreeCollisionManager`` was tried first: through
python-fcl its callback cannot tell which geometry it was handed, so allowed
pairs could not be skipped before the narrow phase nor colliding pairs named
without asking for contacts; the numpy AABB pass above does the same job for
all M configurations in one shot.)

Which pairs are checked (MoveIt semantics, see docs/moveit notes §1, §3):

* link-link (self collision): never the same link; an explicit ACM entry wins;
  otherwise SRDF ``disable_collisions`` pairs and adjacent links (joined by one
  joint, or through a chain of geometry-less links, as the setup assistant's
  "Adjacent") are allowed; otherwise the ACM default entries decide (one
  default: its value; both: AND); otherwise checked.
* attached object - link: allowed when the link is the attachment link or one
  of its ``touch_links``; otherwise the ACM decides. Counted as self collision.
* attached - attached: allowed when attached to the same link or when one may
  touch the other's link; otherwise the ACM decides. Counted as self collision.
* link or attached object - world object: the ACM decides. World collision.
* world - world: never checked.

World objects (FCL objects, boxes, ACM mask) are built once per
:class:`~ikdiffuser_ros.collision.world.World` (identity and shapes; worlds
are immutable by convention) and dropped with it, scene-mesh BVHs included.

Queries are serialised by a lock (they move shared FCL objects); BVH meshes are
surface models, so a small object wholly inside a link mesh is not reported
(as in MoveIt).

Padding (``moveit_msgs/LinkPadding``): like MoveIt's ``PlanningScene``, the
padded robot is used against the world and the unpadded robot for self
collision. Primitives grow by the padding (box/cylinder length by twice),
mesh vertices move outward along their vertex normals.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import fcl
import numpy as np
import torch

from ikdiffuser_ros import native
from ikdiffuser_ros.clock import UnitClock
from ikdiffuser_ros.collision.world import AllowedCollisionMatrix, Shape, World
from ikdiffuser_ros.errors import InvalidRequestError, RobotDescriptionError

__all__ = ["CollisionChecker", "CollisionReport", "load_mesh"]

_AABB_EPS = 1e-6
_MESH_CACHE: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def load_mesh(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Mesh file -> (vertices (V, 3) float64, faces (F, 3) int64), cached per resolved path."""
    key = str(path)
    if key not in _MESH_CACHE:
        import trimesh

        try:
            mesh = trimesh.load(key, force="mesh")
        except Exception as exc:  # trimesh raises many types for unreadable files
            raise RobotDescriptionError(f"cannot load collision mesh {key}: {exc}") from None
        _MESH_CACHE[key] = (np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.faces, dtype=np.int64))
    return _MESH_CACHE[key]


def _pad_mesh(vertices: np.ndarray, faces: np.ndarray, pad: float) -> np.ndarray:
    """Vertices moved ``pad`` [m] along their (area-weighted) vertex normals."""
    if pad == 0.0 or len(faces) == 0:
        return vertices
    import trimesh

    mesh = trimesh.Trimesh(vertices, faces, process=False)
    return vertices + pad * np.asarray(mesh.vertex_normals)


@dataclass
class _Body:
    """One FCL shape attached to a robot link (link geometry or an attached object's shape)."""

    owner: str  # link name, or attached object id
    link: str  # the link whose pose moves it
    T_link_shape: np.ndarray  # (4, 4)
    obj: fcl.CollisionObject
    aabb_center: np.ndarray  # (3,) local AABB centre in the shape frame
    aabb_half: np.ndarray  # (3,) local AABB half extents
    is_sphere: bool = False
    attached: object = None  # the AttachedObject for attached bodies


def _fcl_primitive(kind: str, *, size=(), radius=0.0, length=0.0, pad=0.0):
    """FCL geometry + local AABB (center, half) for a primitive, grown by ``pad``."""
    if kind == "box":
        s = np.asarray(size, dtype=np.float64) + 2 * pad
        return fcl.Box(*s), np.zeros(3), s / 2
    if kind == "sphere":
        r = radius + pad
        return fcl.Sphere(r), np.zeros(3), np.full(3, r)
    if kind in ("cylinder", "cone"):
        r, h = radius + pad, length + 2 * pad
        geom = fcl.Cylinder(r, h) if kind == "cylinder" else fcl.Cone(r, h)
        return geom, np.zeros(3), np.array([r, r, h / 2])
    raise InvalidRequestError(f"unsupported primitive {kind!r}")


def _fcl_mesh(vertices: np.ndarray, faces: np.ndarray):
    if len(faces) == 0:
        raise InvalidRequestError("empty collision mesh")
    bvh = fcl.BVHModel()
    bvh.beginModel(len(vertices), len(faces))
    bvh.addSubModel(vertices, faces)
    bvh.endModel()
    lo, hi = vertices.min(axis=0), vertices.max(axis=0)
    return bvh, (lo + hi) / 2, (hi - lo) / 2


def _world_shape_geometry(shape: Shape, pad: float = 0.0):
    """FCL geometry + local AABB for a :class:`~ikdiffuser_ros.collision.world.Shape`."""
    d = shape.dims
    if shape.kind == "box":
        return _fcl_primitive("box", size=d, pad=pad)
    if shape.kind == "sphere":
        return _fcl_primitive("sphere", radius=float(d[0]), pad=pad)
    if shape.kind in ("cylinder", "cone"):
        return _fcl_primitive(shape.kind, radius=float(d[1]), length=float(d[0]), pad=pad)
    vertices = _pad_mesh(shape.vertices, shape.triangles, pad)
    return _fcl_mesh(vertices, shape.triangles)


@dataclass
class CollisionReport:
    """Per-configuration results of :meth:`CollisionChecker.check` (M configurations).

    Attributes:
        in_collision: (M,) bool, ``self_collision | world_collision``.
        self_collision: (M,) bool, robot links / attached objects among themselves.
        world_collision: (M,) bool, robot or attached objects against world objects.
        pairs: per configuration, up to ``max_pairs`` colliding ``(name, name)``
            pairs (link names and object ids), self pairs first.
    """

    in_collision: np.ndarray
    self_collision: np.ndarray
    world_collision: np.ndarray
    pairs: list[list[tuple[str, str]]] = field(default_factory=list)

    @property
    def free(self) -> np.ndarray:
        """(M,) bool, True where the configuration is collision free."""
        return ~self.in_collision

    def __len__(self) -> int:
        return len(self.in_collision)


#: Target duration of one slice of :meth:`CollisionChecker.check_until` [s].
SLICE_SECONDS = 0.01


class CollisionChecker:
    """Exact FCL collision checking for one robot.

    Args:
        model: a :class:`~ikdiffuser_ros.kinematics.robot_model.RobotModel`.
        padding: link padding [m] used against the world; a float for every
            link or a ``{link: padding}`` mapping (missing links: 0).
    """

    def __init__(self, model, padding: float | Mapping[str, float] = 0.0) -> None:
        self.model = model
        urdf = model.urdf
        if isinstance(padding, Mapping):
            unknown = set(padding) - set(urdf.links)
            if unknown:
                raise InvalidRequestError(f"padding for unknown links {sorted(unknown)}")
            self._padding = {k: float(v) for k, v in padding.items()}
            default_pad = 0.0
        else:
            self._padding = {}
            default_pad = float(padding)
        self._pad_of = {link: self._padding.get(link, default_pad) for link in urdf.links}
        self._bvh_cache: dict[tuple, tuple] = {}

        self.bodies: list[_Body] = []  # unpadded: self collision
        self.padded_bodies: list[_Body] = []  # padded: world collision (same objects when no padding)
        any_pad = any(p != 0.0 for p in self._pad_of.values())
        for name, link in urdf.links.items():
            for geometry in link.collisions:
                self.bodies.append(self._link_body(name, geometry, 0.0))
                if any_pad:
                    self.padded_bodies.append(self._link_body(name, geometry, self._pad_of[name]))
        if not any_pad:
            self.padded_bodies = self.bodies
        self.geometry_links = sorted({b.link for b in self.bodies}, key=list(urdf.links).index)
        self.adjacent = self._adjacent_pairs()
        self.disabled = frozenset(model.srdf.disabled_collisions) if model.srdf is not None else frozenset()
        self._self_pair_cache: tuple | None = None
        self._world_cache: tuple | None = None  # (weakref to World, key, _WorldBodies)
        self._compiled_fk: dict[tuple[str, ...], object] = {}  # links -> native.compiled_tree (None: torch FK)
        self._robot_body_arrays: dict[bool, tuple] = {}  # padded -> _body_arrays of the robot's own bodies
        self._lock = threading.RLock()  # queries move the shared FCL objects: one query at a time
        self._settled: World | None = None  # the world check_until validated for its slices

    # ------------------------------------------------------------------ construction
    def _link_body(self, link: str, g, pad: float) -> _Body:
        if g.kind == "mesh":
            from ikdiffuser_ros.resources import resolve_uri

            path = str(resolve_uri(g.filename))
            scale = tuple(float(s) for s in g.scale)
            key = (path, scale, pad)
            if key not in self._bvh_cache:
                vertices, faces = load_mesh(path)
                vertices = vertices * np.asarray(scale)
                if np.prod(np.sign(scale)) < 0:  # mirrored: keep the faces outward
                    faces = faces[:, ::-1].copy()
                vertices = _pad_mesh(vertices, faces, pad)
                self._bvh_cache[key] = _fcl_mesh(vertices, faces)
            geom, center, half = self._bvh_cache[key]
        else:
            geom, center, half = _fcl_primitive(g.kind, size=g.size, radius=g.radius, length=g.length, pad=pad)
        return _Body(link, link, np.asarray(g.origin, dtype=np.float64), fcl.CollisionObject(geom, fcl.Transform()),
                     center, half, g.kind == "sphere")

    def _adjacent_pairs(self) -> frozenset[frozenset[str]]:
        """Links joined by one joint, or through a chain of geometry-less links."""
        urdf = self.model.urdf
        has_geometry = {name for name, link in urdf.links.items() if link.collisions}
        pairs = set()
        for joint in urdf.joints.values():
            pairs.add(frozenset((joint.parent, joint.child)))
        for link in has_geometry:
            parent = urdf.child_joint[link].parent if link in urdf.child_joint else None
            while parent is not None:
                pairs.add(frozenset((link, parent)))
                if parent in has_geometry:
                    break
                parent = urdf.child_joint[parent].parent if parent in urdf.child_joint else None
        return frozenset(p for p in pairs if len(p) == 2)

    def _attached_bodies(self, world: World | None, padded: bool) -> list[_Body]:
        bodies = []
        if world is None:
            return bodies
        for att in world.attached:
            if att.link not in self.model.urdf.links:
                raise InvalidRequestError(f"object {att.object.id!r} is attached to unknown link {att.link!r}")
            pad = self._pad_of.get(att.link, 0.0) if padded else 0.0
            for shape in att.object.shapes:
                geom, center, half = self._mesh_geometry(shape, pad) if shape.kind == "mesh" else \
                    _world_shape_geometry(shape, pad)
                bodies.append(_Body(att.object.id, att.link, shape.pose, fcl.CollisionObject(geom, fcl.Transform()),
                                    center, half, shape.kind == "sphere", att))
        return bodies

    # ------------------------------------------------------------------ pair rules
    def link_pair_allowed(self, a: str, b: str, acm: AllowedCollisionMatrix | None = None) -> bool:
        """True when a self collision between links ``a`` and ``b`` is allowed (not checked)."""
        if a == b:
            return True
        key = frozenset((a, b))
        if acm is not None and key in acm.entries:
            return acm.entries[key]
        if key in self.disabled or key in self.adjacent:
            return True
        return acm is not None and acm.allowed(a, b)

    def _body_pair_allowed(self, x: _Body, y: _Body, acm: AllowedCollisionMatrix | None) -> bool:
        if x.attached is None and y.attached is None:
            return self.link_pair_allowed(x.owner, y.owner, acm)
        if x.attached is not None and y.attached is not None:
            if x.owner == y.owner or x.link == y.link or x.attached.may_touch(y.link) or y.attached.may_touch(x.link):
                return True
            return acm is not None and acm.allowed(x.owner, y.owner)
        att, link = (x, y) if x.attached is not None else (y, x)
        if att.attached.may_touch(link.owner):
            return True
        return acm is not None and acm.allowed(att.owner, link.owner)

    def self_pairs(self, acm: AllowedCollisionMatrix | None = None) -> list[tuple[str, str]]:
        """The link pairs checked for self collision (sorted names), given an ACM."""
        names = self.geometry_links
        return [(a, b) for i, a in enumerate(names) for b in names[i + 1:] if not self.link_pair_allowed(a, b, acm)]

    def _self_body_pairs(self, bodies: list[_Body], n_link_bodies: int, acm) -> tuple[np.ndarray, np.ndarray]:
        """Index arrays (i, j) of body pairs to check for self collision."""
        cache_ok = n_link_bodies == len(bodies) and (acm is None or (not acm.entries and not acm.default_entries))
        if cache_ok and self._self_pair_cache is not None:
            return self._self_pair_cache
        ii, jj = [], []
        for i in range(len(bodies)):
            for j in range(i + 1, len(bodies)):
                if not self._body_pair_allowed(bodies[i], bodies[j], acm):
                    ii.append(i)
                    jj.append(j)
        out = np.asarray(ii, dtype=np.int64), np.asarray(jj, dtype=np.int64)
        if cache_ok:
            self._self_pair_cache = out
        return out

    # ------------------------------------------------------------------ geometry per configuration
    def _as_q(self, q) -> torch.Tensor:
        """(M, n) float64 CPU tensor, or InvalidRequestError."""
        q = torch.as_tensor(q).detach().to(device="cpu", dtype=torch.float64)
        if q.ndim != 2 or q.shape[1] != self.model.n_joints:
            raise InvalidRequestError(f"q must be (M, {self.model.n_joints}), got {tuple(q.shape)}")
        return q

    def _link_poses(self, q, links: list[str]) -> np.ndarray:
        """(M, len(links), 4, 4) float64 poses of ``links`` at ``q`` (M, n): the compiled FK where it is built (a
        one-row check's FK 0.3 ms -> microseconds; the same tree as ``model.fk_links``), else torch's."""
        q = self._as_q(q)
        key = tuple(links)
        if key not in self._compiled_fk:
            self._compiled_fk[key] = native.compiled_tree(self.model, links) if native.available() else None
        tree = self._compiled_fk[key]
        if tree is not None:  # q is a float64 CPU tensor (_as_q)
            return tree.fk(q.numpy())
        with torch.no_grad():
            return self.model.fk_links(q, links).numpy()

    @staticmethod
    def _shape_poses(T_links: np.ndarray, link_index: np.ndarray, T_local: np.ndarray) -> np.ndarray:
        """(M, L, 4, 4), (S,), (S, 4, 4) -> (M, S, 4, 4)."""
        return np.einsum("msij,sjk->msik", T_links[:, link_index], T_local)

    @staticmethod
    def _aabbs(T: np.ndarray, center: np.ndarray, half: np.ndarray, sphere: np.ndarray):
        """World-axis AABBs (centre, half extents) (M, S, 3) of shapes posed by T (M, S, 4, 4)."""
        R = T[..., :3, :3]
        c = np.einsum("msij,sj->msi", R, center) + T[..., :3, 3]
        h = np.einsum("msij,sj->msi", np.abs(R), half)
        if sphere.any():
            h[:, sphere] = half[sphere]
        return c, h + _AABB_EPS

    def _fk(self, q, world: World | None) -> tuple[dict[str, int], np.ndarray]:
        """One FK call for every link carrying geometry or an attached object: (link -> index, (M, L, 4, 4))."""
        links = list(self.geometry_links)
        if world is not None:
            for att in world.attached:
                if att.link not in self.model.urdf.links:
                    raise InvalidRequestError(f"object {att.object.id!r} is attached to unknown link {att.link!r}")
                links.append(att.link)
        links = list(dict.fromkeys(links))
        return {name: i for i, name in enumerate(links)}, self._link_poses(q, links)

    def _prepare(self, q, world: World | None, padded: bool, fk=None):
        bodies = self.padded_bodies if padded else self.bodies
        n_link = len(bodies)
        attached = self._attached_bodies(world, padded)
        bodies = bodies + attached
        index, T_links = fk if fk is not None else self._fk(q, world)
        link_index, T_local, center, half, sphere = self._body_arrays(bodies, index, padded, not attached)
        T = self._shape_poses(T_links, link_index, T_local)
        c, h = self._aabbs(T, center, half, sphere)
        return bodies, n_link, T, c, h

    def _body_arrays(self, bodies: list[_Body], index: dict[str, int], padded: bool, robot_only: bool) -> tuple:
        """(link index (S,), T_link_shape (S, 4, 4), AABB centre and half extents (S, 3), is-sphere (S,)) of
        ``bodies``; the robot's own (``robot_only``: no attached object) are built once per padding."""
        if robot_only and padded in self._robot_body_arrays:
            return self._robot_body_arrays[padded]
        arrays = (np.array([index[b.link] for b in bodies], dtype=np.int64),
                  np.stack([b.T_link_shape for b in bodies]) if bodies else np.zeros((0, 4, 4)),
                  np.stack([b.aabb_center for b in bodies]) if bodies else np.zeros((0, 3)),
                  np.stack([b.aabb_half for b in bodies]) if bodies else np.zeros((0, 3)),
                  np.array([b.is_sphere for b in bodies], dtype=bool))
        if robot_only:
            self._robot_body_arrays[padded] = arrays
        return arrays

    def _mesh_geometry(self, shape: Shape, pad: float):
        """BVH of a world/attached mesh shape, cached by content (scenes are re-sent unchanged)."""
        import hashlib

        digest = hashlib.sha1(shape.vertices.tobytes() + shape.triangles.tobytes()).hexdigest()
        key = ("world-mesh", digest, pad)
        if key not in self._bvh_cache:
            if len(self._bvh_cache) > 256:  # keep the robot's own meshes, drop old scene meshes
                for k in [k for k in self._bvh_cache if k[0] == "world-mesh"]:
                    del self._bvh_cache[k]
            self._bvh_cache[key] = _world_shape_geometry(shape, pad)
        return self._bvh_cache[key]

    def _world_bodies(self, world: World | None):
        """World objects as (ids, fcl objects, AABB centre (W, 3), half (W, 3)), built once per World."""
        if world is None:
            return [], [], np.zeros((0, 3)), np.zeros((0, 3))
        return self._world_entry(world)["bodies"]

    def _world_entry(self, world: World) -> dict:
        """The cached per-World data (rebuilt when the world or its shapes or ACM object change; not
        looked at again for the world :meth:`check_until` is checking slice by slice)."""
        cached = self._world_cache
        if self._settled is world and cached is not None and cached[0]() is world:
            return cached[2]
        key = (tuple(id(s) for _, s in world.iter_world_shapes()), id(world.acm), len(world.acm.entries),
               len(world.acm.default_entries))
        cached = self._world_cache
        if cached is not None and cached[0]() is world and cached[1] == key:
            return cached[2]
        self._world_cache = None  # drop the old world's objects (and scene meshes) before building
        for k in [k for k in self._bvh_cache if k[0] == "world-mesh"]:
            del self._bvh_cache[k]
        ids, objs, cs, hs = [], [], [], []
        for object_id, shape in world.iter_world_shapes():
            geom, center, half = self._mesh_geometry(shape, 0.0) if shape.kind == "mesh" else \
                _world_shape_geometry(shape)
            R, t = shape.pose[:3, :3], shape.pose[:3, 3]
            ids.append(object_id)
            objs.append(fcl.CollisionObject(geom, fcl.Transform(R, t)))
            cs.append(R @ center + t)
            hs.append(np.abs(R) @ half if shape.kind != "sphere" else half)
        bodies = (ids, objs, np.stack(cs), np.stack(hs) + _AABB_EPS) if ids else \
            (ids, objs, np.zeros((0, 3)), np.zeros((0, 3)))
        entry = {"bodies": bodies, "allowed": {}}
        self._world_cache = (weakref.ref(world), key, entry)
        return entry

    def _world_allowed(self, world: World, owners: list[str]) -> np.ndarray:
        """(B, W) bool: the ACM allows body owner b to touch world shape w (cached per World and owners)."""
        entry = self._world_entry(world)
        ids = entry["bodies"][0]
        key = tuple(owners)
        if key not in entry["allowed"]:
            acm = world.acm
            if not acm.entries and not acm.default_entries:
                allowed = np.zeros((len(owners), len(ids)), dtype=bool)
            else:
                unique_ids = list(dict.fromkeys(ids))
                col = {oid: k for k, oid in enumerate(unique_ids)}
                per_owner = {o: np.array([acm.allowed(o, oid) for oid in unique_ids], dtype=bool)
                             for o in dict.fromkeys(owners)}
                index = np.array([col[oid] for oid in ids], dtype=np.int64)
                allowed = np.stack([per_owner[o][index] for o in owners]).reshape(len(owners), len(ids))
            entry["allowed"][key] = allowed
        return entry["allowed"][key]

    @staticmethod
    def _near_world(c: np.ndarray, h: np.ndarray, wc: np.ndarray, wh: np.ndarray) -> np.ndarray:
        """Indices of the world shapes whose AABB overlaps the whole robot's AABB in some configuration.

        ``c``, ``h``: (M, S, 3) body AABBs; ``wc``, ``wh``: (W, 3) world AABBs.
        """
        lo, hi = (c - h).min(axis=1), (c + h).max(axis=1)  # (M, 3)
        centre, half = (lo + hi) / 2, (hi - lo) / 2
        near = np.all(np.abs(wc[None] - centre[:, None]) <= wh[None] + half[:, None], axis=-1)  # (M, W)
        return np.flatnonzero(near.any(axis=0))

    # ------------------------------------------------------------------ queries
    def check(self, q, world: World | None = None, *, self_collision: bool = True,
              max_pairs: int = 4) -> CollisionReport:
        """Collision status of ``q`` (M, n) against itself and ``world``.

        Args:
            q: (M, n) joint values (tensor or array, any float dtype), in ``model.joint_names`` order.
            world: objects, attached objects and ACM; None = self collision only.
            self_collision: also check the robot against itself.
            max_pairs: colliding pairs reported per configuration and per kind
                (self, world); checking stops there, so ``pairs`` is not exhaustive.

        Returns:
            :class:`CollisionReport` with (M,) bool arrays and named pairs.
        """
        with self._lock:
            return self._check(self._as_q(q), world, self_collision, max_pairs)

    def prepare(self, world: World | None) -> None:
        """Build ``world``'s FCL objects now (they are cached per World; 5000 boxes take ~0.1 s), so a
        later deadline-bound :meth:`check_until` does not pay for it."""
        if world is not None:
            with self._lock:
                self._world_entry(world)

    def check_until(self, q, world: World | None, deadline: float | None, slice_rows: int = 8
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Collision status of ``q`` (M, n), checked in slices until ``deadline`` (a ``time.monotonic()``
        value; None = no limit; the first slice always runs). Slices start at ``slice_rows`` rows and
        double while one takes under :data:`SLICE_SECONDS` / 4, halve when one takes over it.

        Returns ``(in_collision (M,) bool, checked (M,) bool)``: rows past the deadline are unchecked
        (``in_collision`` False there; callers must not report them as collision free).
        """
        q = self._as_q(q)
        M = q.shape[0]
        hit, checked = np.zeros(M, dtype=bool), np.zeros(M, dtype=bool)
        start, size, clock = 0, max(1, slice_rows), UnitClock(deadline)
        with self._lock:
            if world is not None:
                self._world_entry(world)  # validated (and built) once for all the slices
            self._settled = world
            try:
                while start < M and (clock.time_for_another() or start == 0):
                    stop, t = min(M, start + size), time.monotonic()
                    hit[start:stop] = self._check(q[start:stop], world, True, 1).in_collision
                    checked[start:stop] = True
                    took, start = time.monotonic() - t, stop
                    size = size * 2 if took < SLICE_SECONDS / 4 else max(1, size // 2) if took > SLICE_SECONDS else size
            finally:
                self._settled = None
        return hit, checked

    def _check(self, q: torch.Tensor, world: World | None, self_collision: bool, max_pairs: int) -> CollisionReport:
        """:meth:`check` on ``q`` (M, n) float64, the lock held: :meth:`_check_self`, then :meth:`_check_world`."""
        M = q.shape[0]
        pairs: list[list[tuple[str, str]]] = [[] for _ in range(M)]
        max_pairs = max(int(max_pairs), 1)
        fk = self._fk(q, world)
        self_hit = self._check_self(q, world, fk, pairs, max_pairs) if self_collision else np.zeros(M, dtype=bool)
        world_hit = self._check_world(q, world, fk, pairs, max_pairs)
        return CollisionReport(self_hit | world_hit, self_hit, world_hit, pairs)

    def _check_self(self, q: torch.Tensor, world: World | None, fk, pairs: list[list[tuple[str, str]]],
                    max_pairs: int) -> np.ndarray:
        """(M,) bool self collision of the unpadded robot (and attached objects); appends the pairs found.

        ``fk``: :meth:`_fk`'s result for ``q`` (M, n); ``pairs``: per configuration, gets up to
        ``max_pairs`` colliding (owner, owner) names.
        """
        hit = np.zeros(q.shape[0], dtype=bool)
        bodies, n_link, T, c, h = self._prepare(q, world, padded=False, fk=fk)
        ii, jj = self._self_body_pairs(bodies, n_link, world.acm if world is not None else None)
        if not len(ii):
            return hit
        overlap = np.all(np.abs(c[:, ii] - c[:, jj]) <= h[:, ii] + h[:, jj], axis=-1)  # (M, P)
        request = fcl.CollisionRequest(num_max_contacts=1, enable_contact=False)
        for m in np.flatnonzero(overlap.any(axis=1)):
            found = _self_row_hits(bodies, T[m], ii, jj, np.flatnonzero(overlap[m]), request, max_pairs)
            pairs[m].extend(found)
            hit[m] = bool(found)
        return hit

    def _check_world(self, q: torch.Tensor, world: World | None, fk, pairs: list[list[tuple[str, str]]],
                     max_pairs: int) -> np.ndarray:
        """(M,) bool collision of the padded robot (and attached objects) with the world objects.

        Appends up to ``max_pairs`` colliding (owner, object id) names per configuration to ``pairs``;
        ``fk``: :meth:`_fk`'s result for ``q`` (M, n).
        """
        hit = np.zeros(q.shape[0], dtype=bool)
        w_ids, w_objs, wc, wh = self._world_bodies(world)
        if not w_ids:
            return hit
        bodies, _, T, c, h = self._prepare(q, world, padded=True, fk=fk)
        near = self._near_world(c, h, wc, wh)
        allowed = self._world_allowed(world, [b.owner for b in bodies])[:, near]
        ii, jj = np.nonzero(~allowed)  # body-major, world shapes in order, as the pairs are reported
        jj = near[jj]
        if not len(ii):
            return hit
        overlap = np.all(np.abs(c[:, ii] - wc[jj]) <= h[:, ii] + wh[jj], axis=-1)  # (M, P)
        request = fcl.CollisionRequest(num_max_contacts=1, enable_contact=False)
        for m in np.flatnonzero(overlap.any(axis=1)):
            found = _world_row_hits(bodies, T[m], ii, jj, np.flatnonzero(overlap[m]), w_objs, w_ids,
                                    request, max_pairs)
            pairs[m].extend(found)
            hit[m] = bool(found)
        return hit

    def min_distance(self, q, world: World | None = None, *, include_self: bool = False):
        """Smallest distance [m] from the (padded) robot to the world, per configuration.

        Args:
            q: (M, n) joint values.
            world: the scene; pairs allowed by the ACM are skipped.
            include_self: also take the checked self-collision pairs into account.

        Returns:
            ``(distance (M,) float64, closest (M,) list of (name, name) or None)``.
            The distance is 0 where a checked pair is in contact or penetrating,
            ``inf`` where nothing is checked. Pairs are pruned with an AABB lower bound.
        """
        with self._lock:
            return self._min_distance(self._as_q(q), world, include_self)

    def _min_distance(self, q: torch.Tensor, world: World | None, include_self: bool):
        """:meth:`min_distance` on ``q`` (M, n) float64, the lock held.

        Exact FCL distances [m] of the candidate pairs of :meth:`_distance_jobs`, per configuration in
        increasing order of their AABB lower bound, until the bound reaches the best distance so far.
        """
        M = q.shape[0]
        best = np.full(M, np.inf)
        closest: list = [None] * M
        request = fcl.DistanceRequest()
        for job in self._distance_jobs(q, world, include_self):
            for m in range(M):
                _nearest_in_row(job, m, best, closest, request)
        return best, closest

    def _distance_jobs(self, q: torch.Tensor, world: World | None, include_self: bool) -> list[_DistanceJob]:
        """The pairs :meth:`_min_distance` measures: padded robot - world, then (``include_self``) self pairs."""
        acm = world.acm if world is not None else None
        jobs = []
        fk = self._fk(q, world)
        w_ids, w_objs, wc, wh = self._world_bodies(world)
        if w_ids:
            bodies, _, T, c, h = self._prepare(q, world, padded=True, fk=fk)
            ii = np.array([i for i in range(len(bodies)) for j in range(len(w_ids))
                           if acm is None or not acm.allowed(bodies[i].owner, w_ids[j])], dtype=np.int64)
            jj = np.array([j for i in range(len(bodies)) for j in range(len(w_ids))
                           if acm is None or not acm.allowed(bodies[i].owner, w_ids[j])], dtype=np.int64)
            if len(ii):
                gap = np.abs(c[:, ii] - wc[jj]) - h[:, ii] - wh[jj]
                lower = np.linalg.norm(np.maximum(gap, 0.0), axis=-1)
                jobs.append(_DistanceJob(bodies, T, None, ii, jj, lower, w_objs, w_ids))
        if include_self:
            bodies, n_link, T, c, h = self._prepare(q, world, padded=False, fk=fk)
            ii, jj = self._self_body_pairs(bodies, n_link, acm)
            if len(ii):
                gap = np.abs(c[:, ii] - c[:, jj]) - h[:, ii] - h[:, jj]
                lower = np.linalg.norm(np.maximum(gap, 0.0), axis=-1)
                jobs.append(_DistanceJob(bodies, T, bodies, ii, jj, lower, None, None))
        return jobs


class _DistanceJob(NamedTuple):
    """Candidate pairs (bodies[ii[p]], other[jj[p]]) of :meth:`CollisionChecker._min_distance`.

    ``bodies_b`` None: the others are the world objects ``w_objs`` (names ``w_ids``); else the
    bodies ``bodies_b``, posed by ``T`` too. ``T``: (M, S, 4, 4) body poses; ``lower``: (M, P)
    AABB lower bounds of the pair distances [m].
    """

    bodies: list[_Body]
    T: np.ndarray
    bodies_b: list[_Body] | None
    ii: np.ndarray
    jj: np.ndarray
    lower: np.ndarray
    w_objs: list | None
    w_ids: list[str] | None


def _self_row_hits(bodies: list[_Body], T_m: np.ndarray, ii: np.ndarray, jj: np.ndarray, candidates: np.ndarray,
                   request, max_pairs: int) -> list[tuple[str, str]]:
    """Colliding (owner, owner) pairs of one configuration, in candidate order, at most ``max_pairs``.

    ``T_m``: (S, 4, 4) body poses; ``candidates``: indices into the pair arrays ``ii``, ``jj`` whose
    AABBs overlap. Bodies get their FCL transform set once, when first needed.
    """
    stamp = {}
    found = set()
    hits = []
    for p in candidates:
        i, j = ii[p], jj[p]
        names = (bodies[i].owner, bodies[j].owner)
        if names in found:
            continue
        for k in (i, j):
            if k not in stamp:
                Tk = T_m[k]
                bodies[k].obj.setTransform(fcl.Transform(Tk[:3, :3], Tk[:3, 3]))
                stamp[k] = True
        if fcl.collide(bodies[i].obj, bodies[j].obj, request, fcl.CollisionResult()):
            found.add(names)
            hits.append(names)
            if len(found) >= max_pairs:
                break
    return hits


def _world_row_hits(bodies: list[_Body], T_m: np.ndarray, ii: np.ndarray, jj: np.ndarray, candidates: np.ndarray,
                    w_objs: list, w_ids: list[str], request, max_pairs: int) -> list[tuple[str, str]]:
    """Like :func:`_self_row_hits` for (body, world object) pairs: (owner, object id) names."""
    stamp = {}
    found = set()
    hits = []
    for p in candidates:
        i, j = ii[p], jj[p]
        names = (bodies[i].owner, w_ids[j])
        if names in found:
            continue
        if i not in stamp:
            Ti = T_m[i]
            bodies[i].obj.setTransform(fcl.Transform(Ti[:3, :3], Ti[:3, 3]))
            stamp[i] = True
        if fcl.collide(bodies[i].obj, w_objs[j], request, fcl.CollisionResult()):
            found.add(names)
            hits.append(names)
            if len(found) >= max_pairs:
                break
    return hits


def _nearest_in_row(job: _DistanceJob, m: int, best: np.ndarray, closest: list, request) -> None:
    """Lower ``best[m]`` [m] (and set ``closest[m]``) with the pairs of ``job`` in configuration ``m``.

    Pairs are measured in increasing order of their lower bound, until it reaches ``best[m]``.
    """
    bodies, T, bodies_b, ii, jj, lower, w_objs, w_ids = job
    for p in np.argsort(lower[m], kind="stable"):
        if lower[m, p] >= best[m]:
            break
        i, j = ii[p], jj[p]
        Ti = T[m, i]
        bodies[i].obj.setTransform(fcl.Transform(Ti[:3, :3], Ti[:3, 3]))
        if bodies_b is None:
            other, name_b = w_objs[j], w_ids[j]
        else:
            Tj = T[m, j]
            other, name_b = bodies_b[j].obj, bodies_b[j].owner
            other.setTransform(fcl.Transform(Tj[:3, :3], Tj[:3, 3]))
        d = fcl.distance(bodies[i].obj, other, request, fcl.DistanceResult())
        if d < 1e-9:  # fcl reports -1 (or a negative depth) for intersecting shapes
            d = 0.0
        if d < best[m]:
            best[m] = max(d, 0.0)
            closest[m] = (bodies[i].owner, name_b)
