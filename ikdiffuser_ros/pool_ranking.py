"""The row order of many targets' candidate pools, ranked in batched passes.

An answer of B targets ranks B pools of measured candidates by the one ordering rule
(:func:`~ikdiffuser_ros.solver.rank`: distinct valid rows, then repeated valid rows, then the rest; ascending
:func:`~ikdiffuser_ros.solver.ranking_key` within each group). Ranked one pool at a time, an answer of 64
small pools spends ~0.5 ms per target in torch's per-call overhead (35 ms of a 500 ms budget on baxter);
here pools of similar size are padded into one (b, M, n) batch, so one de-duplication pass, one key and two
sorts serve the whole batch. The orders are the per-pool ones exactly: padded rows are invalid, come after
every real row of their pool and are dropped.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import torch

from ikdiffuser_ros.sampling.dedup import unique_mask
from ikdiffuser_ros.solver import rank, ranking_key


@dataclass(frozen=True)
class PoolRows:
    """One target's measured candidates: joints q (M, n) [rad or m], valid (M,) bool, position error pe (M,)
    [m], the combined cost (M,) or None (no objective)."""

    q: torch.Tensor
    valid: torch.Tensor
    pe: torch.Tensor
    cost: torch.Tensor | None


def rank_pools(pools: list[PoolRows], seed: torch.Tensor | None, tol: float | torch.Tensor,
               wrapping: torch.Tensor | None, distinct: bool = True) -> list[tuple[torch.Tensor, int]]:
    """Each pool's (M_i,) int64 row order (module docstring) and how many distinct valid rows lead it; ``seed`` (n,)
    or None as in :func:`ranking_key`, ``tol`` and ``wrapping`` as in
    :func:`~ikdiffuser_ros.sampling.dedup.unique_mask`. Pools are batched with those of the same size class (the
    next power of two of M; with a cost or without), so padding at most doubles a batch. ``distinct`` False skips
    the de-duplication (most of the time): every valid row counts as distinct, so the order's first row is the
    valid row of the lowest key, all an answer of one solution needs."""
    ranked: list[tuple[torch.Tensor, int] | None] = [None] * len(pools)
    classes: dict[tuple[bool, int], list[int]] = defaultdict(list)
    for i, pool in enumerate(pools):
        classes[pool.cost is None, max(0, len(pool.q) - 1).bit_length()].append(i)
    for members in classes.values():
        for i, result in zip(members, _rank_batch([pools[i] for i in members], seed, tol, wrapping, distinct)):
            ranked[i] = result
    return ranked


def _rank_batch(pools: list[PoolRows], seed: torch.Tensor | None, tol: float | torch.Tensor,
                wrapping: torch.Tensor | None, distinct: bool) -> list[tuple[torch.Tensor, int]]:
    """The orders of ``pools`` padded to their largest size and ranked as one batch, with their distinct counts."""
    sizes = [len(p.q) for p in pools]
    B, M, n = len(pools), max(sizes), pools[0].q.shape[-1]
    q, valid, pe, cost = _padded(pools, M) if B > 1 else (
        pools[0].q[None], pools[0].valid[None], pools[0].pe[None], None if pools[0].cost is None else pools[0].cost[None])
    seed_rows = None if seed is None else seed.expand(B * M, -1)
    key = ranking_key(None if cost is None else cost.reshape(-1), q.reshape(B * M, n), seed_rows,
                      pe.reshape(-1), wrapping).reshape(B, M)
    unique = unique_mask(q, valid, tol, wrapping) if distinct else valid
    order = rank(unique, valid, key)
    return [(row[row < m] if m < M else row, k) for row, m, k in zip(order, sizes, unique.sum(-1).tolist())]


def _padded(pools: list[PoolRows], M: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """q (B, M, n), valid (B, M), pe (B, M), cost (B, M) or None of ``pools``: padded rows zero, invalid, their
    error and cost infinite."""
    B, n = len(pools), pools[0].q.shape[-1]
    q = pools[0].q.new_zeros(B, M, n)
    valid = torch.zeros(B, M, dtype=torch.bool)
    pe = torch.full((B, M), math.inf, dtype=torch.float64)
    cost = None if pools[0].cost is None else torch.full((B, M), math.inf, dtype=torch.float64)
    for b, p in enumerate(pools):
        m = len(p.q)
        q[b, :m], valid[b, :m], pe[b, :m] = p.q, p.valid, p.pe
        if cost is not None:
            cost[b, :m] = p.cost
    return q, valid, pe, cost


__all__ = ["PoolRows", "rank_pools"]
