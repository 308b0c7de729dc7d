"""The tests of this folder run with one torch thread (each test; restored after it)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _single_thread(one_torch_thread):
    """Small tensors: one intra-op thread is faster and avoids oversubscribing a shared CPU."""
