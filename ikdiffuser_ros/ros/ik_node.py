"""``ikdiffuser_node``: the IK service node.

Start-up (any failure: one clear error message, exit status 1):

1. Parameters (:mod:`ikdiffuser_ros.ros.params`), validated.
2. Robot: the ``robot_description`` / ``robot_description_semantic``
   parameters; when empty, the topics of the same name (relative to the node's
   namespace, QoS depth 1, reliable, transient local, as MoveIt's
   SynchronizedStringParameter), waiting up to ``robot_description_timeout``
   seconds; when still empty and the ``robot`` parameter names a robot config,
   the URDF/SRDF files of that config. The robot config (``robot``, or the
   one whose name matches the URDF's) also gives the end effectors, planning
   groups, joint-limit overrides and locked joints of the model.
3. Model: ``model_path``, or the checkpoint under the package's ``models/``
   whose ``card.json`` fingerprint matches the robot's.
4. Collision checker (python-fcl on the URDF collision geometry) and the
   planning-scene mirror.

Interfaces (``~`` = the node's name):

* service ``~/get_ik_solutions`` (ikdiffuser_ros/srv/GetIKSolutions)
* services ``~/compute_ik`` and ``~/solve_ik`` (moveit_msgs/srv/GetPositionIK) and ``~/compute_fk``
  (moveit_msgs/srv/GetPositionFK: any link, in the root frame or a link's frame)
  when moveit_msgs is importable
* subscriptions ``/monitored_planning_scene``, ``/planning_scene``,
  ``/collision_object``, ``/attached_collision_object``; client
  ``/get_planning_scene`` (asked once at start when it exists)
* publisher ``~/solutions`` (visualization_msgs/MarkerArray): the last answer
* subscriptions ``/tf``, ``/tf_static`` (when tf2 is importable): poses in frames outside the robot
  (:mod:`~ikdiffuser_ros.ros.tf_frames`; or the ``fixed_frame_transforms`` parameter)

Threading and load (docs/ros_node.md, "Concurrency"): the services are in a
ReentrantCallbackGroup with request queues of ``service_queue_depth`` (QoS
history depth, default 1000, so a burst is never dropped by the rmw); each
callback hands its solve to a :class:`~ikdiffuser_ros.ros.solve_queue.SolveQueue`:
one solver thread runs admitted requests one at a time, in arrival order, and
a request beyond ``max_queued_requests`` admitted ones is answered at once with
FAILURE "busy: N requests queued". Every request is answered within
``max_timeout`` of its arrival: its budget (from the start of its solve) ends by
then, and one still waiting for the solver then is answered TIMED_OUT at once
(so none holds the solver longer either). The scene subscriptions have
their own MutuallyExclusiveCallbackGroup and always find a free executor thread
(``main`` spins a MultiThreadedExecutor with
:attr:`IKDiffuserNode.executor_threads` threads), so the scene is updated while
a solve runs (a solve uses the snapshot taken when it starts).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import gc
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import rclpy
import torch
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String
from visualization_msgs.msg import MarkerArray

from ikdiffuser_ros.errors import CheckpointError, IKDiffuserError
from ikdiffuser_ros.kinematics.robot_model import RobotModel
from ikdiffuser_ros.model import registry
from ikdiffuser_ros.model.checkpoint import card_fingerprint, read_card
from ikdiffuser_ros.pipeline import IKPipeline
from ikdiffuser_ros.query import IKAnswer, IKQuery, Status
from ikdiffuser_ros.robots import RobotConfig, available_robots, robot_config
from ikdiffuser_ros.ros import ik_solutions, moveit_bridge, moveit_fk
from ikdiffuser_ros.ros.conversions import JointStateLayout, SceneLimits
from ikdiffuser_ros.ros.error_codes import ErrorCode, error_code, status_code
from ikdiffuser_ros.ros.markers import solutions_marker_array
from ikdiffuser_ros.ros.params import NodeConfig, declare_parameters, parse_groups, set_resolved
from ikdiffuser_ros.ros.scene_monitor import SceneMonitor
from ikdiffuser_ros.ros.service_io import client_qos, retry_failed_sends
from ikdiffuser_ros.ros.solve_queue import Busy, Expired, SolveQueue, executor_threads
from ikdiffuser_ros.ros.tf_frames import TfFrames
from ikdiffuser_ros.solver import IKDiffuserSolver
from ikdiffuser_ros.srv import GetIKSolutions

try:  # optional: without moveit_msgs the node serves get_ik_solutions only (no compute_ik, no scene)
    from moveit_msgs.msg import AttachedCollisionObject, CollisionObject, DisplayRobotState, PlanningScene
    from moveit_msgs.srv import GetPlanningScene, GetPositionFK, GetPositionIK
except ImportError:
    GetPositionIK = GetPositionFK = None
if TYPE_CHECKING:
    from moveit_msgs.msg import PositionIKRequest
    from rclpy.task import Future

    SceneMessage = PlanningScene | CollisionObject | AttachedCollisionObject

#: ``solver_factory(robot, checkpoint folder, device)`` of :class:`IKDiffuserNode` (default :func:`load_solver`).
SolverFactory = Callable[[RobotModel, Path, str], IKDiffuserSolver]

NODE_NAME = "ikdiffuser_node"


class StartupError(RuntimeError):
    """The node cannot start; the message says why (logged once by :func:`main`)."""


def malloc_trim() -> None:
    """glibc ``malloc_trim(0)``: return free heap pages of every arena to the OS (no-op elsewhere)."""
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


# ---------------------------------------------------------------------- model lookup
def find_checkpoint(robot: RobotModel, model_path: str) -> Path:
    """The checkpoint folder to load (:func:`ikdiffuser_ros.model.registry.find_checkpoint`), or
    StartupError naming the fingerprint and what was tried."""
    try:
        return registry.find_checkpoint(robot, model_path)
    except CheckpointError as exc:
        raise StartupError(str(exc)) from None


def load_solver(robot: RobotModel, path: Path, device: str) -> IKDiffuserSolver:
    """IKDiffuserSolver.from_checkpoint, with every failure as StartupError naming the fingerprints."""
    try:
        return IKDiffuserSolver.from_checkpoint(str(path), robot=robot, device=device)
    except Exception as exc:  # noqa: BLE001 - an untrusted checkpoint: any failure is one start-up error
        card_fp = None
        try:
            card_fp = card_fingerprint(read_card(path))
        except CheckpointError:
            pass
        detail = str(exc) if isinstance(exc, (CheckpointError, IKDiffuserError)) else f"{type(exc).__name__}: {exc}"
        raise StartupError(
            f"cannot load checkpoint {path} for robot {robot.name!r} (fingerprint {robot.fingerprint()}; "
            f"checkpoint fingerprint {card_fp}): {detail}") from None


def sampler_plan(solver: IKDiffuserSolver, cfg: NodeConfig) -> str:
    """The reverse-diffusion plan of a solve under ``cfg``, as the solver resolves it, e.g. ``"ddim, 3 steps +
    1 tail passes, temperature 0.5 for queries of one solution (the checkpoint card's plan for refined samples;
    sampler_steps 0)"``."""
    steps, tail = solver.plan_of(cfg.refine, cfg.sampler_steps or None)
    card = solver.loaded.card if isinstance(solver.loaded.card, dict) else {}
    source = (f"sampler_steps {cfg.sampler_steps}" if cfg.sampler_steps else
              f"the checkpoint card's plan for {'refined' if cfg.refine else 'raw'} samples; sampler_steps 0"
              if "sampling" in card else "the default: the checkpoint card has no sampling plan; sampler_steps 0")
    tau = solver.temperature_of()
    one = f", temperature {tau:g} for queries of one solution" if tau != 1 else ""
    return f"{cfg.sampler}, {steps} steps + {tail} tail passes{one} ({source})"


# ---------------------------------------------------------------------- the node
#: CPython thread switch interval of the node's process [s] (see IKDiffuserNode.__init__).
GIL_SWITCH_INTERVAL_S = 0.0002
#: Least time [s] per solution a GetIKSolutions request keeps out of its solver budget for building and sending
#: its answer, by ``flat_solutions``: False, one sensor_msgs/JointState per solution (~17 us each here, 70 ms for
#: 64 x 64); True, one float64 array per target (~0.2 us a solution). The node measures it on every answer (x 1.5
#: for the serialisation after the callback) and passes it to the pipeline
#: (:attr:`~ikdiffuser_ros.query.IKQuery.delivery_s_per_solution`), which keeps it for the solutions it found.
RESPONSE_S_PER_SOLUTION = {False: 2e-5, True: 1e-6}


def _freeze_start_up_objects() -> None:
    """Keep what start-up made (torch, the model, the robot, rclpy) out of the garbage collector's full
    passes: walking them took ~110 ms every few large requests (64 x 64 solutions answered in 0.56 s
    instead of 0.45 s one call in six), which the request's deadline cannot account for."""
    gc.collect()
    gc.freeze()


class IKDiffuserNode(Node):
    """See the module docstring. Raises :class:`StartupError` from ``__init__`` when it cannot start."""

    def __init__(self, node_name: str = NODE_NAME, *, solver_factory: SolverFactory | None = None,
                 **kwargs: Any) -> None:
        """``kwargs`` go to rclpy's Node (context, parameter_overrides, ...); ``solver_factory(robot,
        checkpoint_path, device)`` replaces :func:`load_solver` (embedding, tests)."""
        super().__init__(node_name, **kwargs)
        # The solver thread makes thousands of short torch calls, each releasing and retaking the GIL.
        # With CPython's default 5 ms switch interval, a Python-busy thread (scene callbacks under a
        # flood of planning-scene messages) makes every retake wait up to 5 ms: a 0.3 s solve grew past
        # its 2 s budget. 0.2 ms keeps the solver's share fair (test_scene_flood_during_solves).
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        t0 = time.monotonic()
        self.config = self._node_config()
        self.robot, self.robot_config = self._load_robot()
        self.get_logger().info(f"robot {self.robot.name!r}: {self.robot.n_joints} joints, end effectors "
                               f"{self.robot.end_effectors}, root {self.robot.root_frame!r}, "
                               f"fingerprint {self.robot.fingerprint()}")
        self.model_path = find_checkpoint(self.robot, self.config.model_path)
        self.solver = (solver_factory or load_solver)(self.robot, self.model_path, self.config.device)
        set_resolved(self, "model_path", str(self.model_path.absolute()))
        self.get_logger().info(f"sampler plan: {sampler_plan(self.solver, self.config)}")
        self._base_solver_config = self.solver.config
        self._configs_built_at = -1  #: ``ikd_config_version`` the pipeline's and solver's configs were built at
        self.layout = JointStateLayout(self.robot)
        self.pipeline = IKPipeline.around(self.solver, self.config.pipeline_config(),
                                          getattr(self.robot_config, "groups", {}) or {},
                                          parse_groups(self.config.groups), logger=self.get_logger())
        self._warm_up()
        self.scene = SceneMonitor(self.robot, SceneLimits(self.config.max_scene_extent, self.config.max_mesh_triangles))
        self._stats_lock = threading.Lock()
        self.requests_served = 0
        #: time per solution of building and sending an answer [s], JointStates (False) or flat arrays (True)
        self._response_s_per_solution = dict(RESPONSE_S_PER_SOLUTION)
        self.solve_queue = SolveQueue(self.config.max_queued_requests)
        self._scene_group = MutuallyExclusiveCallbackGroup()
        self.tf_frames = self._tf_frames()
        self._create_services()
        self._create_publishers()
        _freeze_start_up_objects()
        self.get_logger().info(f"ready in {time.monotonic() - t0:.1f} s: model {self.model_path} on "
                               f"{self.config.device}")

    def create_service(self, *args: Any, **kwargs: Any) -> Any:
        """rclpy's ``create_service``, whose responses are resent while the client's reply reader is not
        matched yet (``service_io.retry_failed_sends``; parameter services included)."""
        service = super().create_service(*args, **kwargs)
        logger = self.get_logger()
        retry_failed_sends(service, logger.warning, logger.error)
        return service

    def _tf_frames(self) -> TfFrames:
        """Frames outside the robot: tf2 (/tf, /tf_static) and ``fixed_frame_transforms`` (ros/tf_frames.py);
        StartupError on a bad parameter."""
        try:
            return TfFrames(self, self.config, self.robot.root_frame)
        except ValueError as exc:
            raise StartupError(f"invalid parameter: {exc}") from None

    def _node_config(self):
        """Declared, validated parameters (StartupError on a bad one); torch threads and device checked."""
        try:
            cfg = declare_parameters(self)
        except ValueError as exc:
            raise StartupError(f"invalid parameter: {exc}") from None
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        if cfg.device.startswith("cuda") and not torch.cuda.is_available():
            raise StartupError(f"device={cfg.device!r} but CUDA is not available (torch {torch.__version__})")
        return cfg

    def _warm_up(self) -> None:
        try:
            self.get_logger().info(f"warm-up solve: {self.pipeline.warmup():.2f} s")
        except Exception as exc:  # noqa: BLE001 - a model that cannot solve at all is a start-up error
            raise StartupError(f"the solver failed its warm-up solve ({type(exc).__name__}: {exc}); "
                               f"checkpoint {self.model_path}") from None

    def _create_services(self) -> None:
        """get_ik_solutions, and compute_ik / solve_ik and the scene follower when moveit_msgs is there."""
        group = ReentrantCallbackGroup()
        qos = QoSProfile(depth=self.config.service_queue_depth, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)
        self.create_service(GetIKSolutions, "~/get_ik_solutions", self._on_get_ik_solutions, qos_profile=qos,
                            callback_group=group)
        if GetPositionIK is None:
            self.get_logger().warning("moveit_msgs not importable: no compute_ik/solve_ik, no planning scene")
            return
        groups = self.pipeline.groups.values()
        self.get_logger().info(f"MoveIt groups: {', '.join(f'{g.name} -> {list(g.tips)}' for g in groups)}")
        for name in ("~/compute_ik", "~/solve_ik"):
            self.create_service(GetPositionIK, name, self._on_compute_ik, qos_profile=qos, callback_group=group)
        self.create_service(GetPositionFK, "~/compute_fk", self._on_compute_fk, qos_profile=qos, callback_group=group)
        if self.config.follow_planning_scene:
            self._follow_scene()

    def _create_publishers(self) -> None:
        self._markers = self._display = None
        if self.config.publish_markers:
            self._markers = self.create_publisher(MarkerArray, "~/solutions", 1)
            if GetPositionIK is not None:
                self._display = self.create_publisher(DisplayRobotState, "~/display_robot_state", 1)

    @property
    def executor_threads(self) -> int:
        """Threads the node's executor needs: one per admitted request, plus spare ones."""
        return executor_threads(self.config.max_queued_requests)

    def destroy_node(self) -> None:
        queue = getattr(self, "solve_queue", None)  # absent when __init__ failed before it
        if queue is not None:
            queue.close()
        super().destroy_node()

    # ------------------------------------------------------------------ robot
    def _load_robot(self) -> tuple[RobotModel, RobotConfig | None]:
        """(RobotModel, robot config or None) from the descriptions (parameters, topics, robot config)."""
        cfg = self.config
        rcfg = None
        if cfg.robot:
            try:
                rcfg = robot_config(cfg.robot)
            except IKDiffuserError as exc:
                raise StartupError(f"parameter robot={cfg.robot!r}: {exc}") from None
        urdf, srdf_texts = self._descriptions(rcfg)
        if rcfg is None:  # a robot config named like the URDF's robot, for its end effectors and groups
            m = re.search(r"<robot[^>]*\bname\s*=\s*[\"']([^\"']+)", urdf)
            if m and m.group(1) in available_robots():
                rcfg = robot_config(m.group(1))
                self.get_logger().info(f"using robot config {rcfg.name!r} (matches the URDF's robot name)")
        end_effectors = list(cfg.end_effectors) or (list(rcfg.end_effectors) if rcfg else None) or None
        try:
            robot = RobotModel.from_urdf(
                urdf, srdf_texts or None, end_effectors,
                dict(rcfg.joint_limits) if rcfg else None,
                name=rcfg.name if rcfg else None, locked_joints=rcfg.locked_joints if rcfg else ())
        except IKDiffuserError as exc:
            raise StartupError(f"cannot build the robot model: {exc}") from None
        return robot, rcfg

    def _descriptions(self, rcfg: RobotConfig | None) -> tuple[str, list[str]]:
        """(URDF, SRDF texts): parameters, else the topics, else the robot config's files."""
        cfg = self.config
        urdf, srdf = cfg.robot_description, cfg.robot_description_semantic
        if not urdf or not srdf:
            got = self._wait_for_descriptions(need_urdf=not urdf, need_srdf=not srdf,
                                              timeout=cfg.robot_description_timeout)
            urdf = urdf or got.get("robot_description", "")
            srdf = srdf or got.get("robot_description_semantic", "")
            if urdf and "robot_description" in got:
                self.get_logger().info("robot_description received on its topic")
        if urdf:
            return urdf, [srdf] if srdf else []
        if rcfg is None:
            raise StartupError(
                f"no robot description: the robot_description parameter is empty, nothing arrived on the "
                f"{self.resolve_topic_name('robot_description')} topic within "
                f"{cfg.robot_description_timeout} s, and no robot config is set (parameter robot)")
        self.get_logger().info(f"robot description from robot config {rcfg.name!r} ({rcfg.urdf})")
        try:
            return rcfg.urdf_text(), [srdf] if srdf else rcfg.srdf_texts()
        except IKDiffuserError as exc:
            raise StartupError(f"robot config {rcfg.name!r}: {exc}") from None

    def _wait_for_descriptions(self, need_urdf: bool, need_srdf: bool, timeout: float) -> dict[str, str]:
        """``{topic name: text}`` of the description topics that arrived within ``timeout`` s (logged first)."""
        got: dict[str, str] = {}
        if timeout <= 0:
            return got
        qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        names = [name for name, needed in (("robot_description", need_urdf), ("robot_description_semantic", need_srdf))
                 if needed]
        subs = [self.create_subscription(String, name, lambda msg, name=name: got.__setitem__(name, msg.data), qos)
                for name in names]
        self.get_logger().info(f"waiting up to {timeout:g} s (robot_description_timeout) for "
                               f"{' and '.join(self.resolve_topic_name(name) for name in names)} (the parameters of "
                               "the same name are empty)")
        executor = SingleThreadedExecutor(context=self.context)
        executor.add_node(self)
        try:
            deadline = time.monotonic() + timeout
            # the URDF decides; the SRDF gets a short grace period once the URDF is there
            while time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.05)
                if (not need_urdf or "robot_description" in got) and (not need_srdf or "robot_description_semantic" in got):
                    break
                if "robot_description" in got and need_srdf:
                    deadline = min(deadline, time.monotonic() + 1.0)
        finally:
            executor.remove_node(self)
            executor.shutdown()
            for sub in subs:
                self.destroy_subscription(sub)
        return got

    # ------------------------------------------------------------------ planning scene
    def _follow_scene(self) -> None:
        cfg = self.config
        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        g = self._scene_group
        self.create_subscription(PlanningScene, cfg.monitored_planning_scene_topic,
                                 lambda m: self._scene_update(self.scene.apply_planning_scene, m, "monitored scene"),
                                 qos, callback_group=g)
        self.create_subscription(PlanningScene, "/planning_scene",
                                 lambda m: self._scene_update(self.scene.apply_planning_scene, m, "planning_scene"),
                                 qos, callback_group=g)
        self.create_subscription(CollisionObject, "/collision_object",
                                 lambda m: self._scene_update(self.scene.apply_collision_object, m, "collision_object"),
                                 qos, callback_group=g)
        self.create_subscription(
            AttachedCollisionObject, "/attached_collision_object",
            lambda m: self._scene_update(self.scene.apply_attached_collision_object, m, "attached_collision_object"),
            qos, callback_group=g)
        self._scene_client = self.create_client(GetPlanningScene, cfg.get_planning_scene_service,
                                                qos_profile=client_qos(), callback_group=g)
        self._scene_asked = False
        self._scene_tries = 0
        wall = Clock(clock_type=ClockType.STEADY_TIME)  # housekeeping runs on wall time, use_sim_time or not
        self._scene_timer = self.create_timer(0.5, self._ask_scene, callback_group=g, clock=wall)
        self._solved_version = self.scene.version  #: scene version of the last answered request
        self._trimmed = (self.scene.version, self._solved_version)
        self.create_timer(0.25, self._release_memory, callback_group=g, clock=wall)

    def _release_memory(self) -> None:
        """After a request has run on a changed scene, hand freed heap memory back to the OS (glibc
        ``malloc_trim``): the collision checker drops the old scene's objects when a request prepares
        the new one, and large meshes leave megabytes of freed, fragmented heap behind that the
        allocator would otherwise keep. So: once after each scene change, and once more after the
        first request answered on the changed scene."""
        key = (self.scene.version, self._solved_version)
        if key == self._trimmed:
            return
        self._trimmed = key
        malloc_trim()

    def _ask_scene(self) -> None:
        self._scene_tries += 1
        if self._scene_asked or self._scene_tries > 10:  # look for move_group for ~5 s after start
            self._scene_timer.cancel()
            return
        if not self._scene_client.service_is_ready():
            return
        self._scene_asked = True
        self._scene_timer.cancel()
        future = self._scene_client.call_async(GetPlanningScene.Request())

        def done(fut: Future) -> None:
            try:
                scene = fut.result().scene
                scene.is_diff = False
                self._scene_update(self.scene.apply_planning_scene, scene, "get_planning_scene")
                self.get_logger().info(f"planning scene from {self.config.get_planning_scene_service}: "
                                       f"{len(self.scene.object_ids())} objects")
            except Exception as exc:  # noqa: BLE001 - move_group's answer is not ours to trust: logged, ignored
                self.get_logger().warning(f"get_planning_scene failed: {type(exc).__name__}: {exc}")

        future.add_done_callback(done)

    def _scene_update(self, apply: Callable[[SceneMessage], list[str]], msg: SceneMessage, what: str) -> None:
        """Apply one scene message; a bad one is refused (mirror unchanged), every problem logged."""
        try:
            notes = apply(msg)
        except IKDiffuserError as exc:  # a bad message is refused, the mirror is unchanged
            self.get_logger().warning(f"{what} refused: {exc}")
            return
        except Exception as exc:  # noqa: BLE001 - a bug: logged with its traceback; the mirror is unchanged
            self._log_bug(what, exc)
            return
        for note in notes:
            self.get_logger().warning(f"{what}: {note}")

    # ------------------------------------------------------------------ services
    def _on_get_ik_solutions(self, request: GetIKSolutions.Request,
                             response: GetIKSolutions.Response) -> GetIKSolutions.Response:
        """Executor thread: admit the request to the solve queue (or answer busy at once; TIMED_OUT when
        it is still waiting ``max_timeout`` after its arrival)."""
        received = time.monotonic()
        try:
            response, _ = self.solve_queue.run(self._solve_get_ik_solutions, request, response, received,
                                               expires=received + self.config.max_timeout)
        except Busy as exc:
            ik_solutions.fill_error(response, ErrorCode.FAILURE, f"{exc} (max_queued_requests="
                                    f"{self.solve_queue.capacity}); retry later")
        except Expired as exc:
            ik_solutions.fill_error(response, status_code(Status.TIMED_OUT), self._expired_message(exc),
                                    time.monotonic() - received)
        self._count_served()
        return response

    def _expired_message(self, exc: Expired) -> str:
        """The message of a request that waited for the solver until ``max_timeout`` after its arrival."""
        return f"{exc} (answers come within max_timeout={self.config.max_timeout:g} s of a request's arrival)"

    def _solve_get_ik_solutions(self, request: GetIKSolutions.Request, response: GetIKSolutions.Response,
                                received: float | None = None) -> GetIKSolutions.Response:
        """Solver thread: message -> IKQuery -> IKAnswer -> message, on the scene as it is now; ``received``:
        when the request arrived (``time.monotonic()``; None: now)."""
        t0 = time.monotonic()
        received = t0 if received is None else received
        try:
            query, passive = ik_solutions.query_of(request, self.layout, self.config, self.scene.snapshot(), t0,
                                                   received)
            query = self.tf_frames.resolve(query, self.robot, [p.header for t in request.targets for p in t.poses])
            flat = bool(request.flat_solutions)
            answer = self._answer(dataclasses.replace(query,
                                                      delivery_s_per_solution=self._response_s_per_solution[flat]))
            t = time.monotonic()
            response = ik_solutions.fill_response(response, answer, self.layout, passive, self.robot.root_frame,
                                                   query.report_collisions or query.avoid_collisions, flat)
            self._measure_response(time.monotonic() - t, sum(len(a.q) for a in answer.targets), flat)
        except IKDiffuserError as exc:
            response = ik_solutions.fill_error(response, error_code(exc), str(exc), time.monotonic() - received)
        except Exception as exc:  # noqa: BLE001 - a bug: logged with its traceback, answered, the node serves on
            self._log_bug("get_ik_solutions", exc)
            response = ik_solutions.fill_error(response, ErrorCode.FAILURE, f"internal error: {type(exc).__name__}: "
                                               f"{exc}", time.monotonic() - received)
        self._publish_markers(response)
        return response

    def _measure_response(self, seconds: float, solutions: int, flat: bool) -> None:
        """Update the time per solution of building an answer (x 1.5 for sending it), from ``solutions`` built
        in ``seconds`` (``flat``: as arrays, else JointStates)."""
        if solutions:
            measured = 1.5 * seconds / solutions
            self._response_s_per_solution[flat] = max(RESPONSE_S_PER_SOLUTION[flat],
                                                      0.5 * self._response_s_per_solution[flat] + 0.5 * measured)

    def _on_compute_ik(self, request: GetPositionIK.Request,
                       response: GetPositionIK.Response) -> GetPositionIK.Response:
        """Executor thread: compute_ik / solve_ik through the solve queue (busy: FAILURE at once; still
        waiting ``max_timeout`` after its arrival: the TIMED_OUT code of the compute_ik column)."""
        received = time.monotonic()
        try:
            response, _ = self.solve_queue.run(self.compute_ik, request.ik_request, response, received,
                                               expires=received + self.config.max_timeout)
        except Busy as exc:
            response = moveit_bridge.fail(response, ErrorCode.FAILURE, f"{exc} (max_queued_requests="
                                          f"{self.solve_queue.capacity}); retry later")
        except Expired as exc:
            response = moveit_bridge.fail(response, status_code(Status.TIMED_OUT, moveit=True),
                                          self._expired_message(exc))
        self._count_served()
        return response

    def compute_ik(self, ik_request: PositionIKRequest, response: GetPositionIK.Response,
                   received: float | None = None) -> GetPositionIK.Response:
        """Solver thread (or a direct call): PositionIKRequest -> IKQuery -> IKAnswer -> GetPositionIK response;
        ``received``: when the request arrived (``time.monotonic()``; None: now)."""
        t0 = time.monotonic()
        try:
            query, passive = moveit_bridge.query_of(ik_request, self.pipeline.groups, self.layout, self.config,
                                                    self.scene.snapshot(), t0, received)
            poses = list(ik_request.pose_stamped_vector) or [ik_request.pose_stamped]  # as links_and_poses
            query = self.tf_frames.resolve(query, self.robot, [p.header for p in poses])
            return moveit_bridge.fill_response(response, self._answer(query), self.layout, passive,
                                               self.robot.root_frame)
        except IKDiffuserError as exc:
            return moveit_bridge.fail(response, error_code(exc, moveit=True), str(exc))
        except Exception as exc:  # noqa: BLE001 - a bug: logged with its traceback, answered, the node serves on
            self._log_bug("compute_ik", exc)
            return moveit_bridge.fail(response, ErrorCode.FAILURE, f"internal error: {type(exc).__name__}: {exc}")

    def _on_compute_fk(self, request: GetPositionFK.Request,
                       response: GetPositionFK.Response) -> GetPositionFK.Response:
        """Executor thread: compute_fk (FK only: no solver, no queue); a ``header.frame_id`` outside the robot
        through tf2 (at the header's stamp, else the latest) or ``fixed_frame_transforms``."""
        try:
            frame = self.pipeline.frames.normalize(request.header.frame_id)
            external = None if self.pipeline.frames.known(frame) else self.tf_frames.external_frames(
                [frame], {frame: request.header.stamp} if request.header.stamp.sec or request.header.stamp.nanosec
                else None)
            return moveit_fk.answer(self.pipeline, self.layout, request, response, external)
        except IKDiffuserError as exc:
            return moveit_bridge.fail(response, error_code(exc, moveit=True), str(exc))
        except Exception as exc:  # noqa: BLE001 - a bug: logged with its traceback, answered, the node serves on
            self._log_bug("compute_fk", exc)
            return moveit_bridge.fail(response, ErrorCode.FAILURE, f"internal error: {type(exc).__name__}: {exc}")

    def _answer(self, query: IKQuery) -> IKAnswer:
        """The pipeline's answer under the current parameters (tolerances and limits may change at run time; the
        configs they make are rebuilt after a change, not for every request: ~0.1 ms)."""
        if self.ikd_config_version != self._configs_built_at:
            self.pipeline.config = self.config.pipeline_config()
            self.solver.config = self.config.solver_config(self._base_solver_config)
            self._configs_built_at = self.ikd_config_version
        version = self.scene.version
        answer = self.pipeline.answer(query)
        self._solved_version = version
        return answer

    def _log_bug(self, where: str, exc: Exception) -> None:
        """An unexpected exception (a bug): logged at error level with its traceback."""
        self.get_logger().error(f"{where}: internal error {type(exc).__name__}: {exc}\n{traceback.format_exc()}")

    def _count_served(self) -> None:
        with self._stats_lock:
            self.requests_served += 1

    def _publish_markers(self, response: GetIKSolutions.Response) -> None:
        """The answer for RViz: all targets' solutions as a MarkerArray on ~/solutions, and the first
        solution of the first solved target as a moveit_msgs/DisplayRobotState on ~/display_robot_state."""
        if self._markers is None or not self.config.publish_markers or not response.results:
            return
        try:
            if self._markers.get_subscription_count() > 0:
                self._markers.publish(solutions_marker_array(
                    self.robot, response, self.config.max_marker_solutions, self.get_clock().now().to_msg()))
            if self._display is not None and self._display.get_subscription_count() > 0:
                first = next((r for r in response.results if r.num_solutions > 0), None)
                if first is not None:
                    q, passive = (ik_solutions.solutions_array(first, self.layout.active)[0], {}) \
                        if len(first.joint_names) else self.layout.from_joint_state(first.solutions[0])[:2]
                    msg = DisplayRobotState()
                    msg.state.joint_state, msg.state.multi_dof_joint_state = self.layout.to_joint_state(q, passive)
                    msg.state.joint_state.header.stamp = self.get_clock().now().to_msg()
                    msg.state.joint_state.header.frame_id = self.robot.root_frame
                    self._display.publish(msg)
        except Exception as exc:  # noqa: BLE001 - a bug in the visualization: logged, serving goes on
            self._log_bug("markers", exc)


def main(args: list[str] | None = None) -> int:
    """Entry point of ``ikdiffuser_node``; returns the process exit status."""
    rclpy.init(args=args)
    logger = rclpy.logging.get_logger(NODE_NAME)
    node = None
    try:
        try:
            node = IKDiffuserNode()
        except Exception as exc:  # noqa: BLE001 - StartupError, or anything unforeseen: one line, exit 1
            reason = str(exc) if isinstance(exc, StartupError) else f"unexpected {type(exc).__name__}: {exc}"
            logger.error(f"cannot start: {' '.join(reason.split())}")
            return 1
        executor = MultiThreadedExecutor(num_threads=node.executor_threads)
        executor.add_node(node)
        try:
            executor.spin()
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        finally:
            executor.shutdown()
        return 0
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
