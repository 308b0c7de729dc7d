"""Session fixtures for the kinematics tests (reference helpers live in ``kinref.py``).

- ``robot(name)``: the cached :class:`RobotModel` of ``config/robots/<name>.yaml``.
- ``urdf_text(name)``: its expanded URDF XML.
- ``pk_chain(xml, end_link, root_link='')``: a cached float64 pytorch_kinematics SerialChain.

These tests run torch single-threaded (restored afterwards): their tensors are small, and on a
shared CPU every multi-threaded op waits for a descheduled worker (a 10x slower folder).
"""

from __future__ import annotations

import functools

import pytest

from ikdiffuser_ros.robots import robot_config
from kinref import pk_serial_chain


@functools.lru_cache(maxsize=None)
def _robot(name: str):
    return robot_config(name).load()


@functools.lru_cache(maxsize=None)
def _urdf_text(name: str) -> str:
    return robot_config(name).urdf_text()


@pytest.fixture(scope="session")
def robot():
    return _robot


@pytest.fixture(scope="session")
def urdf_text():
    return _urdf_text


@pytest.fixture(scope="session")
def pk_chain():
    return functools.lru_cache(maxsize=None)(pk_serial_chain)


@pytest.fixture(autouse=True, scope="package")
def _single_thread(one_torch_thread_session):
    """One torch thread (``one_torch_thread_session`` of test/conftest.py)."""
