"""Shared helpers of the ikdiffuser_node tests: tiny checkpoints, node start-up, service calls.

Not a test module (no ``test_`` prefix). The tiny checkpoints are trained at
test time with the trainer's ``tiny`` preset (a few seconds on a CPU); their
raw samples are poor, so the solver's refinement does the work, which is what
the node tests need (correct plumbing, not model quality).
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def shipped_model_for(robot: str) -> bool:
    """True if the package's models/ holds a checkpoint whose card fingerprint matches ``robot``."""
    import json

    from ikdiffuser_ros.model.checkpoint import card_fingerprint
    from ikdiffuser_ros.model.registry import candidate_checkpoints
    from ikdiffuser_ros.robots import load_robot

    fp = load_robot(robot).fingerprint()
    for folder in candidate_checkpoints():
        try:
            if card_fingerprint(json.loads((folder / "card.json").read_text())) == fp:
                return True
        except (OSError, ValueError):
            pass
    return False


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


@contextlib.contextmanager
def fresh_clients(context, srv_type, service: str, n: int, tag: str):
    """``n`` new client nodes of ``service`` (one node each, as ``n`` client processes would have, with the
    client QoS of ``service_io.client_qos``), ready, on one SingleThreadedExecutor: yields (executor, clients)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from ikdiffuser_ros.ros.service_io import client_qos

    nodes = [rclpy.create_node(f"ikd_{tag}_{i}", context=context) for i in range(n)]
    executor = SingleThreadedExecutor(context=context)
    try:
        clients = []
        for node in nodes:
            executor.add_node(node)
            clients.append(node.create_client(srv_type, service, qos_profile=client_qos()))
        assert all(c.wait_for_service(timeout_sec=20.0) for c in clients)
        yield executor, clients
    finally:
        executor.shutdown()
        for node in nodes:
            node.destroy_node()


def spin_until_all(executor, futures, timeout_s: float) -> int:
    """Spin until every future is done or ``timeout_s`` passes; returns how many are done."""
    deadline = time.monotonic() + timeout_s
    while not all(f.done() for f in futures) and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
    return sum(f.done() for f in futures)


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


@contextlib.contextmanager
def served(context, robot: str, node_name: str, srv_type, service: str, tmp: Path, timeout_s: float = 30.0,
           **params):
    """A node for ``robot`` (its shipped model, else a tiny one trained into ``tmp``) and a client of its
    ``service``: yields (node, call) with ``call(request) -> response`` over the real service."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from ikdiffuser_ros.ros.service_io import client_qos

    params = dict(robot=robot, robot_description_timeout=0.0, follow_planning_scene=False, **params)
    if not shipped_model_for(robot):
        params["model_path"] = str(train_tiny(robot, tmp / f"tiny_{robot}"))
    runner = NodeRunner(context, params, name=node_name)
    client = rclpy.create_node(f"{node_name}_client", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(client)
    service_client = client.create_client(srv_type, f"/{node_name}/{service}", qos_profile=client_qos())
    assert service_client.wait_for_service(timeout_sec=20.0)
    try:
        yield runner.node, lambda req: spin_until(executor, service_client.call_async(req), timeout_s)
    finally:
        executor.shutdown()
        client.destroy_node()
        runner.close()


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Terminate a node process and wait for it; kill it if it is still running after ``timeout`` [s]."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


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



# ---------------------------------------------------------------------- scene messages (moveit_msgs)
def plain_pose(x: float = 0.0, y: float = 0.0, z: float = 0.0):
    """geometry_msgs/Pose at (x, y, z) [m], identity orientation."""
    from geometry_msgs.msg import Pose

    p = Pose()
    p.position.x, p.position.y, p.position.z = float(x), float(y), float(z)
    p.orientation.w = 1.0
    return p


def box_object(oid: str, xyz, size=(0.1, 0.1, 0.1), op: bytes | None = None, frame: str = "base"):
    """moveit_msgs/CollisionObject: one box of full extents ``size`` [m] at ``xyz`` in ``frame``
    (``op``: CollisionObject.ADD (default), REMOVE...)."""
    from moveit_msgs.msg import CollisionObject
    from shape_msgs.msg import SolidPrimitive

    obj = CollisionObject(id=oid, operation=CollisionObject.ADD if op is None else op)
    obj.header.frame_id = frame
    obj.pose = plain_pose(*xyz)
    obj.primitives = [SolidPrimitive(type=SolidPrimitive.BOX, dimensions=[float(v) for v in size])]
    obj.primitive_poses = [plain_pose()]
    return obj


def mesh_object(oid: str, vertices: np.ndarray, triangles: np.ndarray, xyz=(0.0, 0.0, 0.0)):
    """moveit_msgs/CollisionObject (ADD, frame ``base``): one mesh, (V, 3) vertices [m], (F, 3) indices."""
    from geometry_msgs.msg import Point
    from moveit_msgs.msg import CollisionObject
    from shape_msgs.msg import Mesh, MeshTriangle

    obj = CollisionObject(id=oid, operation=CollisionObject.ADD)
    obj.header.frame_id = "base"
    obj.pose = plain_pose(*xyz)
    mesh = Mesh()
    mesh.vertices = [Point(x=float(v[0]), y=float(v[1]), z=float(v[2])) for v in vertices]
    mesh.triangles = [MeshTriangle(vertex_indices=[int(i) for i in t]) for t in triangles]
    obj.meshes, obj.mesh_poses = [mesh], [plain_pose()]
    return obj


def grid_mesh(n: int, size: float) -> tuple[np.ndarray, np.ndarray]:
    """A flat n x n vertex grid of side ``size`` [m] in z = 0 and its 2 (n-1)^2 triangles."""
    xs = np.linspace(-size / 2, size / 2, n)
    v = np.stack(np.meshgrid(xs, xs, [0.0], indexing="ij"), -1).reshape(-1, 3)
    i, j = (a.reshape(-1) for a in np.meshgrid(np.arange(n - 1), np.arange(n - 1), indexing="ij"))
    t = np.concatenate([np.stack([i * n + j, i * n + j + 1, (i + 1) * n + j], -1),
                        np.stack([i * n + j + 1, (i + 1) * n + j + 1, (i + 1) * n + j], -1)])
    return v, t


TETRA = (np.array([[0, 0, 0], [0.1, 0, 0], [0, 0.1, 0], [0, 0, 0.1]]),
         np.array([[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]]))

#: every kind of collision object the node must refuse (see :func:`invalid_object`)
INVALID_KINDS = ("empty_mesh", "no_vertices", "only_degenerate_triangles", "huge_vertices", "nan_vertex",
                 "absurd_position", "unknown_frame", "zero_sphere", "zero_cylinder", "line_box", "huge_box",
                 "huge_sphere")


def invalid_object(kind: str):
    """One collision object of an :data:`INVALID_KINDS` kind, id ``bad_<kind>``, near x = 1.5 m (the huge
    ones centred on the robot's root)."""
    from shape_msgs.msg import SolidPrimitive

    oid = f"bad_{kind}"
    v, t = TETRA
    meshes = {
        "empty_mesh": (v, np.zeros((0, 3))),
        "no_vertices": (np.zeros((0, 3)), np.zeros((0, 3))),
        "only_degenerate_triangles": (np.array([[0, 0, 0], [0.1, 0, 0], [0.2, 0, 0]]), np.array([[0, 1, 2], [0, 0, 1]])),
        "huge_vertices": (v * 1e301, t),
        "nan_vertex": (np.vstack([v[:3], [np.nan, 0, 0]]), t),
    }
    if kind in meshes:
        return mesh_object(oid, *meshes[kind], (1.5, 0, 0))
    if kind == "absurd_position":
        return box_object(oid, (1e5, 0, 0))
    if kind == "unknown_frame":
        return box_object(oid, (1.5, 0, 0), frame="no_such_frame")
    if kind == "line_box":
        return box_object(oid, (1.5, 0, 0), size=(0.5, 0.0, 0.0))
    if kind == "huge_box":  # around the robot: with it accepted, FCL overflowed and called the robot free
        return box_object(oid, (0, 0, 0), size=(1e300, 1e300, 1e300))
    obj = box_object(oid, (1.5, 0, 0))
    if kind == "huge_sphere":
        obj.pose = plain_pose()
        obj.primitives = [SolidPrimitive(type=SolidPrimitive.SPHERE, dimensions=[1e308])]
    elif kind == "zero_sphere":
        obj.primitives = [SolidPrimitive(type=SolidPrimitive.SPHERE, dimensions=[0.0])]
    elif kind == "zero_cylinder":
        obj.primitives = [SolidPrimitive(type=SolidPrimitive.CYLINDER, dimensions=[0.0, 0.1])]
    else:
        raise ValueError(kind)
    return obj
