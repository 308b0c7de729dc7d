"""UnitClock: a loop of short units stops before the unit that would end past the deadline."""

from __future__ import annotations

import time
from types import SimpleNamespace

from ikdiffuser_ros.clock import UnitClock


def test_no_deadline_always_has_time():
    clock = UnitClock(None)
    assert all(clock.time_for_another() for _ in range(5))


def test_a_passed_deadline_has_no_time():
    assert not UnitClock(time.monotonic() - 1e-3).time_for_another()


def test_the_last_unit_must_fit_before_the_deadline(monkeypatch):
    """Units of 20 ms against a deadline 50 ms away: the first two run, the third would end at 60 ms. On a clock
    that only the units move (a busy machine oversleeps ``time.sleep``: one run measured 1 unit)."""
    now = [100.0]
    monkeypatch.setattr("ikdiffuser_ros.clock.time", SimpleNamespace(monotonic=lambda: now[0]))  # this module's only
    deadline = now[0] + 0.05
    clock, ran = UnitClock(deadline), 0
    while clock.time_for_another():
        now[0] += 0.02
        ran += 1
    assert ran == 2, ran
    assert now[0] <= deadline  # stopped before, not one unit after, the deadline


def test_the_last_unit_must_fit_on_the_real_clock():
    """The same on ``time.monotonic`` with 20 ms sleeps: at least one unit runs, and every unit after the first
    starts only when the one before, repeated, would end by the deadline."""
    deadline = time.monotonic() + 0.05
    clock, starts = UnitClock(deadline), []
    while clock.time_for_another():
        starts.append(clock.started)
        time.sleep(0.02)
    assert starts
    assert all(b + (b - a) <= deadline for a, b in zip(starts, starts[1:]))


def test_a_first_unit_known_to_be_long_does_not_start():
    """``first``: a unit measured before (e.g. a polish step) stands for the first one, which then does not start
    when it would end past the deadline; the clock keeps what it measures in ``last``."""
    deadline = time.monotonic() + 0.01
    assert not UnitClock(deadline, first=0.05).time_for_another()
    clock = UnitClock(deadline, first=0.001)
    assert clock.time_for_another()
    time.sleep(0.002)
    clock.time_for_another()
    assert clock.last >= 0.002
