"""De-duplication of IK solutions: greedy leader clustering of joint vectors.

:func:`unique_mask` (and :func:`deduplicate`, :func:`count_distinct` on top of it) compares joint
vectors by the largest per-joint difference, scaled by a per-joint tolerance (a float, or
:func:`joint_tolerances`' "0.05 rad or 5 mm"), wrap-aware for wrapping joints
(:func:`~ikdiffuser_ros.kinematics.joint_kinds.joint_kinds`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ikdiffuser_ros.kinematics.joint_kinds import joint_kinds, wrap_to_pi
from ikdiffuser_ros.kinematics.robot_model import RobotModel


def joint_tolerances(model: RobotModel, rad: float = 0.05, m: float = 0.005,
                     dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """(n,) per-joint tolerance: ``rad`` for angular variables, ``m`` for lengths."""
    prismatic, _ = joint_kinds(model)
    return torch.where(prismatic, torch.tensor(m, dtype=dtype), torch.tensor(rad, dtype=dtype))


def unique_mask(
    q: torch.Tensor,
    valid: torch.Tensor | None = None,
    tol: float | torch.Tensor = 1e-3,
    wrapping: torch.Tensor | None = None,
    max_elements: int = 1 << 24,
) -> torch.Tensor:
    """(..., N, n) solutions -> (..., N) bool: valid and not a repeat of an earlier valid one.

    Greedy leader clustering in row order: row ``i`` is kept when it is valid
    and no earlier *kept* row ``j`` has ``max_k |q_ik - q_jk| / tol_k <= 1``
    (``tol`` a float or (n,) tensor; wrapping joints compare modulo ``2 pi``).
    So every kept pair differs by more than the tolerance in some joint, and
    every dropped row is within the tolerance of a kept one. Cost: one chunked
    all-pairs pass; rows with a neighbour are then resolved per batch, chunk by
    chunk against the rows kept so far (:meth:`_Closeness.leaders`). Batches of
    :data:`SWEEP_MIN_ROWS` rows or more skip the all-pairs pass (:func:`_large_batch_leaders`); batches of at
    most :data:`SMALL_MAX_ROWS` rows on the CPU are compared in numpy (:func:`unique_mask_numpy`).
    """
    *batch, N, n = q.shape
    if N == 0 or q.numel() == 0:
        return torch.zeros(*batch, N, dtype=torch.bool, device=q.device)
    q = q.reshape(-1, N, n)
    valid = (torch.ones(q.shape[0], N, dtype=torch.bool, device=q.device) if valid is None
             else valid.reshape(q.shape[0], N).to(q.device, torch.bool))
    tol_t = torch.as_tensor(tol, dtype=q.dtype, device=q.device).expand(n)
    wrap = None if wrapping is None or not bool(wrapping.any()) else wrapping.to(q.device)
    if N <= SMALL_MAX_ROWS and q.device.type == "cpu":
        return torch.from_numpy(unique_mask_numpy(q.numpy(), valid.numpy(), tol_t.numpy(),
                                                  None if wrap is None else wrap.numpy())).reshape(*batch, N)
    close = _Closeness(tol_t, wrap, max_elements)
    leaders = _large_batch_leaders if N >= SWEEP_MIN_ROWS else _batch_leaders
    return leaders(close, q / tol_t, valid).reshape(*batch, N)


def _batch_leaders(close: "_Closeness", scaled: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """:func:`unique_mask` of (B, N, n) scaled rows: rows with no other valid row within tolerance are kept as they
    are (one chunked all-pairs pass); the greedy leaders among the rest, per batch, in row order."""
    has_neighbour = close.has_neighbour(scaled, valid)
    keep, ambiguous = valid & ~has_neighbour, valid & has_neighbour
    for b in ambiguous.any(-1).nonzero().flatten().tolist():
        idx = ambiguous[b].nonzero().flatten()
        keep[b, idx[close.leaders(scaled[b, idx])]] = True
    return keep


def unique_mask_numpy(q: np.ndarray, valid: np.ndarray | None, tol: float | np.ndarray,
                      wrap: np.ndarray | None = None) -> np.ndarray:
    """:func:`unique_mask` in numpy: q (..., N, n), valid (..., N) bool or None (all), tol a float or (n,),
    wrap (n,) bool or None -> (..., N) bool. Up to :data:`SMALL_MAX_ROWS` rows per batch all pairs at once, at
    most SMALL_MAX_ELEMENTS compared elements per pass (rows of a few targets' pools: ~40 us for 16 rows, a tenth
    of the torch path's fixed cost; 16 pools of 5 rows in one pass); more rows go to :func:`unique_mask`."""
    *batch, N, n = q.shape
    valid = np.ones((*batch, N), dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    tol = np.asarray(tol, dtype=q.dtype)  # a scalar or (n,): both broadcast against (..., N, N, n)
    if N > SMALL_MAX_ROWS:
        return unique_mask(torch.from_numpy(q), torch.from_numpy(valid), torch.from_numpy(tol.copy()),
                           None if wrap is None else torch.from_numpy(wrap)).numpy()
    if N == 0 or q.size == 0:
        return np.zeros((*batch, N), dtype=bool)
    q, valid = q.reshape(-1, N, n), valid.reshape(-1, N)
    step = max(1, SMALL_MAX_ELEMENTS // max(1, N * N * n))
    keep = [_leaders_numpy(q[b:b + step], valid[b:b + step], tol, wrap) for b in range(0, len(q), step)]
    return np.concatenate(keep).reshape(*batch, N)


def _leaders_numpy(q: np.ndarray, valid: np.ndarray, tol: np.ndarray, wrap: np.ndarray | None) -> np.ndarray:
    """:func:`unique_mask_numpy` of (B, N, n) rows, all pairs at once. The greedy leaders in rounds: an undecided
    row is dropped once an earlier kept row is close to it, and kept once every earlier close row is dropped (the
    earliest undecided row is always one or the other, so every round decides at least one row per batch)."""
    d = np.abs(q[:, :, None, :] - q[:, None, :, :])  # (B, N, N, n)
    if wrap is not None and wrap.any() and d.size:
        dw = d[..., wrap]  # |a - b| of wrapped angles lies in [0, 2 pi]: the shorter way round, without a %
        d[..., wrap] = np.minimum(dw, 2 * math.pi - dw) if dw.max() <= 2 * math.pi else np.abs(wrap_to_pi(dw))
    close = (d <= tol).all(-1) & valid[:, None, :] & valid[:, :, None]
    earlier = np.tril(close, -1)
    keep = valid & ~earlier.any(-1)
    undecided = valid & ~keep
    while undecided.any():
        dropped = undecided & (earlier & keep[:, None, :]).any(-1)
        kept = undecided & ~dropped & ~(earlier & undecided[:, None, :]).any(-1)
        keep |= kept
        undecided &= ~(dropped | kept)
    return keep


def _large_batch_leaders(close: "_Closeness", scaled: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """:func:`unique_mask` of (B, N, n) scaled rows with many rows per batch (a harvest: thousands of rows), per
    batch: the close pairs from a sort along one joint that does not wrap (:meth:`_Closeness.sweep_pairs`: only
    rows within the tolerance in that joint are compared), then the greedy leaders of those pairs; where that
    joint would compare more than :data:`SWEEP_MAX_PAIRS_PER_ROW` candidates per row (thousands of repeats of a
    few solutions) or every joint wraps, each chunk of rows against the rows kept so far (O(N x kept))."""
    keep = torch.zeros_like(valid)
    for b in valid.any(-1).nonzero().flatten().tolist():
        idx = valid[b].nonzero().flatten()
        pairs = close.sweep_pairs(scaled[b, idx])
        keep[b, idx] = (close.leaders(scaled[b, idx]) if pairs is None
                        else _leaders_of_pairs(len(idx), *pairs).to(keep.device))
    return keep


#: :func:`unique_mask` compares one batch of at most this many rows in numpy (:func:`unique_mask_numpy`; 14-16 joints,
#: quiet machine: 8 / 32 / 64 rows 0.07 / 0.10 / 0.20 ms against 0.42 / 0.46 / 0.49 ms in torch; 128: 0.60 / 0.74)...
SMALL_MAX_ROWS = 96
#: ... at most this many compared elements (batches x rows^2 x joints) per numpy pass (~4 MB of float64)
SMALL_MAX_ELEMENTS = 1 << 19
#: ... and sorts and sweeps batches of at least this many rows (4096 rows of 14 joints: 0.3-0.6 s all
#: pairs against milliseconds)...
SWEEP_MIN_ROWS = 512
#: ... unless the sweep would compare more candidate pairs than this per row (rows piled on a few solutions, where
#: comparing each row with the few rows kept so far is cheaper: a UR5's 256 solutions 16 times over, 26 against 144 ms).
SWEEP_MAX_PAIRS_PER_ROW = 64


@dataclass(frozen=True)
class _Closeness:
    """Chebyshev closeness of rows scaled by the per-joint tolerance (n,), wrap-aware (``wrap`` (n,)
    bool or None), in chunks of at most ``max_elements`` compared elements."""

    tol: torch.Tensor
    wrap: torch.Tensor | None
    max_elements: int

    def block(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(..., c, n), (..., m, n) scaled rows -> (..., c, m) bool, Chebyshev distance <= 1.

        With wrapping joints, one ``cdist`` on :meth:`_embedded` rows keeps every close pair (and a few
        more); only those pairs get the exact wrapped difference."""
        if self.wrap is None:
            return torch.cdist(a, b, p=float("inf")) <= 1.0
        close = torch.cdist(self._embedded(a), self._embedded(b), p=float("inf")) <= 1.0
        pairs = close.nonzero(as_tuple=True)
        if pairs[0].numel():
            rows_a, rows_b = pairs[:-1], (*pairs[:-2], pairs[-1])
            diff = (a[rows_a] - b[rows_b]) * self.tol
            diff = torch.where(self.wrap, wrap_to_pi(diff), diff)
            close[pairs] = (diff.abs() / self.tol).amax(-1) <= 1.0
        return close

    def _embedded(self, x: torch.Tensor) -> torch.Tensor:
        """(..., k, n) scaled rows -> (..., k, n') rows whose Chebyshev distance is <= 1 for every pair within
        tolerance: each wrapping joint's angle as (cos, sin) / (2 sin(tol / 2)), whose differences are at most
        the chord, 2 sin(|d| / 2) for a wrapped difference d; the other joints as they are."""
        angle = x[..., self.wrap] * self.tol[self.wrap]
        chord = 2 * torch.sin(0.5 * self.tol[self.wrap].clamp(max=math.pi))
        return torch.cat([x[..., ~self.wrap], torch.cos(angle) / chord, torch.sin(angle) / chord], -1)

    def _per_row(self, N: int) -> int:
        return N * (len(self.tol) if self.wrap is not None else 1)

    def has_neighbour(self, scaled: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """(Bf, N, n), (Bf, N) -> (Bf, N) bool: another valid row lies within tolerance."""
        Bf, N, _ = scaled.shape
        out = torch.zeros(Bf, N, dtype=torch.bool, device=scaled.device)
        cols = torch.arange(N, device=scaled.device)
        chunk = max(1, min(N, self.max_elements // max(1, Bf * self._per_row(N))))
        for start in range(0, N, chunk):
            stop = min(N, start + chunk)
            not_self = cols[None, :] != cols[start:stop, None]
            out[:, start:stop] = (self.block(scaled[:, start:stop], scaled) & valid[:, None, :] & not_self).any(-1)
        return out

    def sweep_pairs(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(m, n) scaled rows -> the close pairs (a (P,), b (P,)), a < b, or None where no joint that does not
        wrap sorts them into at most :data:`SWEEP_MAX_PAIRS_PER_ROW` candidates per row. Candidates: rows sorted along the
        joint whose one-tolerance windows hold the fewest pairs, each row against the later rows of its
        window; then the exact (wrap-aware) Chebyshev test on those pairs."""
        m = rows.shape[0]
        axes = range(rows.shape[1]) if self.wrap is None else (~self.wrap).nonzero().flatten().tolist()
        best, forward = None, torch.arange(1, m + 1, device=rows.device)
        for axis in axes:
            v, perm = torch.sort(rows[:, axis])
            counts = torch.searchsorted(v, v + 1.0, right=True) - forward  # later rows within one tolerance
            total = int(counts.sum())
            if best is None or total < best[0]:
                best = (total, perm, counts)
        if best is None or best[0] > SWEEP_MAX_PAIRS_PER_ROW * m:
            return None
        total, perm, counts = best
        first = torch.repeat_interleave(torch.arange(m, device=rows.device), counts)
        second = first + 1 + torch.arange(total, device=rows.device) - torch.repeat_interleave(
            torch.cumsum(counts, 0) - counts, counts)
        a, b = perm[first], perm[second]
        close = self._pair_close(rows[a], rows[b])
        return torch.minimum(a, b)[close], torch.maximum(a, b)[close]

    def _pair_close(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(P, n), (P, n) scaled rows -> (P,) bool: row pairs within Chebyshev distance 1 (the test of :meth:`block`)."""
        if self.wrap is None:
            return (a - b).abs().amax(-1) <= 1.0
        diff = (a - b) * self.tol
        diff = torch.where(self.wrap, wrap_to_pi(diff), diff)
        return (diff.abs() / self.tol).amax(-1) <= 1.0

    def leaders(self, rows: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
        """(A, n) scaled rows -> (A,) bool: greedy leader clustering in row order (a row is kept unless an
        earlier kept row is close), ``chunk`` rows at a time: those close to a row kept before the chunk are
        dropped at once, the others resolved on their dense closeness matrix."""
        keep = torch.zeros(len(rows), dtype=torch.bool, device=rows.device)
        kept_rows = rows[:0]
        for start in range(0, len(rows), chunk):
            part = rows[start:start + chunk]
            fresh = (~self.block(part, kept_rows).any(-1)).nonzero().flatten()
            new = fresh[torch.from_numpy(_greedy_leaders(self.dense(part[fresh]))).to(fresh.device)]
            keep[start + new] = True
            kept_rows = torch.cat([kept_rows, part[new]])
        return keep

    def dense(self, qa: torch.Tensor) -> np.ndarray:
        """(A, n) scaled rows -> (A, A) bool closeness matrix."""
        A = len(qa)
        out = np.zeros((A, A), dtype=bool)
        step = max(1, min(A, self.max_elements // max(1, self._per_row(A))))
        for start in range(0, A, step):
            out[start:start + step] = self.block(qa[start:start + step], qa).cpu().numpy()
        return out


def _leaders_of_pairs(m: int, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Greedy leaders in row order from the close pairs (a, b), a < b, of m rows -> (m,) bool: rows in no
    pair are kept; the others in order, each kept unless an earlier kept row is close."""
    a, b = a.cpu().numpy(), b.cpu().numpy()
    order = np.argsort(a, kind="stable")
    a, b = a[order], b[order]
    starts = np.searchsorted(a, np.arange(m + 1))
    kept, removed = np.ones(m, dtype=bool), np.zeros(m, dtype=bool)
    for i in np.unique(np.concatenate([a, b])).tolist():
        if removed[i]:
            kept[i] = False
        else:
            removed[b[starts[i]:starts[i + 1]]] = True
    return torch.from_numpy(kept)


def _greedy_leaders(close: np.ndarray) -> np.ndarray:
    """(A, A) closeness -> (A,) bool: in row order, a row is kept unless a kept row is close to it."""
    A = len(close)
    removed, kept = np.zeros(A, dtype=bool), np.zeros(A, dtype=bool)
    for i in range(A):
        if not removed[i]:
            kept[i] = True
            removed |= close[i]
    return kept


def deduplicate(
    q: torch.Tensor,
    success: torch.Tensor | None = None,
    tol: float | torch.Tensor = 1e-3,
    wrapping: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge solutions that converged to the same configuration.

    Args:
        q: (..., N, n) solutions.
        success: (..., N) bool; only successful rows are kept / counted (default all).
        tol: "same configuration" tolerance per joint [rad or m], float or (n,).
        wrapping: (n,) bool, variables compared modulo 2 pi (see :func:`joint_kinds`).

    Returns:
        (keep (..., N) bool: the first of each group of equal successful solutions,
        count (...,) int64: number of such groups).
    """
    keep = unique_mask(q, success, tol, wrapping)
    return keep, keep.sum(-1)


def count_distinct(
    q: torch.Tensor,
    success: torch.Tensor | None = None,
    tol: float | torch.Tensor = 0.05,
    wrapping: torch.Tensor | None = None,
) -> torch.Tensor:
    """(..., N, n) -> (...,) number of distinct (successful) solutions.

    Benchmark definition: two solutions are distinct when they differ by more
    than ``tol`` in some joint (use :func:`joint_tolerances` for "0.05 rad or
    5 mm"), counted by greedy leader clustering as in :func:`unique_mask`.
    """
    return unique_mask(q, success, tol, wrapping).sum(-1)


def farthest_first(q: torch.Tensor, k: int, wrapping: torch.Tensor | None = None) -> torch.Tensor:
    """(m, n) solutions -> (m,) long order: row 0 first, then up to ``k - 1`` rows each the farthest (Euclidean
    joint distance [rad or m], wrapping joints modulo 2 pi) from those already picked (greedy farthest-point
    order: every prefix of it is spread over the set), then the rest in their given order. Cost: the (m, m)
    distances once (keep m to about a thousand), then k passes over m numbers."""
    return farthest_first_many([q], [k], wrapping)[0]


def farthest_first_many(qs: list[torch.Tensor], ks: list[int], wrapping: torch.Tensor | None = None
                        ) -> list[torch.Tensor]:
    """:func:`farthest_first` of each set ``qs[b]`` (m_b, n) with its ``ks[b]``, the sets padded into one (B, M, n)
    batch: one distance pass and ``max k`` vectorised picks serve them all (64 answers' spread orders in about a
    millisecond where one at a time took 15 ms of per-call overhead). Padded rows are never picked."""
    sizes = np.array([len(q) for q in qs])
    ks_arr = np.minimum(np.asarray(ks), sizes)
    if not len(qs) or ks_arr.max() <= 1:
        return [torch.arange(m, device=q.device) for q, m in zip(qs, sizes)]
    B, M = len(qs), int(sizes.max())
    batch = qs[0].new_zeros(B, M, qs[0].shape[-1])
    for b, q in enumerate(qs):
        batch[b, : len(q)] = q
    d2 = squared_distances(batch, wrapping).cpu().numpy()
    picked = np.arange(M)[None, :] >= sizes[:, None]  # padded rows count as picked
    picked[:, 0] = True
    nearest, picks, rows = d2[:, 0].copy(), np.zeros((B, int(ks_arr.max())), dtype=np.int64), np.arange(B)
    for step in range(1, picks.shape[1]):
        active = rows[ks_arr > step]
        nxt = np.argmax(np.where(picked[active], -1.0, nearest[active]), axis=1)
        picks[active, step], picked[active, nxt] = nxt, True
        nearest[active] = np.minimum(nearest[active], d2[active, nxt])
    lead = np.minimum(sizes, np.maximum(1, ks_arr))  # row 0 leads a set that is not empty
    return [torch.from_numpy(np.concatenate([picks[b, : lead[b]], np.flatnonzero(~picked[b, : sizes[b]])]))
            .to(qs[b].device) for b in range(B)]


def squared_distances(q: torch.Tensor, wrapping: torch.Tensor | None = None) -> torch.Tensor:
    """(..., m, n) -> (..., m, m) squared Euclidean joint distances, wrapping joints (n,) bool compared modulo 2 pi."""
    wrap = torch.zeros(q.shape[-1], dtype=torch.bool) if wrapping is None else wrapping.to("cpu", torch.bool)
    plain = (~wrap).nonzero().flatten().to(q.device)
    d2 = torch.cdist(q[..., plain], q[..., plain]).square()
    for j in wrap.nonzero().flatten().tolist():
        d2 += wrap_to_pi(q[..., :, None, j] - q[..., None, :, j]).square()
    return d2
