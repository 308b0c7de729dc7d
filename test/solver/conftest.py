"""The solver tests run with one torch thread; ``panda_solver`` and ``pk_panda_fk`` are in test/conftest.py."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def _one_thread(one_torch_thread_session):
    """One torch thread, in place before the session-scoped solver fixture trains its tiny model."""
