"""Measured costs of the pipeline's repeated work, and the solver-call sizes they allow.

* :class:`ChunkSizer`: the rows of the next solver call that its measured cost (``fixed + rows x per_row``, fitted by
  least squares to its recent calls) fits in the time left.
* :class:`RateBySize`: seconds per unit of a piece of work whose fixed cost is most of it at small sizes (an answer's
  ranking, a call's pooling, by targets), a running mean per size class.

Both live as long as their pipeline, so what they measured carries over from query to query.
"""

from __future__ import annotations

import numpy as np

#: Share of the time left that the next call's rows are sized for (by the recent calls' fixed and per-row cost,
#: :meth:`ChunkSizer.cost`).
CALL_SHARE = 0.7
#: Weight left to the earlier calls in a chunk sizer's cost fit after each new call (the last ~5 calls count).
SIZER_DECAY = 0.8
#: A time measurement counts for at most this many times the running mean it updates (:meth:`RateBySize.record`).
OUTLIER_FACTOR = 2.0


class RateBySize:
    """Seconds per unit of a piece of work, by size class (units to the next power of two): the running mean of each
    class's measurements (``ema`` the weight of the newest: one slow measurement, a collection or a busy core, moves
    it a little). A class not measured yet takes the rate of the nearest smaller measured one (a rate from smaller
    sizes, their fixed cost included, overestimates), else of the nearest larger one. (One fit across sizes
    mispredicted: the ranking of one target's answer is mostly fixed cost, of 64 targets' mostly per target.)"""

    def __init__(self, ema: float) -> None:
        self.ema = ema
        self.rates: dict[int, float] = {}  #: size class -> seconds per unit

    def record(self, units: int, seconds: float) -> None:
        """One measurement; it counts for at most OUTLIER_FACTOR x its class's rate (a core taken away for a few ms
        would otherwise starve the next requests of solver time; a machine that stays slower still raises the rate
        by that factor's share at every measurement)."""
        size, rate = max(1, units).bit_length(), seconds / max(1, units)
        old = self.rates.get(size)
        self.rates[size] = rate if old is None else (1 - self.ema) * old + self.ema * min(rate, OUTLIER_FACTOR * old)

    def predict(self, units: int) -> float | None:
        """Seconds for ``units`` units, or None before any measurement."""
        if not self.rates:
            return None
        size = max(1, units).bit_length()
        smaller = [k for k in self.rates if k <= size]
        return max(1, units) * self.rates[max(smaller) if smaller else min(self.rates)]


class ChunkSizer:
    """Rows of the next solver call: what the measured cost (:meth:`cost`) fits in CALL_SHARE of the time left (at
    least one row), at most ``first`` for a query's first call and 4x the previous call after it.

    One sizer per kind of call lives as long as its pipeline, so its cost fit and ``shortest`` (the shortest call
    measured [s]) carry over from query to query; :meth:`start` sets a query's caps. ``rows(remaining_s)`` before
    each call, ``record(rows, seconds)`` after it. Until it has measured a call, a sizer with a ``fallback`` (calls
    of a related kind: one target's calls for a batch's, calls without restarts for those with) sizes by the
    fallback's mean time per row (its fixed cost included: conservative); ``guess_factor`` x the plain calls'
    shortest is the shortest call it expects meanwhile (:meth:`IKPipeline._guided_guess`).
    """

    def __init__(self, fallback: "ChunkSizer | None" = None, guess_factor: float = 1.0) -> None:
        self.first, self.most, self.last = 1, 1, None
        self.shortest: float | None = None
        self.fallback, self.guess_factor = fallback, guess_factor
        self._sums = np.zeros(5)  #: decayed sums over the recorded calls of 1, rows, s, rows^2, rows * s

    def cost(self) -> tuple[float, float] | None:
        """(fixed [s], per row [s]) of a call, seconds = fixed + rows x per row, fitted by least squares to the
        recent calls (SIZER_DECAY); None before the first. The fixed part (a call's Python and setup, ~1 ms on
        a mobile robot) only where the calls' sizes spread enough to tell it (a standard deviation of at least a
        quarter of their mean) and the fit is plausible (a cost per row of at least a tenth of the mean, a fixed
        cost within [0, shortest call]); else a row costs the calls' mean time per row (conservative: a rate from
        small calls alone undersizes the next, their fixed cost being most of them, but never oversizes it)."""
        w, x, y, xx, xy = self._sums
        if w == 0.0:
            return None
        spread = w * xx - x * x  # w^2 x the variance of the rows
        if spread >= (0.25 * x) ** 2:
            per_row = (w * xy - x * y) / spread
            fixed = (y - per_row * x) / w
            if per_row >= 0.1 * y / x and 0.0 <= fixed <= self.shortest:
                return fixed, per_row
        return self._mean_cost()  # one size, or a fit the noise bent (a larger call measured as fast)

    def _mean_cost(self) -> tuple[float, float]:
        """(0, the recorded calls' mean time per row) [s], their fixed cost included."""
        return 0.0, float(self._sums[2] / self._sums[1])

    def start(self, first: int, most: int) -> "ChunkSizer":
        """Caps of a new query (the measurements stay)."""
        self.most = max(1, most)
        self.first, self.last = max(1, min(first, self.most)), None
        return self

    def worth_a_call(self, remaining: float, calls_so_far: int, guess: float | None = None) -> bool:
        """Whether a call started now can end in time (the query's first call is always made);
        ``guess`` [s] stands for the shortest call until one is measured."""
        shortest = self.shortest if self.shortest is not None else guess
        return calls_so_far == 0 or shortest is None or remaining >= shortest

    def rows(self, remaining: float) -> int:
        cap = self.first if self.last is None else min(self.most, 4 * self.last)
        cost = self.cost() if self.shortest is not None else self._fallback_cost()
        if cost is None:
            return cap
        fixed, per_row = cost
        return max(1, min(cap, int((max(remaining, 0.0) * CALL_SHARE - fixed) / per_row)))

    def _fallback_cost(self) -> tuple[float, float] | None:
        """The first measured fallback's :meth:`_mean_cost`, or None."""
        sizer = self.fallback
        while sizer is not None and sizer.shortest is None:
            sizer = sizer.fallback
        return None if sizer is None else sizer._mean_cost()

    def record(self, rows: int, seconds: float) -> None:
        self.last = rows = max(1, rows)
        seconds = max(seconds, 1e-6)
        self._sums = SIZER_DECAY * self._sums + np.array([1.0, rows, seconds, rows * rows, rows * seconds])
        self.shortest = seconds if self.shortest is None else min(self.shortest, seconds)


__all__ = ["CALL_SHARE", "ChunkSizer", "OUTLIER_FACTOR", "RateBySize", "SIZER_DECAY"]
