"""Shared helpers of the ikdiffuser_node tests: tiny checkpoints, node start-up, service calls.

Not a test module (no ``test_`` prefix). The tiny checkpoints are trained at
test time with the trainer's ``tiny`` preset (a few seconds on a CPU); their
raw samples are poor, so the solver's refinement does the work, which is what
the node tests need (correct plumbing, not model quality).
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def train_tiny(robot: str, out_dir: Path, steps: int = 60) -> Path:
    """A tiny checkpoint for ``robot`` in ``out_dir`` (model.safetensors + card.json)."""
    from ikdiffuser_ros.training.trainer import TrainConfig, train

    if not (out_dir / "card.json").is_file():
        config = TrainConfig.preset("tiny", robot=robot, out_dir=str(out_dir), max_steps=steps, threads=1)
        train(config, progress=False)
    return out_dir


def spin_until(executor, future, timeout_s: float = 30.0):
    deadline = time.monotonic() + timeout_s
    while not future.done() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
    assert future.done(), f"no response within {timeout_s} s"
    return future.result()


class NodeRunner:
    """An IKDiffuserNode spun by a MultiThreadedExecutor (as many threads as ``main`` gives it) in a
    background thread."""

    def __init__(self, context, parameter_overrides, name: str = "ikdiffuser_node", **kwargs) -> None:
        from rclpy.executors import MultiThreadedExecutor
        from rclpy.parameter import Parameter

        from ikdiffuser_ros.ros.ik_node import IKDiffuserNode

        params = [Parameter(k, value=v) for k, v in parameter_overrides.items()]
        self.node = IKDiffuserNode(name, context=context, parameter_overrides=params, **kwargs)
        self.executor = MultiThreadedExecutor(num_threads=self.node.executor_threads, context=context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # shutdown races
            pass

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.thread.join(timeout=5)


def pose_stamped(T: np.ndarray, frame: str = ""):
    from geometry_msgs.msg import PoseStamped

    from ikdiffuser_ros.ros.conversions import matrix_to_pose

    msg = PoseStamped()
    msg.header.frame_id = frame
    msg.pose = matrix_to_pose(T)
    return msg


def reachable_poses(robot, seed: int = 0, n: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(n, n_joints) random joint values and their (n, E, 4, 4) end-effector poses."""
    import torch

    g = torch.Generator().manual_seed(seed)
    lo, hi = robot.limits()
    q = lo + (hi - lo) * torch.rand(n, len(lo), generator=g, dtype=torch.float64)
    return q.numpy(), robot.fk(q).numpy()


def node_env(domain_id: str | None = None) -> dict:
    env = dict(os.environ)
    if domain_id is not None:
        env["ROS_DOMAIN_ID"] = domain_id
    return env


def installed_executable() -> Path:
    return REPO / "install" / "ikdiffuser_ros" / "lib" / "ikdiffuser_ros" / "ikdiffuser_node"


def run_installed(args: list[str], timeout: float = 60.0, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(installed_executable()), *args], capture_output=True, text=True,
                          timeout=timeout, env=env or node_env())

