"""Locating files: ``package://`` URIs, this package's share folder, example-robot-data.

``package://<pkg>/<path>`` resolves, in order, to: this repository (or the
installed ``share/ikdiffuser_ros``) for ``ikdiffuser_ros``; the
``example-robot-data`` wheel's ``cmeel.prefix/share/example-robot-data`` for
``example-robot-data``; then ``<prefix>/share/<pkg>`` for every prefix on
``AMENT_PREFIX_PATH`` (a system ROS install). ``package:///<pkg>/<path>`` (an extra
slash, as in example-robot-data's talos URDF) is read the same way.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

from ikdiffuser_ros.errors import RobotDescriptionError

PACKAGE_NAME = "ikdiffuser_ros"


def package_share() -> Path:
    """Folder holding ``config/``, ``models/``, ``launch/``: the repo root in a source
    checkout (or editable install), else ``<prefix>/share/ikdiffuser_ros``."""
    repo = Path(__file__).resolve().parents[1]
    if (repo / "config" / "robots").is_dir():
        return repo
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) + [sys.prefix]:
        share = Path(prefix) / "share" / PACKAGE_NAME
        if (share / "config").is_dir():
            return share
    raise FileNotFoundError(f"cannot find the {PACKAGE_NAME} share folder (config/robots)")


def example_robot_data_share() -> Path:
    """``.../cmeel.prefix/share/example-robot-data`` of the installed wheel."""
    for base in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *sys.path}:
        share = Path(base) / "cmeel.prefix" / "share" / "example-robot-data"
        if share.is_dir():
            return share
    raise FileNotFoundError("example-robot-data is not installed (pip install example-robot-data)")


def package_path(package: str) -> Path:
    """Root folder of a ROS package name as used in ``package://`` URIs."""
    if package == PACKAGE_NAME:
        return package_share()
    if package == "example-robot-data":
        return example_robot_data_share()
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        share = Path(prefix) / "share" / package
        if prefix and share.is_dir():
            return share
    raise RobotDescriptionError(f"cannot resolve package {package!r} (not installed, not on AMENT_PREFIX_PATH)")


def resolve_uri(uri: str, base: Path | None = None) -> Path:
    """``package://pkg/path``, ``file:///abs`` or a path (relative to ``base``) -> a local path."""
    if uri.startswith("package://"):
        package, _, rest = uri[len("package://"):].lstrip("/").partition("/")
        return package_path(package) / rest
    if uri.startswith("file://"):
        return Path(uri[len("file://"):])
    path = Path(uri)
    return path if path.is_absolute() or base is None else base / path
