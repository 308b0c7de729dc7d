"""Seeded, resumable, sharded dataset of (q, end-effector poses): ``ikdiffuser generate``.

Layout of ``OUT``::

    manifest.json               robot name + fingerprint, joint names, end effectors, seed,
                                shard size, total count, per-shard {file, count, seed}
    shard_00000.safetensors     q (M, n) float32, pos (M, E, 3) float32 [m], rot6d (M, E, 6) float32

Shard ``k`` holds ``min(shard_size, N - k * shard_size)`` rows drawn with its own generator seeded
``seed + k``: joints uniform within the limits (float64), FK in float64 with the project's
:class:`RobotModel`, stored as float32. Shards are written to a temporary name and renamed, so a
shard file that exists is complete; re-running the same command skips them (resume). With
``--reject-self-collision`` rows whose configuration is in self collision (sphere model) are
dropped and replaced by further draws from the same shard generator. Work is done in chunks of
``CHUNK`` rows, so peak memory is about one shard (not the whole dataset).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

from ikdiffuser_ros.errors import IKDiffuserError
from ikdiffuser_ros.kinematics.joint_kinds import uniform_in_limits
from ikdiffuser_ros.kinematics.transforms import matrix_to_rot6d

#: rows per FK chunk (fixed: part of what makes a shard reproducible).
CHUNK = 65_536
MANIFEST = "manifest.json"
FORMAT_VERSION = 1


def sample_joints(robot, M: int, generator: torch.Generator) -> torch.Tensor:
    """(M, n) float64 joint values uniform within the robot's limits."""
    lower, upper = (torch.as_tensor(v, dtype=torch.float64) for v in (robot.lower, robot.upper))
    return uniform_in_limits(lower, upper, M, generator)


def poses_of(robot, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, n) joints -> float64 FK -> positions (M, E, 3) and rot6d (M, E, 6), float32."""
    T = robot.fk(q.double())
    return T[..., :3, 3].float(), matrix_to_rot6d(T[..., :3, :3]).float()


def sample_fk(robot, M: int, generator: torch.Generator, reject_self_collision: bool = False,
              collision_fn=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw M rows: q (M, n) float32, pos (M, E, 3) float32, rot6d (M, E, 6) float32.

    Joints are drawn in chunks of :data:`CHUNK` from ``generator``; with ``reject_self_collision``
    colliding rows are dropped and more are drawn until M are collected.
    """
    if reject_self_collision and collision_fn is None:
        collision_fn = self_collision_fn(robot)
    n, E = len(robot.joint_names), len(robot.end_effectors)
    q_out = torch.empty(M, n, dtype=torch.float32)
    pos_out = torch.empty(M, E, 3, dtype=torch.float32)
    rot_out = torch.empty(M, E, 6, dtype=torch.float32)
    have = 0
    while have < M:
        c = CHUNK if M - have > CHUNK or reject_self_collision else M - have
        q = sample_joints(robot, c, generator)
        if reject_self_collision:
            q = q[~collision_fn(q)]
            q = q[: M - have]
        pos, rot6d = poses_of(robot, q)
        k = q.shape[0]
        q_out[have:have + k], pos_out[have:have + k], rot_out[have:have + k] = q, pos, rot6d
        have += k
    return q_out, pos_out, rot_out


def self_collision_fn(robot, method: str = "spheres"):
    """``q (M, n) -> (M,) bool`` (True = in self collision).

    ``method``: ``"spheres"`` (the differentiable sphere model; fast, conservative) or ``"fcl"`` (exact
    FCL on the URDF meshes with the SRDF's disabled pairs; for robots whose sphere model flags
    nearly every configuration).
    """
    if method == "fcl":
        from ikdiffuser_ros.collision.fcl_checker import CollisionChecker

        checker = CollisionChecker(robot)
        return lambda q: torch.as_tensor(checker.check(q.double()).in_collision)
    if method != "spheres":
        raise ValueError(f"self-collision method must be 'spheres' or 'fcl', got {method!r}")
    try:
        from ikdiffuser_ros.collision.spheres import self_collision_mask
    except ImportError as exc:
        raise IKDiffuserError(
            "--reject-self-collision needs ikdiffuser_ros.collision.spheres.self_collision_mask "
            f"(the sphere collision model), which is not available: {exc}") from None
    return lambda q: self_collision_mask(robot, q).bool().cpu()


def _manifest_header(robot, seed: int, shard_size: int, num_samples: int, reject: bool) -> dict:
    return {"format_version": FORMAT_VERSION, "robot": getattr(robot, "name", None),
            "fingerprint": robot.fingerprint(), "joint_names": list(robot.joint_names),
            "end_effectors": list(robot.end_effectors), "root_frame": getattr(robot, "root_frame", None),
            "seed": seed, "shard_size": shard_size, "num_samples": num_samples,
            "reject_self_collision": reject, "fields": {"q": "(M, n) float32 joint units",
                                                        "pos": "(M, E, 3) float32 m, root frame",
                                                        "rot6d": "(M, E, 6) float32 first two columns of R"}}


def _check_manifest(mpath: Path, header: dict) -> None:
    """Raise IKDiffuserError if the manifest at ``mpath`` (if any) was written for another robot fingerprint,
    seed, shard size or self-collision setting than ``header``."""
    if not mpath.is_file():
        return
    old = json.loads(mpath.read_text())
    for key in ("fingerprint", "seed", "shard_size", "reject_self_collision"):
        if old.get(key) != header[key]:
            raise IKDiffuserError(f"{mpath} was written with {key}={old.get(key)!r}, this run has "
                                  f"{key}={header[key]!r}; use another --out or the same settings")


def _write_shard(path: Path, robot, count: int, seed: int, reject_self_collision: bool, collision_fn,
                 fingerprint: str) -> None:
    """Draw ``count`` rows from a generator seeded ``seed`` (see :func:`sample_fk`) and save them to ``path``:
    q (count, n), pos (count, E, 3) [m], rot6d (count, E, 6), float32; written to ``path.tmp``, then renamed."""
    from safetensors.torch import save_file

    q, pos, rot6d = sample_fk(robot, count, torch.Generator().manual_seed(seed), reject_self_collision, collision_fn)
    tmp = path.with_name(path.name + ".tmp")
    save_file({"q": q.contiguous(), "pos": pos.contiguous(), "rot6d": rot6d.contiguous()}, str(tmp),
              metadata={"seed": str(seed), "fingerprint": fingerprint})
    tmp.replace(path)


def _replace_manifest(out: Path, manifest: dict) -> None:
    """Write ``manifest`` to ``out/manifest.json`` through a temporary file (a reader never sees half of it)."""
    (out / (MANIFEST + ".tmp")).write_text(json.dumps(manifest, indent=2) + "\n")
    (out / (MANIFEST + ".tmp")).replace(out / MANIFEST)


def generate_dataset(robot, num_samples: int, out_dir: str | Path, seed: int = 0, shard_size: int = 1_000_000,
                     reject_self_collision: bool = False, progress: bool = True, robot_name: str | None = None) -> dict:
    """Write (or complete) the sharded dataset in ``out_dir``; returns the manifest.

    Raises:
        ValueError: ``num_samples`` or ``shard_size`` is below 1 (an empty dataset is refused: nothing
            could be trained on it; nothing is written).
        IKDiffuserError: an existing manifest in ``out_dir`` was made with other settings or robot.
    """
    from tqdm import tqdm

    for name, value in (("num_samples", num_samples), ("shard_size", shard_size)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    header = _manifest_header(robot, seed, shard_size, num_samples, reject_self_collision)
    if robot_name:
        header["robot_config"] = robot_name
    mpath = out / MANIFEST
    _check_manifest(mpath, header)
    collision_fn = self_collision_fn(robot) if reject_self_collision else None
    num_shards = math.ceil(num_samples / shard_size)
    shards = []
    bar = tqdm(total=num_samples, unit="samples", unit_scale=True, desc=f"generate {header['robot']}",
               disable=not progress)
    t0 = time.time()
    for k in range(num_shards):
        count = min(shard_size, num_samples - k * shard_size)
        name = f"shard_{k:05d}.safetensors"
        if not (out / name).is_file():  # an existing shard is complete (written under another name, then renamed)
            _write_shard(out / name, robot, count, seed + k, reject_self_collision, collision_fn, header["fingerprint"])
        bar.update(count)
        shards.append({"file": name, "count": count, "seed": seed + k})
        manifest = {**header, "shards": shards, "complete": k + 1 == num_shards}
        _replace_manifest(out, manifest)
    bar.close()
    manifest["last_run_wall_s"] = round(time.time() - t0, 2)
    mpath.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def load_shards(data_dir: str | Path, robot=None) -> dict:
    """Load a generated dataset: ``{"q", "pos", "rot6d", "manifest"}`` (concatenated, float32).

    Raises:
        IKDiffuserError: missing manifest/shard, or a fingerprint different from ``robot``'s.
    """
    from safetensors.torch import load_file

    d = Path(data_dir)
    mpath = d / MANIFEST
    if not mpath.is_file():
        raise IKDiffuserError(f"no dataset manifest at {mpath}; run `ikdiffuser generate` first")
    manifest = json.loads(mpath.read_text())
    if robot is not None and manifest.get("fingerprint") != robot.fingerprint():
        raise IKDiffuserError(f"dataset {d} is for robot {manifest.get('robot')!r} (fingerprint "
                              f"{manifest.get('fingerprint')}), not {robot.fingerprint()}")
    parts = {"q": [], "pos": [], "rot6d": []}
    for entry in manifest["shards"]:
        path = d / entry["file"]
        if not path.is_file():
            raise IKDiffuserError(f"missing shard {path}; re-run `ikdiffuser generate` to complete it")
        t = load_file(str(path))
        for key in parts:
            parts[key].append(t[key])
    return {**{k: torch.cat(v) for k, v in parts.items()}, "manifest": manifest}


def register(subparsers) -> None:
    """Add ``generate`` to the ``ikdiffuser`` command."""
    p = subparsers.add_parser("generate", help="write a seeded, sharded (q, FK pose) dataset",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--robot", required=True)
    p.add_argument("--num-samples", type=_count, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shard-size", type=_count, default=1_000_000)
    p.add_argument("--reject-self-collision", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_main)


def _count(text: str) -> int:
    """argparse type: a whole number >= 1 (``_`` separators allowed, e.g. ``1_000_000``)."""
    import argparse

    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _main(args) -> int:
    from ikdiffuser_ros.robots import load_robot

    robot = load_robot(args.robot)
    m = generate_dataset(robot, args.num_samples, args.out, seed=args.seed, shard_size=args.shard_size,
                         reject_self_collision=args.reject_self_collision, progress=not args.no_progress,
                         robot_name=args.robot)
    print(f"{args.out}: {m['num_samples']} samples in {len(m['shards'])} shards ({m['robot']}, "
          f"fingerprint {m['fingerprint']})")
    return 0
