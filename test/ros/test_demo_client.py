"""``make demo`` (ikdiffuser_ros/ros/demo_client.py) leaves a fresh checkout unmodified: its picture goes to
a git-ignored path, not to a tracked file."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ik_helpers import REPO


def test_default_picture_path_is_git_ignored():
    from ikdiffuser_ros.ros.demo_client import _parse_args

    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    png = _parse_args([]).png
    assert not Path(png).is_absolute(), png
    tracked = subprocess.run(["git", "ls-files", "--error-unmatch", png], cwd=REPO, capture_output=True)
    ignored = subprocess.run(["git", "check-ignore", "-q", "--no-index", png], cwd=REPO)
    assert tracked.returncode != 0, f"{png} is a tracked file"
    assert ignored.returncode == 0, f"{png} is not git-ignored"
