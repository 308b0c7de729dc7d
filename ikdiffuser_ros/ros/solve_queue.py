"""Admission control and one solver worker for the node's IK services (no rclpy here).

Service callbacks (a reentrant callback group, one executor thread each) hand
their solve to :meth:`SolveQueue.run`, which either admits it and blocks the
calling thread until it has run, or refuses it at once with :class:`Busy` when
``capacity`` requests are already admitted (solving or waiting). Admitted jobs
run one at a time, in arrival order (FIFO), so a request waits for the solves
of the requests admitted before it. A job that finds the solver idle and no
job waiting runs at once on the calling thread (no hand-over to the worker
thread and back: two thread wake-ups less per request); the others queue for
the worker, which starts each when the solver is free. A job may
carry an expiry time: one the worker has not started by then is withdrawn and
its caller gets :class:`Expired` at that moment (the node expires a request
``max_timeout`` after its arrival, so none is answered later than that).

At most ``capacity`` executor threads are ever blocked here; the executor has
a few threads more (:func:`executor_threads`), so "busy" answers, scene
updates and parameter services always find a free thread.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

#: executor threads beyond the admitted requests: busy answers, scene updates, parameters, timers
SPARE_THREADS = 4


def executor_threads(capacity: int) -> int:
    """Executor thread count for a node admitting ``capacity`` requests at once."""
    return int(capacity) + SPARE_THREADS


class Busy(RuntimeError):
    """The queue is full: ``queued`` requests are admitted already."""

    def __init__(self, queued: int) -> None:
        super().__init__(f"busy: {queued} requests queued")
        self.queued = queued


class Expired(RuntimeError):
    """The job's expiry time came while it was waiting for the worker (``waited`` seconds)."""

    def __init__(self, waited: float) -> None:
        super().__init__(f"timed out after {waited:.3f} s waiting for the solver")
        self.waited = waited


class _Job:
    def __init__(self, fn: Callable[..., Any], args: tuple) -> None:
        self.fn, self.args = fn, args
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self.enqueued = time.monotonic()
        self.started: float | None = None  #: when the worker took it (under the queue's lock)
        self.withdrawn = False  #: expired before the worker took it: the worker skips it


class SolveQueue:
    """See the module docstring. ``capacity``: requests admitted at once (>= 1)."""

    def __init__(self, capacity: int, name: str = "ikdiffuser-solver") -> None:
        self.capacity = max(1, int(capacity))
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  #: notified when a solve ends
        self._solving = False  #: a job runs now (inline or on the worker)
        self._queued = 0  #: jobs put on the queue and not yet taken by the worker
        self._admitted = 0
        self.peak = 0  #: most requests admitted at once so far
        self.refused = 0  #: requests answered busy so far
        self._closed = False
        self._worker = threading.Thread(target=self._work, name=name, daemon=True)
        self._worker.start()

    @property
    def admitted(self) -> int:
        """Requests solving or waiting now."""
        return self._admitted

    def run(self, fn: Callable[..., Any], *args: Any, expires: float | None = None) -> tuple[Any, float]:
        """Run ``fn(*args)`` (on this thread when the solver is idle and nothing waits, else on the
        worker, in turn); returns (its result, seconds spent waiting for the solver).

        Raises :class:`Busy` at once when full (or closed), :class:`Expired` at ``expires`` (a
        ``time.monotonic()`` value; None = never) when the worker has not started the job by then
        (it never will); re-raises what ``fn`` raised.
        """
        with self._lock:
            if self._closed or self._admitted >= self.capacity:
                self.refused += 1
                raise Busy(self._admitted)
            self._admitted += 1
            self.peak = max(self.peak, self._admitted)
            inline = not self._solving and self._queued == 0
            self._solving = self._solving or inline
            self._queued += not inline
        job = _Job(fn, args)
        try:
            if inline:
                job.started = job.enqueued
                self._execute(job)
            else:
                self._jobs.put(job)
                self._wait(job, expires)
        finally:
            with self._lock:
                self._admitted -= 1
        if job.error is not None:
            raise job.error
        return job.result, job.started - job.enqueued

    def _wait(self, job: _Job, expires: float | None) -> None:
        """Until ``job`` is done; at ``expires``, withdraw it (:class:`Expired`) unless the worker has it."""
        if expires is not None and not job.done.wait(max(0.0, expires - time.monotonic())):
            with self._lock:
                if job.started is None:
                    job.withdrawn = True
                    raise Expired(time.monotonic() - job.enqueued)
        job.done.wait()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            with self._idle:
                while self._solving:
                    self._idle.wait()
                self._queued -= 1
                if job.withdrawn:
                    continue
                job.started = time.monotonic()
                self._solving = True
            self._execute(job)

    def _execute(self, job: _Job) -> None:
        """Run ``job`` (the solver is ours), hand its result or error to the caller, free the solver."""
        try:
            job.result = job.fn(*job.args)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
            job.error = exc
        finally:
            with self._idle:
                self._solving = False
                self._idle.notify_all()
            job.done.set()

    def close(self, timeout: float = 30.0) -> None:
        """Refuse new jobs, let the admitted ones finish, stop the worker (waits up to ``timeout`` s)."""
        with self._lock:
            self._closed = True
        self._jobs.put(None)
        self._worker.join(timeout)
