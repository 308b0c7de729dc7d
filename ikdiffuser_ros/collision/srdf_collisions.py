"""Self-collision pairs to disable in an SRDF, computed as MoveIt Setup Assistant does.

``ikdiffuser srdf-collisions --robot NAME [--samples N] [--out FILE]`` writes an SRDF
holding only ``<disable_collisions link1 link2 reason=.../>`` lines, to be listed
after the robot's own SRDF in ``config/robots/<name>.yaml`` (SRDFs are merged).

Only links with URDF collision geometry are paired. Each pair gets the first
reason that applies, in this order:

* ``Adjacent``: joined by one joint, or through links without collision
  geometry (MSA's link graph: the neighbours of a geometry-less link are
  adjacent to each other, transitively);
* ``Default``: in collision in the default configuration (every variable at
  MoveIt's default: 0, or the middle of a range without 0, :meth:`RobotModel.default_positions`);
* ``Always``: in collision in at least ``always_fraction`` (95 %) of ``N``
  configurations drawn uniformly within the joint limits;
* ``Never``: in collision in none of those ``N`` configurations. This is
  statistical, as in MSA: a pair that collides only in a small part of the
  joint space may be missed; more samples make that less likely.

Collisions are exact FCL on the URDF collision geometry
(:class:`~ikdiffuser_ros.collision.fcl_checker.CollisionChecker`), ignoring
the pairs the robot's SRDFs already disable, so the result depends on the URDF
only. Joints that are not active stay at their passive value (a head, gripper
fingers), as everywhere in this project.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import quoteattr

import torch

from ikdiffuser_ros.collision.fcl_checker import CollisionChecker
from ikdiffuser_ros.kinematics.joint_kinds import uniform_in_limits
from ikdiffuser_ros.kinematics.robot_model import RobotModel

#: Reasons in order of precedence (MoveIt Setup Assistant's names).
REASONS = ("Adjacent", "Default", "Always", "Never")

Pair = tuple[str, str]


@dataclass(frozen=True)
class CollisionSetup:
    """Result of :func:`compute_disabled_pairs`.

    Attributes:
        robot: robot name.
        samples: number of uniform random configurations drawn.
        seed: seed of those draws.
        always_fraction: sampled collision fraction from which a pair is ``Always``.
        disabled: sorted link pair -> reason, for every disabled pair.
        rates: sorted link pair -> fraction of the samples in collision, for every
            non-adjacent pair of geometry links.
    """

    robot: str
    samples: int
    seed: int
    always_fraction: float
    disabled: dict[Pair, str]
    rates: dict[Pair, float]

    def count(self, reason: str) -> int:
        """Number of pairs disabled for ``reason``."""
        return sum(1 for r in self.disabled.values() if r == reason)


def _pair(a: str, b: str) -> Pair:
    return (a, b) if a < b else (b, a)


def geometry_links(model: RobotModel) -> list[str]:
    """Links with URDF collision geometry, in URDF order."""
    return [name for name, link in model.urdf.links.items() if link.collisions]


def adjacent_pairs(model: RobotModel) -> set[Pair]:
    """Pairs of geometry links joined by one joint or through geometry-less links (MSA's link graph)."""
    urdf = model.urdf
    with_geometry = set(geometry_links(model))
    neighbours: dict[str, set[str]] = {name: set() for name in urdf.links}
    for joint in urdf.joints.values():
        neighbours[joint.parent].add(joint.child)
        neighbours[joint.child].add(joint.parent)
    pairs: set[Pair] = set()
    for link in with_geometry:
        for other in _reachable_through_bare_links(link, neighbours, with_geometry):
            pairs.add(_pair(link, other))
    return pairs


def _reachable_through_bare_links(link: str, neighbours: dict[str, set[str]], with_geometry: set[str]) -> set[str]:
    """Geometry links reached from ``link`` by one edge, or by a path whose inner links have no geometry."""
    found, seen, stack = set(), {link}, list(neighbours[link])
    while stack:
        other = stack.pop()
        if other in seen:
            continue
        seen.add(other)
        if other in with_geometry:
            found.add(other)
        else:
            stack.extend(neighbours[other])
    return found


def _without_disabled_pairs(model: RobotModel) -> RobotModel:
    """A shallow copy of ``model`` whose SRDF disables no collision pair."""
    bare = copy.copy(model)
    bare.srdf = dataclasses.replace(model.srdf, disabled_collisions=set())
    return bare


def _colliding_pairs(checker: CollisionChecker, q: torch.Tensor, chunk: int = 500,
                     progress: str | None = None) -> list[set[Pair]]:
    """Per configuration of ``q`` (M, n), the set of colliding (sorted) link pairs the checker tests
    (``progress``: the description of a tqdm bar over them, on stderr)."""
    out: list[set[Pair]] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=q.shape[0], desc=progress, unit=" configurations")
    for start in range(0, q.shape[0], chunk):
        report = checker.check(q[start:start + chunk], max_pairs=1 << 30)
        out.extend({_pair(a, b) for a, b in pairs} for pairs in report.pairs)
        if bar is not None:
            bar.update(len(report.pairs))
    if bar is not None:
        bar.close()
    return out


def _sampled_collision_counts(checker: CollisionChecker, model: RobotModel, samples: int, seed: int,
                              progress: bool = False) -> dict[Pair, int]:
    """Per colliding (sorted) link pair, in how many of ``samples`` configurations (M, n) float64, uniform
    within the joint limits from a generator seeded ``seed``, it is in collision."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = model.limits()
    q = uniform_in_limits(lo, hi, samples, g)
    counts: dict[Pair, int] = {}
    desc = f"{model.name}: self-collision pairs" if progress else None
    for pairs in _colliding_pairs(checker, q, progress=desc):
        for p in pairs:
            counts[p] = counts.get(p, 0) + 1
    return counts


def _classify_pairs(links: list[str], adjacent: set[Pair], default: set[Pair], counts: dict[Pair, int],
                    samples: int, keep: set[Pair], always_fraction: float) -> tuple[dict[Pair, str], dict[Pair, float]]:
    """Every pair of the geometry ``links``, in their order: ``Adjacent``, else (unless in ``keep``) ``Default``
    when colliding in the default configuration, ``Always`` when its rate ``counts / samples`` is at least
    ``always_fraction``, ``Never`` when it never collided.

    Returns:
        (disabled pair -> reason, collision rate of every non-adjacent pair).
    """
    disabled: dict[Pair, str] = {}
    rates: dict[Pair, float] = {}
    for i, a in enumerate(links):
        for b in links[i + 1:]:
            p = _pair(a, b)
            if p in adjacent:
                disabled[p] = "Adjacent"
                continue
            rates[p] = counts.get(p, 0) / samples
            if p in keep:
                continue
            if p in default:
                disabled[p] = "Default"
            elif rates[p] >= always_fraction:
                disabled[p] = "Always"
            elif counts.get(p, 0) == 0:
                disabled[p] = "Never"
    return disabled, rates


def compute_disabled_pairs(model: RobotModel, samples: int = 10_000, seed: int = 0,
                           always_fraction: float = 0.95, keep: Iterable[Pair] = (),
                           progress: bool = False) -> CollisionSetup:
    """Classify every pair of geometry links of ``model`` (see the module docstring).

    Args:
        model: the robot; its SRDF-disabled pairs are ignored.
        samples: uniform random configurations within the joint limits.
        seed: seed of the random configurations.
        always_fraction: a pair colliding in at least this fraction of the samples is ``Always``.
        keep: non-adjacent pairs left checked whatever the sampling says (the review step of
            MSA, e.g. a pair in collision in the default configuration that is a real collision).
        progress: show a tqdm bar over the sampled configurations (stderr).

    Returns:
        :class:`CollisionSetup` with the disabled pairs and the sampled collision rates.
    """
    links = geometry_links(model)
    keep = {_pair(a, b) for a, b in keep}
    checker = CollisionChecker(_without_disabled_pairs(model))
    adjacent = adjacent_pairs(model)
    default = _colliding_pairs(checker, model.default_positions()[None])[0]
    counts = _sampled_collision_counts(checker, model, samples, seed, progress)
    disabled, rates = _classify_pairs(links, adjacent, default, counts, samples, keep, always_fraction)
    return CollisionSetup(model.name, samples, seed, always_fraction, dict(sorted(disabled.items())), rates)


def srdf_text(setup: CollisionSetup, command: str) -> str:
    """The SRDF document (XML text) disabling ``setup.disabled``, with a comment saying how it was made."""
    counts = ", ".join(f"{setup.count(r)} {r}" for r in REASONS)
    lines = [
        '<?xml version="1.0"?>',
        f"<!-- Generated by {command}, ikdiffuser_ros/collision/srdf_collisions.py,",
        "     as MoveIt Setup Assistant does, with exact FCL on the URDF collision geometry.",
        "     Adjacent: joined by a joint or through links without collision geometry;",
        "     Default: in collision in the default configuration (MoveIt's: 0, or the middle of a range without 0);",
        f"     Always: in collision in >= {setup.always_fraction:.0%} of {setup.samples} uniform random"
        f" configurations (seed {setup.seed});",
        f"     Never: in collision in none of those {setup.samples} configurations. \"Never\" is statistical:",
        "     a pair colliding only in a small region of the joint space can be missed.",
        f"     {counts} pairs. -->",
        f"<robot name={quoteattr(setup.robot)}>",
    ]
    for order in REASONS:
        lines += [f"  <disable_collisions link1={quoteattr(a)} link2={quoteattr(b)} reason=\"{reason}\"/>"
                  for (a, b), reason in setup.disabled.items() if reason == order]
    lines.append("</robot>")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- CLI
def register(subparsers) -> None:
    """Add ``srdf-collisions`` to the ``ikdiffuser`` command."""
    p = subparsers.add_parser("srdf-collisions", help="SRDF disable_collisions pairs, as MoveIt Setup Assistant",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--robot", required=True, help="robot name in config/robots or a robot YAML")
    p.add_argument("--samples", type=int, default=10_000, help="uniform random configurations (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random configurations (default 0)")
    p.add_argument("--always-fraction", type=float, default=0.95,
                   help="sampled collision fraction from which a pair is 'Always' (default 0.95)")
    p.add_argument("--keep", action="append", default=[], metavar="LINK1,LINK2",
                   help="leave this pair checked (repeatable), e.g. a real collision at the default configuration")
    p.add_argument("--out", type=Path, default=None, help="write the SRDF here (default: stdout)")
    p.set_defaults(func=_main)


def _command(args: argparse.Namespace) -> str:
    """The options of this run, for the SRDF comment (an XML comment cannot hold a double hyphen)."""
    options = [f"robot {args.robot}", f"samples {args.samples}", f"seed {args.seed}",
               f"always-fraction {args.always_fraction}"] + [f"keep {k}" for k in args.keep]
    return f"ikdiffuser srdf-collisions ({', '.join(options)})"


def _main(args: argparse.Namespace) -> int:
    from ikdiffuser_ros.robots import load_robot

    model = load_robot(args.robot)
    keep = [tuple(k.split(",")) for k in args.keep]
    unknown = [k for k in keep if len(k) != 2 or not set(k) <= set(geometry_links(model))]
    if unknown:
        print(f"--keep: not a pair of links with collision geometry: {unknown}", file=sys.stderr)
        return 2
    setup = compute_disabled_pairs(model, args.samples, args.seed, args.always_fraction, keep)
    text = srdf_text(setup, _command(args))
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    summary = ", ".join(f"{setup.count(r)} {r}" for r in REASONS)
    n_pairs = len(setup.rates) + setup.count("Adjacent")
    print(f"{model.name}: {len(setup.disabled)} of {n_pairs} link pairs disabled ({summary})", file=sys.stderr)
    for a, b in suspicious_default_pairs(setup):
        print(f"review: {a} - {b} collides in the default configuration but only in "
              f"{setup.rates[(a, b)]:.1%} of the samples (--keep {a},{b} to leave it checked)", file=sys.stderr)
    return 0


def suspicious_default_pairs(setup: CollisionSetup) -> list[Pair]:
    """``Default`` pairs that collide in fewer than ``always_fraction`` of the samples.

    Such a pair is in collision in the default configuration but free in many others: often a
    real collision (e.g. a mounting that puts one link through another at zero), to review.
    """
    return [p for p, r in setup.disabled.items() if r == "Default" and setup.rates[p] < setup.always_fraction]
