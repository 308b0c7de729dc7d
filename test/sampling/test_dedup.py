"""De-duplication of solutions: greedy leader clustering (sampling/dedup.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ikdiffuser_ros.sampling.dedup import count_distinct, deduplicate, farthest_first, joint_tolerances, unique_mask


def test_dedup_merges_identical_and_near_identical():
    q = torch.tensor([[0.0, 0.0], [1e-4, -1e-4], [0.5, 0.0], [0.0, 0.0], [0.5, 2e-3]], dtype=torch.float64)
    keep, count = deduplicate(q, tol=1e-3)
    assert keep.tolist() == [True, False, True, False, True]
    assert count.item() == 3
    # failures are neither kept nor counted, and do not hide later successes
    keep, count = deduplicate(q, success=torch.tensor([False, True, True, True, True]), tol=1e-3)
    assert keep.tolist() == [False, True, True, False, True]
    # batched (B, N, n)
    qb = torch.stack([q, q.flip(0)])
    assert deduplicate(qb, tol=1e-3)[1].tolist() == [3, 3]


@pytest.mark.parametrize("wrap", [False, True])
def test_dedup_is_the_greedy_leader_clustering(wrap):
    """Against a plain Python loop: keep a row iff no earlier kept row is within tolerance."""
    g = torch.Generator().manual_seed(0)
    wrapping = torch.tensor([wrap, False, False])
    for _ in range(15):
        N = int(torch.randint(1, 50, (1,), generator=g))
        q = torch.randint(0, 4, (N, 3), generator=g).double() * 7e-4
        q += 1e-4 * torch.rand(N, 3, generator=g, dtype=torch.float64)
        if wrap:  # straddle the +-pi seam of the first (wrapping) joint
            q[:, 0] += torch.where(torch.rand(N, generator=g) < 0.5, math.pi - 1e-3, -math.pi)
        valid = torch.rand(N, generator=g) < 0.8
        kept: list[int] = []
        for i in range(N):
            if not valid[i]:
                continue
            d = q[i] - q[torch.tensor(kept, dtype=torch.long)] if kept else torch.zeros(0, 3, dtype=torch.float64)
            if wrap:
                d[:, 0] = torch.remainder(d[:, 0] + math.pi, 2 * math.pi) - math.pi
            if not kept or (d.abs().amax(-1) > 1e-3).all():
                kept.append(i)
        expect = torch.zeros(N, dtype=torch.bool)
        expect[kept] = True
        assert torch.equal(unique_mask(q, valid, 1e-3, wrapping), expect)



@pytest.mark.parametrize("tol", [0.05, 0.5, 4.0])
def test_wrapped_closeness_is_exact(tol):
    """The embedded pre-filter of wrapping joints (one cdist, then the exact difference on its pairs) gives
    the closeness of the plain wrapped Chebyshev difference, batched, across the seam, with per-joint
    tolerances (one above pi: every pair is close in that joint)."""
    from ikdiffuser_ros.kinematics.joint_kinds import wrap_to_pi
    from ikdiffuser_ros.sampling.dedup import _Closeness

    g = torch.Generator().manual_seed(3)
    wrap = torch.tensor([True, False, True, True, False])
    tols = torch.tensor([tol, 0.05, 0.1, tol, 0.02], dtype=torch.float64)
    centers = (2 * torch.rand(2, 12, 5, generator=g, dtype=torch.float64) - 1) * math.pi
    centers[:, :6, 0] = math.pi - 0.01  # half of them at the seam
    q = centers.repeat_interleave(20, 1) + 0.6 * tols * torch.randn(2, 240, 5, generator=g, dtype=torch.float64)
    q = torch.where(wrap, wrap_to_pi(q), q)
    diff = q[:, :, None] - q[:, None, :]
    diff = torch.where(wrap, wrap_to_pi(diff), diff)
    expect = (diff.abs() / tols).amax(-1) <= 1.0
    got = _Closeness(tols, wrap, 2**20).block(q / tols, q / tols)
    assert torch.equal(got, expect) and 0 < expect.double().mean() < 1


@pytest.mark.parametrize("wrap", [False, True])
def test_leaders_chunk_by_chunk_and_large_batches_keep_the_same_rows(wrap, monkeypatch):
    """Greedy leaders chunk by chunk (against the rows kept before each chunk) equal the dense greedy pass,
    and a batch of SWEEP_MIN_ROWS rows or more (sorted and swept, or chunk by chunk where the sweep is refused)
    keeps the same rows as the two-step path."""
    import ikdiffuser_ros.sampling.dedup as dedup

    g = torch.Generator().manual_seed(5)
    wrapping = torch.tensor([wrap, False, wrap])
    tols = torch.tensor([0.05, 0.05, 0.1], dtype=torch.float64)
    centers = (2 * torch.rand(30, 3, generator=g, dtype=torch.float64) - 1) * math.pi
    q = centers[torch.randint(0, 30, (600,), generator=g)] + 0.05 * torch.randn(600, 3, generator=g,
                                                                                 dtype=torch.float64)
    close = dedup._Closeness(tols, wrapping if wrap else None, 1 << 20)
    dense = torch.from_numpy(dedup._greedy_leaders(close.dense(q / tols)))
    for chunk in (1, 7, 64, 1024):
        assert torch.equal(close.leaders(q / tols, chunk), dense)
    valid = torch.rand(2, 600, generator=g) < 0.9
    qb = torch.stack([q, q.flip(0)])
    assert close.sweep_pairs(q / tols) is not None  # 600 rows: the sort and sweep by default
    expect = unique_mask(qb, valid, tols, wrapping)
    paths = {"two-step": {"SWEEP_MIN_ROWS": 10**9}, "sweep refused": {"SWEEP_MAX_PAIRS_PER_ROW": 0}}
    for name, patch in paths.items():
        with monkeypatch.context() as mp:
            for key, value in patch.items():
                mp.setattr(dedup, key, value)
            assert torch.equal(unique_mask(qb, valid, tols, wrapping), expect), name
    assert 30 <= int(expect[0].sum()) < 540


@pytest.mark.parametrize("wrap", ["none", "some", "all"])
def test_sort_and_sweep_is_the_greedy_leader_clustering(wrap):
    """Batches of SWEEP_MIN_ROWS rows or more (sorted along one joint, then swept) against a plain Python
    loop: repeats of a few solutions, spread-out rows and rows across the seam; with every joint wrapping
    there is no joint to sort along and the chunked leaders answer."""
    from ikdiffuser_ros.kinematics.joint_kinds import wrap_to_pi
    from ikdiffuser_ros.sampling.dedup import SWEEP_MIN_ROWS

    g = torch.Generator().manual_seed(11)
    wrapping = {"none": torch.zeros(4, dtype=torch.bool), "some": torch.tensor([True, False, True, False]),
                "all": torch.ones(4, dtype=torch.bool)}[wrap]
    tols = torch.tensor([0.05, 0.05, 0.1, 0.02], dtype=torch.float64)
    centers = (2 * torch.rand(40, 4, generator=g, dtype=torch.float64) - 1) * math.pi
    centers[:10, 0] = math.pi - 0.01
    N = SWEEP_MIN_ROWS + 200
    q = centers[torch.randint(0, 40, (N,), generator=g)] + 0.01 * torch.randn(N, 4, generator=g, dtype=torch.float64)
    q[: N // 3] = (2 * torch.rand(N // 3, 4, generator=g, dtype=torch.float64) - 1) * math.pi  # spread-out rows
    q = torch.where(wrapping, wrap_to_pi(q), q)
    valid = torch.rand(N, generator=g) < 0.9
    kept: list[int] = []
    for i in valid.nonzero().flatten().tolist():
        d = q[i] - q[kept] if kept else torch.zeros(0, 4, dtype=torch.float64)
        d = torch.where(wrapping, wrap_to_pi(d), d)
        if not kept or ((d.abs() / tols).amax(-1) > 1.0).all():
            kept.append(i)
    expect = torch.zeros(N, dtype=torch.bool)
    expect[kept] = True
    assert torch.equal(unique_mask(q, valid, tols, wrapping), expect) and N // 3 < len(kept) < N - 200

def test_count_distinct_uses_per_joint_tolerances_and_wraps(panda, baxter):
    tol = joint_tolerances(panda)
    assert torch.allclose(tol, torch.full((7,), 0.05, dtype=torch.float64))
    q = torch.zeros(4, 7, dtype=torch.float64)
    q[1, 2] = 0.04  # same (within 0.05 rad)
    q[2, 2] = 0.06  # distinct
    q[3, 6] = -0.06
    assert count_distinct(q, tol=tol).item() == 3
    # a wrapping joint compares modulo 2 pi
    wrap = torch.tensor([True, False])
    qw = torch.tensor([[math.pi - 0.01, 0.0], [-math.pi + 0.01, 0.0]], dtype=torch.float64)
    assert count_distinct(qw, tol=0.05, wrapping=wrap).item() == 1
    assert count_distinct(qw, tol=0.05).item() == 2
    assert unique_mask(qw, tol=0.05, wrapping=wrap).tolist() == [True, False]


def test_count_distinct_of_no_solutions_is_zero():
    assert int(count_distinct(torch.zeros(0, 7, dtype=torch.float64))) == 0
    assert count_distinct(torch.zeros(3, 0, 7)).tolist() == [0, 0, 0]


@pytest.mark.parametrize("wrap", [False, True])
def test_farthest_first_is_the_greedy_farthest_point_order(wrap):
    """Against a plain Python loop: row 0, then each next row the farthest from those picked (wrapping joints
    modulo 2 pi), k of them; the rest follow in their given order."""
    g = torch.Generator().manual_seed(1)
    wrapping = torch.tensor([wrap, False, False])
    for m, k in [(1, 5), (2, 2), (30, 7), (40, 40), (25, 100)]:
        q = 3.0 * torch.randn(m, 3, generator=g, dtype=torch.float64)

        def dist(a, b):
            d = a - b
            if wrap:
                d[0] = math.remainder(float(d[0]), 2 * math.pi)
            return float(d.norm())

        picked = [0]
        while len(picked) < min(k, m):
            rest = [i for i in range(m) if i not in picked]
            picked.append(max(rest, key=lambda i: min(dist(q[i], q[j]) for j in picked)))
        expected = picked + [i for i in range(m) if i not in picked]
        assert farthest_first(q, k, wrapping).tolist() == expected


def test_farthest_first_sees_across_the_seam():
    """Two angles either side of +-pi are neighbours for a wrapping joint: the farthest from 3.1 is 0, not -3.1."""
    q = torch.tensor([[3.1], [-3.1], [0.0]], dtype=torch.float64)
    assert farthest_first(q, 2, torch.tensor([True])).tolist() == [0, 2, 1]
    assert farthest_first(q, 2, torch.tensor([False])).tolist() == [0, 1, 2]


@pytest.mark.parametrize("wrap", [False, True])
def test_farthest_first_many_is_each_sets_own_order(wrap):
    """Sets of different sizes (empty, one row, k <= 1, k beyond the set) padded into one batch get exactly the
    orders they get alone."""
    from ikdiffuser_ros.sampling.dedup import farthest_first_many

    g = torch.Generator().manual_seed(4)
    wrapping = torch.tensor([wrap, False, False, False])
    sizes, ks = [0, 1, 7, 30, 12, 25, 3], [5, 3, 1, 9, 40, 25, 2]
    qs = [3.0 * torch.randn(m, 4, generator=g, dtype=torch.float64) for m in sizes]
    many = farthest_first_many(qs, ks, wrapping)
    for q, k, order in zip(qs, ks, many):
        alone = farthest_first(q, k, wrapping) if len(q) else torch.zeros(0, dtype=torch.int64)
        assert order.tolist() == alone.tolist()
        assert sorted(order.tolist()) == list(range(len(q)))


@pytest.mark.parametrize("wrap", [False, True])
def test_small_batches_in_numpy_keep_the_rows_torch_keeps(wrap, monkeypatch):
    """One batch of up to SMALL_MAX_ROWS rows goes through numpy (:func:`unique_mask_numpy`): the same rows as the torch
    path, for pools piled on a few solutions (chains of close rows), invalid rows and rows across the seam."""
    import ikdiffuser_ros.sampling.dedup as dedup

    g = torch.Generator().manual_seed(3)
    wrapping = torch.tensor([wrap] + [False] * 13)
    tol, merged = torch.full((14,), 0.05, dtype=torch.float64), 0
    for N in (1, 2, 7, 33, 64, dedup.SMALL_MAX_ROWS):
        centers = torch.rand(max(1, N // 6), 14, generator=g, dtype=torch.float64) * 2 - 1
        q = centers[torch.randint(0, len(centers), (N,), generator=g)] + 0.015 * torch.randn(N, 14, generator=g,
                                                                                           dtype=torch.float64)
        if wrap:
            q[:, 0] += torch.where(torch.rand(N, generator=g) < 0.5, math.pi - 0.02, -math.pi)
        valid = torch.rand(N, generator=g) < 0.85
        fast = unique_mask(q, valid, tol, wrapping)
        monkeypatch.setattr(dedup, "SMALL_MAX_ROWS", 0)
        assert torch.equal(fast, unique_mask(q, valid, tol, wrapping)), N
        monkeypatch.undo()
        merged += int(valid.sum() - fast.sum())
    assert merged > 50  # the pools had repeats to merge


@pytest.mark.parametrize("wrap", [False, True])
def test_batches_in_numpy_keep_each_batchs_own_rows(wrap, monkeypatch):
    """Many small batches in numpy, in one pass or in chunks of a few batches (SMALL_MAX_ELEMENTS): each batch keeps
    the rows it keeps alone in torch (padded rows invalid, a batch without valid rows)."""
    import ikdiffuser_ros.sampling.dedup as dedup

    g = torch.Generator().manual_seed(5)
    wrapping = torch.tensor([wrap] + [False] * 6)
    q = (torch.rand(9, 12, 1, 7, generator=g, dtype=torch.float64) * 2 - 1).repeat(1, 1, 3, 1).reshape(9, 36, 7)
    q = q + 0.01 * torch.randn(9, 36, 7, generator=g, dtype=torch.float64)
    valid = torch.rand(9, 36, generator=g) < 0.8
    valid[3], valid[5, 30:] = False, False
    alone = []
    monkeypatch.setattr(dedup, "SMALL_MAX_ROWS", 0)
    for b in range(9):
        alone.append(unique_mask(q[b], valid[b], 0.05, wrapping))
    monkeypatch.undo()
    for elements in (dedup.SMALL_MAX_ELEMENTS, 36 * 36 * 7 * 2):
        monkeypatch.setattr(dedup, "SMALL_MAX_ELEMENTS", elements)
        assert torch.equal(unique_mask(q, valid, 0.05, wrapping), torch.stack(alone))
    assert int(valid.sum()) - int(torch.stack(alone).sum()) > 100  # the batches had repeats to merge


def test_numpy_dedup_of_no_rows_is_empty():
    """No rows, wrapping joints included (the wrapped-difference shortcut takes a max over them): an empty mask."""
    from ikdiffuser_ros.sampling.dedup import unique_mask_numpy

    out = unique_mask_numpy(np.zeros((0, 3)), None, 1e-3, np.array([True, False, False]))
    assert out.shape == (0,) and out.dtype == bool
