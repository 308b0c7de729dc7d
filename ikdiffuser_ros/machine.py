"""The machine numbers are measured on, as model cards and benchmark reports name it."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name (``model name`` in /proc/cpuinfo on Linux), else ``platform.processor()``,
    else the architecture (``platform.machine()``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
