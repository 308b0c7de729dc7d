"""Compiled kinematic tree: a pure tensor kernel for batched FK and Jacobians.

A :class:`KinematicTree` holds only 1-DOF *motion nodes* (revolute or
prismatic axes, after expanding planar/floating joints and collapsing every
fixed joint into the next node's constant origin) and the *frames* asked for
(links, each a constant offset from one node). Nodes are grouped by depth, so
FK is one batched matmul per tree level, whatever the batch size: sibling
arms at the same depth share it.

Conventions: node value ``theta = multiplier * q[var] + offset`` (mimic
joints share their leader's ``var``); a node's frame is its joint frame after
the motion, and the revolute axis passes through its origin.
"""

from __future__ import annotations

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
        self._position = {}  # node index -> (level, position within level)
        for level, members in enumerate(self._levels):
            for pos, node in enumerate(members):
                self._position[node] = (level, pos)
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
        key = (dtype, device)
        if key in self._cache:
            return self._cache[key]
        as_t = lambda a: torch.as_tensor(np.asarray(a), dtype=dtype, device=device)  # noqa: E731
        c: dict[str, object] = {}
        levels = []
        for level, members in enumerate(self._levels):
            nodes = [self.nodes[i] for i in members]
            R0 = np.stack([n.origin[:3, :3] for n in nodes])
            t0 = np.stack([n.origin[:3, 3] for n in nodes])
            axes = np.stack([n.axis for n in nodes])
            K = np.zeros((len(nodes), 3, 3))
            K[:, 0, 1], K[:, 0, 2], K[:, 1, 2] = -axes[:, 2], axes[:, 1], -axes[:, 0]
            K[:, 1, 0], K[:, 2, 0], K[:, 2, 1] = axes[:, 2], -axes[:, 1], axes[:, 0]
            prismatic = np.array([n.prismatic for n in nodes])
            revolute = ~prismatic
            # Local rotation R0 @ (I + sin K + (1 - cos) K^2) for revolute nodes, R0 for prismatic.
            levels.append(
                dict(
                    R0=as_t(R0),
                    A1=as_t(R0 @ K * revolute[:, None, None]),
                    A2=as_t(R0 @ K @ K * revolute[:, None, None]),
                    t0=as_t(t0),
                    slide=as_t((R0 @ axes[:, :, None])[:, :, 0] * prismatic[:, None]),
                    var=torch.as_tensor([n.var for n in nodes], device=device),
                    mult=as_t([n.multiplier for n in nodes]),
                    off=as_t([n.offset for n in nodes]),
                    parent_pos=torch.as_tensor(
                        [self._position[n.parent][1] if n.parent >= 0 else 0 for n in nodes], device=device
                    ),
                    is_root=level == 0,
                )
            )
        c["levels"] = levels
        c["frame_offsets"] = as_t(np.stack([f.offset for f in self.frames])) if self.frames else None
        c["frame_level_pos"] = [self._position[f.parent] if f.parent >= 0 else None for f in self.frames]
        order = [i for members in self._levels for i in members]  # level-major node order
        c["order"] = order
        c["node_axes"] = as_t(np.stack([self.nodes[i].axis for i in order])) if order else None
        c["node_prismatic"] = torch.as_tensor([self.nodes[i].prismatic for i in order], device=device)
        # var_map[j, v] = multiplier of node j (level-major) on variable v
        var_map = np.zeros((len(order), self.n_vars))
        for row, i in enumerate(order):
            var_map[row, self.nodes[i].var] += self.nodes[i].multiplier
        c["var_map"] = as_t(var_map)
        c["ancestors"] = as_t(self._ancestors[:, order]) if order else None
        self._cache[key] = c
        return c

    # ------------------------------------------------------------------ kernels
    def _node_poses(self, q: torch.Tensor, c: dict) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """q (B, n_vars) -> per level (R (B, L, 3, 3), t (B, L, 3)) of the node frames in the root frame."""
        out: list[tuple[torch.Tensor, torch.Tensor]] = []
        for lv in c["levels"]:
            theta = q[:, lv["var"]] * lv["mult"] + lv["off"]  # (B, L)
            s, vers = torch.sin(theta)[..., None, None], (1 - torch.cos(theta))[..., None, None]
            R_loc = lv["R0"] + s * lv["A1"] + vers * lv["A2"]  # (B, L, 3, 3)
            t_loc = lv["t0"] + theta[..., None] * lv["slide"]  # (B, L, 3)
            if lv["is_root"]:
                out.append((R_loc, t_loc))
            else:
                R_p, t_p = out[-1]
                R_p, t_p = R_p[:, lv["parent_pos"]], t_p[:, lv["parent_pos"]]
                out.append((R_p @ R_loc, (R_p @ t_loc[..., None])[..., 0] + t_p))
        return out

    def _frames(self, levels: list, batch: int, c: dict, dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames in the root frame: (R (B, F, 3, 3), t (B, F, 3))."""
        Rs, ts = [], []
        off = c["frame_offsets"]
        for f, lp in enumerate(c["frame_level_pos"]):
            if lp is None:
                Rs.append(off[f, :3, :3].expand(batch, 3, 3))
                ts.append(off[f, :3, 3].expand(batch, 3))
            else:
                R_n, t_n = levels[lp[0]][0][:, lp[1]], levels[lp[0]][1][:, lp[1]]
                Rs.append(R_n @ off[f, :3, :3])
                ts.append((R_n @ off[f, :3, 3:4])[..., 0] + t_n)
        return torch.stack(Rs, 1), torch.stack(ts, 1)

    def forward(self, q: torch.Tensor, with_jacobian: bool = False):
        """Batched FK (and optionally geometric Jacobians).

        Args:
            q: (..., n_vars) active joint values [rad or m].
            with_jacobian: also return the Jacobians.

        Returns:
            T_root_frame: (..., F, 4, 4) poses of the frames in the root frame.
            jac (if asked): (..., F, 6, n_vars) geometric Jacobians in the root
                frame, rows (vx, vy, vz, wx, wy, wz) of each frame's origin.
        """
        if q.shape[-1] != self.n_vars:
            raise ValueError(f"expected q with last dimension {self.n_vars}, got shape {tuple(q.shape)}")
        batch_shape = q.shape[:-1]
        q2 = q.reshape(-1, self.n_vars)
        B = q2.shape[0]
        c = self._constants(q.dtype, q.device)
        levels = self._node_poses(q2, c)
        R_f, t_f = self._frames(levels, B, c, q.dtype, q.device)
        T = torch.cat([R_f, t_f[..., None]], -1)
        bottom = torch.zeros(B, len(self.frames), 1, 4, dtype=q.dtype, device=q.device)
        bottom[..., 3] = 1
        T = torch.cat([T, bottom], -2).reshape(*batch_shape, len(self.frames), 4, 4)
        if not with_jacobian:
            return T
        if not c["order"]:
            jac = torch.zeros(*batch_shape, len(self.frames), 6, self.n_vars, dtype=q.dtype, device=q.device)
            return T, jac
        R_n = torch.cat([lv[0] for lv in levels], 1)  # (B, J, 3, 3), level-major
        t_n = torch.cat([lv[1] for lv in levels], 1)  # (B, J, 3)
        axis_w = (R_n @ c["node_axes"][..., None])[..., 0]  # (B, J, 3)
        prismatic = c["node_prismatic"][None, None, :, None]
        lever = t_f[:, :, None, :] - t_n[:, None, :, :]  # (B, F, J, 3)
        axis_b = axis_w[:, None].expand_as(lever)
        lin = torch.where(prismatic, axis_b, torch.cross(axis_b, lever, dim=-1))
        ang = torch.where(prismatic, torch.zeros_like(axis_b), axis_b)
        cols = torch.cat([lin, ang], -1) * c["ancestors"][None, :, :, None]  # (B, F, J, 6)
        jac = torch.einsum("bfjk,jv->bfkv", cols, c["var_map"])
        return T, jac.reshape(*batch_shape, len(self.frames), 6, self.n_vars)
