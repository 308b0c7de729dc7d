"""Static 3-D pictures of many IK solutions at once (matplotlib, Agg; no ROS).

:func:`render_solutions` overlays N joint configurations of one robot as
translucent link skeletons (segments joining the link frames along the URDF
tree, drawn from ``fk_links``), the end-effector frames of every solution as
small RGB axes, the target poses as larger axes with a marker, the links that
do not move between solutions as a light grey collision mesh, and optional
world objects as wireframes: the "many IK solutions for one target" figure.

``ikdiffuser render`` (see :func:`register`) picks a reachable target from the
FK of a seeded random configuration, asks the solver for ``--num-solutions``
solutions and saves the picture.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ikdiffuser_ros.kinematics.joint_kinds import uniform_in_limits

__all__ = ["render_solutions", "register"]

_STATIC_TOL = 1e-9
_MAX_STATIC_TRIANGLES = 4000


def _axes_segments(T: np.ndarray, length: float) -> list[np.ndarray]:
    """(4, 4) pose -> three (2, 3) segments along its x, y, z axes."""
    origin = T[:3, 3]
    return [np.stack([origin, origin + length * T[:3, k]]) for k in range(3)]


def _box_edges(size: np.ndarray, T: np.ndarray) -> list[np.ndarray]:
    half = np.asarray(size, dtype=float) / 2
    corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * half
    corners = corners @ T[:3, :3].T + T[:3, 3]
    edges = []
    for i in range(8):
        for j in range(i + 1, 8):
            if bin(i ^ j).count("1") == 1:
                edges.append(corners[[i, j]])
    return edges


def _circle(radius: float, z: float, T: np.ndarray, n: int = 32) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n + 1)
    p = np.stack([radius * np.cos(t), radius * np.sin(t), np.full_like(t, z)], axis=1)
    return p @ T[:3, :3].T + T[:3, 3]


def _shape_lines(shape) -> list[np.ndarray]:
    """Wireframe polylines (k, 3) of a world :class:`~ikdiffuser_ros.collision.world.Shape` in the root frame."""
    T, d = shape.pose, shape.dims
    if shape.kind == "box":
        return _box_edges(d, T)
    if shape.kind == "sphere":
        r = float(d[0])
        lines = [_circle(r, 0.0, T)]
        for R in (np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]]), np.array([[0, 0, 1], [0, 1, 0], [-1, 0, 0]])):
            Tr = T.copy()
            Tr[:3, :3] = T[:3, :3] @ R
            lines.append(_circle(r, 0.0, Tr))
        return lines
    if shape.kind in ("cylinder", "cone"):
        h, r = float(d[0]), float(d[1])
        top_r = r if shape.kind == "cylinder" else 0.0
        lines = [_circle(r, -h / 2, T)]
        if top_r > 0:
            lines.append(_circle(top_r, h / 2, T))
        for a in np.linspace(0, 2 * np.pi, 4, endpoint=False):
            p = np.array([[r * math.cos(a), r * math.sin(a), -h / 2],
                          [top_r * math.cos(a), top_r * math.sin(a), h / 2]])
            lines.append(p @ T[:3, :3].T + T[:3, 3])
        return lines
    # mesh: its edges (subsampled)
    v = shape.vertices @ T[:3, :3].T + T[:3, 3]
    tri = shape.triangles[: _MAX_STATIC_TRIANGLES // 2]
    return [v[[a, b, c, a]] for a, b, c in tri]


def _static_mesh_triangles(model, T_links: np.ndarray, links: Sequence[str]) -> list[np.ndarray]:
    """Triangles (k, 3, 3) of the collision meshes/primitives of links that do not move between solutions."""
    from ikdiffuser_ros.collision.fcl_checker import load_mesh
    from ikdiffuser_ros.resources import resolve_uri

    triangles = []
    for index, name in enumerate(links):
        poses = T_links[:, index]
        if np.abs(poses - poses[:1]).max() > _STATIC_TOL:
            continue
        for g in model.urdf.links[name].collisions:
            T = poses[0] @ g.origin
            if g.kind == "mesh":
                try:
                    vertices, faces = load_mesh(resolve_uri(g.filename))
                except Exception:  # a picture without that mesh beats no picture
                    continue
                vertices = vertices * np.asarray(g.scale)
                if len(faces) > _MAX_STATIC_TRIANGLES:
                    faces = faces[np.linspace(0, len(faces) - 1, _MAX_STATIC_TRIANGLES).astype(int)]
            else:
                import trimesh

                if g.kind == "box":
                    mesh = trimesh.creation.box(g.size)
                elif g.kind == "cylinder":
                    mesh = trimesh.creation.cylinder(g.radius, g.length, sections=24)
                else:
                    if g.radius < 0.01:
                        continue
                    mesh = trimesh.creation.icosphere(2, g.radius)
                vertices, faces = np.asarray(mesh.vertices), np.asarray(mesh.faces)
            v = vertices @ T[:3, :3].T + T[:3, 3]
            triangles.append(v[faces])
    return triangles


def _skeleton_edges(model, links: Sequence[str]) -> list[tuple[int, int]]:
    """(parent index, child index) for every URDF joint between two drawn links."""
    index = {name: i for i, name in enumerate(links)}
    return [(index[j.parent], index[j.child]) for j in model.urdf.joints.values()
            if j.parent in index and j.child in index]


_RGB = ((0.9, 0.1, 0.1), (0.1, 0.7, 0.1), (0.1, 0.2, 0.9))  # colours of the x, y, z axes of drawn frames
_FAILED = (0.85, 0.1, 0.1)  # colour of failed solutions
_WORLD = (0.8, 0.35, 0.0)  # colour of world objects


def _solution_frames(model, q) -> tuple[list[str], np.ndarray, np.ndarray]:
    """FK of the solutions to draw.

    Args:
        model: :class:`~ikdiffuser_ros.kinematics.robot_model.RobotModel`.
        q: (N, n) or (n,) joint values of the solutions (tensor or array).

    Returns:
        links: the L URDF link names.
        T_links: (N, L, 4, 4) float64 link poses in the root frame [m].
        T_ee: (N, E, 4, 4) float64 end-effector poses in the root frame [m].
    """
    q = torch.as_tensor(q).detach().to(device="cpu", dtype=torch.float64)
    if q.ndim == 1:
        q = q[None]
    links = list(model.urdf.links)
    with torch.no_grad():
        T_links = model.fk_links(q, links).numpy()  # (N, L, 4, 4)
        T_ee = model.fk(q).numpy()  # (N, E, 4, 4)
    return links, T_links, T_ee


def _moving_and_trunk_edges(model, links: Sequence[str],
                            T_links: np.ndarray) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """The skeleton edges (parent, child indices into ``links``) to draw, from (N, L, 4, 4) link poses [m].

    Returns:
        moving: edges of non-zero length (> 1e-6 m) with an end that moves between the solutions;
        when none does (a single solution, or identical ones), the edges of non-zero length on the
        way from the root to the end effectors, so that the solution's skeleton is still drawn.
        fixed: static edges of non-zero length on the way from the root to the moving links (not
        head/sensor frames).
    """
    edges = _skeleton_edges(model, links)
    moving = [e for e in edges if np.abs(T_links[:, e[0], :3, 3] - T_links[:1, e[0], :3, 3]).max() > _STATIC_TOL
              or np.abs(T_links[:, e[1], :3, 3] - T_links[:1, e[1], :3, 3]).max() > _STATIC_TOL]
    if not moving:  # nothing differs between the solutions: draw the chains to the end effectors
        chains = {j.child for ee in model.end_effectors for j in model.urdf.path_from_root(ee)}
        moving = [e for e in edges if links[e[1]] in chains]
    moving = [e for e in moving if np.linalg.norm(T_links[0, e[0], :3, 3] - T_links[0, e[1], :3, 3]) > 1e-6]
    # static edges on the way from the root to the moving links (not head/sensor frames)
    trunk = set()
    for a, _ in moving:
        link = links[a]
        while link in model.urdf.child_joint:
            trunk.add(link)
            link = model.urdf.child_joint[link].parent
    fixed = [e for e in edges if e not in moving and links[e[1]] in trunk
             and np.linalg.norm(T_links[0, e[0], :3, 3] - T_links[0, e[1], :3, 3]) > 1e-6]
    return moving, fixed


def _new_figure(figsize: tuple[float, float], dpi: int):
    """(figure, its one 3-D axes); matplotlib uses the Agg backend unless a backend is already in use."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=figsize, dpi=dpi)
    return fig, fig.add_subplot(111, projection="3d")


def _solution_styles(N: int, colors: Sequence | None, failed) -> tuple[Sequence, np.ndarray, float]:
    """(N colours (default: viridis over the solutions), (N,) bool failed mask, skeleton opacity)."""
    import matplotlib.pyplot as plt

    if colors is None:
        cmap = plt.get_cmap("viridis")
        colors = [cmap(0.1 + 0.8 * k / max(N - 1, 1)) for k in range(N)]
    failed = np.zeros(N, dtype=bool) if failed is None else np.asarray(failed, dtype=bool)
    return colors, failed, float(np.clip(2.5 / math.sqrt(N), 0.12, 0.9))


def _draw_static_robot(ax, model, links: Sequence[str], T_links: np.ndarray, fixed: list[tuple[int, int]],
                       points: list[np.ndarray]) -> None:
    """The static part of the robot: the links that do not move between the solutions (base, torso,
    pedestal...) as a light mesh, and the static skeleton ``fixed`` (base to the first moving joints).

    ``T_links`` are the (N, L, 4, 4) link poses [m]; a subsample of the (k, 3) mesh vertices [m] is
    appended to ``points``.
    """
    from mpl_toolkits.mplot3d.art3d import Line3DCollection, Poly3DCollection

    static = _static_mesh_triangles(model, T_links, links)
    if static:
        tris = np.concatenate(static)
        ax.add_collection3d(Poly3DCollection(tris, facecolor=(0.6, 0.6, 0.65, 0.18), edgecolor=(0.45, 0.45, 0.5, 0.05),
                                             linewidths=0.2))
        points.append(tris.reshape(-1, 3)[:: max(1, len(tris) // 500)])
    if fixed:
        ax.add_collection3d(Line3DCollection([T_links[0, [a, b], :3, 3] for a, b in fixed], colors=[(0.35, 0.35, 0.4)],
                                             linewidths=3.0, alpha=0.9))


def _draw_skeletons(ax, T_links: np.ndarray, moving: list[tuple[int, int]], colors: Sequence, failed: np.ndarray,
                    alpha: float) -> None:
    """One translucent skeleton per solution: the ``moving`` edges of its (L, 4, 4) link poses [m] in
    ``T_links`` (N, L, 4, 4) and dots at their ends; ``failed`` (N,) solutions in red."""
    from mpl_toolkits.mplot3d.art3d import Line3DCollection

    if not moving:  # matplotlib cannot add an empty 3-D line collection
        return
    for k in range(T_links.shape[0]):
        color = _FAILED if failed[k] else colors[k]
        segments = [T_links[k, [a, b], :3, 3] for a, b in moving]
        ax.add_collection3d(Line3DCollection(segments, colors=[color], linewidths=2.4, alpha=alpha))
        joints = np.unique(np.array([i for e in moving for i in e]))
        if len(joints):
            p = T_links[k, joints, :3, 3]
            ax.scatter(p[:, 0], p[:, 1], p[:, 2], s=4, color=color, alpha=alpha, depthshade=False)


def _span_and_floor(points: list[np.ndarray]) -> tuple[float, float]:
    """(largest extent [m] of the (k, 3) ``points`` along x, y or z (1 when 0), their lowest z [m])."""
    allp = np.concatenate(points)
    return float(np.max(allp.max(axis=0) - allp.min(axis=0))) or 1.0, float(allp[:, 2].min())


def _draw_floor_shadows(ax, T_links: np.ndarray, moving: list[tuple[int, int]], floor: float) -> None:
    """Shadows of the ``moving`` edges of every solution ((N, L, 4, 4) link poses [m]) on the plane z = floor [m]."""
    from mpl_toolkits.mplot3d.art3d import Line3DCollection

    if not moving:
        return
    N = T_links.shape[0]
    shadows = T_links[:, [a for a, _ in moving] + [b for _, b in moving]][..., :3, 3].copy()
    shadows[..., 2] = floor
    P = len(moving)
    segments = np.stack([shadows[:, :P], shadows[:, P:]], axis=2).reshape(-1, 2, 3)
    ax.add_collection3d(Line3DCollection(segments, colors=[(0.2, 0.2, 0.2)], linewidths=1.5,
                                         alpha=min(0.5, 1.0 / math.sqrt(N)) * 0.35))


def _draw_ee_frames(ax, T_ee: np.ndarray, length: float, alpha: float) -> None:
    """Small RGB axes, ``length`` [m] long, at every (N, E, 4, 4) end-effector pose [m] of ``T_ee``."""
    for k in range(T_ee.shape[0]):
        for e in range(T_ee.shape[1]):
            for axis, seg in enumerate(_axes_segments(T_ee[k, e], length)):
                ax.plot(*seg.T, color=_RGB[axis], linewidth=0.8, alpha=min(1.0, alpha + 0.2))


def _draw_targets(ax, targets, length: float, points: list[np.ndarray]) -> None:
    """Large RGB axes, ``length`` [m] long, and a gold star at each (E, 4, 4) target pose [m] (tensor or
    array); their (1, 3) positions [m] are appended to ``points``."""
    targets = np.asarray(torch.as_tensor(targets, dtype=torch.float64)).reshape(-1, 4, 4)
    for e, T in enumerate(targets):
        for axis, seg in enumerate(_axes_segments(T, length)):
            ax.plot(*seg.T, color=_RGB[axis], linewidth=3.0, alpha=1.0)
        ax.scatter(*T[:3, 3], s=70, marker="*", color="gold", edgecolor="k", linewidths=0.6, depthshade=False,
                   zorder=10, label="target" if e == 0 else None)
        points.append(T[None, :3, 3])


def _draw_world(ax, world, points: list[np.ndarray]) -> None:
    """The objects of ``world`` as orange wireframes; their (k, 3) polyline points [m] are appended to ``points``."""
    from mpl_toolkits.mplot3d.art3d import Line3DCollection

    world_lines = [line for _, shape in world.iter_world_shapes() for line in _shape_lines(shape)]
    if world_lines:
        ax.add_collection3d(Line3DCollection(world_lines, colors=[_WORLD], linewidths=1.0, alpha=0.8))
        points.append(np.concatenate(world_lines))


def _set_view(ax, points: list[np.ndarray], view: tuple[float, float]) -> None:
    """Equal aspect around every drawn (k, 3) point [m], orthographic camera at (elevation, azimuth) [deg]."""
    allp = np.concatenate(points)
    lo, hi = allp.min(axis=0), allp.max(axis=0)
    center, half = (lo + hi) / 2, max(float(np.max(hi - lo)) / 2, 1e-3) * 1.05
    ax.set_xlim(center[0] - half, center[0] + half)
    ax.set_ylim(center[1] - half, center[1] + half)
    ax.set_zlim(center[2] - half, center[2] + half)
    ax.set_box_aspect((1, 1, 1))
    ax.set_proj_type("ortho")
    ax.view_init(elev=view[0], azim=view[1])
    for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
        axis.set_pane_color((0.97, 0.97, 0.98, 1.0))
    ax.set_xlabel("x [m]")
    ax.set_ylabel("y [m]")
    ax.set_zlabel("z [m]")
    ax.tick_params(labelsize=7)


def _legend_and_titles(fig, model, N: int, colors: Sequence, failed: np.ndarray, has_targets: bool, world,
                       title: str | None, subtitle: str | None) -> None:
    """Legend (the N solutions, failed ones, frames, targets, world objects), title and subtitle of the figure."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colors[N // 2], linewidth=2.4, label=f"{N} solution{'s' if N != 1 else ''}")]
    if failed.any():
        handles.append(Line2D([], [], color=_FAILED, linewidth=2.4, label=f"{int(failed.sum())} failed"))
    handles.append(Line2D([], [], color="k", linewidth=0.8, label="end-effector frames (x y z = r g b)"))
    if has_targets:
        handles.append(Line2D([], [], marker="*", color="gold", markeredgecolor="k", linestyle="none", markersize=11,
                              label="target pose"))
    if world is not None and not world.is_empty:
        handles.append(Line2D([], [], color=_WORLD, linewidth=1.0, label="world objects"))
    fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(0.01, 0.9), fontsize=8, framealpha=0.85)
    fig.suptitle(title or f"{model.name}: {N} IK solution{'s' if N != 1 else ''}", fontsize=13, y=0.96)
    if subtitle:
        fig.text(0.5, 0.915, subtitle, ha="center", fontsize=9, color="0.3")
    fig.subplots_adjust(left=0.0, right=1.0, bottom=0.02, top=0.93)


def _save(fig, path: str | Path, dpi: int) -> Path:
    """Write ``fig`` to ``path`` (parent folders are created), close it and return the path."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def render_solutions(model, q, targets=None, path: str | Path = "solutions.png", title: str | None = None,
                     world=None, *, colors: Sequence | None = None, view: tuple[float, float] = (22.0, -60.0),
                     dpi: int = 150, figsize: tuple[float, float] = (8.0, 7.0), failed=None,
                     subtitle: str | None = None) -> Path:
    """Draw N solutions of ``model`` overlaid in one 3-D view and save a PNG.

    Args:
        model: :class:`~ikdiffuser_ros.kinematics.robot_model.RobotModel`.
        q: (N, n) joint values of the solutions (tensor or array).
        targets: (E, 4, 4) target poses in the root frame, or None.
        path: output file (PNG; parent folders are created).
        title: figure title (default: robot name and N).
        world: optional :class:`~ikdiffuser_ros.collision.world.World`; its objects are drawn as wireframes.
        colors: optional N matplotlib colours (default: a colormap over the solutions).
        view: (elevation, azimuth) [deg] of the camera.
        failed: optional (N,) bool; True solutions are drawn in red (e.g. not converged or in collision).
        subtitle: optional second line under the title.

    Returns:
        The written path.
    """
    links, T_links, T_ee = _solution_frames(model, q)
    moving, fixed = _moving_and_trunk_edges(model, links, T_links)
    fig, ax = _new_figure(figsize, dpi)
    colors, failed, alpha = _solution_styles(T_links.shape[0], colors, failed)
    points = [T_links[:, :, :3, 3].reshape(-1, 3)]  # (k, 3) arrays [m] of what is drawn, for the limits
    _draw_static_robot(ax, model, links, T_links, fixed, points)
    _draw_skeletons(ax, T_links, moving, colors, failed, alpha)
    span, floor = _span_and_floor(points)  # scale of the frame markers; floor of the shadows (depth cue)
    _draw_floor_shadows(ax, T_links, moving, floor)
    _draw_ee_frames(ax, T_ee, 0.035 * span, alpha)
    if targets is not None:
        _draw_targets(ax, targets, 0.09 * span, points)
    if world is not None:
        _draw_world(ax, world, points)
    _set_view(ax, points, view)
    _legend_and_titles(fig, model, T_links.shape[0], colors, failed, targets is not None, world, title,
                       subtitle)
    return _save(fig, path, dpi)


# ---------------------------------------------------------------------- CLI
def register(subparsers) -> None:
    """Add ``render`` to the ``ikdiffuser`` command."""
    p = subparsers.add_parser("render", help="draw N IK solutions for one reachable target (PNG)",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--robot", required=True, help="robot name (config/robots/<name>.yaml)")
    p.add_argument("--checkpoint", required=True, help="checkpoint directory (e.g. models/<robot>)")
    p.add_argument("--num-solutions", type=int, default=50)
    p.add_argument("--out", default=None, help="PNG path (default docs/img/<robot>_solutions.png)")
    p.add_argument("--seed", type=int, default=0, help="seeds the target and the sampler")
    p.add_argument("--device", default="cpu")
    p.add_argument("--all", action="store_true", help="also draw the unsuccessful solutions (in red)")
    p.add_argument("--no-collision-check", action="store_true",
                   help="skip counting the drawn solutions in self collision (exact FCL check)")
    p.add_argument("--elev", type=float, default=22.0)
    p.add_argument("--azim", type=float, default=-60.0)
    p.set_defaults(func=_main)


def random_reachable_target(model, seed: int = 0, collision_free: bool = True,
                            tries: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """(q (n,), targets (E, 4, 4)) from the FK of a seeded uniform configuration within the limits.

    With ``collision_free`` the first of ``tries`` draws that is free of self collision
    (exact FCL check) is used, so the target is not folded into the robot's own body.
    """
    generator = torch.Generator().manual_seed(seed)
    lower, upper = model.limits()
    q = uniform_in_limits(lower, upper, tries if collision_free else 1, generator)
    index = 0
    if collision_free:
        from ikdiffuser_ros.collision.fcl_checker import CollisionChecker

        free = CollisionChecker(model).check(q, max_pairs=1).free
        index = int(np.flatnonzero(free)[0]) if free.any() else 0
    with torch.no_grad():
        return q[index], model.fk(q[index])


def _main(args) -> int:
    import sys

    from ikdiffuser_ros.pipeline import IKPipeline, PipelineConfig
    from ikdiffuser_ros.query import IKQuery, IKTarget

    config = PipelineConfig(max_num_solutions=max(args.num_solutions, PipelineConfig.max_num_solutions))
    pipeline = IKPipeline.from_robot(args.robot, args.checkpoint, args.device, config,
                                     collision=not args.no_collision_check, warmup=False)
    model = pipeline.robot
    _, targets = random_reachable_target(model, args.seed)
    query = IKQuery([IKTarget(list(model.end_effectors), list(targets.numpy()))], num_solutions=args.num_solutions,
                    max_rounds=1, random_seed=args.seed, keep_invalid=args.all,
                    report_collisions=not args.no_collision_check)
    [answer] = pipeline.answer(query).targets
    q, valid = torch.as_tensor(answer.q), torch.as_tensor(answer.valid)
    n_ok = int(valid.sum())
    drawn, failed = (q, ~valid) if args.all else (q[valid], None)
    if len(drawn) == 0:
        print("ikdiffuser render: no valid solution to draw (try --all)", file=sys.stderr)
        return 1
    subtitle = f"{n_ok} valid of {len(q)} drawn"
    if n_ok:
        pos, rot = answer.position_error[answer.valid], answer.rotation_error[answer.valid]
        subtitle += f", median error {1000 * float(np.median(pos)):.3g} mm / {math.degrees(float(np.median(rot))):.3g}°"
    if not args.no_collision_check:
        subtitle += f"; {int(answer.in_collision.sum())} of them in self collision (FCL)"
    out = args.out or f"docs/img/{args.robot}_solutions.png"
    render_solutions(model, drawn, targets, out, title=f"{args.robot}: IK solutions for one target pose",
                     failed=failed, view=(args.elev, args.azim), subtitle=subtitle)
    print(f"{out}: {len(drawn)} solutions drawn ({subtitle})")
    return 0
