"""The robots this project knows: ``config/robots/<name>.yaml``.

A robot file names the description and the end effectors::

    name: baxter
    urdf: package://example-robot-data/robots/baxter_description/urdf/baxter.urdf
    srdf: [package://example-robot-data/.../baxter_manipulation.srdf]   # merged in order
    end_effectors: [left_gripper, right_gripper]
    xacro_args: {}            # for *.xacro descriptions; values may be package:// URIs
    joint_limits: {}          # name: [lower, upper] overrides (e.g. mobile-base range)
    groups: {}                # extra planning groups for the MoveIt bridge: name: [ee links]
    locked_joints: []         # joints kept at their default (e.g. an SRDF planar base)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ikdiffuser_ros.errors import RobotDescriptionError
from ikdiffuser_ros.kinematics.robot_model import RobotModel, load_description_text
from ikdiffuser_ros.resources import package_share, resolve_uri


@dataclass(frozen=True)
class RobotConfig:
    """One ``config/robots/<name>.yaml``; URIs are resolved to local paths."""

    name: str
    urdf: Path
    srdf: tuple[Path, ...] = ()
    end_effectors: tuple[str, ...] = ()
    xacro_args: dict[str, str] = field(default_factory=dict)
    joint_limits: dict[str, tuple[float, float]] = field(default_factory=dict)
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    locked_joints: tuple[str, ...] = ()

    @classmethod
    def from_yaml(cls, path: str | Path) -> "RobotConfig":
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise RobotDescriptionError(f"cannot read robot config {path}: {exc}") from None
        if "urdf" not in data:
            raise RobotDescriptionError(f"robot config {path} lacks 'urdf'")
        srdf = data.get("srdf") or []
        srdf = [srdf] if isinstance(srdf, str) else srdf
        xacro_args = {
            k: str(resolve_uri(v)) if str(v).startswith("package://") else str(v)
            for k, v in (data.get("xacro_args") or {}).items()
        }
        return cls(
            name=data.get("name", path.stem),
            urdf=resolve_uri(data["urdf"], path.parent),
            srdf=tuple(resolve_uri(s, path.parent) for s in srdf),
            end_effectors=tuple(data.get("end_effectors") or ()),
            xacro_args=xacro_args,
            joint_limits={k: tuple(v) for k, v in (data.get("joint_limits") or {}).items()},
            groups={k: tuple(v) for k, v in (data.get("groups") or {}).items()},
            locked_joints=tuple(data.get("locked_joints") or ()),
        )

    def urdf_text(self) -> str:
        """The URDF XML (xacro expanded)."""
        return load_description_text(self.urdf, self.xacro_args)

    def srdf_texts(self) -> list[str]:
        return [load_description_text(p, self.xacro_args) for p in self.srdf]

    def load(self) -> RobotModel:
        """Build the :class:`RobotModel`."""
        return RobotModel.from_urdf(
            self.urdf_text(), self.srdf_texts() or None, list(self.end_effectors) or None, self.joint_limits,
            name=self.name, locked_joints=self.locked_joints,
        )


def robots_dir() -> Path:
    return package_share() / "config" / "robots"


def available_robots() -> list[str]:
    """Names of the robots in ``config/robots``."""
    return sorted(p.stem for p in robots_dir().glob("*.yaml"))


def robot_config(name: str) -> RobotConfig:
    """The config of a known robot name, or of a path to a robot YAML."""
    path = Path(name)
    if not path.suffix:
        path = robots_dir() / f"{name}.yaml"
    if not path.is_file():
        raise RobotDescriptionError(f"unknown robot {name!r}; known robots: {', '.join(available_robots())}")
    return RobotConfig.from_yaml(path)


def load_robot(name: str) -> RobotModel:
    """``load_robot('baxter')`` -> the :class:`RobotModel` of ``config/robots/baxter.yaml``."""
    return robot_config(name).load()
