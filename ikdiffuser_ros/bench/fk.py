"""``ikdiffuser bench-fk``: FK + Jacobian throughput, ours vs pytorch_kinematics, in one run.

What is timed, per batch size ``B`` (configurations uniform within the limits):

- **ours**: ``RobotModel.fk_and_jacobian(q)`` -> every end-effector pose ``(B, E, 4, 4)``
  and Jacobian ``(B, E, 6, n)``, one pass over the whole tree (arms sharing a torso or
  base are computed together).
- **pytorch_kinematics**: pk is serial-chain only, so one ``SerialChain`` per end
  effector, from the URDF root to that link, built once outside the timing; per call,
  for every arm: ``chain.jacobian(q[:, arm_columns], ret_eef_pose=True)``, which
  returns the Jacobian and the end-effector pose from a *single* FK pass (pk's fastest
  path for both). The arm column gather is inside the timing (ours gathers inside
  too). pk's time is the sum over arms. For robots with an SRDF planar base
  (``mobile_baxter``, ``dual_ur5_mobile``) pk's chains start at the URDF root, so pk
  does *less* work than ours (no base).

Each (method, batch size) is warmed up, then timed ``repeats`` times, ours and pk
interleaved so that load from other processes hits both alike; each repeat runs the
call enough times to last at least ``min_time_s``. Reported: the median time per
call, configurations per second (``B / time``) and the speedup (pk time / ours).
The constants of both methods are built before timing; no ``torch.compile``/JIT.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ikdiffuser_ros.kinematics.joint_kinds import uniform_in_limits
from ikdiffuser_ros.machine import cpu_model

DEFAULT_BATCH_SIZES = (1, 100, 10000)

PK_METHOD = ("pytorch_kinematics: one SerialChain per end effector (URDF root -> EE); per call and arm "
             "chain.jacobian(q_arm, ret_eef_pose=True) (Jacobian + EE pose from one FK pass); summed over arms")
OURS_METHOD = "ikdiffuser: RobotModel.fk_and_jacobian(q) -> all EE poses and Jacobians in one tree pass"


def _time_call(fn: Callable[[], object], min_time_s: float, sync: Callable[[], None]) -> float:
    """Seconds per call: run ``fn`` in a loop long enough to last ``min_time_s``."""
    calls, elapsed = 1, 0.0
    while True:
        sync()
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        sync()
        elapsed = time.perf_counter() - start
        if elapsed >= min_time_s or calls >= 1 << 20:
            return elapsed / calls
        calls = max(calls * 2, int(calls * min_time_s / max(elapsed, 1e-9) * 1.2))


def _pk_chains(model, urdf_xml: str, dtype: torch.dtype, device: torch.device):
    """One pk SerialChain per end effector and its column indices in our joint vector."""
    import re

    import pytorch_kinematics as pk

    xml = re.sub(r"<transmission.*?</transmission>", "", urdf_xml, flags=re.S)  # PR2: pk can't parse them
    chains = []
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):  # urdf_parser_py chatter
            warnings.simplefilter("ignore")
            for ee in model.end_effectors:
                chain = pk.build_serial_chain_from_urdf(xml.encode(), ee).to(dtype=dtype, device=device)
                idx = torch.tensor([model.index_of(n) for n in chain.get_joint_parameter_names()], device=device)
                chains.append((chain, idx))
    finally:
        logging.disable(logging.NOTSET)
    return chains


def _timed_calls(model, chains, q: torch.Tensor) -> dict[str, Callable[[], object]]:
    """The calls to time on the (B, n) configurations ``q``: ``"ours"`` and, with pk ``chains``, ``"pk"``.

    ours: every end-effector pose (B, E, 4, 4) and Jacobian (B, E, 6, n) in one tree pass; pk: per arm,
    the Jacobian and end-effector pose of its chain on the arm's columns of ``q``.
    """
    def ours():
        return model.fk_and_jacobian(q)

    def theirs():
        return [chain.jacobian(q[:, idx], ret_eef_pose=True) for chain, idx in chains]

    return {"ours": ours, **({"pk": theirs} if chains else {})}


def _time_methods(methods: dict[str, Callable[[], object]], repeats: int, min_time_s: float,
                  sync: Callable[[], None]) -> dict[str, list[float]]:
    """Warm each method up (two calls), then time them ``repeats`` times, interleaved: seconds per call."""
    for fn in methods.values():  # warm-up: constants, allocator, caches
        fn()
        fn()
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, fn in methods.items():
            times[name].append(_time_call(fn, min_time_s, sync))
    return times


def _result_row(batch: int, times: dict[str, list[float]]) -> dict:
    """One ``results`` row: per method the median and best time per call [s] and configurations/s (from the
    median); with pk, the speedups pk / ours of the medians and of the best times."""
    row = {"batch": batch}
    for name, ts in times.items():
        med = statistics.median(ts)
        row[f"{name}_s"] = med
        row[f"{name}_min_s"] = min(ts)
        row[f"{name}_configs_per_s"] = batch / med
    if "pk" in times:
        row["speedup"] = row["pk_s"] / row["ours_s"]
        row["speedup_best"] = row["pk_min_s"] / row["ours_min_s"]
    return row


def _report(model, dev: torch.device, dtype: str, repeats: int, min_time_s: float, with_pk: bool,
            rows: list[dict]) -> dict:
    """The JSON-able report: robot, device, versions, machine, the timing settings, and the result ``rows``."""
    return {
        "robot": model.name,
        "n_joints": model.n_joints,
        "end_effectors": model.end_effectors,
        "device": str(dev) if dev.type != "cuda" else f"cuda ({torch.cuda.get_device_name(dev)})",
        "dtype": dtype,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": _machine(),
        "repeats": repeats,
        "min_time_s": min_time_s,
        "ours": OURS_METHOD,
        "pk": PK_METHOD if with_pk else None,
        "pytorch_kinematics": _pk_version() if with_pk else None,
        "results": rows,
    }


def bench_fk(
    robot: str = "baxter",
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    device: str = "cpu",
    dtype: str = "float32",
    repeats: int = 7,
    min_time_s: float = 0.2,
    compare_pk: bool = True,
    seed: int = 0,
) -> dict:
    """Run the benchmark and return a JSON-able dict (see module docstring)."""
    from ikdiffuser_ros.robots import robot_config

    torch_dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
    dev = torch.device(device)
    config = robot_config(robot)
    model = config.load()
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    chains = _pk_chains(model, config.urdf_text(), torch_dtype, dev) if compare_pk else []
    lo, hi = model.limits(torch_dtype, dev)
    gen = torch.Generator(device=dev).manual_seed(seed)
    rows = []
    for batch in batch_sizes:
        q = uniform_in_limits(lo, hi, batch, gen, torch_dtype)
        times = _time_methods(_timed_calls(model, chains, q), repeats, min_time_s, sync)
        rows.append(_result_row(batch, times))
    return _report(model, dev, dtype, repeats, min_time_s, bool(chains), rows)


def _machine() -> str:
    """CPU model, architecture and OS."""
    return f"{cpu_model()}, {platform.machine()}, {platform.platform()}"


def _pk_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pytorch-kinematics")
    except PackageNotFoundError:
        return "unknown"


def _fmt_rate(x: float) -> str:
    if not math.isfinite(x):
        return "-"
    return f"{x / 1e6:.2f} M" if x >= 1e6 else f"{x / 1e3:.1f} k" if x >= 1e3 else f"{x:.0f}"


def format_table(report: dict) -> str:
    """Markdown table of a :func:`bench_fk` report: median time per call (best of the
    repeats in parentheses), configurations/s from the median, speedup = pk / ours."""
    has_pk = report["pk"] is not None
    head = "| batch | ours [ms] | ours [configs/s] |"
    sep = "| ---: | ---: | ---: |"
    if has_pk:
        head += " pytorch_kinematics [ms] | pk [configs/s] | speedup median (best) |"
        sep += " ---: | ---: | ---: |"
    lines = [f"FK + Jacobian, {report['robot']} ({report['n_joints']} joints, {len(report['end_effectors'])} "
             f"end effectors), {report['device']}, {report['dtype']}, {report['torch_threads']} torch threads; "
             f"median of {report['repeats']} repeats (best)", "", head, sep]
    for r in report["results"]:
        line = (f"| {r['batch']} | {r['ours_s'] * 1e3:.3f} ({r['ours_min_s'] * 1e3:.3f}) "
                f"| {_fmt_rate(r['ours_configs_per_s'])} |")
        if has_pk:
            best = r["pk_min_s"] / r["ours_min_s"]
            line += (f" {r['pk_s'] * 1e3:.3f} ({r['pk_min_s'] * 1e3:.3f}) | {_fmt_rate(r['pk_configs_per_s'])} "
                     f"| {r['speedup']:.1f}x ({best:.1f}x) |")
        lines.append(line)
    return "\n".join(lines)


# ---------------------------------------------------------------------- CLI
def register(subparsers) -> None:
    """Add ``bench-fk`` to the ``ikdiffuser`` command."""
    p = subparsers.add_parser("bench-fk", help="FK + Jacobian throughput vs pytorch_kinematics",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--robot", default="baxter", help="robot name in config/robots or a robot YAML (default baxter)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=list(DEFAULT_BATCH_SIZES))
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--repeats", type=int, default=7, help="timed repeats per batch size (median reported)")
    p.add_argument("--min-time", type=float, default=0.2, help="seconds each repeat lasts at least")
    p.add_argument("--no-pk", action="store_true", help="skip pytorch_kinematics")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's default)")
    p.add_argument("--json", type=Path, default=None, help="also write the JSON report here")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    report = bench_fk(args.robot, args.batch_sizes, args.device, args.dtype, args.repeats, args.min_time,
                      compare_pk=not args.no_pk)
    print(format_table(report))
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0
