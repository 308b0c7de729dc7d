"""``ros2 launch ikdiffuser_ros ikdiffuser.launch.py`` executed for real, as a subprocess.

For each shipped robot (models/*/card.json with node parameters in config/<robot>.yaml) one
launch brings up a node whose ``get_ik_solutions`` answers a request, each returned solution
checked by forward kinematics, and SIGINT then ends everything cleanly with no process left. More
launches show the ``model_path``, ``device``, ``params_file``, ``namespace``, ``node_name``,
``log_level`` and ``use_sim_time`` arguments reach the node; bad values end the launched node with
one clear error and a non-zero exit. ``ros2 run`` starts the
same executable.

Needs ``launch``, ``launch_ros``, the ``ros2`` command and ``composition_interfaces``:
``make setup`` installs them when ``../shared/wheels/launch`` exists; otherwise these tests skip.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from ik_helpers import REPO, pose_stamped, reachable_poses, spin_until, train_tiny


def _launch_missing() -> str | None:
    """What is missing for ``ros2 launch`` here, or None."""
    for name in ("launch", "launch_ros", "ros2launch", "composition_interfaces.srv"):
        try:
            importlib.import_module(name)
        except Exception as exc:  # ImportError, or a missing shared library
            return f"{name}: {exc.__class__.__name__}: {exc}"
    if shutil.which("ros2") is None:
        return "no `ros2` command on PATH"
    return None


LAUNCH_MISSING = _launch_missing()
pytestmark = [
    pytest.mark.ros,
    pytest.mark.skipif(LAUNCH_MISSING is not None,
                       reason=f"launch/ros2cli not installed ({LAUNCH_MISSING}); `make setup` installs them "
                              "from ../shared/wheels/launch when that folder exists"),
]

READY_S = 120.0  # node start-up on a loaded 2-core CPU: torch import, model load, warm-up solve
EXIT_S = 30.0


def shipped_robots() -> list[str]:
    """Robots with a checkpoint in models/ and node parameters in config/<robot>.yaml."""
    names = set()
    for card in (REPO / "models").glob("*/card.json"):
        name = json.loads(card.read_text())["robot"]["name"]
        if (REPO / "config" / f"{name}.yaml").is_file():
            names.add(name)
    return sorted(names)


def session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes of session ``sid``."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


class Launched:
    """``ros2 launch ikdiffuser_ros ikdiffuser.launch.py <name>:=<value>...`` in a session of its own
    (so every process it starts can be found), its output in ``log``."""

    def __init__(self, log: Path, **arguments: str) -> None:
        self.log = log
        cmd = ["ros2", "launch", "ikdiffuser_ros", "ikdiffuser.launch.py", *(f"{k}:={v}" for k, v in arguments.items())]
        with log.open("w") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def output(self) -> str:
        return self.log.read_text()

    def wait_for(self, text: str, timeout_s: float = READY_S) -> None:
        """Until ``text`` is in the output; fails when the launch exits or the time is up first."""
        deadline = time.monotonic() + timeout_s
        while text not in self.output():
            assert self.proc.poll() is None, f"ros2 launch exited ({self.proc.returncode}):\n{self.output()}"
            assert time.monotonic() < deadline, f"no {text!r} within {timeout_s} s:\n{self.output()}"
            time.sleep(0.2)

    def wait_exit(self, timeout_s: float = EXIT_S) -> int:
        """The exit status of ``ros2 launch``; fails when it is still running after ``timeout_s``."""
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pytest.fail(f"ros2 launch still running after {timeout_s} s:\n{self.output()}")

    def interrupt(self) -> int:
        """SIGINT to ``ros2 launch`` alone (it must pass it on to the node), then its exit status."""
        self.proc.send_signal(signal.SIGINT)
        return self.wait_exit()

    def __enter__(self) -> Launched:
        return self

    def __exit__(self, *exc) -> None:
        for pid in session_members(self.proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait()


@pytest.fixture(scope="module")
def client(ros_context):
    """An rclpy node (and its executor) for calling the launched node's services."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    node = rclpy.create_node("ikd_launch_test_client", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    yield node, executor
    executor.shutdown()
    node.destroy_node()


def call(client, srv_type, name: str, request, timeout_s: float = 60.0):
    """``request`` to service ``name`` once it is up."""
    node, executor = client
    cli = node.create_client(srv_type, name)
    try:
        deadline = time.monotonic() + timeout_s
        while not cli.service_is_ready():
            assert time.monotonic() < deadline, f"{name} did not come up"
            executor.spin_once(timeout_sec=0.1)
        return spin_until(executor, cli.call_async(request), timeout_s)
    finally:
        node.destroy_client(cli)


def node_parameters(client, names: list[str], node: str = "/ikdiffuser_node") -> dict:
    """The launched node's parameter values (rcl_interfaces GetParameters)."""
    from rcl_interfaces.srv import GetParameters
    from rclpy.parameter import parameter_value_to_python

    res = call(client, GetParameters, f"{node}/get_parameters", GetParameters.Request(names=names))
    return {n: parameter_value_to_python(v) for n, v in zip(names, res.values)}


def solve_and_check_by_fk(client, robot: str, num_solutions: int = 8, node: str = "/ikdiffuser_node") -> int:
    """One reachable target for all end effectors of ``robot`` to the launched node's
    ``get_ik_solutions``; every returned solution's FK must reach it. Returns the solution count."""
    import torch
    from builtin_interfaces.msg import Duration

    from ikdiffuser_ros.msg import IKTarget
    from ikdiffuser_ros.robots import load_robot
    from ikdiffuser_ros.srv import GetIKSolutions

    model = load_robot(robot)
    _, T = reachable_poses(model, seed=3)
    req = GetIKSolutions.Request(num_solutions=num_solutions, random_seed=0, timeout=Duration(sec=30))
    req.targets = [IKTarget(link_names=list(model.end_effectors), poses=[pose_stamped(t) for t in T[0]])]
    res = call(client, GetIKSolutions, f"{node}/get_ik_solutions", req)
    assert res.error_code == GetIKSolutions.Request.SUCCESS, res.message
    result = res.results[0]
    assert 0 < result.num_solutions <= (num_solutions or result.num_solutions)
    # each solution a JointState: the model's joints picked by name
    q = np.array([[dict(zip(js.name, js.position))[j] for j in model.joint_names] for js in result.solutions])
    T_sol = model.fk(torch.as_tensor(q, dtype=torch.float64)).numpy()  # (k, E, 4, 4)
    position_error = np.linalg.norm(T_sol[..., :3, 3] - T[0][None, :, :3, 3], axis=-1)
    cos = (np.einsum("keij,eij->ke", T_sol[..., :3, :3], T[0][:, :3, :3]) - 1.0) / 2.0
    rotation_error = np.arccos(np.clip(cos, -1.0, 1.0))
    assert position_error.max() <= 2e-5, position_error
    assert rotation_error.max() <= 2e-4, rotation_error
    return result.num_solutions


def assert_clean_sigint(launched: Launched) -> None:
    """The node is running; SIGINT to ros2 launch ends it and the node cleanly, leaving no process."""
    assert len(session_members(launched.proc.pid)) >= 2, "the node process is not running"
    assert launched.interrupt() == 0, launched.output()
    out = launched.output()
    assert "process has finished cleanly" in out, out
    assert "Traceback" not in out and "process has died" not in out, out
    assert session_members(launched.proc.pid) == [], f"processes left behind:\n{out}"


@pytest.mark.parametrize("robot", shipped_robots())
def test_launch_serves_robot_and_exits_on_sigint(client, robot, tmp_path):
    with Launched(tmp_path / "launch.log", robot=robot) as launched:
        launched.wait_for("ready in")
        solve_and_check_by_fk(client, robot)
        assert node_parameters(client, ["robot"]) == {"robot": robot}
        assert_clean_sigint(launched)


def baxter_params_file(tmp_path: Path, **overrides) -> str:
    """config/baxter.yaml with ``overrides`` of its node parameters, written to ``tmp_path``."""
    import yaml

    params = yaml.safe_load((REPO / "config" / "baxter.yaml").read_text())
    params["ikdiffuser_node"]["ros__parameters"].update(overrides)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return str(path)


def test_launch_arguments_reach_the_node(client, tmp_path_factory, tmp_path):
    """model_path, device and params_file (here with default_num_solutions 3) are what the node uses."""
    model = train_tiny("baxter", tmp_path_factory.getbasetemp() / "tiny_baxter")
    params_file = baxter_params_file(tmp_path, default_num_solutions=3)
    with Launched(tmp_path / "launch.log", robot="baxter", model_path=str(model), device="cpu",
                  params_file=params_file) as launched:
        launched.wait_for("ready in")
        assert f"model {model} on cpu" in launched.output()
        assert node_parameters(client, ["model_path", "device", "default_num_solutions"]) == {
            "model_path": str(model), "device": "cpu", "default_num_solutions": 3}
        assert solve_and_check_by_fk(client, "baxter", num_solutions=0) <= 3
        assert_clean_sigint(launched)


def test_namespace_name_log_level_and_sim_time_reach_the_node(client, tmp_path_factory, tmp_path):
    """namespace, node_name, log_level and use_sim_time: the node serves as /ikd_ns/ikd_named, with
    config/baxter.yaml's parameters (keyed ikdiffuser_node) applied under that name, sim time on and
    debug logging."""
    from moveit_msgs.srv import GetPlanningScene

    model = train_tiny("baxter", tmp_path_factory.getbasetemp() / "tiny_baxter")
    asked = []
    client_node, executor = client
    # the node asks /get_planning_scene from a timer: it must run on wall time, with no /clock published
    scene_service = client_node.create_service(GetPlanningScene, "/get_planning_scene",
                                               lambda req, res: asked.append(True) or res)
    try:
        with Launched(tmp_path / "launch.log", robot="baxter", model_path=str(model), namespace="ikd_ns",
                      node_name="ikd_named", log_level="debug", use_sim_time="true") as launched:
            launched.wait_for("ready in")
            node = "/ikd_ns/ikd_named"
            assert node_parameters(client, ["use_sim_time", "robot", "robot_description_timeout"], node) == {
                "use_sim_time": True, "robot": "baxter", "robot_description_timeout": 2.0}
            assert solve_and_check_by_fk(client, "baxter", node=node) > 0
            deadline = time.monotonic() + 10.0
            while not asked and time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.1)
            assert asked, "the node's timers did not run under use_sim_time"
            out = launched.output()
            assert "[ikd_ns.ikd_named]: ready in" in out and "[DEBUG]" in out, out
            assert_clean_sigint(launched)
    finally:
        client_node.destroy_service(scene_service)


def test_params_file_without_a_section_for_the_node_is_refused(tmp_path):
    """A parameters file whose sections are all for other nodes would apply nothing: the launch refuses it."""
    other = tmp_path / "other.yaml"
    other.write_text("some_other_node:\n  ros__parameters:\n    robot: panda\n")
    with Launched(tmp_path / "launch.log", robot="baxter", params_file=str(other)) as launched:
        assert launched.wait_exit() != 0, launched.output()
        out = launched.output()
        assert "has no section for this node" in out and "some_other_node" in out, out
        assert "process started" not in out, out


@pytest.mark.parametrize("argument, value, message", [
    pytest.param("model_path", "/nonexistent/model", "model_path '/nonexistent/model' does not exist", id="model_path"),
    pytest.param("device", "tpu", "device='tpu': expected cpu, cuda or cuda:<index>", id="device"),
    pytest.param("params_file", lambda tmp_path: baxter_params_file(tmp_path, default_num_solutions=0),
                 "default_num_solutions", id="params_file"),
])
def test_bad_argument_ends_the_node_with_one_clear_error(argument, value, message, tmp_path):
    """The node starts, says what is wrong in one line and exits 1; ros2 launch then ends too."""
    value = value(tmp_path) if callable(value) else value
    with Launched(tmp_path / "launch.log", robot="baxter", **{argument: value}) as launched:
        launched.wait_exit(READY_S)
        out = launched.output()
        errors = [line for line in out.splitlines() if "cannot start" in line]
        assert len(errors) == 1 and message in errors[0], out
        assert "process has died" in out and "exit code 1" in out, out
        assert "Traceback" not in out, out
        assert session_members(launched.proc.pid) == [], out


def test_missing_params_file_is_refused_by_the_launch(tmp_path):
    """launch_ros alone would only warn and start the node without it: the launch file refuses."""
    with Launched(tmp_path / "launch.log", robot="baxter", params_file="/nonexistent/params.yaml") as launched:
        assert launched.wait_exit() != 0, launched.output()
        out = launched.output()
        errors = [line for line in out.splitlines() if "[ERROR]" in line]
        assert len(errors) == 1 and "params_file '/nonexistent/params.yaml' is not a file" in errors[0], out
        assert "process started" not in out, out


def test_ros2_run_starts_the_installed_executable():
    """``ros2 run ikdiffuser_ros ikdiffuser_node`` finds the installed node and passes --ros-args on
    (a bad device: it exits at once with the node's own message)."""
    res = subprocess.run(["ros2", "run", "ikdiffuser_ros", "ikdiffuser_node", "--ros-args", "-p", "device:=tpu"],
                         capture_output=True, text=True, timeout=READY_S)
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    assert "device='tpu': expected cpu, cuda or cuda:<index>" in out and "Traceback" not in out, out
