"""Session-wide test setup.

- Each pytest session gets its own ROS_DOMAIN_ID (unless one is set), so
  parallel runs on one host don't see each other's nodes. Domain ids 20..99
  stay clear of the ids Linux's ephemeral port range collides with (> 101).
- With a colcon install tree on PYTHONPATH (scripts/ros_env.sh), the rosidl
  generated sub-packages ikdiffuser_ros.msg / ikdiffuser_ros.srv live only in
  install/; the source tree (on sys.path as cwd under `python -m pytest`, or via
  `pip install -e .`) does not have them. Merge both locations into the
  package's __path__ so either import order works and new source files are
  visible before the next rebuild.
"""
from __future__ import annotations

import os
import pkgutil
import sys
from pathlib import Path

import pytest

os.environ.setdefault("ROS_DOMAIN_ID", str(os.getpid() % 80 + 20))

REPO_ROOT = Path(__file__).resolve().parents[1]


def _merge_ikdiffuser_ros_path() -> None:
    try:
        import ikdiffuser_ros
    except Exception:  # the package's own tests will report the real error
        return
    path = getattr(ikdiffuser_ros, "__path__", None)
    if not isinstance(path, list):
        return
    merged = pkgutil.extend_path(path, "ikdiffuser_ros")
    src = str(REPO_ROOT / "ikdiffuser_ros")
    if src not in merged and os.path.isdir(src):
        merged.insert(0, src)
    path[:] = merged


_merge_ikdiffuser_ros_path()


@pytest.fixture(scope="session")
def panda():
    """The panda RobotModel, loaded once per session."""
    from ikdiffuser_ros.robots import load_robot

    return load_robot("panda")


@pytest.fixture(scope="session")
def baxter():
    """The baxter (both arms) RobotModel, loaded once per session."""
    from ikdiffuser_ros.robots import load_robot

    return load_robot("baxter")
