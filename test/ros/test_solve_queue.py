"""The node's admission queue (ros/solve_queue.py, no rclpy): busy answers and expiry of a job
still waiting for the worker (a request answered within max_timeout of its arrival)."""
from __future__ import annotations

import threading
import time

import pytest

from ikdiffuser_ros.ros.solve_queue import Busy, Expired, SolveQueue


@pytest.fixture
def queue():
    q = SolveQueue(capacity=4)
    yield q
    q.close()


def _in_thread(fn, *args, **kwargs) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def run():
        try:
            out["result"] = fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            out["error"] = exc
        out["at"] = time.monotonic()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def test_a_job_still_waiting_at_its_expiry_is_withdrawn_then(queue):
    """Behind a 0.6 s job, a job expiring after 0.2 s: Expired at 0.2 s (not after the slow one), and
    the worker never runs it; the next job runs normally."""
    ran = []
    slow, _ = _in_thread(queue.run, time.sleep, 0.6)
    time.sleep(0.05)
    t0 = time.monotonic()
    with pytest.raises(Expired) as info:
        queue.run(ran.append, "expired", expires=t0 + 0.2)
    assert 0.2 <= time.monotonic() - t0 < 0.3 and info.value.waited >= 0.2
    assert "waiting for the solver" in str(info.value)
    slow.join()
    assert queue.run(ran.append, "next")[0] is None
    assert ran == ["next"] and queue.admitted == 0


def test_a_job_the_worker_has_started_runs_to_its_end(queue):
    """Expiry only withdraws a job not started yet: a started one is waited for and its result returned."""
    t0 = time.monotonic()
    result, waited = queue.run(lambda: time.sleep(0.3) or "done", expires=t0 + 0.1)
    assert result == "done" and time.monotonic() - t0 >= 0.3 and waited < 0.1


def test_a_full_queue_answers_busy_and_runs_every_admitted_job(queue):
    order = []
    threads = [_in_thread(queue.run, lambda i=i: (time.sleep(0.1), order.append(i)))[0] for i in range(4)]
    time.sleep(0.05)
    with pytest.raises(Busy):
        queue.run(order.append, "refused")
    for thread in threads:
        thread.join()
    assert sorted(order) == [0, 1, 2, 3] and "refused" not in order and queue.refused == 1


def test_an_idle_solver_runs_the_job_on_the_calling_thread(queue):
    """No job waiting, none solving: the caller runs its own job (no hand-over to the worker)."""
    result, waited = queue.run(lambda: threading.current_thread())
    assert result is threading.current_thread() and waited == 0.0


def test_jobs_run_one_at_a_time_in_arrival_order(queue):
    """Inline and queued jobs alike: never two at once, FIFO, errors handed to their own callers."""
    running, peak, order = [0], [0], []
    lock = threading.Lock()

    def job(i):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)
        order.append(i)
        with lock:
            running[0] -= 1
        if i == 2:
            raise ValueError("job 2 fails")
        return i

    threads = []
    for i in range(4):
        threads.append(_in_thread(queue.run, job, i))
        time.sleep(0.01)  # arrival order 0, 1, 2, 3
    for thread, _ in threads:
        thread.join()
    assert order == [0, 1, 2, 3] and peak[0] == 1
    assert [out.get("result", (None,))[0] for _, out in threads] == [0, 1, None, 3]
    assert isinstance(threads[2][1]["error"], ValueError) and queue.admitted == 0
