"""The sampling tests (sampler, refinement, objectives) run with one torch thread."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def _one_thread(one_torch_thread_session):
    """One torch thread, in place before the module-scoped fixtures that solve and ``panda_solver``."""
