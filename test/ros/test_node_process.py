"""The installed ``ikdiffuser_node`` executable (install/ikdiffuser_ros/lib/ikdiffuser_ros/) as a process:
robot description from the transient-local topics, a real service call, a clean SIGINT exit, and
start-up failures (wrong / missing / corrupt model, bad parameter) exiting non-zero with one clear
message naming the fingerprints."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros

import rclpy  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402

from ik_helpers import (  # noqa: E402
    installed_executable, pose_stamped, run_installed, shipped_model_for, spin_until, train_tiny,
)


@pytest.fixture(scope="module")
def tiny_baxter(tmp_path_factory):
    return train_tiny("baxter", tmp_path_factory.getbasetemp() / "tiny_baxter")


@pytest.fixture(scope="module", autouse=True)
def _installed():
    if not installed_executable().is_file():
        pytest.skip("install tree missing: run `make setup`")


def _args(**params) -> list[str]:
    out = ["--ros-args", "-r", "__node:=ikd_proc_node"]
    for k, v in params.items():
        out += ["-p", f"{k}:={v}"]
    return out


def test_topic_description_service_call_and_sigint(ros_context, tiny_baxter):
    from std_msgs.msg import String

    from ikdiffuser_ros.msg import IKTarget
    from ikdiffuser_ros.robots import robot_config
    from ikdiffuser_ros.srv import GetIKSolutions

    cfg = robot_config("baxter")
    node = rclpy.create_node("ikd_description_publisher", context=ros_context)
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    # relative topic names, resolved in the node's namespace (here /), as MoveIt does
    node.create_publisher(String, "robot_description", qos).publish(String(data=cfg.urdf_text()))
    node.create_publisher(String, "robot_description_semantic", qos).publish(String(data=cfg.srdf_texts()[0]))
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    proc = subprocess.Popen([sys.executable, str(installed_executable()),
                             *_args(model_path=str(tiny_baxter), robot_description_timeout=30.0)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        client = node.create_client(GetIKSolutions, "/ikd_proc_node/get_ik_solutions")
        deadline = time.monotonic() + 90
        while not client.service_is_ready() and time.monotonic() < deadline and proc.poll() is None:
            executor.spin_once(timeout_sec=0.1)
        assert client.service_is_ready(), "the node did not come up"
        robot = cfg.load()
        q = robot.default_positions().clone()
        q[robot.index_of("left_e1")] = 1.0
        T = robot.fk(q).numpy()
        req = GetIKSolutions.Request(num_solutions=8, random_seed=0)
        req.targets = [IKTarget(link_names=["left_gripper", "right_gripper"],
                                poses=[pose_stamped(T[0]), pose_stamped(T[1])])]
        res = spin_until(executor, client.call_async(req), 60)
        assert res.error_code == 1, res.message
        assert res.results[0].num_solutions > 0
        assert max(res.results[0].position_errors) <= 0.005
        assert _parameters(executor, node, "/ikd_proc_node", ["model_path"]) == {"model_path": str(tiny_baxter)}
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        assert ("waiting up to 30 s (robot_description_timeout) for /robot_description and "
                "/robot_description_semantic") in out, out
        assert "robot_description received on its topic" in out
        assert "sampler plan: ddim, 20 steps + 0 tail passes (the default: the checkpoint card has no sampling plan" \
            in out, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        executor.shutdown()
        node.destroy_node()


def _parameters(executor, client_node, node_name: str, names: list[str]) -> dict:
    """Parameter values of a running node (rcl_interfaces GetParameters)."""
    from rcl_interfaces.srv import GetParameters
    from rclpy.parameter import parameter_value_to_python

    client = client_node.create_client(GetParameters, f"{node_name}/get_parameters")
    try:
        assert client.wait_for_service(timeout_sec=20.0)
        res = spin_until(executor, client.call_async(GetParameters.Request(names=names)), 20)
        return {n: parameter_value_to_python(v) for n, v in zip(names, res.values)}
    finally:
        client_node.destroy_client(client)


def test_waiting_for_the_description_is_logged_first():
    """No description parameters: the node says what it waits for and how long before it waits, then
    (nothing came, no robot config) exits with one error."""
    res = run_installed(_args(robot_description_timeout=0.5), timeout=60)
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    lines = out.splitlines()
    waiting = next(i for i, line in enumerate(lines) if "waiting up to 0.5 s (robot_description_timeout) for "
                   "/robot_description and /robot_description_semantic" in line)
    error = next(i for i, line in enumerate(lines) if "[ERROR]" in line)
    assert waiting < error and "no robot description" in lines[error], out


def _fingerprint() -> str:
    from ikdiffuser_ros.robots import load_robot

    return load_robot("baxter").fingerprint()


def test_wrong_model_fingerprint(tiny_baxter, tmp_path):
    wrong = tmp_path / "wrong_model"
    shutil.copytree(tiny_baxter, wrong)
    card = json.loads((wrong / "card.json").read_text())
    card["robot"]["fingerprint"] = "0123456789abcdef"
    (wrong / "card.json").write_text(json.dumps(card))
    res = run_installed(_args(robot="baxter", robot_description_timeout=0.0, model_path=str(wrong)))
    assert res.returncode != 0
    err = res.stdout + res.stderr
    assert "0123456789abcdef" in err and _fingerprint() in err, err
    assert err.count("[ERROR]") == 1 and "Traceback" not in err, err


def test_no_matching_checkpoint_lists_what_was_tried():
    # a model for the left arm only: no checkpoint in models/ matches its fingerprint
    res = run_installed(_args(robot="baxter", robot_description_timeout=0.0, end_effectors="[left_gripper]"))
    assert res.returncode != 0
    err = res.stdout + res.stderr
    assert "no checkpoint for robot 'baxter' with fingerprint" in err and "tried" in err, err
    assert "Traceback" not in err


def test_corrupt_weights(tiny_baxter, tmp_path):
    bad = tmp_path / "corrupt_model"
    shutil.copytree(tiny_baxter, bad)
    (bad / "model.safetensors").write_bytes(b"not a safetensors file")
    res = run_installed(_args(robot="baxter", robot_description_timeout=0.0, model_path=str(bad)))
    assert res.returncode != 0
    err = res.stdout + res.stderr
    assert "corrupt" in err and _fingerprint() in err and "Traceback" not in err, err


def test_bad_parameter_is_refused_with_a_reason(tiny_baxter):
    res = run_installed(_args(robot="baxter", robot_description_timeout=0.0, model_path=str(tiny_baxter),
                              default_num_solutions=0))
    assert res.returncode != 0
    err = res.stdout + res.stderr
    assert "default_num_solutions" in err and "Traceback" not in err, err



def test_shipped_baxter_model(ros_context):
    """The installed node finds the shipped baxter checkpoint by fingerprint (no model_path) and
    answers 1 target x 32 solutions for both arms within tolerance (at least 8 pass)."""
    if not shipped_model_for("baxter"):
        pytest.skip("no shipped baxter checkpoint in models/")
    from ikdiffuser_ros.msg import IKTarget
    from ikdiffuser_ros.robots import load_robot
    from ikdiffuser_ros.srv import GetIKSolutions

    node = rclpy.create_node("ikd_shipped_client", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    proc = subprocess.Popen([sys.executable, str(installed_executable()), "--ros-args", "-r", "__node:=ikd_shipped_node",
                             "-p", "robot:=baxter", "-p", "robot_description_timeout:=0.0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        client = node.create_client(GetIKSolutions, "/ikd_shipped_node/get_ik_solutions")
        deadline = time.monotonic() + 120
        while not client.service_is_ready() and time.monotonic() < deadline and proc.poll() is None:
            executor.spin_once(timeout_sec=0.1)
        assert client.service_is_ready(), "the node did not come up"
        robot = load_robot("baxter")
        q = robot.default_positions().clone()
        q[robot.index_of("left_e1")] = q[robot.index_of("right_e1")] = 1.0
        T = robot.fk(q).numpy()
        req = GetIKSolutions.Request(num_solutions=32, random_seed=0)
        req.targets = [IKTarget(link_names=["left_gripper", "right_gripper"],
                                poses=[pose_stamped(T[0]), pose_stamped(T[1])])]
        res = spin_until(executor, client.call_async(req), 60)
        assert res.error_code == 1, res.message
        assert res.results[0].num_solutions >= 8 and max(res.results[0].position_errors) <= 0.005
        # model_path reads the checkpoint folder found (the parameter was empty)
        loaded = Path(_parameters(executor, node, "/ikd_shipped_node", ["model_path"])["model_path"])
        assert loaded.is_absolute() and loaded.name == "baxter"
        assert json.loads((loaded / "card.json").read_text())["robot"]["fingerprint"] == robot.fingerprint()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
        executor.shutdown()
        node.destroy_node()


def _nan_weights(path):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path / "model.safetensors"))
    save_file({k: v.fill_(float("nan")) if k.startswith("denoiser.") else v for k, v in tensors.items()},
              str(path / "model.safetensors"))


def _card_edit(edit):
    def apply(path):
        card = json.loads((path / "card.json").read_text())
        edit(card)
        (path / "card.json").write_text(json.dumps(card))
    return apply


def _fifo_card(path):
    import os

    (path / "card.json").unlink()
    os.mkfifo(path / "card.json")


def _symlink_loop_weights(path):
    import os

    (path / "model.safetensors").unlink()
    os.symlink(path / "loop", path / "model.safetensors")
    os.symlink(path / "model.safetensors", path / "loop")


@pytest.mark.parametrize("case,tamper,words", [
    ("fifo_card", _fifo_card, ("card.json", "FIFO")),
    ("nan_weights", _nan_weights, ("model.safetensors", "NaN")),
    ("n_layers_1e7", _card_edit(lambda c: c["architecture"].update(n_layers=10**7)), ("architecture.n_layers",)),
    ("num_train_steps_1e9", _card_edit(lambda c: c["schedule"].update(num_train_steps=10**9)),
     ("schedule.num_train_steps",)),
    ("symlink_loop", _symlink_loop_weights, ("model.safetensors", "symbolic links")),
])
def test_untrusted_checkpoint_is_one_clear_line_and_exit_1(tiny_baxter, tmp_path, case, tamper, words):
    """Tampered checkpoints that once hung start-up (FIFO), were accepted (NaN weights) or died in
    std::bad_alloc / MemoryError: now one error line naming the file and field, exit status 1."""
    bad = tmp_path / case
    shutil.copytree(tiny_baxter, bad)
    tamper(bad)
    res = run_installed(_args(robot="baxter", robot_description_timeout=0.0, model_path=str(bad)), timeout=90)
    err = res.stdout + res.stderr
    assert res.returncode == 1, err
    assert err.count("[ERROR]") == 1 and "Traceback" not in err, err
    line = next(x for x in err.splitlines() if "[ERROR]" in x)
    assert all(w in line for w in words) and str(bad) in line, line
