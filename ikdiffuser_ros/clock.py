"""Deadlines for loops of short units of work (denoiser passes, LM iterations, polish steps).

A deadline is a ``time.monotonic()`` value [s]. A loop asks :meth:`UnitClock.time_for_another`
before each unit, so it stops as soon as the next unit would end late, not one unit after the
deadline.
"""

from __future__ import annotations

import time


class UnitClock:
    """Whether another unit of work (an LM iteration, a polish step, a denoiser pass) fits before a
    ``time.monotonic()`` deadline: not when the deadline has passed, nor when the last unit, started
    now, would end after it (None: no deadline). ``first`` [s]: what the first unit is expected to take
    (e.g. a unit of the same loop measured before; 0: the first unit runs whenever the deadline is ahead);
    :attr:`last` holds the latest unit measured."""

    def __init__(self, deadline: float | None, first: float = 0.0) -> None:
        self.deadline, self.last, self.started = deadline, first, None

    def time_for_another(self) -> bool:
        now = time.monotonic()
        if self.started is not None:
            self.last = now - self.started
        self.started = now
        return self.deadline is None or now + self.last <= self.deadline
