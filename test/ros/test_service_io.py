"""Service responses that reach their clients (ikdiffuser_ros/ros/service_io.py).

The retry is driven by rclpy's own warning text through Python's warnings machinery (the path
rclpy's C++ ``PyErr_WarnFormat`` takes); the client QoS by a real server and 40 fresh clients.
"""
from __future__ import annotations

import threading
import time
import warnings

import pytest

pytestmark = pytest.mark.ros

import rclpy  # noqa: E402
from rclpy.callback_groups import ReentrantCallbackGroup  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402

from ik_helpers import fresh_clients, spin_until_all  # noqa: E402

from ikdiffuser_ros.ros.service_io import client_qos, retry_failed_sends, send_until_delivered  # noqa: E402
from ikdiffuser_ros.srv import GetIKSolutions  # noqa: E402

TIMEOUT_TEXT = ("failed to send response (timeout): client will not receive response, "
                "at /project/src/rmw_response.cpp:164, at /project/src/rcl/service.c:401")


class FlakySend:
    """A send that reports the rmw's timeout (as rclpy does) on its first ``fails`` calls."""

    def __init__(self, fails: int) -> None:
        self.fails, self.calls, self.sent = fails, 0, 0

    def __call__(self) -> None:
        self.calls += 1
        if self.calls <= self.fails:
            warnings.warn(TIMEOUT_TEXT, RuntimeWarning, stacklevel=1)
        else:
            self.sent += 1


def test_a_timed_out_send_is_sent_again_until_it_goes_through():
    send = FlakySend(fails=3)
    tries, failure = send_until_delivered(send, retry_s=5.0)
    assert (tries, failure, send.calls, send.sent) == (4, None, 4, 1)


def test_a_send_that_keeps_timing_out_is_given_up_with_its_message():
    send = FlakySend(fails=10**6)
    t0 = time.monotonic()
    tries, failure = send_until_delivered(send, retry_s=0.05)
    assert failure == TIMEOUT_TEXT and tries >= 2 and send.sent == 0
    assert time.monotonic() - t0 < 1.0


def test_other_warnings_and_other_threads_timeouts_still_reach_the_user():
    def send() -> None:
        warnings.warn("something else", RuntimeWarning, stacklevel=1)

    with pytest.warns(RuntimeWarning, match="something else"):
        assert send_until_delivered(send) == (1, None)
    with pytest.warns(RuntimeWarning, match="failed to send response"):
        send_until_delivered(FlakySend(fails=0))  # installs the hook where pytest records warnings
        warnings.warn(TIMEOUT_TEXT, RuntimeWarning, stacklevel=1)  # this thread is not capturing now


def test_a_service_logs_what_its_retries_did():
    class Service:
        srv_name = "/x/get"

        def __init__(self, fails: int) -> None:
            self.flaky = FlakySend(fails)

        def send_response(self, _response: object, _header: object) -> None:
            self.flaky()

    logged: list[tuple[str, str]] = []
    late, lost = Service(fails=2), Service(fails=10**6)
    for svc in (late, lost):
        retry_failed_sends(svc, lambda m: logged.append(("warning", m)), lambda m: logged.append(("error", m)),
                           retry_s=0.05)
        svc.send_response(object(), object())
    assert late.flaky.sent == 1 and lost.flaky.sent == 0
    assert [level for level, _ in logged] == ["warning", "error"]
    assert "try 3" in logged[0][1] and "/x/get" in logged[1][1] and "not delivered" in logged[1][1]


@pytest.fixture()
def quick_server(ros_context):
    """A server answering in 10 ms on 8 threads (responses resent on the rmw's timeout)."""
    node = rclpy.create_node("ikd_io_server", context=ros_context)

    def answer(_req, resp):
        time.sleep(0.01)
        resp.error_code = GetIKSolutions.Request.SUCCESS
        return resp

    srv = node.create_service(GetIKSolutions, "/ikd_io_server/get", answer, qos_profile=client_qos(),
                              callback_group=ReentrantCallbackGroup())
    retry_failed_sends(srv, node.get_logger().warning, node.get_logger().error)
    executor = MultiThreadedExecutor(num_threads=8, context=ros_context)
    executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    yield
    executor.shutdown()
    node.destroy_node()


def test_forty_fresh_clients_with_the_client_qos_all_get_their_answer(ros_context, quick_server):
    """Each client's reply reader also holds the other clients' responses until it takes them: with
    rclpy's default depth 10 such a burst loses most of its answers (scripts/bench_service_burst.py)."""
    n = 40
    with fresh_clients(ros_context, GetIKSolutions, "/ikd_io_server/get", n, "io_client") as (executor, clients):
        futures = [c.call_async(GetIKSolutions.Request()) for c in clients]
        assert spin_until_all(executor, futures, 30.0) == n
