"""Service responses that reach their clients, and the client QoS that lets them.

Two ways a ROS 2 service response is lost without an error, both seen on this repository's
rmw (rmw_fastrtps_cpp 9.3) with bursts of 50 fresh clients against a server that answers in
10 ms (``scripts/bench_service_burst.py``; docs/ros_node.md, "Responses that reach their
clients"):

* **The client's reply reader keeps ``depth`` responses, its own or not.** Every client of
  a service subscribes to the one reply topic and drops the responses addressed to other
  clients only when it takes them; with the default services QoS (``depth`` 10) a client
  that has not taken its response before ten others arrive loses it: 13-20 of 50 answered
  with depth 10, 50 of 50 with depth 1000. Clients therefore use :func:`client_qos`.
* **The server's reply writer has not matched the client's reader yet.** The rmw waits up
  to 100 ms for that match, then returns a timeout that rclpy turns into a
  ``RuntimeWarning("failed to send response (timeout) ...")`` and drops the response.
  :func:`retry_failed_sends` makes a service send it again, for up to
  :data:`SEND_RETRY_S`, once the match is there.

The rmw writes nothing when it times out, so a resend never duplicates a response.
"""

from __future__ import annotations

import re
import threading
import time
import warnings
from typing import Any, Callable

from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

#: History depth of a client's reply reader (:func:`client_qos`): responses addressed to the
#: other clients of a service count against it until taken.
CLIENT_REPLY_DEPTH = 1000
#: How long a service keeps resending a response whose client's reader is not matched yet [s];
#: each try waits up to 100 ms inside the rmw.
SEND_RETRY_S = 2.0
#: rclpy's warning text when the rmw timed out waiting for the client's reply reader.
_SEND_TIMEOUT = re.compile(r"failed to send response \(timeout\)")

_capture = threading.local()
_install_lock = threading.Lock()


def client_qos(depth: int = CLIENT_REPLY_DEPTH) -> QoSProfile:
    """Reliable, volatile service-client QoS whose reply reader keeps ``depth`` responses."""
    return QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)


def _install_warning_hook() -> None:
    """Route rclpy's send-timeout warnings to the sending thread's capture.

    A filter shows every such warning (Python's default shows one per call site and hides the
    rest); warnings of any other text, and send timeouts of threads that are not capturing, go to
    the previous ``warnings.showwarning``. Installed again if something (``catch_warnings``, a
    test runner) has replaced the hook or the filter since.
    """
    with _install_lock:
        if not any(f[0] == "always" and f[1] is not None and f[1].pattern == _SEND_TIMEOUT.pattern
                   for f in warnings.filters):
            warnings.filterwarnings("always", message=_SEND_TIMEOUT.pattern, category=RuntimeWarning)
        if getattr(warnings.showwarning, "captures_send_timeouts", False):
            return
        previous = warnings.showwarning

        def showwarning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
            captured = getattr(_capture, "messages", None)
            if captured is not None and _SEND_TIMEOUT.match(str(message)):
                captured.append(str(message))
                return
            previous(message, category, *args, **kwargs)

        showwarning.captures_send_timeouts = True  # type: ignore[attr-defined]
        warnings.showwarning = showwarning


def send_until_delivered(send: Callable[[], None], retry_s: float = SEND_RETRY_S) -> tuple[int, str | None]:
    """Call ``send`` until it does not report a send timeout, for at most ``retry_s`` seconds.

    Returns ``(tries, last timeout message or None when the last try sent it)``.
    """
    _install_warning_hook()
    give_up_at = time.monotonic() + retry_s
    tries = 0
    while True:
        _capture.messages = []
        try:
            send()
        finally:
            captured, _capture.messages = _capture.messages, None
        tries += 1
        if not captured:
            return tries, None
        if time.monotonic() >= give_up_at:
            return tries, captured[-1]


def retry_failed_sends(service: Any, log_warning: Callable[[str], None], log_error: Callable[[str], None],
                       retry_s: float = SEND_RETRY_S) -> None:
    """Make ``service.send_response`` (what rclpy's executor calls) resend on the rmw's timeout.

    ``log_warning`` reports a response sent after retries, ``log_error`` one given up after
    ``retry_s`` seconds (its client is gone or never matched).
    """
    send_once = service.send_response

    def send_response(response: Any, header: Any) -> None:
        tries, failure = send_until_delivered(lambda: send_once(response, header), retry_s)
        name = getattr(service, "srv_name", "service")
        if failure is not None:
            log_error(f"{name}: response not delivered after {tries} tries in {retry_s:.1f} s: {failure}")
        elif tries > 1:
            log_warning(f"{name}: response delivered on try {tries} (the client's reply reader matched late)")

    service.send_response = send_response
