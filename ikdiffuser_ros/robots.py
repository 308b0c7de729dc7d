"""The robots this project knows: ``config/robots/<name>.yaml``, or a robot YAML anywhere.

A robot file names the description and the end effectors (every key but ``urdf`` optional; the
format, with units, is in docs/your_robot.md; ``ikdiffuser init-robot`` writes one from a URDF)::

    name: baxter
    urdf: package://example-robot-data/robots/baxter_description/urdf/baxter.urdf
    srdf: [package://example-robot-data/.../baxter_manipulation.srdf]   # merged in order
    end_effectors: [left_gripper, right_gripper]
    xacro_args: {}            # for *.xacro descriptions; values may be package:// URIs
    joint_limits: {}          # name: [lower, upper] overrides, rad or m (e.g. mobile-base range)
    groups: {}                # extra planning groups for the MoveIt bridge: name: [ee links]
    locked_joints: []         # joints kept at their default (e.g. an SRDF planar base)

Paths are ``package://`` URIs, ``file://`` URIs, absolute paths or paths relative to the YAML.
:meth:`RobotConfig.from_yaml` checks the keys (an unknown key is an error naming the closest
allowed one), the types and the joint-limit ranges, and that the files exist;
:meth:`RobotConfig.load` checks that end effectors, group links, locked joints and joint-limit
names are links / joints of the URDF. Both raise :class:`RobotConfigError` naming the file.

Companion files (:meth:`RobotConfig.sphere_file`, :meth:`RobotConfig.training_config`): a robot
YAML in the package's ``config/robots/`` uses ``config/spheres/<name>.json`` and
``config/training/<stem>.yaml``; a robot YAML anywhere else, ``DIR/<stem>.yaml``, uses the files
next to it, ``DIR/<stem>.spheres.json`` and ``DIR/<stem>.training.yaml`` (what ``ikdiffuser
init-robot`` writes). Every robot config loaded in a process is remembered by name
(:func:`loaded_config`), so code that only has the RobotModel (the sphere model of the solver)
finds its sphere file.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ikdiffuser_ros.errors import RobotDescriptionError
from ikdiffuser_ros.kinematics.robot_model import RobotModel, load_description_text
from ikdiffuser_ros.resources import package_share, resolve_uri

#: The keys of a robot YAML and what each holds (the messages of :class:`RobotConfigError` list them).
ROBOT_KEYS: dict[str, str] = {
    "name": "robot name (default: the file name without .yaml)",
    "urdf": "URDF or xacro file: package:// URI, file:// URI, or a path relative to the YAML (required)",
    "srdf": "SRDF file, or a list of them merged in order (same path forms as urdf)",
    "end_effectors": "list of end-effector links (default: the SRDF's <end_effector> parent links)",
    "xacro_args": "mapping of xacro argument name -> value, for *.xacro descriptions",
    "joint_limits": "mapping of joint (variable) name -> [lower, upper] in rad or m, overriding the URDF",
    "groups": "mapping of planning-group name -> list of end-effector links (added to the SRDF's groups)",
    "locked_joints": "list of joints held at their default value (MoveIt's: 0, or the middle of a range without 0)",
}
#: Suffixes of the companion files of a robot YAML outside config/robots (module docstring).
SPHERES_SUFFIX, TRAINING_SUFFIX, COLLISIONS_SUFFIX = ".spheres.json", ".training.yaml", ".collisions.srdf"
#: Training config of a robot that has none of its own (config/training/recipe.yaml).
RECIPE = "recipe.yaml"
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class RobotConfigError(RobotDescriptionError):
    """A robot YAML with an unknown key, a value of the wrong type or range, a file that does not
    exist, or names that are not links / joints of its URDF; the message names the file."""


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or an empty string."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


@dataclass(frozen=True)
class RobotConfig:
    """One robot YAML; URIs are resolved to local paths. ``source``: the YAML it was read from."""

    name: str
    urdf: Path
    srdf: tuple[Path, ...] = ()
    end_effectors: tuple[str, ...] = ()
    xacro_args: dict[str, str] = field(default_factory=dict)
    joint_limits: dict[str, tuple[float, float]] = field(default_factory=dict)
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    locked_joints: tuple[str, ...] = ()
    source: Path | None = field(default=None, compare=False)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "RobotConfig":
        """Read and check a robot YAML (module docstring); :class:`RobotConfigError` naming the file."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise RobotConfigError(f"cannot read robot config {path}: {exc}") from None
        config = cls(**_checked_fields({} if data is None else data, path), source=path.absolute())
        _LOADED[config.name] = config
        return config

    # ------------------------------------------------------------------ companion files
    @property
    def in_package(self) -> bool:
        """True for a config read from the package's ``config/robots/`` (or built without a file)."""
        if self.source is None:
            return True
        try:
            return self.source.resolve().parent == robots_dir().resolve()
        except FileNotFoundError:
            return False

    @property
    def sphere_file(self) -> Path:
        """Where this robot's collision spheres are read and written (module docstring)."""
        if self.in_package:
            return package_share() / "config" / "spheres" / f"{self.name}.json"
        return self.source.with_name(self.source.stem + SPHERES_SUFFIX)

    @property
    def training_config(self) -> Path:
        """This robot's own training config (it may not exist; see :func:`training_config_for`)."""
        if self.in_package:
            stem = self.source.stem if self.source is not None else self.name
            return package_share() / "config" / "training" / f"{stem}.yaml"
        return self.source.with_name(self.source.stem + TRAINING_SUFFIX)

    # ------------------------------------------------------------------ descriptions
    def urdf_text(self) -> str:
        """The URDF XML (xacro expanded)."""
        return load_description_text(self.urdf, self.xacro_args)

    def srdf_texts(self) -> list[str]:
        return [load_description_text(p, self.xacro_args) for p in self.srdf]

    def load(self) -> RobotModel:
        """Build the :class:`RobotModel`; :class:`RobotConfigError` when a name in the config is not a
        link / joint of the URDF (with the closest one) or a group link is not on an end effector."""
        from ikdiffuser_ros.kinematics.srdf import parse_srdf
        from ikdiffuser_ros.kinematics.urdf import parse_urdf

        where = f"robot config {self.source}" if self.source is not None else f"robot config {self.name!r}"
        urdf = parse_urdf(self.urdf_text())
        srdf = None
        for text in self.srdf_texts():
            parsed = parse_srdf(text)
            srdf = parsed if srdf is None else srdf.merge(parsed)
        self._check_names(urdf, srdf, where)
        end_effectors = list(self.end_effectors) or list(dict.fromkeys(
            e.parent_link for e in (srdf.end_effectors if srdf else [])))
        try:
            model = RobotModel(urdf, srdf, end_effectors, self.joint_limits, self.name, self.locked_joints)
        except RobotConfigError:
            raise
        except RobotDescriptionError as exc:
            raise RobotConfigError(f"{where}: {exc}") from None
        self._check_groups(model, where)
        return model

    def _check_names(self, urdf, srdf, where: str) -> None:
        """End effectors and group links are URDF links; locked joints and the joints of joint_limits
        are URDF joints (or the SRDF's virtual joint)."""
        links = list(urdf.links)
        joints = list(urdf.joints) + [v.name for v in (srdf.virtual_joints if srdf else [])]
        for link in self.end_effectors:
            if link not in urdf.links:
                raise RobotConfigError(f"{where}: end_effectors: {link!r} is not a link of {self.urdf.name}"
                                       f"{did_you_mean(link, links)}")
        for group, tips in self.groups.items():
            for link in tips:
                if link not in urdf.links:
                    raise RobotConfigError(f"{where}: groups: {group}: {link!r} is not a link of {self.urdf.name}"
                                           f"{did_you_mean(link, links)}")
        for joint in self.locked_joints:
            if joint not in joints:
                raise RobotConfigError(f"{where}: locked_joints: {joint!r} is not a joint of {self.urdf.name}"
                                       f"{did_you_mean(joint, joints)}")
        for name in self.joint_limits:
            joint = name.split("/")[0] if name not in joints else name
            if joint not in joints:
                raise RobotConfigError(f"{where}: joint_limits: {name!r} is not a joint of {self.urdf.name}"
                                       f"{did_you_mean(name, joints)}")

    def _check_groups(self, model: RobotModel, where: str) -> None:
        """Every group link is an end effector or rigidly attached to one (else the MoveIt bridge could
        not serve the group)."""
        if not self.groups:
            return
        from ikdiffuser_ros.kinematics.frames import rigid_offsets

        usable = rigid_offsets(model)
        for group, tips in self.groups.items():
            if not tips:
                raise RobotConfigError(f"{where}: groups: {group}: no links")
            for link in tips:
                if link not in usable:
                    raise RobotConfigError(
                        f"{where}: groups: {group}: {link!r} is neither an end effector nor rigidly attached to "
                        f"one (end effectors: {model.end_effectors}); add it to end_effectors")


# ---------------------------------------------------------------------------- schema
def _checked_fields(data: object, path: Path) -> dict:
    """The keyword arguments of :class:`RobotConfig` from the parsed YAML ``data`` of ``path``."""
    where = f"robot config {path}"
    if not isinstance(data, dict):
        raise RobotConfigError(f"{where}: expected a mapping of keys ({', '.join(ROBOT_KEYS)}), "
                               f"got {type(data).__name__}")
    for key in data:
        if key not in ROBOT_KEYS:
            raise RobotConfigError(f"{where}: unknown key {key!r}{did_you_mean(str(key), list(ROBOT_KEYS))}; "
                                   f"allowed keys: {', '.join(ROBOT_KEYS)}")
    if "urdf" not in data:
        raise RobotConfigError(f"{where}: lacks 'urdf' ({ROBOT_KEYS['urdf']})")
    name = data.get("name", path.stem)
    if not isinstance(name, str) or not _NAME.match(name):
        raise RobotConfigError(f"{where}: name: {name!r} is not a name (letters, digits, '_', '.', '-')")
    srdf = data.get("srdf") or []
    srdf = [srdf] if isinstance(srdf, str) else srdf
    _expect(isinstance(srdf, list) and all(isinstance(s, str) and s for s in srdf), where, "srdf",
            "a file or a list of files", data.get("srdf"))
    return {
        "name": name,
        "urdf": _file(data["urdf"], path, "urdf"),
        "srdf": tuple(_file(s, path, "srdf") for s in srdf),
        "end_effectors": _names(data, "end_effectors", where),
        "xacro_args": _xacro_args(data.get("xacro_args"), where),
        "joint_limits": _joint_limits(data.get("joint_limits"), where),
        "groups": _groups(data.get("groups"), where),
        "locked_joints": _names(data, "locked_joints", where),
    }


def _expect(ok: bool, where: str, key: str, what: str, value: object) -> None:
    if not ok:
        raise RobotConfigError(f"{where}: {key}: expected {what}, got {value!r}")


def _file(uri: object, path: Path, key: str) -> Path:
    """The local path of file ``uri`` of key ``key``; it must exist."""
    where = f"robot config {path}"
    _expect(isinstance(uri, str) and bool(uri), where, key, "a file (package:// URI or path)", uri)
    try:
        local = resolve_uri(uri, path.parent)
    except (RobotDescriptionError, FileNotFoundError) as exc:
        raise RobotConfigError(f"{where}: {key}: {exc}") from None
    if not local.is_file():
        raise RobotConfigError(f"{where}: {key}: {uri!r} is not a file ({local})")
    return local


def _names(data: dict, key: str, where: str) -> tuple[str, ...]:
    """A list of distinct non-empty strings (absent or null: empty)."""
    value = data.get(key) or []
    _expect(isinstance(value, list) and all(isinstance(v, str) and v for v in value), where, key,
            "a list of names, e.g. [a, b]", value)
    if len(set(value)) != len(value):
        raise RobotConfigError(f"{where}: {key}: listed twice: {sorted({v for v in value if value.count(v) > 1})}")
    return tuple(value)


def _mapping(value: object, where: str, key: str, what: str) -> dict:
    value = {} if value is None else value
    _expect(isinstance(value, dict) and all(isinstance(k, str) and k for k in value), where, key,
            f"a mapping of {what}", value)
    return value


def _xacro_args(value: object, where: str) -> dict[str, str]:
    value = _mapping(value, where, "xacro_args", "argument name -> value")
    out = {}
    for k, v in value.items():
        _expect(isinstance(v, (str, int, float, bool)), where, f"xacro_args: {k}", "a string or number", v)
        out[k] = str(resolve_uri(v)) if str(v).startswith("package://") else str(v)
    return out


def _number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _joint_limits(value: object, where: str) -> dict[str, tuple[float, float]]:
    value = _mapping(value, where, "joint_limits", "joint name -> [lower, upper]")
    out = {}
    for k, v in value.items():
        _expect(isinstance(v, list) and len(v) == 2 and all(_number(x) for x in v), where, f"joint_limits: {k}",
                "[lower, upper], two finite numbers in rad or m", v)
        if not v[0] < v[1]:
            raise RobotConfigError(f"{where}: joint_limits: {k}: lower {v[0]} is not below upper {v[1]}")
        out[k] = (float(v[0]), float(v[1]))
    return out


def _groups(value: object, where: str) -> dict[str, tuple[str, ...]]:
    value = _mapping(value, where, "groups", "group name -> [links]")
    return {k: _names({k: v}, k, f"{where}: groups") for k, v in value.items()}


# ---------------------------------------------------------------------------- lookup
#: The robot configs read in this process, by robot name (the latest read wins).
_LOADED: dict[str, RobotConfig] = {}


def loaded_config(name: str) -> RobotConfig | None:
    """The robot config named ``name`` read last in this process (None if none was)."""
    return _LOADED.get(name)


def robots_dir() -> Path:
    return package_share() / "config" / "robots"


def available_robots() -> list[str]:
    """Names of the robots in ``config/robots``."""
    return sorted(p.stem for p in robots_dir().glob("*.yaml"))


def robot_config(name: str | Path) -> RobotConfig:
    """The config of a known robot name, or of a path to a robot YAML."""
    path = Path(name)
    if not path.suffix:
        path = robots_dir() / f"{name}.yaml"
        if not path.is_file():
            raise RobotConfigError(f"unknown robot {str(name)!r}{did_you_mean(str(name), available_robots())}; known "
                                   f"robots: {', '.join(available_robots())} (or give the path of a robot YAML)")
    elif not path.is_file():
        raise RobotConfigError(f"robot config {path} does not exist")
    return RobotConfig.from_yaml(path)


def load_robot(name: str | Path) -> RobotModel:
    """``load_robot('baxter')`` -> the :class:`RobotModel` of ``config/robots/baxter.yaml``."""
    return robot_config(name).load()


def training_config_for(robot: str | Path) -> Path:
    """The training config ``ikdiffuser train --robot ROBOT`` uses by default: the robot's own
    (:attr:`RobotConfig.training_config`) when it exists, else the recipe."""
    folder = package_share() / "config" / "training"
    path = Path(robot)
    if path.suffix and path.is_file():
        own = RobotConfig(path.stem, path, source=path.absolute()).training_config
    else:
        own = folder / f"{path.stem}.yaml"
    return own if own.is_file() else folder / RECIPE


def sphere_file_for(name: str) -> Path:
    """The sphere file of robot ``name``: its loaded config's (:attr:`RobotConfig.sphere_file`), else
    ``config/spheres/<name>.json``."""
    config = loaded_config(name)
    return config.sphere_file if config is not None else package_share() / "config" / "spheres" / f"{name}.json"
