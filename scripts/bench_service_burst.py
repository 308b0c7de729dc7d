"""Bursts of fresh service clients against a trivial server: how many responses arrive.

The server (a subprocess, rclpy, MultiThreadedExecutor) answers ``get_ik_solutions``-typed
requests after ``--work-ms``; each round creates ``--clients`` clients (on one new node) in this process,
waits for the service, sends one request from each at once and counts the responses that
arrive within 20 s. ``--depth`` is the clients' reply-reader history depth (10 is rclpy's
default services QoS; ``ikdiffuser_ros.ros.service_io.client_qos`` uses 1000); ``--retry``
makes the server resend a response the rmw timed out on (``service_io.retry_failed_sends``).
Prints one line per round and a JSON summary (docs/ros_node.md, "Responses that reach their
clients").

    python scripts/bench_service_burst.py --clients 50 --rounds 5 --depth 10
    python scripts/bench_service_burst.py --clients 50 --rounds 5 --depth 1000 --retry
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import rclpy
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor

from ikdiffuser_ros.ros.service_io import client_qos, retry_failed_sends
from ikdiffuser_ros.srv import GetIKSolutions

SERVICE = "/ikd_burst_server/get"


def serve(work_s: float, retry: bool) -> None:
    """Run the trivial server until terminated; prints the requests it received at exit."""
    rclpy.init()
    node = rclpy.create_node("ikd_burst_server")
    received = [0]

    def answer(_req: GetIKSolutions.Request, resp: GetIKSolutions.Response) -> GetIKSolutions.Response:
        received[0] += 1
        time.sleep(work_s)
        resp.error_code = GetIKSolutions.Request.SUCCESS
        return resp

    srv = node.create_service(GetIKSolutions, SERVICE, answer, qos_profile=client_qos(),
                              callback_group=ReentrantCallbackGroup())
    if retry:
        retry_failed_sends(srv, node.get_logger().warning, node.get_logger().error)
    executor = MultiThreadedExecutor(num_threads=16)
    executor.add_node(node)
    try:
        executor.spin()
    except KeyboardInterrupt:
        pass
    print(f"received {received[0]}", flush=True)


def burst(context: rclpy.Context, n: int, depth: int, tag: str) -> int:
    """One round: ``n`` fresh clients (each its own reply reader, on one new node) send one request each;
    returns the responses received."""
    node = rclpy.create_node(f"ikd_burst_client_{tag}", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        clients = [node.create_client(GetIKSolutions, SERVICE, qos_profile=client_qos(depth)) for _ in range(n)]
        if not all(c.wait_for_service(timeout_sec=30.0) for c in clients):
            raise RuntimeError("the server did not come up")
        futures = [c.call_async(GetIKSolutions.Request()) for c in clients]
        deadline = time.monotonic() + 20.0
        while not all(f.done() for f in futures) and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        return sum(f.done() for f in futures)
    finally:
        executor.shutdown()
        node.destroy_node()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--depth", type=int, default=10, help="the clients' reply-reader history depth")
    ap.add_argument("--work-ms", type=float, default=10.0, help="the server's time per request [ms]")
    ap.add_argument("--retry", action="store_true", help="the server resends on the rmw's send timeout")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.work_ms / 1000.0, args.retry)
        return
    server = subprocess.Popen([sys.executable, __file__, "--serve", "--work-ms", str(args.work_ms)]
                              + (["--retry"] if args.retry else []),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    context = rclpy.Context()
    rclpy.init(context=context)
    answered = []
    try:
        for r in range(args.rounds):
            answered.append(burst(context, args.clients, args.depth, str(r)))
            print(f"round {r}: {answered[-1]} of {args.clients} answered", flush=True)
    finally:
        rclpy.shutdown(context=context)
        server.send_signal(2)
        out = server.communicate(timeout=30)[0]
    lines = out.splitlines()
    print(json.dumps(dict(clients=args.clients, rounds=args.rounds, depth=args.depth, retry=args.retry,
                          answered=answered, lost=args.clients * args.rounds - sum(answered),
                          server_received=next((int(x.split()[1]) for x in lines if x.startswith("received")), None),
                          send_timeouts=sum("failed to send response" in x for x in lines),
                          resent=sum("delivered on try" in x for x in lines))))


if __name__ == "__main__":
    main()
