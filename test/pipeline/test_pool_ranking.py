"""rank_pools: many targets' pools ranked in batched passes give each pool the order the ranking rule gives it
alone (de-duplication, the key with a cost, a seed or the position error, the groups' stable sort)."""

from __future__ import annotations

import pytest
import torch

from ikdiffuser_ros.pool_ranking import PoolRows, rank_pools
from ikdiffuser_ros.sampling.dedup import unique_mask
from ikdiffuser_ros.solver import rank, ranking_key


def _alone(pool: PoolRows, seed, tol, wrapping) -> tuple[list[int], int]:
    unique = unique_mask(pool.q[None], pool.valid[None], tol, wrapping)
    seed_rows = None if seed is None else seed.expand(len(pool.q), -1)
    key = ranking_key(pool.cost, pool.q, seed_rows, pool.pe, wrapping)
    return rank(unique, pool.valid[None], key[None])[0].tolist(), int(unique.sum())


def _pools(g: torch.Generator, sizes: list[int], with_cost: bool) -> list[PoolRows]:
    pools = []
    for m in sizes:
        q = torch.randn(m, 5, generator=g, dtype=torch.float64) * 0.3
        q[m // 2:] = q[: m - m // 2] + 0.01 * torch.randn(m - m // 2, 5, generator=g, dtype=torch.float64)  # repeats
        valid = torch.rand(m, generator=g) < 0.7
        pe = torch.rand(m, generator=g, dtype=torch.float64) * 1e-3
        pe[torch.rand(m, generator=g) < 0.1] = float("nan")
        cost = torch.rand(m, generator=g, dtype=torch.float64) if with_cost else None
        pools.append(PoolRows(q, valid, pe, cost))
    return pools


@pytest.mark.parametrize("with_cost, with_seed, wrap", [(False, False, False), (True, False, True),
                                                        (False, True, True), (False, False, True)])
def test_batched_orders_are_each_pools_own(with_cost, with_seed, wrap):
    g = torch.Generator().manual_seed(7)
    sizes = [1, 2, 3, 17, 20, 31, 64, 5, 1, 600, 40]  # one-row pools, size classes, a harvest's sweep (>= 512 rows)
    pools = _pools(g, sizes, with_cost)
    seed = torch.zeros(5, dtype=torch.float64) if with_seed else None
    wrapping = torch.tensor([wrap, False, False, False, False])
    ranked = rank_pools(pools, seed, 0.05, wrapping)
    for pool, (order, distinct) in zip(pools, ranked):
        assert (order.tolist(), distinct) == _alone(pool, seed, 0.05, wrapping)


@pytest.mark.parametrize("with_cost, with_seed", [(False, False), (True, False), (False, True)])
def test_without_deduplication_the_first_row_is_the_valid_row_of_the_lowest_key(with_cost, with_seed):
    """``distinct=False`` (an answer of one solution): each pool leads with its valid row of the lowest key, the one
    the de-duplicating order leads with or one at least as good, and counts every valid row."""
    g = torch.Generator().manual_seed(11)
    pools = _pools(g, [1, 2, 5, 9, 17, 40], with_cost)
    seed = torch.zeros(5, dtype=torch.float64) if with_seed else None
    wrapping = torch.zeros(5, dtype=torch.bool)
    fast, full = rank_pools(pools, seed, 0.05, wrapping, distinct=False), rank_pools(pools, seed, 0.05, wrapping)
    for pool, (order, count), (full_order, _) in zip(pools, fast, full):
        seed_rows = None if seed is None else seed.expand(len(pool.q), -1)
        key = ranking_key(pool.cost, pool.q, seed_rows, pool.pe, wrapping)
        assert count == int(pool.valid.sum()) and sorted(order.tolist()) == list(range(len(pool.q)))
        if pool.valid.any():
            assert bool(pool.valid[order[0]]) and key[order[0]] == key[pool.valid].min() <= key[full_order[0]]
