"""Fixtures for tests that need a real ROS 2 (rclpy) environment.

Everything under test/ros is marked ``ros`` and is skipped (not failed) when
rclpy or the built interfaces cannot be imported, so a plain
``pip install -e .[test]`` on a machine without ROS still runs the core tests.
Run ``make setup`` and ``source scripts/ros_env.sh`` first. Discovery is kept to
localhost (``ROS_AUTOMATIC_DISCOVERY_RANGE``, unless set).
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest

# nodes started by these tests (in-process or as processes) discover only this host
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")


def _missing(modules: tuple[str, ...]) -> str | None:
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # ImportError, or a missing shared library
            return f"{name}: {exc.__class__.__name__}: {exc}"
    return None


RCLPY_MISSING = _missing(("rclpy",))


class _SkippedRosModule(pytest.File):
    """Stands in for a test module under test/ros when rclpy is missing, so the
    module (which may import rclpy at top level) is reported as skipped."""

    def collect(self):
        pytest.skip(f"ROS 2 not available ({RCLPY_MISSING})")


def pytest_pycollect_makemodule(module_path, parent):
    if RCLPY_MISSING and module_path.name.startswith("test_"):
        return _SkippedRosModule.from_parent(parent, path=module_path)
    return None


def pytest_collection_modifyitems(config, items):
    here = str(Path(__file__).resolve().parent)
    for item in items:
        if str(Path(str(item.path)).resolve()).startswith(here):
            item.add_marker(pytest.mark.ros)


@pytest.fixture(scope="module")
def ros_context():
    """rclpy.init() for the test module, rclpy.shutdown() after it; yields the
    (default) Context, so nodes created without ``context=`` use it."""
    rclpy = pytest.importorskip("rclpy")
    from rclpy.utilities import get_default_context

    rclpy.init()
    context = get_default_context()
    try:
        yield context
    finally:
        if context.ok():
            rclpy.shutdown()


@pytest.fixture
def ros_executor(ros_context):
    """A SingleThreadedExecutor bound to ``ros_context``; nodes added to it are destroyed afterwards."""
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor(context=ros_context)
    try:
        yield executor
    finally:
        for node in list(executor.get_nodes()):
            executor.remove_node(node)
            node.destroy_node()
        executor.shutdown()
