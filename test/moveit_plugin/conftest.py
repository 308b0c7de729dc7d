"""Fixtures of the plugin's test modules: each names its robot (``ROBOT``) and its node (``NODE``)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from plugin_helpers import node_process  # noqa: E402


@pytest.fixture(scope="module")
def folder(request, tmp_path_factory) -> Path:
    """The module's folder: the expanded URDF, a tiny checkpoint if none is shipped, the node's log."""
    return tmp_path_factory.mktemp(f"plugin_{request.module.ROBOT}")


@pytest.fixture(scope="module")
def node(request, folder):
    """ikdiffuser_node for the module's robot (its robot config's groups) as a process named the module's NODE."""
    with node_process(request.module.ROBOT, request.module.NODE, folder) as proc:
        yield proc
