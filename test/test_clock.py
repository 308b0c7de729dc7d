"""UnitClock: a loop of short units stops before the unit that would end past the deadline."""

from __future__ import annotations

import time

from ikdiffuser_ros.clock import UnitClock


def test_no_deadline_always_has_time():
    clock = UnitClock(None)
    assert all(clock.time_for_another() for _ in range(5))


def test_a_passed_deadline_has_no_time():
    assert not UnitClock(time.monotonic() - 1e-3).time_for_another()


def test_the_last_unit_must_fit_before_the_deadline():
    """Units of 20 ms against a deadline 50 ms away: the first two run, the third would end at ~60 ms."""
    deadline = time.monotonic() + 0.05
    clock, ran = UnitClock(deadline), 0
    while clock.time_for_another():
        time.sleep(0.02)
        ran += 1
    assert ran == 2, ran
    assert time.monotonic() <= deadline + 0.01  # stopped before, not one unit after, the deadline


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
