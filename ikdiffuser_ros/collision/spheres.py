"""Differentiable sphere approximation of a robot's collision geometry.

Every link with URDF collision geometry gets a few spheres (at most
``max_spheres`` per link) that contain its geometry:

* a link whose only geometry is a sphere keeps that sphere exactly;
* otherwise all the link's shapes (boxes, cylinders, spheres, meshes loaded with
  trimesh, scaled and placed by their ``<origin>``) are sampled: sphere centres
  are k-means centres of points filling the convex hull of the link, and each
  radius is the largest distance to the surface points (mesh vertices plus a
  dense surface sample) assigned to that centre, plus ``pad`` [m]. The number
  of spheres ``k <= max_spheres`` minimises ``union volume / hull volume +
  sphere_cost * k`` (union volume by Monte Carlo).

The sphere set depends only on the URDF, so it is cached per robot in
``config/spheres/<robot>.json``, or ``<stem>.spheres.json`` next to a robot YAML kept outside
``config/robots`` (:func:`sphere_file`; written by :func:`generate_sphere_file` or ``ikdiffuser init-robot``,
checked against :meth:`RobotModel.fingerprint`, regenerated in memory if the
file is missing or stale).

Self-collision pairs: sphere pairs of two different links, skipping SRDF
``disable_collisions`` pairs, parent-child links (directly joined, or joined
through links without geometry), pairs whose relative pose no active joint
changes, and pairs whose sphere sets overlap in at least
``always_colliding_fraction`` (80 %) of random configurations while the exact
geometry (python-fcl) collides rarely (<= 10 %: the spheres cannot represent
that pair) or almost always (>= 95 %, as MoveIt's setup assistant disables
"always in collision" pairs). The list and both rates are stored in the JSON.
Signed distances are ``|c_i - c_j| - r_i - r_j`` [m] (negative = penetration
of the sphere approximations).

World distances use exact signed distances from sphere centres to boxes,
spheres and capped cylinders; a cone is treated as its bounding cylinder and
a mesh as its oriented bounding box (both conservative). Everything is batched
torch code, differentiable in ``q``.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ikdiffuser_ros.collision.world import Shape, World, mesh_obb
from ikdiffuser_ros.errors import RobotDescriptionError, SphereFileError
from ikdiffuser_ros.kinematics.joint_kinds import uniform_in_limits
from ikdiffuser_ros.kinematics.joint_names import variables_of
from ikdiffuser_ros.kinematics.robot_model import RobotModel
from ikdiffuser_ros.kinematics.urdf import Geometry

#: Bump when the fitting changes, so cached files are regenerated.
GENERATOR_VERSION = 2


# ---------------------------------------------------------------------------- fitting
@dataclass(frozen=True)
class SphereFitConfig:
    """Settings of the sphere fitting (lengths in m)."""

    #: Most spheres per link.
    max_spheres: int = 10
    #: k minimises (union volume of the spheres / hull volume) + sphere_cost * k.
    sphere_cost: float = 0.05
    #: Added to every radius, covering what the surface sample misses [m].
    pad: float = 0.002
    #: Surface points sampled per link (plus all mesh vertices).
    surface_samples: int = 6000
    #: Interior points of the convex hull used for the k-means centres.
    volume_samples: int = 3000
    #: Random configurations used to find always-colliding pairs.
    collision_samples: int = 1000
    #: Pairs whose spheres collide in at least this fraction of those samples are ignored when the
    #: exact (FCL) geometry collides in at most ``exact_rare_fraction`` of them (the spheres cannot
    #: represent the pair) or in at least 95 % (always colliding); without python-fcl, when the
    #: spheres collide in at least 95 %.
    always_colliding_fraction: float = 0.8
    exact_rare_fraction: float = 0.1
    #: Seed of every random choice (the file is deterministic).
    seed: int = 0


def geometry_mesh(geom: Geometry | Shape):
    """A URDF collision :class:`Geometry` or a world :class:`Shape` -> trimesh.Trimesh in its parent frame."""
    import trimesh

    if isinstance(geom, Shape):
        kind, T = geom.kind, geom.pose
        if kind == "box":
            mesh = trimesh.creation.box(extents=geom.dims)
        elif kind == "sphere":
            mesh = trimesh.creation.icosphere(subdivisions=3, radius=float(geom.dims[0]))
        elif kind in ("cylinder", "cone"):
            height, radius = (float(v) for v in geom.dims)
            mesh = (trimesh.creation.cylinder(radius=radius, height=height, sections=32) if kind == "cylinder"
                    else trimesh.creation.cone(radius=radius, height=height, sections=32))
            if kind == "cone":  # trimesh's cone has its base at z = 0; shape_msgs centres it
                mesh.apply_translation([0, 0, -height / 2])
        else:
            mesh = trimesh.Trimesh(geom.vertices, geom.triangles, process=False)
    else:
        from ikdiffuser_ros.resources import resolve_uri

        T = geom.origin
        if geom.kind == "box":
            mesh = trimesh.creation.box(extents=geom.size)
        elif geom.kind == "sphere":
            mesh = trimesh.creation.icosphere(subdivisions=3, radius=geom.radius)
        elif geom.kind == "cylinder":
            mesh = trimesh.creation.cylinder(radius=geom.radius, height=geom.length, sections=32)
        elif geom.kind == "mesh":
            mesh = _load_mesh(resolve_uri(geom.filename))
            mesh.apply_scale(np.asarray(geom.scale, dtype=float))
        else:  # pragma: no cover - the URDF parser only produces the kinds above
            raise ValueError(f"unsupported geometry kind {geom.kind!r}")
    mesh = mesh.copy()
    mesh.apply_transform(np.asarray(T, dtype=float))
    return mesh


def _load_mesh(path: Path):
    """A collision mesh file -> trimesh.Trimesh; RobotDescriptionError naming the file when it cannot be loaded."""
    import trimesh

    try:
        return trimesh.load(str(path), force="mesh")
    except Exception as exc:  # trimesh raises many types for missing or unreadable files
        raise RobotDescriptionError(f"cannot load collision mesh {path}: {exc}") from None


def _surface_points(meshes, count: int, rng: np.random.Generator) -> np.ndarray:
    import trimesh

    pts = [m.vertices for m in meshes]
    areas = np.array([max(m.area, 1e-12) for m in meshes])
    per = np.maximum(1, (count * areas / areas.sum()).astype(int))
    for mesh, k in zip(meshes, per):
        if len(mesh.faces):
            sampled, _ = trimesh.sample.sample_surface(mesh, int(k), seed=int(rng.integers(2**31)))
            pts.append(sampled)
    return np.concatenate(pts, 0)


def _hull_interior(points: np.ndarray, count: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Points filling the convex hull of ``points`` (rejection sampling) and the hull volume [m^3]."""
    from scipy.spatial import ConvexHull, QhullError

    lo, hi = points.min(0), points.max(0)
    try:
        hull = ConvexHull(points)
    except (QhullError, ValueError):  # flat or degenerate: use the points themselves
        return points[rng.choice(len(points), min(count, len(points)), replace=False)], 1e-12
    eq = hull.equations
    inside = []
    total = 0
    while total < count:
        cand = lo + (hi - lo) * rng.random((4 * count, 3))
        ok = (cand @ eq[:, :3].T + eq[:, 3] <= 1e-12).all(1)
        inside.append(cand[ok])
        total += int(ok.sum())
        if total == 0 and len(inside) > 4:
            return points[rng.choice(len(points), min(count, len(points)), replace=False)], hull.volume
    return np.concatenate(inside, 0)[:count], float(hull.volume)


def _kmeans(points: np.ndarray, k: int, rng: np.random.Generator, iters: int = 25) -> np.ndarray:
    """Lloyd's k-means with farthest-point initialisation -> (k, 3) centres."""
    centres = [points[rng.integers(len(points))]]
    d2 = ((points - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        centres.append(points[int(d2.argmax())])
        d2 = np.minimum(d2, ((points - centres[-1]) ** 2).sum(1))
    c = np.stack(centres)
    for _ in range(iters):
        assign = ((points[:, None] - c[None]) ** 2).sum(-1).argmin(1)
        for j in range(k):
            members = points[assign == j]
            if len(members):
                c[j] = members.mean(0)
    return c


def _union_volume(spheres: np.ndarray, rng: np.random.Generator, count: int = 20000) -> float:
    """Monte Carlo volume [m^3] of a union of (k, 4) spheres."""
    lo = (spheres[:, :3] - spheres[:, 3:]).min(0)
    hi = (spheres[:, :3] + spheres[:, 3:]).max(0)
    pts = lo + (hi - lo) * rng.random((count, 3))
    inside = (((pts[:, None] - spheres[None, :, :3]) ** 2).sum(-1) <= spheres[None, :, 3] ** 2).any(1)
    return float(inside.mean() * np.prod(hi - lo))


def _cover(centres: np.ndarray, surface: np.ndarray, pad: float) -> np.ndarray:
    """Radii so that every surface point lies in the sphere of its nearest centre."""
    d = np.sqrt(((surface[:, None] - centres[None]) ** 2).sum(-1))
    assign = d.argmin(1)
    radii = np.zeros(len(centres))
    np.maximum.at(radii, assign, d[np.arange(len(surface)), assign])
    return radii + pad


def fit_spheres(shapes: Sequence[Geometry | Shape], config: SphereFitConfig = SphereFitConfig()) -> np.ndarray:
    """Shapes of one link (or one object) -> (k, 4) spheres ``[x, y, z, r]`` in the parent frame."""
    if len(shapes) == 1 and _sphere_of(shapes[0]) is not None:
        return _sphere_of(shapes[0])[None]
    rng = np.random.default_rng(config.seed)
    meshes = [geometry_mesh(s) for s in shapes]
    surface = _surface_points(meshes, config.surface_samples, rng)
    interior, volume = _hull_interior(surface, config.volume_samples, rng)
    fits, scores = [], []
    for k in range(1, config.max_spheres + 1):
        centres = _kmeans(interior, k, rng) if k > 1 else interior.mean(0, keepdims=True)
        radii = _cover(centres, surface, config.pad)
        fits.append(np.concatenate([centres, radii[:, None]], 1))
        scores.append(_union_volume(fits[-1], rng) / max(volume, 1e-12) + config.sphere_cost * k)
    best = fits[int(np.argmin(scores))]
    # drop spheres that cover nothing (radius == pad)
    return best[best[:, 3] > config.pad + 1e-9] if (best[:, 3] > config.pad + 1e-9).any() else best


def _sphere_of(shape: Geometry | Shape) -> np.ndarray | None:
    if isinstance(shape, Shape):
        if shape.kind == "sphere":
            return np.array([*shape.pose[:3, 3], shape.dims[0]])
    elif shape.kind == "sphere":
        return np.array([*shape.origin[:3, 3], shape.radius])
    return None


# ---------------------------------------------------------------------------- robot structure
def _active_vars(model: RobotModel, link: str) -> frozenset[str]:
    """Names of the active variables that move ``link`` (root frame)."""
    names = set(model.joint_names)
    out = set()
    if model.virtual_joint is not None:
        out |= set(variables_of(model.virtual_joint.name, names))
    for joint in model.urdf.path_from_root(link):
        if joint.type == "fixed":
            continue
        leader = joint
        while leader.mimic is not None:
            leader = model.urdf.joints[leader.mimic.joint]
        out |= set(variables_of(leader.name, names))
    return frozenset(out)


def _geometric_parent(model: RobotModel, link: str, with_geometry: set[str]) -> str | None:
    """Nearest ancestor link that has collision geometry."""
    while link in model.urdf.child_joint:
        link = model.urdf.child_joint[link].parent
        if link in with_geometry:
            return link
    return None


def sphere_file(robot_name: str) -> Path:
    """The sphere file of a robot: ``config/spheres/<robot>.json``, or ``<stem>.spheres.json`` next to a robot
    YAML outside ``config/robots`` read in this process (:func:`ikdiffuser_ros.robots.sphere_file_for`)."""
    from ikdiffuser_ros.robots import sphere_file_for

    return sphere_file_for(robot_name)


def read_sphere_file(path: Path, model: RobotModel) -> dict | None:
    """The checked contents of the sphere file ``path`` for ``model`` (see :func:`generate_sphere_data`).

    None when there is no file, or when it is stale (made for another fingerprint or generator version: a
    warning; the caller refits). :class:`SphereFileError` naming ``path`` when it is not a regular file,
    cannot be read, is not JSON, or its spheres or pairs are malformed or name links ``model`` lacks.
    """
    if not path.exists():
        return None
    if not path.is_file():
        raise SphereFileError(f"sphere file {path}: not a regular file")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SphereFileError(f"sphere file {path}: cannot be read: {exc}") from None
    if not isinstance(data, dict):
        raise SphereFileError(f"sphere file {path}: not a JSON object")
    if data.get("fingerprint") != model.fingerprint() or data.get("generator_version") != GENERATOR_VERSION:
        warnings.warn(f"sphere file {path} is stale for robot {model.name!r}; refitting", stacklevel=3)
        return None
    _check_sphere_links(data.get("links"), path, model)
    _check_pairs(data.get("always_colliding", []), path, model)
    return data


def _check_sphere_links(links: object, path: Path, model: RobotModel) -> None:
    """SphereFileError unless ``links`` maps links of ``model`` to lists of finite ``[x, y, z, r]`` [m], r >= 0."""
    if not isinstance(links, dict):
        raise SphereFileError(f"sphere file {path}: 'links' is not an object of link name -> spheres")
    for link, spheres in links.items():
        if link not in model.urdf.links:
            raise SphereFileError(f"sphere file {path}: {link!r} is not a link of robot {model.name!r}")
        if not _valid_spheres(spheres):
            raise SphereFileError(f"sphere file {path}: links[{link!r}] is not a list of [x, y, z, r] "
                                  "with finite values and r >= 0")


def _valid_spheres(spheres: object) -> bool:
    """True for a (possibly empty) list of finite ``[x, y, z, r]`` with ``r >= 0``."""
    if not isinstance(spheres, list):
        return False
    try:
        arr = np.asarray(spheres, dtype=np.float64)
    except (TypeError, ValueError):  # ragged or not numbers
        return False
    return arr.size == 0 or (arr.ndim == 2 and arr.shape[1] == 4 and bool(np.isfinite(arr).all())
                             and bool((arr[:, 3] >= 0).all()))


def _check_pairs(pairs: object, path: Path, model: RobotModel) -> None:
    """SphereFileError unless ``pairs`` is a list of ``[link, link]`` pairs of ``model``'s links."""
    ok = isinstance(pairs, list) and all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(n, str) and n in model.urdf.links for n in p)
        for p in pairs)
    if not ok:
        raise SphereFileError(f"sphere file {path}: 'always_colliding' is not a list of [link, link] pairs "
                              f"of robot {model.name!r}")


def _static_pairs(model: RobotModel, links: list[str]) -> list[tuple[str, str]]:
    """Link pairs that are never checked, whatever the sampling says."""
    with_geom = set(links)
    moving = {link: _active_vars(model, link) for link in links}
    disabled = model.srdf.disabled_collisions
    out = []
    for i, a in enumerate(links):
        for b in links[i + 1:]:
            if (frozenset((a, b)) in disabled or moving[a] == moving[b]
                    or _geometric_parent(model, a, with_geom) == b or _geometric_parent(model, b, with_geom) == a):
                out.append((a, b))
    return out


def _always_colliding(model: RobotModel, sm: "SphereModel", config: SphereFitConfig) -> list[tuple[tuple, list]]:
    """[((link a, link b), [sphere collision rate, exact rate or None])] of the pairs to ignore: colliding in at
    least ``always_colliding_fraction`` of random configurations by the spheres, and by FCL (when available)
    almost never (a sphere artefact) or almost always (adjacent parts)."""
    g = torch.Generator().manual_seed(config.seed)
    lo, hi = model.limits()
    q = uniform_in_limits(lo, hi, config.collision_samples, g)
    with torch.no_grad():
        d = sm.pair_distances(q)  # (M, P)
    link_pairs = {}
    for p in range(d.shape[1]):
        key = (sm.sphere_link_names[int(sm.pair_i[p])], sm.sphere_link_names[int(sm.pair_j[p])])
        link_pairs.setdefault(key, []).append(p)
    exact = _exact_pair_rates(model, q)
    out = []
    for (a, b), cols in sorted(link_pairs.items()):
        frac = float((d[:, cols].amin(1) < 0).double().mean())
        if frac < config.always_colliding_fraction:
            continue
        if exact is None:  # no exact checker: only pairs the spheres (almost) always find
            drop, rate = frac >= 0.95, None
        else:
            rate = exact.get(frozenset((a, b)), 0) / len(q)
            drop = rate <= config.exact_rare_fraction or rate >= 0.95
        if drop:
            out.append(((a, b), [round(frac, 3), None if rate is None else round(rate, 3)]))
    return out


def generate_sphere_data(model: RobotModel, config: SphereFitConfig = SphereFitConfig(),
                         progress: bool = False) -> dict:
    """Fit the spheres of every link with collision geometry and find always-colliding pairs (JSON-able dict);
    ``progress``: a tqdm bar over the links on stderr."""
    links = [name for name, spec in model.urdf.links.items() if spec.collisions]
    todo = links
    if progress:
        from tqdm import tqdm

        todo = tqdm(links, desc=f"{model.name}: fitting collision spheres", unit="link")
    spheres = {link: fit_spheres(model.urdf.links[link].collisions, config).round(5).tolist() for link in todo}
    data = {
        "robot": model.name,
        "fingerprint": model.fingerprint(),
        "generator_version": GENERATOR_VERSION,
        "fit": {k: v for k, v in config.__dict__.items()},
        "links": spheres,
        "always_colliding": [],
        "always_colliding_rates": [],
    }
    sm = SphereModel(model, spheres, ignore_pairs=())
    if sm.pair_i.numel():
        for pair, rates in _always_colliding(model, sm, config):
            data["always_colliding"].append(list(pair))
            data["always_colliding_rates"].append(rates)
    return data


def _exact_pair_rates(model: RobotModel, q: torch.Tensor) -> dict[frozenset, int] | None:
    """Per link pair, in how many of the configurations ``q`` python-fcl finds a collision (None without fcl)."""
    try:
        from ikdiffuser_ros.collision.fcl_checker import CollisionChecker
    except ImportError:
        return None
    report = CollisionChecker(model).check(q, max_pairs=100000)
    counts: dict[frozenset, int] = {}
    for pairs in report.pairs:
        for pair in {frozenset(p) for p in pairs}:
            counts[pair] = counts.get(pair, 0) + 1
    return counts


def generate_sphere_file(model: RobotModel, path: str | Path | None = None,
                         config: SphereFitConfig = SphereFitConfig(), progress: bool = False) -> Path:
    """Write the robot's :func:`sphere_file` (or ``path``) and return its path (``progress``: a tqdm bar)."""
    path = Path(path) if path is not None else sphere_file(model.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = generate_sphere_data(model, config, progress)
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


# ---------------------------------------------------------------------------- the model
class SphereModel:
    """Spheres rigidly attached to robot links, with batched differentiable distances.

    Attributes:
        links: names of the links carrying spheres, length ``L``.
        local: (S, 3) float64 sphere centres in their link frame [m].
        radii: (S,) float64 radii [m].
        sphere_link: (S,) int64 index into :attr:`links` of each sphere.
        pair_i, pair_j: (P,) int64 sphere indices of the checked self pairs.
    """

    def __init__(self, model: RobotModel, spheres: dict[str, Sequence[Sequence[float]]],
                 ignore_pairs: Sequence[Sequence[str]] = ()) -> None:
        self.model = model
        self.links = [link for link, s in spheres.items() if len(s)]
        rows, owner = [], []
        for li, link in enumerate(self.links):
            for s in spheres[link]:
                rows.append(s)
                owner.append(li)
        arr = torch.tensor(rows, dtype=torch.float64).reshape(-1, 4)
        self.local = arr[:, :3].contiguous()
        self.radii = arr[:, 3].contiguous()
        self.sphere_link = torch.tensor(owner, dtype=torch.int64)
        self.sphere_link_names = [self.links[i] for i in owner]
        skip = {frozenset(p) for p in _static_pairs(model, self.links)} | {frozenset(p) for p in ignore_pairs}
        self.ignored_link_pairs = skip
        li, lj = [], []
        S = len(owner)
        for i in range(S):
            for j in range(i + 1, S):
                a, b = self.sphere_link_names[i], self.sphere_link_names[j]
                if a != b and frozenset((a, b)) not in skip:
                    li.append(i)
                    lj.append(j)
        self.pair_i = torch.tensor(li, dtype=torch.int64)
        self.pair_j = torch.tensor(lj, dtype=torch.int64)
        self._attached_cache: dict[int, tuple] = {}
        #: per-World derived tensors, keyed by :func:`_world_key` (object/shape identities and the
        #: ACM contents); shape poses are read once, so replace a Shape rather than editing its pose.
        self._world_cache: dict[tuple, tuple] = {}

    # ------------------------------------------------------------ constructors
    @classmethod
    def from_robot(cls, model: RobotModel, path: str | Path | None = None,
                   config: SphereFitConfig = SphereFitConfig(), write: bool = False) -> "SphereModel":
        """Load the robot's :func:`sphere_file` (or ``path``); fit in memory if missing or stale.

        ``write=True`` also writes a freshly fitted file. A corrupt or unreadable file raises
        :class:`SphereFileError` naming it (:func:`read_sphere_file`); collision meshes that cannot be
        loaded for a fit raise :class:`RobotDescriptionError`, a missing trimesh/scipy ImportError.
        """
        path = Path(path) if path is not None else sphere_file(model.name)
        data = read_sphere_file(path, model)
        if data is None:
            data = generate_sphere_data(model, config)
            if write:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(data, indent=1) + "\n")
        return cls(model, data["links"], data.get("always_colliding", ()))

    @classmethod
    def for_guidance(cls, model: RobotModel) -> SphereModel | None:
        """The robot's sphere model for collision guidance (:meth:`from_robot`), or None when there is none
        to guide with: no collision geometry; or (with a warning) trimesh/scipy (the ``collision`` extra)
        missing or collision meshes that cannot be loaded. A corrupt or unreadable sphere file is not
        "none": it raises :class:`SphereFileError` naming the file."""
        try:
            spheres = cls.from_robot(model)
        except SphereFileError:
            raise
        except (ImportError, RobotDescriptionError) as exc:
            warnings.warn(f"robot {model.name!r}: no sphere model, so no collision guidance: {exc}", stacklevel=2)
            return None
        return spheres if spheres.num_spheres else None

    @property
    def num_spheres(self) -> int:
        return int(self.radii.numel())

    # ------------------------------------------------------------ kinematics
    def sphere_centers(self, q: torch.Tensor) -> torch.Tensor:
        """(M, n) joint values -> (M, S, 3) sphere centres in the root frame [m]."""
        T = self.model.fk_links(q, self.links)  # (M, L, 4, 4)
        T = T[..., self.sphere_link.to(q.device), :, :]  # (M, S, 4, 4)
        local = self.local.to(dtype=T.dtype, device=T.device)
        return (T[..., :3, :3] @ local.unsqueeze(-1)).squeeze(-1) + T[..., :3, 3]

    def pair_distances(self, q: torch.Tensor, centers: torch.Tensor | None = None) -> torch.Tensor:
        """(M, n) -> (M, P) signed distances [m] of the checked self sphere pairs."""
        c = self.sphere_centers(q) if centers is None else centers
        r = self.radii.to(dtype=c.dtype, device=c.device)
        i, j = self.pair_i.to(c.device), self.pair_j.to(c.device)
        return (c[..., i, :] - c[..., j, :]).norm(dim=-1) - r[i] - r[j]

    def self_distance(self, q: torch.Tensor) -> torch.Tensor:
        """(M, n) -> (M,) smallest signed self distance [m] (+inf when no pair is checked).

        All sphere-sphere distances at once (``torch.cdist``, matrix-product form), masked to the
        checked pairs: faster than gathering the pairs when most sphere pairs are checked.
        """
        if self.pair_i.numel() == 0:
            return torch.full(q.shape[:-1], math.inf, dtype=q.dtype, device=q.device)
        c = self.sphere_centers(q)
        offset = self._pair_offsets(c.dtype, c.device)
        return (torch.cdist(c, c, compute_mode="use_mm_for_euclid_dist") - offset).flatten(-2).amin(-1)

    def _pair_offsets(self, dtype, device):
        """(S, S): ``r_i + r_j`` for checked pairs (i < j), ``-inf`` elsewhere (cached per dtype/device)."""
        key = ("pairs", dtype, str(device))
        if key not in self._world_cache:
            S = self.num_spheres
            r = self.radii
            off = torch.full((S, S), -math.inf, dtype=torch.float64)
            off[self.pair_i, self.pair_j] = r[self.pair_i] + r[self.pair_j]
            self._world_cache[key] = off.to(dtype=dtype, device=device)
        return self._world_cache[key]

    def in_self_collision(self, q: torch.Tensor, margin: float = 0.0, max_elements: int = 1 << 24) -> torch.Tensor:
        """(..., n) -> (...) bool, some checked sphere pair is closer than ``margin`` [m].

        Evaluated in row chunks of at most ``max_elements`` pair distances (bounded memory for
        dataset-sized batches).
        """
        shape = q.shape[:-1]
        flat = q.reshape(-1, q.shape[-1])
        rows = max(1, max_elements // max(1, self.num_spheres ** 2))
        with torch.no_grad():
            out = [self.self_distance(flat[i:i + rows]) < margin for i in range(0, flat.shape[0], rows)]
        return (torch.cat(out) if out else torch.zeros(0, dtype=torch.bool, device=q.device)).reshape(shape)

    # ------------------------------------------------------------ world
    def _world_tensors(self, world: World, dtype, device):
        """World shapes -> (kind codes (K,), poses (K, 4, 4), half extents (K, 3), object ids)."""
        codes, poses, dims, ids = [], [], [], []
        for obj_id, shape in world.iter_world_shapes():
            pose = np.asarray(shape.pose, dtype=float)
            if shape.kind == "box":
                code, d = 0, shape.dims / 2
            elif shape.kind == "sphere":
                code, d = 1, np.array([shape.dims[0], 0.0, 0.0])
            elif shape.kind in ("cylinder", "cone"):
                code, d = 2, np.array([shape.dims[1], shape.dims[0] / 2, 0.0])  # radius, half height
            else:  # mesh: oriented bounding box (principal axes: flat and collinear meshes too)
                extents, T_box = mesh_obb(shape.vertices)
                code, d = 0, extents / 2
                pose = pose @ T_box
            codes.append(code)
            poses.append(pose)
            dims.append(d)
            ids.append(obj_id)
        return (torch.tensor(codes, dtype=torch.int64, device=device),
                torch.tensor(np.array(poses).reshape(-1, 4, 4), dtype=dtype, device=device),
                torch.tensor(np.array(dims).reshape(-1, 3), dtype=dtype, device=device), ids)

    def _attached_spheres(self, world: World):
        """Spheres of the attached objects: (link names, local (A, 3), radii (A,), owner object ids)."""
        key = tuple((a.link, id(a.object), tuple(id(s) for s in a.object.shapes)) for a in world.attached)
        cached = self._attached_cache.get(key)
        if cached is not None:
            return cached[1]
        links, local, radii, owners = [], [], [], []
        for att in world.attached:
            if not att.object.shapes:
                continue
            fitted = fit_spheres(att.object.shapes, SphereFitConfig(max_spheres=8))
            for s in fitted:
                links.append(att.link)
                local.append(s[:3])
                radii.append(s[3])
                owners.append(att.object.id)
        out = (links, np.array(local).reshape(-1, 3), np.array(radii).reshape(-1), owners)
        self._attached_cache = {key: (world.attached, out)}
        return out

    def world_sphere_set(self, q: torch.Tensor, world: World | None):
        """Robot spheres plus attached-object spheres: (centres (M, S', 3), radii (S',), owner names).

        Owner names are link names for robot spheres and object ids for attached ones.
        """
        c = self.sphere_centers(q)
        r = self.radii.to(dtype=c.dtype, device=c.device)
        names = list(self.sphere_link_names)
        if world is not None and world.attached:
            links, local, radii, owners = self._attached_spheres(world)
            if links:
                T = self.model.fk_links(q, links)  # (M, A, 4, 4)
                loc = torch.as_tensor(local, dtype=c.dtype, device=c.device)
                ca = (T[..., :3, :3] @ loc.unsqueeze(-1)).squeeze(-1) + T[..., :3, 3]
                c = torch.cat([c, ca], -2)
                r = torch.cat([r, torch.as_tensor(radii, dtype=c.dtype, device=c.device)])
                names += owners
        return c, r, names

    def world_distance(self, q: torch.Tensor, world: World | None, per_shape: bool = False,
                       within: float | None = None) -> torch.Tensor:
        """(M, n) -> (M,) smallest signed distance [m] from the robot (and attached objects) to world objects.

        Pairs allowed by ``world.acm`` (link or attached object id vs object id) are skipped.
        ``per_shape=True`` returns (M, S', K) sphere-to-shape distances (allowed pairs = +inf).
        ``within`` [m]: only shapes whose bounding sphere comes within this distance of the box
        around all the rows' spheres are measured, the others read +inf (exact for costs that
        ignore distances beyond ``within``; a scene of thousands of far objects costs nothing).
        +inf when there is nothing to check.
        """
        if world is None or not world.objects:
            return torch.full(q.shape[:-1], math.inf, dtype=q.dtype, device=q.device)
        c, r, names = self.world_sphere_set(q, world)
        codes, poses, half, bound, ids = self._world_shapes(world, c.dtype, c.device)
        keep = torch.arange(len(ids), device=c.device)
        if within is not None and len(ids):
            keep = self._near_shapes(c.detach(), r, poses, bound, within)
        if keep.numel() == 0:
            shape = (*q.shape[:-1], c.shape[-2], len(ids)) if per_shape else q.shape[:-1]
            return torch.full(shape, math.inf, dtype=q.dtype, device=q.device)
        allowed = self._allowed(world, names, [ids[k] for k in keep.tolist()], c.device)
        # points in every shape frame: p_local = R^T (c - t)  -> (M, S', K, 3)
        R, t = poses[keep, :3, :3], poses[keep, :3, 3]
        p = torch.einsum("kji,mskj->mski", R, c.unsqueeze(-2) - t)
        d = shape_sdf(p, codes[keep], half[keep]) - r.view(1, -1, 1)
        # an attached object never collides with itself; its own id cannot be a world id (World checks)
        d = torch.where(allowed, torch.full_like(d, math.inf), d)
        if per_shape:
            if keep.numel() == len(ids):
                return d
            full = torch.full((*d.shape[:-1], len(ids)), math.inf, dtype=d.dtype, device=d.device)
            return full.index_copy(-1, keep, d)
        return d.flatten(-2).amin(-1)

    def _world_shapes(self, world: World, dtype, device):
        """(codes (K,), poses (K, 4, 4), half extents (K, 3), bounding radii (K,) [m], ids) of a World, cached."""
        key = ("world", dtype, str(device), *_world_key(world))
        cached = self._world_cache.get(key)
        if cached is None or cached[0] is not world:
            codes, poses, half, ids = self._world_tensors(world, dtype, device)
            bound = torch.where(codes == 0, half.norm(dim=-1), torch.where(codes == 1, half[:, 0],
                                                                          half[:, :2].norm(dim=-1)))
            cached = (world, (codes, poses, half, bound, ids))
            if len(self._world_cache) > 16:
                self._world_cache.clear()
            self._world_cache[key] = cached
        return cached[1]

    @staticmethod
    def _near_shapes(c: torch.Tensor, r: torch.Tensor, poses: torch.Tensor, bound: torch.Tensor,
                     within: float) -> torch.Tensor:
        """Indices of the shapes whose bounding sphere reaches within ``within`` [m] of the box around
        the sphere centres c (..., S', 3) grown by the largest radius."""
        flat = c.reshape(-1, 3)
        lo, hi = flat.amin(0), flat.amax(0)
        centre = poses[:, :3, 3]
        gap = (torch.maximum(lo - centre, centre - hi).clamp_min(0)).norm(dim=-1)
        return (gap - bound - r.max() <= within).nonzero().flatten()

    def _allowed(self, world: World, names: list[str], ids: list[str], device) -> torch.Tensor:
        """(S', K) bool: the ACM allows (sphere owner, object id)."""
        acm = world.acm
        return torch.tensor([[acm.allowed(nm, oid) for oid in ids] for nm in names], dtype=torch.bool,
                            device=device).reshape(len(names), len(ids))


    def _self_pairs_with(self, world: World) -> tuple[list[int], list[int], list[str]]:
        """Sphere index pairs checked for self collision given ``world`` (ACM, attached objects)."""
        key = ("self", *_world_key(world))
        cached = self._world_cache.get(key)
        if cached is not None and cached[0] is world:
            return cached[1]
        _, _, _, owners = self._attached_spheres(world)
        names = list(self.sphere_link_names) + list(owners)
        S = self.num_spheres
        pi, pj = self.pair_i.tolist(), self.pair_j.tolist()
        keep = [k for k in range(len(pi)) if world.acm.lookup(names[pi[k]], names[pj[k]]) is not True]
        pi, pj = [pi[k] for k in keep], [pj[k] for k in keep]
        att = {a.object.id: a for a in world.attached}
        for a_idx in range(S, len(names)):
            a = att[names[a_idx]]
            for s in range(S):
                link = names[s]
                if not a.may_touch(link) and world.acm.lookup(a.object.id, link) is not True:
                    pi.append(s)
                    pj.append(a_idx)
        out = (pi, pj, names)
        if len(self._world_cache) > 16:
            self._world_cache.clear()
        self._world_cache[key] = (world, out)
        return out

    def self_pair_distances_with(self, q: torch.Tensor, world: World | None) -> torch.Tensor:
        """(M, n) -> (M, P') signed self distances [m], honouring ``world.acm`` for link pairs and
        checking attached objects against robot links (except their link and touch links)."""
        if world is None or (not world.attached and not world.acm.entries and not world.acm.default_entries):
            return self.pair_distances(q)
        c, r, _ = self.world_sphere_set(q, world)
        pi, pj, _ = self._self_pairs_with(world)
        i = torch.tensor(pi, dtype=torch.int64, device=c.device)
        j = torch.tensor(pj, dtype=torch.int64, device=c.device)
        return (c[..., i, :] - c[..., j, :]).norm(dim=-1) - r[i] - r[j]

    def self_distance_with(self, q: torch.Tensor, world: World | None) -> torch.Tensor:
        """Like :meth:`self_distance`, with :meth:`self_pair_distances_with`'s pairs (+inf if none)."""
        d = self.self_pair_distances_with(q, world)
        if d.shape[-1] == 0:
            return torch.full(q.shape[:-1], math.inf, dtype=q.dtype, device=q.device)
        return d.amin(-1)


def _world_key(world: World) -> tuple:
    """Hashable identity of what the sphere model derives from a World."""
    return (id(world), tuple(id(s) for _, s in world.iter_world_shapes()),
            tuple((a.link, id(a.object), a.touch_links) for a in world.attached),
            world.acm.key())


def shape_sdf(p: torch.Tensor, codes: torch.Tensor, half: torch.Tensor) -> torch.Tensor:
    """Signed distance [m] of points ``p`` (..., K, 3), given in each shape's frame, to K shapes.

    ``codes``: 0 box (``half`` = half extents), 1 sphere (``half[0]`` = radius),
    2 capped cylinder along z (``half[0]`` = radius, ``half[1]`` = half height).
    """
    # box
    qb = p.abs() - half
    box = qb.clamp_min(0).norm(dim=-1) + qb.amax(-1).clamp_max(0)
    # sphere
    sph = p.norm(dim=-1) - half[..., 0]
    # cylinder: 2-D box in (radial, axial)
    qc = torch.stack([p[..., :2].norm(dim=-1) - half[..., 0], p[..., 2].abs() - half[..., 1]], -1)
    cyl = qc.clamp_min(0).norm(dim=-1) + qc.amax(-1).clamp_max(0)
    return torch.where(codes == 0, box, torch.where(codes == 1, sph, cyl))


_MASK_CACHE: dict[str, SphereModel] = {}


def self_collision_mask(model: RobotModel, q: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    """(M, n) -> (M,) bool, True where the sphere model of ``model`` is in self collision.

    The :class:`SphereModel` is built once per robot fingerprint and cached.
    """
    key = f"{model.name}:{model.fingerprint()}"
    if key not in _MASK_CACHE:
        _MASK_CACHE[key] = SphereModel.from_robot(model)
    return _MASK_CACHE[key].in_self_collision(q, margin)
