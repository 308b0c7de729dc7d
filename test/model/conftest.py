"""The model tests run with one torch thread; ``make_loaded`` (a tiny untrained LoadedModel) is in test/conftest.py."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _single_thread(one_torch_thread):
    """Small tensors: one intra-op thread is faster and avoids oversubscribing a shared CPU."""
