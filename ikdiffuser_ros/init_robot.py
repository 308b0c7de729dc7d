"""``ikdiffuser init-robot``: the files a robot needs before training and serving, from its URDF.

    ikdiffuser init-robot --urdf URDF [--srdf SRDF ...] [--name NAME] [--end-effectors LINK ...]
                          [--out-dir DIR] [--xacro-arg NAME=VALUE ...] [--samples N] [--force]

``URDF`` and ``SRDF`` are paths, ``file://`` or ``package://`` URIs (``.xacro`` is expanded). Writes
into ``DIR`` (default: the current directory), for robot ``NAME`` (default: the URDF's robot name):

* ``NAME.yaml``: the robot config (:mod:`ikdiffuser_ros.robots`), checked by loading it;
* ``NAME.collisions.srdf``: the self-collision pairs to disable, as MoveIt Setup Assistant finds
  them (``ikdiffuser srdf-collisions``: Adjacent, Default, Always, Never over ``N`` random
  configurations), listed after the robot's own SRDFs in ``NAME.yaml``;
* ``NAME.spheres.json``: the collision-sphere model (fitted now, not inside the node's first request);
* ``NAME.training.yaml``: the training config, the recipe of every shipped model
  (``extends: package://ikdiffuser_ros/config/training/recipe.yaml``); add overrides below it.

``ikdiffuser train --robot DIR/NAME.yaml`` and the node find the last two next to the YAML
(:mod:`ikdiffuser_ros.robots`). A robot config written into the package's ``config/robots``
uses ``config/spheres/NAME.json`` and ``config/training/NAME.yaml`` instead.

End effectors: ``--end-effectors``, else the parent links of the SRDFs' ``<end_effector>`` tags,
else the tip links of their groups' chains, else the URDF's one leaf link that a joint moves (with
several such leaves the command stops and lists them: choose with ``--end-effectors``). Planning
groups for the MoveIt bridge: the SRDFs' groups the node can serve are used as they are; when there
are none, the config gets ``arm: [ee]`` (one end effector) or one group per end effector plus
``all`` (several); when no group has every end effector, ``all`` is added.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ikdiffuser_ros.errors import IKDiffuserError, RobotDescriptionError
from ikdiffuser_ros.kinematics.robot_model import RobotModel, load_description_text
from ikdiffuser_ros.robots import COLLISIONS_SUFFIX, RobotConfig, RobotConfigError, did_you_mean, robot_config

#: The recipe every shipped model is trained with, as the written training configs name it.
RECIPE_URI = "package://ikdiffuser_ros/config/training/recipe.yaml"


class InitRobotError(RobotDescriptionError):
    """Bad input to ``init-robot`` (missing or malformed file, ambiguous or unknown end effectors,
    files that exist already); the message says what to do."""


@dataclass
class InitResult:
    """What :func:`init_robot` wrote."""

    name: str
    robot_yaml: Path
    collisions_srdf: Path
    sphere_file: Path
    training_config: Path
    end_effectors: list[str]
    #: where the end effectors came from (for the log)
    end_effector_source: str
    #: groups written into the robot config (name -> links)
    config_groups: dict[str, list[str]] = field(default_factory=dict)
    #: usable groups of the SRDFs (name -> tips)
    srdf_groups: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _local(uri: str, what: str) -> Path:
    """A path or URI given on the command line -> an existing local file."""
    from ikdiffuser_ros.resources import resolve_uri

    try:
        path = resolve_uri(uri, Path.cwd())
    except (RobotDescriptionError, FileNotFoundError) as exc:
        raise InitRobotError(f"{what} {uri!r}: {exc}") from None
    if not path.is_file():
        raise InitRobotError(f"{what} {uri!r}: no such file ({path})")
    return path


def _read(path: Path, what: str, xacro_args: dict[str, str]) -> str:
    try:
        return load_description_text(path, xacro_args)
    except (OSError, UnicodeDecodeError) as exc:
        raise InitRobotError(f"{what} {path}: cannot be read: {exc}") from None
    except RobotDescriptionError as exc:
        raise InitRobotError(f"{what} {path}: {exc}") from None


def leaf_candidates(urdf) -> dict[str, list[str]]:
    """Leaf links that a non-fixed joint moves, grouped by the last such joint on their path from the root."""
    out: dict[str, list[str]] = {}
    for link in urdf.links:
        if urdf.children(link):
            continue
        moving = [j.name for j in urdf.path_from_root(link) if j.type != "fixed"]
        if moving:
            out.setdefault(moving[-1], []).append(link)
    return out


def choose_end_effectors(urdf, srdf, given: list[str] | None, urdf_file: Path) -> tuple[list[str], str]:
    """(end-effector links, where they came from); see the module docstring."""
    links = list(urdf.links)
    if given:
        for link in given:
            if link not in urdf.links:
                raise InitRobotError(f"--end-effectors: {link!r} is not a link of {urdf_file}"
                                     f"{did_you_mean(link, links)}")
        if len(set(given)) != len(given):
            raise InitRobotError(f"--end-effectors: a link is listed twice: {given}")
        return list(given), "--end-effectors"
    if srdf is not None:
        ees = list(dict.fromkeys(e.parent_link for e in srdf.end_effectors if e.parent_link in urdf.links))
        if ees:
            return ees, "the SRDF's <end_effector> tags"
        tips = list(dict.fromkeys(tip for g in srdf.groups.values() for _, tip in g.chains if tip in urdf.links))
        if tips:
            return tips, "the tip links of the SRDF's group chains"
    leaves = leaf_candidates(urdf)
    flat = [link for group in leaves.values() for link in group]
    if len(flat) == 1:
        return flat, f"the URDF's only moving leaf link (after joint {next(iter(leaves))!r})"
    if not flat:
        raise InitRobotError(f"{urdf_file}: no link is moved by a joint: nothing to solve IK for")
    listing = "; ".join(f"after joint {j!r}: {', '.join(ls)}" for j, ls in leaves.items())
    raise InitRobotError(
        f"{urdf_file} has {len(flat)} leaf links a joint moves, so the end effectors are ambiguous ({listing}). "
        f"Choose them: --end-effectors LINK [LINK ...] (e.g. --end-effectors {flat[-1]}), or give an SRDF "
        "with <end_effector> tags (--srdf)")


def _groups(model: RobotModel) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(usable SRDF groups name -> tips, groups to write into the robot config)."""
    from ikdiffuser_ros.kinematics.frames import rigid_offsets
    from ikdiffuser_ros.kinematics.groups import build_groups

    srdf_groups = {g.name: list(g.tips) for g in build_groups(model, {}, {}, rigid_offsets(model)).values()}
    ees = list(model.end_effectors)
    config: dict[str, list[str]] = {}
    if not srdf_groups:
        config = {"arm": ees} if len(ees) == 1 else {**{ee: [ee] for ee in ees}, "all": ees}
    elif len(ees) > 1 and not any(set(tips) >= set(ees) for tips in srdf_groups.values()):
        config = {("all" if "all" not in srdf_groups else "all_end_effectors"): ees}
    return srdf_groups, config


def _sanitized(name: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", name.strip()) or "robot"
    return name if name[0] not in ".-" else f"robot{name}"


def _reference(uri: str, path: Path, out_dir: Path) -> str:
    """How the robot YAML names a file: a package:// URI as given, a file in ``out_dir`` relative to it,
    else its absolute path."""
    if uri.startswith("package://"):
        return uri
    try:
        return str(path.resolve().relative_to(out_dir.resolve()))
    except ValueError:
        return str(path.resolve())


def _yaml_list(items) -> str:
    return "[" + ", ".join(_yaml_scalar(i) for i in items) + "]"


def _yaml_scalar(value: str) -> str:
    import yaml

    return yaml.safe_dump(value, default_style=None, width=1 << 20).strip().removesuffix("\n...").strip()


def robot_yaml_text(name: str, urdf: str, srdf: list[str], end_effectors: list[str], ee_source: str,
                    groups: dict[str, list[str]], srdf_groups: dict[str, list[str]], xacro_args: dict[str, str],
                    command: str) -> str:
    """The robot config (see :mod:`ikdiffuser_ros.robots` for the keys)."""
    lines = [f"# Robot config of {name}, written by: {command}",
             "# Keys: docs/your_robot.md (name, urdf, srdf, end_effectors, xacro_args, joint_limits [rad or m],",
             "# groups, locked_joints). Paths: package:// URIs, absolute, or relative to this file.",
             f"name: {_yaml_scalar(name)}",
             f"urdf: {_yaml_scalar(urdf)}"]
    if len(srdf) == 1:
        lines.append(f"srdf: {_yaml_scalar(srdf[0])}")
    else:
        lines += ["srdf:"] + [f"  - {_yaml_scalar(s)}" for s in srdf]
    lines += [f"# from {ee_source}", f"end_effectors: {_yaml_list(end_effectors)}"]
    if xacro_args:
        lines += ["xacro_args:"] + [f"  {_yaml_scalar(k)}: {_yaml_scalar(v)}" for k, v in xacro_args.items()]
    if srdf_groups:
        lines.append("# planning groups from the SRDF: " + "; ".join(f"{g} -> {_yaml_list(t)}"
                                                                       for g, t in srdf_groups.items()))
    if groups:
        lines += ["# planning groups for the MoveIt bridge (compute_ik's group_name): name: [end-effector links]",
                  "groups:"] + [f"  {_yaml_scalar(g)}: {_yaml_list(links)}" for g, links in groups.items()]
    else:
        lines.append("groups: {}   # name: [end-effector links], added to the SRDF's groups")
    lines += ["joint_limits: {}   # joint: [lower, upper] in rad or m, overriding the URDF's",
              "locked_joints: []   # joints held at their default value (MoveIt's: 0, or the middle of a range without 0)"]
    return "\n".join(lines) + "\n"


def training_yaml_text(name: str, robot_yaml: Path, in_package: bool) -> str:
    """A training config that is the recipe (config/training/recipe.yaml) until you add overrides."""
    extends = "recipe.yaml" if in_package else RECIPE_URI
    robot = name if in_package else str(robot_yaml)
    return (f"# Training config of {name}: the recipe of every shipped model. Add TrainConfig fields below to\n"
            "# change it (ikdiffuser_ros/training/trainer.py; e.g. dataset_size, collision_filter, model: {d_model: 128}).\n"
            f"#   OMP_NUM_THREADS=1 ikdiffuser train --robot {robot} --max-minutes 120 [--resume-from <model dir>]\n"
            f"extends: {extends}\n" + (f"robot: {name}\n" if in_package else ""))


def init_robot(urdf: str, srdf: list[str] = (), name: str | None = None, end_effectors: list[str] | None = None,
               out_dir: str | Path = ".", xacro_args: dict[str, str] | None = None, samples: int = 10_000,
               force: bool = False, progress: bool = True, command: str = "ikdiffuser init-robot",
               log=print) -> InitResult:
    """Write the robot config, collision SRDF, sphere file and training config of a URDF (module docstring).

    Raises:
        InitRobotError: a missing or malformed file, unknown or ambiguous end effectors, an output file
            that exists (without ``force``).
    """
    from ikdiffuser_ros.collision.spheres import generate_sphere_file

    xacro_args = dict(xacro_args or {})
    out_dir = Path(out_dir).absolute()
    urdf_path, srdf_paths, model, ee_source = _robot_model(urdf, srdf, name, end_effectors, xacro_args)
    name, ees = model.name, list(model.end_effectors)
    srdf_groups, config_groups = _groups(model)
    robot_yaml, collisions = out_dir / f"{name}.yaml", out_dir / f"{name}{COLLISIONS_SUFFIX}"
    placed = RobotConfig(name, urdf_path, source=robot_yaml.absolute())
    sphere_path, training_path = placed.sphere_file, placed.training_config
    existing = [p for p in (robot_yaml, collisions, sphere_path, training_path) if p.exists()]
    if existing and not force:
        raise InitRobotError(f"would overwrite {', '.join(map(str, existing))} (--force to replace them)")
    notes = _virtual_joint_notes(model) + _full_turn_notes(model)
    log(f"{name}: {model.n_joints} joints {model.joint_names}, end effectors {ees} (from {ee_source}), "
        f"root frame {model.root_frame!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    notes += _write_collisions(model, collisions, samples, progress, log)
    srdf_refs = [_reference(u, p, out_dir) for u, p in zip(srdf, srdf_paths)] + [collisions.name]
    robot_yaml.write_text(robot_yaml_text(name, _reference(urdf, urdf_path, out_dir), srdf_refs, ees, ee_source,
                                          config_groups, srdf_groups, xacro_args, command))
    config, checked = _checked_config(robot_yaml, config_groups, srdf_groups, log)
    generate_sphere_file(checked, sphere_path, progress=progress)
    training_path.parent.mkdir(parents=True, exist_ok=True)
    training_path.write_text(training_yaml_text(name, robot_yaml.absolute(), config.in_package))
    log(f"wrote {sphere_path}\nwrote {training_path} (the shipped recipe)")
    for note in notes:
        log(f"note: {note}")
    return InitResult(name, robot_yaml, collisions, sphere_path, training_path, ees, ee_source, config_groups,
                      srdf_groups, notes)


def _robot_model(urdf: str, srdf: list[str], name: str | None, end_effectors: list[str] | None,
                 xacro_args: dict[str, str]) -> tuple[Path, list[Path], RobotModel, str]:
    """(URDF path, SRDF paths, the RobotModel named ``name`` or after the URDF, where its end effectors came
    from), parsed from the files; InitRobotError names a missing or malformed file or a bad name."""
    from ikdiffuser_ros.kinematics.srdf import parse_srdf
    from ikdiffuser_ros.kinematics.urdf import parse_urdf

    urdf_path = _local(urdf, "URDF")
    try:
        parsed_urdf = parse_urdf(_read(urdf_path, "URDF", xacro_args))
    except RobotDescriptionError as exc:
        raise InitRobotError(f"URDF {urdf_path}: {exc}") from None
    srdf_paths = [_local(s, "SRDF") for s in srdf]
    parsed_srdf = None
    for path in srdf_paths:
        try:
            one = parse_srdf(_read(path, "SRDF", xacro_args))
        except RobotDescriptionError as exc:
            raise InitRobotError(f"SRDF {path}: {exc}") from None
        parsed_srdf = one if parsed_srdf is None else parsed_srdf.merge(one)
    name = name or _sanitized(parsed_urdf.name or urdf_path.stem)
    if _sanitized(name) != name:
        raise InitRobotError(f"--name {name!r}: use letters, digits, '_', '.' and '-' only")
    ees, ee_source = choose_end_effectors(parsed_urdf, parsed_srdf, end_effectors, urdf_path)
    try:
        return urdf_path, srdf_paths, RobotModel(parsed_urdf, parsed_srdf, ees, name=name), ee_source
    except RobotDescriptionError as exc:
        raise InitRobotError(f"{urdf_path}: {exc}") from None


def _virtual_joint_notes(model: RobotModel) -> list[str]:
    """A note when the SRDF's virtual joint moves the base (it then is part of every solution)."""
    vj = model.virtual_joint
    if vj is None or vj.type == "fixed":
        return []
    return [f"the SRDF's {vj.type} virtual joint {vj.name!r} moves the base (default ranges: translations "
            f"+-1 m); set joint_limits for it, or locked_joints: [{vj.name}] for a fixed base"]


def _full_turn_notes(model: RobotModel) -> list[str]:
    """A note naming the joints whose range spans more than a turn (learnt in one, docs/solver.md)."""
    from ikdiffuser_ros.kinematics.joint_kinds import full_turns

    names = [n for n, t in zip(model.joint_names, full_turns(model).tolist()) if t]
    if not names:
        return []
    return [f"{', '.join(names)} span more than one turn: the model learns them in one turn around the middle of "
            "their range, and answers take the copy (2 pi apart) nearest the seed (docs/solver.md)"]


def _write_collisions(model: RobotModel, path: Path, samples: int, progress: bool, log) -> list[str]:
    """Write the disabled-collision SRDF (as MoveIt Setup Assistant); notes on pairs that look like real
    collisions."""
    from ikdiffuser_ros.collision.srdf_collisions import (REASONS, compute_disabled_pairs, srdf_text,
                                                          suspicious_default_pairs)

    setup = compute_disabled_pairs(model, samples=samples, progress=progress)
    path.write_text(srdf_text(setup, f"ikdiffuser init-robot (samples {samples}, seed 0)"))
    log(f"wrote {path}: {len(setup.disabled)} link pairs disabled "
        f"({', '.join(f'{setup.count(r)} {r}' for r in REASONS)})")
    return [f"{a} - {b} collides in the default configuration but only in {setup.rates[(a, b)]:.1%} of the "
            f"samples: a real collision? (ikdiffuser srdf-collisions --keep {a},{b} to keep it checked)"
            for a, b in suspicious_default_pairs(setup)]


def _checked_config(robot_yaml: Path, config_groups: dict, srdf_groups: dict, log) -> tuple[RobotConfig, RobotModel]:
    """The written robot config, loaded (a failure is a bug here, not bad input: the file is kept)."""
    try:
        config = robot_config(robot_yaml)
        checked = config.load()
    except RobotConfigError as exc:
        raise InitRobotError(f"the written robot config does not load: {exc}") from None
    log(f"wrote {robot_yaml} (loads: {checked.n_joints} joints, fingerprint {checked.fingerprint()})")
    if config_groups:
        log(f"  groups {config_groups} (the SRDF has {'no usable groups' if not srdf_groups else 'none with all'}"
            f"; edit 'groups:' to rename them)")
    elif srdf_groups:
        log(f"  groups from the SRDF: {srdf_groups}")
    return config, checked


def next_steps(result: InitResult) -> str:
    """The commands from the written files to answers from the node (docs/your_robot.md)."""
    y = result.robot_yaml.absolute()
    return "\n".join([
        "next:",
        f"  OMP_NUM_THREADS=1 ikdiffuser train --robot {y} --max-minutes 120    # -> runs/{result.name}",
        f"  ikdiffuser ship runs/{result.name} --out models/{result.name}",
        f"  ros2 launch ikdiffuser_ros ikdiffuser.launch.py robot:={y} model_path:={Path('models').absolute()}"
        f"/{result.name}",
    ])


# ---------------------------------------------------------------------------- CLI
def register(subparsers) -> None:
    """Add ``init-robot`` to the ``ikdiffuser`` command."""
    p = subparsers.add_parser("init-robot",
                              help="robot config, collision SRDF, spheres and training config from a URDF",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--urdf", required=True, help="URDF or xacro: a path, file:// or package:// URI")
    p.add_argument("--srdf", nargs="+", default=[], help="SRDF file(s) of the robot (groups, end effectors)")
    p.add_argument("--name", help="robot name, also the file names (default: the URDF's robot name)")
    p.add_argument("--end-effectors", nargs="+", metavar="LINK", help="end-effector links (default: from the SRDF, "
                   "else the URDF's only moving leaf link)")
    p.add_argument("--out-dir", default=".", help="folder to write the files into (default: .)")
    p.add_argument("--xacro-arg", action="append", default=[], metavar="NAME=VALUE", help="xacro argument (repeatable)")
    p.add_argument("--samples", type=int, default=10_000,
                   help="random configurations for the self-collision pairs (default 10000)")
    p.add_argument("--force", action="store_true", help="overwrite files that exist")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    bad = [a for a in args.xacro_arg if "=" not in a]
    if bad:
        print(f"ikdiffuser init-robot: error: --xacro-arg {bad[0]!r}: expected NAME=VALUE", file=sys.stderr)
        return 2
    command = shlex.join(["ikdiffuser", "init-robot", *sys.argv[2:]]) if sys.argv[1:2] == ["init-robot"] \
        else "ikdiffuser init-robot"
    try:
        result = init_robot(args.urdf, args.srdf, args.name, args.end_effectors, args.out_dir,
                            dict(a.split("=", 1) for a in args.xacro_arg), args.samples, args.force,
                            progress=not args.no_progress and os.environ.get("TQDM_DISABLE") is None,
                            command=command)
    except IKDiffuserError as exc:
        print(f"ikdiffuser init-robot: error: {exc}", file=sys.stderr)
        return 2
    print(next_steps(result))
    return 0
