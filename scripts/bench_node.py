#!/usr/bin/env python3
"""Service round-trip latency and resident memory of ikdiffuser_node (docs/benchmarks.md).

Starts the installed ikdiffuser_node (config/<robot>.yaml, the shipped model unless
--model-path) as a subprocess, then from a client in this process:

1. latency: ``--requests`` GetIKSolutions calls of ``--targets`` targets x ``--num-solutions`` on
   ``--links`` (default both Baxter arms), targets from FK of random collision-free
   configurations, each call with its own random_seed; reports median / p95 / max
   round trip (client send -> answer), the node's own solve_time, the share of targets answered
   with ``--num-solutions`` solutions and, with ``--timeout-ms``, the share of answers that came
   after it;
2. memory: the node's VmRSS (/proc/<pid>/status) after start-up and warm-up, then every
   ``--soak-every`` calls of a ``--soak-requests`` long run (cheaper requests:
   ``--soak-num-solutions``); reports start / end / max and the least-squares slope
   [MB per 1000 requests].

    source scripts/ros_env.sh && python scripts/bench_node.py [--robot baxter] [--requests 300]
        [--soak-requests 10000] [--model-path DIR] [--threads N] [--json out.json]

Run it from any directory; it needs the colcon install tree (make setup).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NODE = "ikdiffuser_node"  # the name config/<robot>.yaml is keyed with


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--robot", default="baxter")
    ap.add_argument("--model-path", default="")
    ap.add_argument("--links", default="", help="comma-separated end effectors (default: all of the robot)")
    ap.add_argument("--num-solutions", type=int, default=32)
    ap.add_argument("--targets", type=int, default=1, help="targets per GetIKSolutions request")
    ap.add_argument("--service", choices=["get_ik_solutions", "compute_ik"], default="get_ik_solutions",
                    help="compute_ik: MoveIt's GetPositionIK for --group (one solution per call)")
    ap.add_argument("--group", default="", help="planning group: compute_ik's (default: the robot config's first); "
                    "get_ik_solutions' group_name (default: none, every joint moves)")
    ap.add_argument("--timeout-ms", type=float, default=0.0, help="each request's timeout (0 = the node's default)")
    ap.add_argument("--avoid-collisions", action="store_true")
    ap.add_argument("--flat-solutions", action="store_true",
                    help="get_ik_solutions requests with flat_solutions (one array per target, no JointStates)")
    ap.add_argument("--no-collision-report", action="store_true",
                    help="get_ik_solutions requests with report_collisions false (in_collision left empty)")
    ap.add_argument("--requests", type=int, default=300, help="latency calls (after --warmup)")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--soak-requests", type=int, default=0, help="memory soak calls (0 = skip)")
    ap.add_argument("--soak-num-solutions", type=int, default=4)
    ap.add_argument("--soak-every", type=int, default=500)
    ap.add_argument("--threads", type=int, default=0, help="torch_threads of the node (0 = default)")
    ap.add_argument("--param", action="append", default=[], metavar="NAME:=VALUE",
                    help="extra node parameter (repeatable), e.g. --param sampler_steps:=8")
    ap.add_argument("--json", default="", help="also write the results here")
    args = ap.parse_args()

    import rclpy
    from geometry_msgs.msg import PoseStamped
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.experimental import EventsExecutor

    from ikdiffuser_ros.machine import cpu_model
    from ikdiffuser_ros.msg import IKTarget
    from ikdiffuser_ros.robots import load_robot
    from ikdiffuser_ros.ros.conversions import matrix_to_pose
    from ikdiffuser_ros.ros.service_io import client_qos
    from ikdiffuser_ros.srv import GetIKSolutions

    robot = load_robot(args.robot)
    links = [s for s in args.links.split(",") if s] or list(robot.end_effectors)
    exe = ROOT / "install" / "ikdiffuser_ros" / "lib" / "ikdiffuser_ros" / "ikdiffuser_node"
    os.environ.setdefault("ROS_DOMAIN_ID", str(os.getpid() % 80 + 20))  # keep off other runs' graphs
    cmd = [sys.executable, str(exe), "--ros-args", "--params-file",
           str(ROOT / "config" / f"{args.robot}.yaml"), "-p", "robot_description_timeout:=0.0",
           "-p", "publish_markers:=false", "-p", f"torch_threads:={args.threads}"]
    if args.model_path:
        cmd += ["-p", f"model_path:={args.model_path}"]
    for p in args.param:
        cmd += ["-p", p]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    # targets: FK of random collision-free configurations (middle of the joint ranges)
    import torch

    g = torch.Generator().manual_seed(0)
    lo, hi = robot.limits()
    q = lo + (hi - lo) * (0.2 + 0.6 * torch.rand(512, robot.n_joints, generator=g, dtype=torch.float64))
    try:
        from ikdiffuser_ros.collision.fcl_checker import CollisionChecker

        q = q[torch.as_tensor(~CollisionChecker(robot).check(q).in_collision)]
    except Exception:  # noqa: BLE001 - no checker: any configuration
        pass
    T = robot.fk_links(q, links).numpy()

    def poses(i: int) -> list:
        out = []
        for k in range(len(links)):
            ps = PoseStamped()
            ps.header.frame_id = robot.root_frame
            ps.pose = matrix_to_pose(T[i % len(T), k])
            out.append(ps)
        return out

    def request(i: int, num: int):
        sec, nsec = divmod(int(round(args.timeout_ms * 1e6)), 1_000_000_000)
        if args.service == "compute_ik":
            req = GetPositionIK.Request()
            req.ik_request.group_name = group
            req.ik_request.ik_link_names = links
            req.ik_request.pose_stamped_vector = poses(i)
            req.ik_request.avoid_collisions = args.avoid_collisions
            req.ik_request.timeout.sec, req.ik_request.timeout.nanosec = sec, nsec
            return req
        targets = [IKTarget(link_names=links, poses=poses(i * args.targets + k)) for k in range(args.targets)]
        req = GetIKSolutions.Request(targets=targets, num_solutions=num,
                                     random_seed=i, avoid_collisions=args.avoid_collisions, group_name=args.group,
                                     report_collisions=not args.no_collision_report,
                                     flat_solutions=args.flat_solutions)
        req.timeout.sec, req.timeout.nanosec = sec, nsec
        return req

    def succeeded(res) -> bool:
        return (res.error_code.val if args.service == "compute_ik" else res.error_code) == 1

    rclpy.init()
    node = rclpy.create_node("ikd_bench_client")
    ex = EventsExecutor() if os.environ.get('IKD_EVENTS') else SingleThreadedExecutor()
    ex.add_node(node)
    if args.service == "compute_ik":
        from moveit_msgs.srv import GetPositionIK

        from ikdiffuser_ros.robots import robot_config

        group = args.group or next(iter(robot_config(args.robot).groups), "")
        client = node.create_client(GetPositionIK, f"/{NODE}/compute_ik", qos_profile=client_qos())
    else:
        client = node.create_client(GetIKSolutions, f"/{NODE}/get_ik_solutions", qos_profile=client_qos())
    out: dict = {"robot": args.robot, "service": args.service, "group": args.group, "timeout_ms": args.timeout_ms,
                 "avoid_collisions": args.avoid_collisions, "report_collisions": not args.no_collision_report,
                 "flat_solutions": args.flat_solutions, "params": args.param, "torch_threads": args.threads,
                 "links": links, "num_solutions": args.num_solutions, "cpu": cpu_model(),
                 "cores": os.cpu_count(), "load_average_start": os.getloadavg()}
    try:
        t0 = time.monotonic()
        while not client.service_is_ready():
            ex.spin_once(timeout_sec=0.1)
            if proc.poll() is not None:
                print(proc.stderr.read(), file=sys.stderr)
                return 1
            if time.monotonic() - t0 > 180:
                raise SystemExit("node did not come up")
        out["startup_s"] = time.monotonic() - t0

        def call(req):
            t = time.perf_counter()
            fut = client.call_async(req)
            ex.spin_until_future_complete(fut, timeout_sec=60.0)
            return fut.result(), time.perf_counter() - t

        for i in range(args.warmup):
            call(request(10_000_000 + i, args.num_solutions))
        out["rss_after_warmup_mb"] = rss_mb(proc.pid)
        lat, solve, ok, nsol, served = [], [], 0, [], []
        for i in range(args.requests):
            res, dt = call(request(i, args.num_solutions))
            lat.append(dt)
            solve.append(getattr(res, "solve_time", float("nan")))
            ok += succeeded(res)
            nsol.append(int(succeeded(res)) if args.service == "compute_ik" else
                        res.results[0].num_solutions if res.results else 0)
            served += [int(succeeded(res))] if args.service == "compute_ik" else \
                [r.num_solutions >= args.num_solutions for r in res.results] or [False] * args.targets
        lat_ms = np.array(lat) * 1000
        out.update(
            requests=args.requests, targets=args.targets, success_rate=ok / max(args.requests, 1),
            targets_served=float(np.mean(served)) if served else 0.0,
            late_share=float(np.mean(lat_ms > args.timeout_ms)) if args.timeout_ms else None,
            median_solutions=float(np.median(nsol)) if nsol else 0.0,
            latency_ms={"median": float(np.median(lat_ms)), "p95": float(np.percentile(lat_ms, 95)),
                        "max": float(lat_ms.max()), "mean": float(lat_ms.mean())},
            solve_time_ms_median=float(statistics.median(solve) * 1000),
            rss_after_latency_mb=rss_mb(proc.pid),
        )
        late = "" if out["late_share"] is None else f", past the timeout {out['late_share']:.0%}"
        print(f"latency over {args.requests} {args.service} calls of {args.targets} target(s) x {args.num_solutions} "
              f"({'+'.join(links)}): targets served {out['targets_served']:.0%}{late}; median "
              f"{out['latency_ms']['median']:.1f} ms, p95 {out['latency_ms']['p95']:.1f} ms, max "
              f"{out['latency_ms']['max']:.1f} ms; node solve_time median {out['solve_time_ms_median']:.1f} ms; "
              f"success {out['success_rate']:.2%}; RSS {out['rss_after_latency_mb']:.0f} MB", flush=True)
        if args.soak_requests:
            samples = [(0, rss_mb(proc.pid))]
            t_soak = time.monotonic()
            for i in range(1, args.soak_requests + 1):
                call(request(20_000_000 + i, args.soak_num_solutions))
                if i % args.soak_every == 0:
                    samples.append((i, rss_mb(proc.pid)))
                    print(f"  soak {i}/{args.soak_requests}: RSS {samples[-1][1]:.1f} MB", flush=True)
            x = np.array([s[0] for s in samples], dtype=float)
            y = np.array([s[1] for s in samples])
            slope = float(np.polyfit(x, y, 1)[0] * 1000) if len(x) > 1 else 0.0
            out["soak"] = {"requests": args.soak_requests, "num_solutions": args.soak_num_solutions,
                           "rss_mb": samples, "start_mb": float(y[0]), "end_mb": float(y[-1]),
                           "max_mb": float(y.max()), "slope_mb_per_1000": slope,
                           "wall_s": time.monotonic() - t_soak}
            print(f"memory over {args.soak_requests} calls: start {y[0]:.1f} MB, end {y[-1]:.1f} MB, max "
                  f"{y.max():.1f} MB, slope {slope:+.2f} MB / 1000 requests", flush=True)
        out["load_average_end"] = os.getloadavg()
    finally:
        ex.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
