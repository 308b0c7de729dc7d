"""Compiled kinematic tree: a pure tensor kernel for batched FK and Jacobians.

A :class:`KinematicTree` holds only 1-DOF *motion nodes* (revolute or
prismatic axes, after expanding planar/floating joints and collapsing every
fixed joint into the next node's constant origin) and the *frames* asked for
(links, each a constant offset from one node). Nodes are grouped by depth, so
FK is one batched pose product per tree level, whatever the batch size: sibling
arms at the same depth share it. The kernel works batch-last on fused [R | t]
(3x4) poses: each pose product is a few long vectorized multiply-adds over the
batch (not B tiny matmuls), and Jacobian columns are computed only for the
(frame, ancestor node) pairs. See :meth:`KinematicTree.forward`.

Conventions: node value ``theta = multiplier * q[var] + offset`` (mimic
joints share their leader's ``var``); a node's frame is its joint frame after
the motion, and the revolute axis passes through its origin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class MotionNode:
    """One elementary axis. ``origin``: parent node frame (or root) -> joint frame, (4, 4)."""

    name: str
    parent: int  # index of the parent node, -1 for the root frame
    origin: np.ndarray
    prismatic: bool
    axis: np.ndarray  # (3,) unit vector in the joint frame
    var: int  # index into the active joint vector q
    multiplier: float = 1.0
    offset: float = 0.0


@dataclass(frozen=True)
class FrameSpec:
    """A frame of interest: ``T_root_frame = T_root_node(parent) @ offset`` (parent -1: root)."""

    name: str
    parent: int
    offset: np.ndarray  # (4, 4)


class KinematicTree:
    """Batched FK/Jacobian over ``n_vars`` active variables for a fixed list of frames.

    Constants are cached per (dtype, device); the kernel has no Python loop over
    the batch, only over tree depth.
    """

    def __init__(self, nodes: list[MotionNode], frames: list[FrameSpec], n_vars: int) -> None:
        self.nodes = nodes
        self.frames = frames
        self.n_vars = n_vars
        depth: list[int] = []
        for node in nodes:
            if node.parent >= len(depth):
                raise ValueError("motion nodes must be in topological order")
            depth.append(0 if node.parent < 0 else depth[node.parent] + 1)
        n_levels = max(depth, default=-1) + 1
        self._levels = [[i for i, d in enumerate(depth) if d == level] for level in range(n_levels)]
        # ancestors[f, j]: node j moves frame f
        anc = np.zeros((len(frames), len(nodes)), dtype=bool)
        for f, frame in enumerate(frames):
            j = frame.parent
            while j >= 0:
                anc[f, j] = True
                j = nodes[j].parent
        self._ancestors = anc
        self._cache: dict[tuple[torch.dtype, torch.device], dict[str, object]] = {}

    # ------------------------------------------------------------------ constants
    def _constants(self, dtype: torch.dtype, device: torch.device) -> dict[str, object]:
        """Tensors of the kernel for one (dtype, device), built once.

        Nodes are stored level-major (all depth-0 nodes, then depth 1, ...), so
        each level is a contiguous slice of the per-node arrays. Stages:
        :meth:`_node_constants` (local poses), :meth:`_level_slices` (tree
        levels), :meth:`_frame_constants` (frames), :meth:`_pair_constants`
        (Jacobian columns).
        """
        key = (dtype, device)
        if key in self._cache:
            return self._cache[key]
        as_t = lambda a: torch.as_tensor(np.asarray(a, dtype=float), dtype=dtype, device=device)  # noqa: E731
        idx_t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.int64), device=device)  # noqa: E731
        order = [i for members in self._levels for i in members]  # level-major node order
        row = {node: r for r, node in enumerate(order)}
        c: dict[str, object] = {"n_nodes": len(order)}
        if order:
            c.update(self._node_constants([self.nodes[i] for i in order], as_t, idx_t))
            c["levels"] = self._level_slices(row, idx_t)
        c.update(self._frame_constants(row, as_t, idx_t))
        c.update(self._pair_constants(order, row, as_t, idx_t, device))
        self._cache[key] = c
        return c

    def _node_constants(self, nodes: list[MotionNode], as_t, idx_t) -> dict[str, object]:
        """Per-node tensors of the J nodes, in level-major order.

        ``var`` (J,), ``affine`` ((J,), (J,)): node values theta (J, B) =
        q.t()[var] * mult + off [rad or m] (None: that part is trivial). ``M0``, ``A1``, ``A2``, ``S``: (J, 3, 4, 1)
        terms of the local pose [R | t] (3x4) = M0 + sin * A1 + (1 - cos) * A2
        + theta * S: rotation R0 @ (I + sin K + (1 - cos) K^2) for revolute
        nodes, sliding t for prismatic (``S`` None without prismatic nodes).
        ``node_axis_w``: M (J, 3, 4, B) -> joint axes in the root frame (J, 3, B).
        """
        J = len(nodes)
        R0 = np.stack([n.origin[:3, :3] for n in nodes])
        axes = np.stack([n.axis for n in nodes])
        K = _skew(axes)  # (J, 3, 3)
        prismatic = np.array([n.prismatic for n in nodes])
        revolute = ~prismatic
        mult = np.array([n.multiplier for n in nodes])
        off = np.array([n.offset for n in nodes])
        var = [n.var for n in nodes]
        c: dict[str, object] = {}
        # theta = q[:, var] * mult + off; skipped parts when trivial
        c["var"] = None if var == list(range(self.n_vars)) else idx_t(var)
        c["affine"] = (as_t(mult), as_t(off)) if np.any(mult != 1) or np.any(off != 0) else None
        M0, A1, A2, S = (np.zeros((J, 3, 4)) for _ in range(4))
        M0[:, :, :3] = R0
        M0[:, :, 3] = np.stack([n.origin[:3, 3] for n in nodes])
        A1[:, :, :3] = R0 @ K * revolute[:, None, None]
        A2[:, :, :3] = R0 @ K @ K * revolute[:, None, None]
        S[:, :, 3] = (R0 @ axes[:, :, None])[:, :, 0] * prismatic[:, None]
        c["M0"], c["A1"], c["A2"] = as_t(M0)[..., None], as_t(A1)[..., None], as_t(A2)[..., None]
        c["S"] = as_t(S)[..., None] if prismatic.any() else None
        c["node_axis_w"] = _axis_kernel(axes, as_t)
        return c

    def _level_slices(self, row: dict[int, int], idx_t) -> list[tuple[int, int, object]]:
        """(start, end, mode) per tree level: its rows [start, end) in the level-major node arrays.

        ``mode`` says where each node's parent pose is in the previous level's
        slice: None at depth 0; ("one", k): every node hangs on node k;
        ("same", None): node k on node k; ("gather", (L,) index): any other.
        """
        levels = []
        start = 0
        for depth, members in enumerate(self._levels):
            end = start + len(members)
            parents = [row[self.nodes[i].parent] - (start - len(self._levels[depth - 1])) if depth else -1
                       for i in members]
            if depth == 0:
                mode = None
            elif len(set(parents)) == 1:
                mode = ("one", parents[0])  # every node of the level hangs on the same parent
            elif parents == list(range(len(self._levels[depth - 1]))):
                mode = ("same", None)  # node k's parent is node k of the previous level
            else:
                mode = ("gather", idx_t(parents))
            levels.append((start, end, mode))
            start = end
        return levels

    def _frame_constants(self, row: dict[int, int], as_t, idx_t) -> dict[str, object]:
        """Frames: T_root_frame = T_root_node @ offset (node -1: the root, an identity "node").

        ``frame_has_root``: some frame hangs on the root (an identity row 0 is
        put in front of the node poses); ``frame_rows``: (F,) rows to gather;
        ``frame_offset``: (F, 3, 4, 1) [R | t] offsets, None if all identity.
        """
        F = len(self.frames)
        frame_rows = [row[f.parent] if f.parent >= 0 else -1 for f in self.frames]
        has_root = any(r < 0 for r in frame_rows)
        offsets = np.stack([f.offset for f in self.frames]) if F else np.zeros((0, 4, 4))
        identity = np.array_equal(offsets, np.broadcast_to(np.eye(4), offsets.shape))
        return {
            "frame_has_root": has_root,
            "frame_rows": idx_t([r + 1 if has_root else r for r in frame_rows]),
            "frame_offset": None if identity else as_t(offsets[:, :3, :])[..., None],  # (F, 3, 4, 1)
        }

    def _pair_constants(self, order: list[int], row: dict[int, int], as_t, idx_t, device) -> dict[str, object]:
        """Jacobian: one column per (frame, ancestor node) pair, scattered to (frame, variable).

        ``n_pairs``: P; ``pair_frame``, ``pair_node``: (P,) frame and node row
        of each pair; ``pair_prismatic``: (P, 1, 1) bool, None if all revolute;
        ``pair_mult``: (P, 1, 1) mimic multipliers, None if all 1; and
        ``pair_source`` / ``pair_scatter`` (see :func:`_pair_gather`).
        """
        F = len(self.frames)
        pairs = [(f, row[j]) for f in range(F) for j in order if self._ancestors[f, j]]
        c: dict[str, object] = {"n_pairs": len(pairs)}
        if not pairs:
            return c
        pair_nodes = [self.nodes[order[r]] for _, r in pairs]
        c["pair_frame"] = idx_t([p[0] for p in pairs])
        c["pair_node"] = idx_t([p[1] for p in pairs])
        pm = np.array([n.prismatic for n in pair_nodes])
        c["pair_prismatic"] = torch.as_tensor(pm, device=device)[:, None, None] if pm.any() else None
        mult = np.array([n.multiplier for n in pair_nodes])
        c["pair_mult"] = as_t(mult)[:, None, None] if np.any(mult != 1) else None
        target = [f * self.n_vars + n.var for (f, _), n in zip(pairs, pair_nodes)]
        c.update(_pair_gather(target, F * self.n_vars, as_t, idx_t))
        return c

    # ------------------------------------------------------------------ kernels
    # Gathers use index_select: advanced indexing (aten::index) parallelizes even tiny
    # gathers, which costs milliseconds per call when the CPU is shared.
    # Layout: the kernel works *batch-last*, poses [R | t] as (nodes, 3, 4, B), so that
    # every pose product is a few long, contiguous, vectorized
    # multiply-adds over the batch instead of B tiny matmuls; the results are transposed
    # to batch-first once, at the end.

    @staticmethod
    def _compose(M_p, M_l, out=None):
        """Parent poses M_p composed with local poses M_l, both [R | t] (L, 3, 4, B), broadcasting.

        ``out``: optional buffer to write into (only when no gradient is recorded).
        """
        M = torch.mul(M_p[:, :, 0:1], M_l[:, 0:1], **({} if out is None else {"out": out}))
        M.addcmul_(M_p[:, :, 1:2], M_l[:, 1:2]).addcmul_(M_p[:, :, 2:3], M_l[:, 2:3])
        M[:, :, 3].add_(M_p[:, :, 3])
        return M

    @classmethod
    def _node_poses(cls, q: torch.Tensor, c: dict, inplace: bool) -> torch.Tensor:
        """q (B, n_vars) -> M (J, 3, 4, B): node frames [R | t] in the root frame, level-major.

        ``inplace``: write every level straight into a preallocated output (no autograd);
        otherwise levels are concatenated at the end.
        """
        qT = q.t().contiguous()
        theta = qT if c["var"] is None else qT.index_select(0, c["var"])  # (J, B)
        if c["affine"] is not None:
            theta = theta * c["affine"][0][:, None] + c["affine"][1][:, None]
        s, vers = torch.sin(theta)[:, None, None], (1 - torch.cos(theta))[:, None, None]
        M_loc = torch.addcmul(c["M0"], c["A1"], s).addcmul_(c["A2"], vers)  # (J, 3, 4, B)
        if c["S"] is not None:
            M_loc.addcmul_(c["S"], theta[:, None, None])
        levels = c["levels"]
        if len(levels) == 1:
            return M_loc
        if inplace:
            M_all = torch.empty_like(M_loc)
            M_all[: levels[0][1]] = M_loc[: levels[0][1]]
        Ms: list[torch.Tensor] = []
        prev = (0, 0)
        for start, end, mode in levels:
            M_l = M_loc[start:end]
            if mode is not None:
                M_p = M_all[prev[0]:prev[1]] if inplace else Ms[-1]
                if mode[0] == "one":
                    M_p = M_p[mode[1]:mode[1] + 1]
                elif mode[0] == "gather":
                    M_p = M_p.index_select(0, mode[1])
                M_l = cls._compose(M_p, M_l, M_all[start:end] if inplace else None)
            Ms.append(M_l)
            prev = (start, end)
        return M_all if inplace else torch.cat(Ms, 0)

    def forward(self, q: torch.Tensor, with_jacobian: bool = False):
        """Batched FK (and optionally geometric Jacobians).

        Args:
            q: (..., n_vars) active joint values [rad or m].
            with_jacobian: also return the Jacobians.

        Returns:
            T_root_frame: (..., F, 4, 4) poses of the frames in the root frame.
            jac (if asked): (..., F, 6, n_vars) geometric Jacobians in the root
                frame, rows (vx, vy, vz, wx, wy, wz) of each frame's origin.

        Stages: :meth:`_node_poses`, :meth:`_frame_poses`, :meth:`_homogeneous`
        and, for the Jacobians, :meth:`_jacobian`.
        """
        if q.ndim == 0 or q.shape[-1] != self.n_vars:
            raise ValueError(f"expected q with last dimension {self.n_vars}, got shape {tuple(q.shape)}")
        if not q.is_floating_point():  # the constants would be cast to integers: silently wrong poses
            raise ValueError(f"expected a floating-point q, got dtype {q.dtype}")
        batch_shape = q.shape[:-1]
        q2 = q.reshape(math.prod(batch_shape), self.n_vars)  # (-1 is ambiguous with 0 variables)
        B, F, V = q2.shape[0], len(self.frames), self.n_vars
        c = self._constants(q.dtype, q.device)
        inplace = not (q.requires_grad and torch.is_grad_enabled())  # out= buffers unless recording
        M_n = self._node_poses(q2, c, inplace) if c["n_nodes"] else q2.new_zeros(0, 3, 4, B)
        M_f = self._frame_poses(M_n, c)
        T = self._homogeneous(M_f).reshape(*batch_shape, F, 4, 4)
        if not with_jacobian:
            return T
        if not c["n_pairs"]:
            return T, q.new_zeros(*batch_shape, F, 6, V)
        jac = self._jacobian(M_n, M_f, c, inplace)  # (B, F, 6, V)
        return T, jac.reshape(*batch_shape, F, 6, V)

    @classmethod
    def _frame_poses(cls, M_n: torch.Tensor, c: dict) -> torch.Tensor:
        """Node poses M_n (J, 3, 4, B) -> frame poses M_f (F, 3, 4, B), [R | t] in the root frame."""
        if c["frame_has_root"]:  # an identity node in front for frames fixed to the root
            eye = torch.eye(3, 4, dtype=M_n.dtype, device=M_n.device)[None, :, :, None].expand(1, 3, 4, M_n.shape[3])
            M_n = torch.cat([eye, M_n], 0)
        M_f = M_n.index_select(0, c["frame_rows"])  # (F, 3, 4, B)
        if c["frame_offset"] is not None:
            M_f = cls._compose(M_f, c["frame_offset"])
        return M_f

    @staticmethod
    def _homogeneous(M_f: torch.Tensor) -> torch.Tensor:
        """[R | t] (F, 3, 4, B) -> (B, F, 4, 4) homogeneous transforms, batch-first."""
        F, _, _, B = M_f.shape
        T = M_f.new_empty(B, F, 4, 4)
        T[..., :3, :] = M_f.permute(3, 0, 1, 2)
        T[..., 3, :3] = 0
        T[..., 3, 3] = 1
        return T

    def _jacobian(self, M_n: torch.Tensor, M_f: torch.Tensor, c: dict, inplace: bool) -> torch.Tensor:
        """Geometric Jacobians (B, F, 6, n_vars) from node poses M_n (J, 3, 4, B) and frame poses M_f (F, 3, 4, B).

        Needs at least one (frame, ancestor node) pair (``c["n_pairs"]`` > 0).
        ``inplace``: stack the columns straight into the gather buffer (no autograd).
        """
        F, V, B = len(self.frames), self.n_vars, M_f.shape[3]
        cols = self._pair_columns(M_n, M_f, c)  # 6 x (P, B)
        if inplace and c["pair_source"] is not None and c["pair_mult"] is None:
            padded = M_f.new_empty(c["n_pairs"] + 1, 6, B)  # row 0: zeros for (frame, variable)s off the path
            padded[0] = 0
            torch.stack(cols, 1, out=padded[1:])
            jac = padded.index_select(0, c["pair_source"])  # (F * V, 6, B)
        else:
            jac = self._scatter_columns(torch.stack(cols, 1), c)  # (F * V, 6, B)
        return jac.view(F, V, 6, B).permute(3, 0, 2, 1).contiguous()

    @staticmethod
    def _pair_columns(M_n: torch.Tensor, M_f: torch.Tensor, c: dict) -> list[torch.Tensor]:
        """Jacobian columns of the P (frame, ancestor node) pairs: [vx, vy, vz, wx, wy, wz], each (P, B).

        Revolute node: (axis x lever | axis) [m/rad, 1]; prismatic: (axis | 0)
        [1, 0]; the joint axis and the lever (node origin -> frame origin [m])
        in the root frame. Node poses M_n (J, 3, 4, B), frame poses M_f (F, 3, 4, B).
        """
        node = c["pair_node"]
        axis = c["node_axis_w"](M_n).index_select(0, node)  # (P, 3, B) joint axes in the root frame
        lever = M_f[:, :, 3].index_select(0, c["pair_frame"]) - M_n[:, :, 3].index_select(0, node)  # (P, 3, B) node origin -> frame origin
        a0, a1, a2 = axis.unbind(1)
        l0, l1, l2 = lever.unbind(1)
        lin = [torch.addcmul(a1 * l2, a2, l1, value=-1), torch.addcmul(a2 * l0, a0, l2, value=-1),
               torch.addcmul(a0 * l1, a1, l0, value=-1)]  # axis x lever
        ang = [a0, a1, a2]
        pm = c["pair_prismatic"]
        if pm is not None:  # prismatic: (axis | 0)
            zero = torch.zeros((), dtype=M_n.dtype, device=M_n.device)
            lin = [torch.where(pm[:, 0], a, x) for a, x in zip(ang, lin)]
            ang = [torch.where(pm[:, 0], zero, a) for a in ang]
        return lin + ang

    @staticmethod
    def _scatter_columns(cols: torch.Tensor, c: dict) -> torch.Tensor:
        """Pair columns (P, 6, B) -> (F * n_vars, 6, B) (frame, variable) rows, batch-last.

        Applies the mimic multipliers; no scatter_add/index_add: they are very
        slow on small batches with several threads.
        """
        if c["pair_mult"] is not None:
            cols = cols * c["pair_mult"]
        if c["pair_source"] is not None:
            return torch.cat([cols.new_zeros(1, 6, cols.shape[2]), cols], 0).index_select(0, c["pair_source"])
        P, _, B = cols.shape
        return (c["pair_scatter"] @ cols.reshape(P, 6 * B)).view(c["pair_scatter"].shape[0], 6, B)


def _axis_kernel(axes: np.ndarray, as_t):
    """M = [R | t] (J, 3, 4, B) -> R @ axis (J, 3, B) for constant (J, 3) axes, skipping zero components."""
    used = [k for k in range(3) if np.any(axes[:, k] != 0)]
    if all(np.count_nonzero(a) == 1 and a[np.flatnonzero(a)[0]] == 1 for a in axes) and len(used) == 1:
        k = used[0]
        return lambda R: R[:, :, k]  # every axis is the same unit vector e_k
    coef = {k: as_t(axes[:, k])[:, None, None] for k in used}

    def kernel(R: torch.Tensor) -> torch.Tensor:
        out = R[:, :, used[0]] * coef[used[0]]
        for k in used[1:]:
            out = out.addcmul_(R[:, :, k], coef[k])
        return out

    return kernel


def _skew(axes: np.ndarray) -> np.ndarray:
    """(J, 3) vectors -> (J, 3, 3) cross-product matrices K (K @ v = axis x v)."""
    K = np.zeros((len(axes), 3, 3))
    K[:, 0, 1], K[:, 0, 2], K[:, 1, 2] = -axes[:, 2], axes[:, 1], -axes[:, 0]
    K[:, 1, 0], K[:, 2, 0], K[:, 2, 1] = axes[:, 2], -axes[:, 1], axes[:, 0]
    return K


def _pair_gather(target: list[int], n_rows: int, as_t, idx_t) -> dict[str, object]:
    """How the (P, 6, B) pair columns become the n_rows = F * n_vars (frame, variable) rows.

    ``target``: (frame, variable) row of each pair. If each row gets at most
    one column, ``pair_source``: (n_rows,) index into the columns with a zero
    row 0 in front (``pair_scatter`` None); else (a variable drives several
    nodes of one path: mimic) ``pair_scatter``: (n_rows, P) 0/1 matrix to sum
    them with a matmul (``pair_source`` None).
    """
    if len(set(target)) == len(target):
        # each (frame, variable) gets at most one column: gather rows (row 0 is zeros)
        source = np.zeros(n_rows, dtype=np.int64)
        source[target] = np.arange(1, len(target) + 1)
        return {"pair_source": idx_t(source), "pair_scatter": None}
    # a variable drives several nodes of one path (mimic): sum them with a matmul
    scatter = np.zeros((n_rows, len(target)))
    for k, tgt in enumerate(target):
        scatter[tgt, k] += 1.0
    return {"pair_source": None, "pair_scatter": as_t(scatter)}
