"""The ``ros2`` commands of docs/ros_node.md "From the command line", run as written.

The installed ``ikdiffuser_node`` runs as a process on Baxter (config/baxter.yaml; the shipped model, else a
tiny one trained here); each command of the block (``ros2 node list``, ``ros2 interface show``, ``ros2 param
get/set``, ``ros2 service call ... get_ik_solutions``) must exit 0 and print what its ``# ->`` comment shows.
The ``ros2`` daemon these commands start is stopped afterwards unless it was running before.

Needs ``ros2 service|param|topic|interface|node``: ``make setup`` installs them when
``../shared/wheels/ros2cli`` (and ``../shared/wheels/launch``) exist; otherwise these tests skip.
"""
from __future__ import annotations

import importlib
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ik_helpers import REPO, installed_executable, node_env, shipped_model_for, stop_process, train_tiny

DOC = REPO / "docs" / "ros_node.md"
SECTION = "## From the command line"
READY_S = 60.0  # node start-up on a loaded 2-core CPU
COMMAND_S = 30.0


def _ros2cli_missing() -> str | None:
    """What is missing for the ``ros2`` commands of the docs here, or None."""
    for name in ("ros2service", "ros2param", "ros2interface", "ros2node", "ros2topic", "rosidl_runtime_py"):
        try:
            importlib.import_module(name)
        except Exception as exc:  # ImportError, or a missing shared library
            return f"{name}: {exc.__class__.__name__}: {exc}"
    return "no `ros2` command on PATH" if shutil.which("ros2") is None else None


ROS2CLI_MISSING = _ros2cli_missing()
pytestmark = [
    pytest.mark.ros,
    pytest.mark.skipif(ROS2CLI_MISSING is not None,
                       reason=f"ros2 service/param/interface/node not installed ({ROS2CLI_MISSING}); `make setup` "
                              "installs them from ../shared/wheels/ros2cli when that folder exists"),
]


@dataclass(frozen=True)
class DocCommand:
    """One command of the docs' block: its argv, the fragments its output must show in order, its text."""

    argv: list[str]
    expect: list[str]
    text: str


def doc_block(markdown: str, heading: str = SECTION) -> list[str]:
    """Lines of the first fenced ``bash`` block after ``heading``."""
    after = markdown.split(heading, 1)[1]
    match = re.search(r"```bash\n(.*?)```", after, re.S)
    assert match, f"docs/ros_node.md: no ```bash block after {heading!r}"
    return match.group(1).splitlines()


def doc_commands(lines: list[str]) -> list[DocCommand]:
    """Commands (``\\`` continuations joined) with the ``# -> a ... b`` fragments that follow them (same or
    next line); other comment lines are skipped."""
    commands: list[tuple[str, str]] = []
    pending = ""
    for line in lines:
        code, _, expect = line.partition("# ->")
        if pending or code.strip():
            pending += code.rstrip().removesuffix("\\")
            if code.rstrip().endswith("\\"):
                continue
            commands.append((pending.strip(), ""))
            pending = ""
        if expect.strip():
            commands[-1] = (commands[-1][0], expect.strip())
    return [DocCommand(shlex.split(text), [f.strip() for f in expect.split("...") if f.strip()], text)
            for text, expect in commands if not text.startswith("#")]


def shows_in_order(output: str, fragments: list[str]) -> bool:
    """True if every fragment occurs in ``output``, each after the previous one."""
    pos = 0
    for fragment in fragments:
        pos = output.find(fragment, pos)
        if pos < 0:
            return False
        pos += len(fragment)
    return True


def _ros2(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ros2", *args], capture_output=True, text=True, timeout=COMMAND_S, env=node_env(),
                          cwd="/tmp")


@pytest.fixture(scope="module")
def daemon_stopped_afterwards() -> Iterator[None]:
    """A fresh ros2 daemon for the tests (a running one may still list nodes of earlier runs, which
    it drops later, when discovery has not yet seen this one); stopped afterwards, restarted if it ran."""
    running = "is running" in _ros2("daemon", "status").stdout
    _ros2("daemon", "stop")
    yield
    _ros2("daemon", "stop")
    if running:
        _ros2("daemon", "start")


@pytest.fixture(scope="module")
def baxter_node(tmp_path_factory, daemon_stopped_afterwards) -> Iterator[subprocess.Popen]:
    """The installed node named ``ikdiffuser_node`` on Baxter, ready to answer."""
    if not installed_executable().is_file():
        pytest.skip("install tree missing: run `make setup`")
    cmd = [sys.executable, str(installed_executable()), "--ros-args", "--params-file", str(REPO / "config" / "baxter.yaml"),
           "-p", "robot_description_timeout:=0.0"]
    if not shipped_model_for("baxter"):
        cmd += ["-p", f"model_path:={train_tiny('baxter', tmp_path_factory.getbasetemp() / 'tiny_baxter')}"]
    log = tmp_path_factory.mktemp("ros2_cli") / "node.log"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True, env=node_env())
    try:
        _wait_ready(proc, log)
        _wait_discovered()
        yield proc
    finally:
        stop_process(proc, timeout=20)


def _wait_ready(proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + READY_S
    while "ready in" not in log.read_text():
        assert proc.poll() is None, f"the node exited ({proc.returncode}):\n{log.read_text()}"
        assert time.monotonic() < deadline, f"the node was not ready within {READY_S} s:\n{log.read_text()}"
        time.sleep(0.2)


def _wait_discovered() -> None:
    """Until the ros2 daemon (started by the first ``ros2`` call) has discovered the node, as a user
    would wait after starting it: DDS discovery takes a moment, during which `ros2 node list` is empty."""
    deadline, seen = time.monotonic() + READY_S, 0
    while seen < 3:  # three answers in a row: discovery has settled
        seen = seen + 1 if "/ikdiffuser_node" in _ros2("node", "list").stdout else 0
        assert time.monotonic() < deadline, f"the ros2 daemon did not discover the node within {READY_S} s"
        time.sleep(0.3)


def test_doc_block_parses():
    commands = doc_commands(doc_block(DOC.read_text()))
    verbs = {" ".join(c.argv[:3]) for c in commands}
    assert {"ros2 node list", "ros2 param get", "ros2 param set"} <= verbs, verbs
    assert any(c.argv[1:3] == ["interface", "show"] for c in commands)
    call = [c for c in commands if c.argv[1:3] == ["service", "call"]]
    assert call and call[0].argv[3].endswith("/get_ik_solutions") and call[0].expect
    assert all(c.argv[0] == "ros2" and c.expect for c in commands), [c.text for c in commands if not c.expect]


def test_doc_commands_run_as_written(baxter_node):
    for command in doc_commands(doc_block(DOC.read_text())):
        res = _ros2(*command.argv[1:])
        output = res.stdout + res.stderr
        assert res.returncode == 0, f"`{command.text}` exited {res.returncode}:\n{output}"
        assert shows_in_order(output, command.expect), f"`{command.text}` printed:\n{output}\nnot {command.expect}"
