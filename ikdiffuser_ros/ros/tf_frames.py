"""Frames outside the robot (``world``, ``map``, ``odom``...) for the IK services: tf2, or a fixed transform.

A target pose may name any frame: a link of the robot (placed by the core's FK), the root frame (or
an empty ``frame_id``), or a frame outside the robot, whose pose in the root frame the services look
up here and pass to the core as :attr:`IKQuery.external_frames <ikdiffuser_ros.query.IKQuery>`:

* **tf2**: ``T_root_frame`` from a ``tf2_ros.Buffer`` fed by ``/tf`` and ``/tf_static`` (the two
  subscriptions of ``tf2_ros.TransformListener``, same QoS, in a MutuallyExclusiveCallbackGroup of
  their own: a flood of ``/tf`` takes at most one executor thread, never the IK services'), at the
  pose's ``header.stamp`` when it is nonzero, else the latest transform. A transform not (yet) there
  is waited for up to ``tf_timeout`` seconds, and never past the request's budget; a stamp older
  than the buffer (10 s) or beyond the newest transform after that wait is an error.
* **Fixed transforms** (``fixed_frame_transforms``, for setups with no TF): entries
  ``"FRAME x y z qx qy qz qw"``, the root frame's pose in ``FRAME`` [m, quaternion x y z w], as a
  static transform ``FRAME -> root`` would give it (``static_transform_publisher --frame-id FRAME
  --child-frame-id <root>``). Used when tf2 has no transform for ``FRAME`` at the moment of the
  request (no wait), so a running TF tree takes precedence.

A frame neither source resolves fails the targets that name it (the request's other targets are
solved) with the core's :class:`~ikdiffuser_ros.errors.UnknownFrameError` (FRAME_TRANSFORM_FAILURE):
"no transform from 'world' to 'base' (latest) after waiting 0.100 s (tf2: <tf2's reason>); ...".
The frames of one request share one wait. Poses of one request in the same frame share one
transform: at the latest of their stamps. Without tf2 (``tf2_ros`` not importable) the node serves
robot frames and fixed transforms only, and says so once in its log.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ikdiffuser_ros.errors import IKDiffuserError, UnknownFrameError
from ikdiffuser_ros.kinematics.frames import pose_matrix

try:  # tf2 has no wheel: scripts/setup.sh builds it from source into test_ws/ (a ROS install has it)
    import tf2_ros
    from builtin_interfaces.msg import Time as TimeMsg
    from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile
    from tf2_msgs.msg import TFMessage
except ImportError as exc:  # also a missing shared library of the tf2 build
    tf2_ros = None
    TF2_MISSING = f"{type(exc).__name__}: {exc}"
else:
    TF2_MISSING = ""
_ZERO = TimeMsg() if tf2_ros is not None else None  # "the latest" for tf2

if TYPE_CHECKING:
    from builtin_interfaces.msg import Time
    from geometry_msgs.msg import Transform, TransformStamped
    from rclpy.node import Node
    from std_msgs.msg import Header

    from ikdiffuser_ros.kinematics.robot_model import RobotModel
    from ikdiffuser_ros.query import IKQuery

#: node parameters read here (``getattr(cfg, name, default)``: they work before params.py declares them)
FIXED_PARAM, TIMEOUT_PARAM = "fixed_frame_transforms", "tf_timeout"
#: default wait [s] for a transform tf2 does not have yet (a dynamic transform at a fresh stamp)
DEFAULT_TF_TIMEOUT = 0.1
#: how often a waiting lookup asks the buffer again [s]
POLL_S = 0.002
#: the topics and QoS of tf2_ros.TransformListener
TF_TOPIC, TF_STATIC_TOPIC = "/tf", "/tf_static"


def normalize(frame: str) -> str:
    """As the core's FrameResolver: blanks and a leading ``/`` stripped ("" stays "", the root frame)."""
    frame = frame.strip()
    return frame[1:] if frame.startswith("/") else frame


def parse_fixed_transforms(entries: Iterable[str], root: str) -> dict[str, np.ndarray]:
    """``["FRAME x y z qx qy qz qw", ...]`` (the root frame's pose in FRAME) -> ``{FRAME: T_root_FRAME}``.

    ValueError with the reason: not a name and 7 numbers, a bad quaternion, a frame given twice, the
    root frame itself."""
    out: dict[str, np.ndarray] = {}
    for entry in entries:
        parts = str(entry).replace(",", " ").split()
        where = f"{FIXED_PARAM} entry {entry!r}"
        if len(parts) != 8:
            raise ValueError(f"{where}: expected 'FRAME x y z qx qy qz qw' (a frame name and 7 numbers: the "
                             f"root frame {root!r}'s pose in FRAME)")
        frame = normalize(parts[0])
        try:
            values = [float(v) for v in parts[1:]]
        except ValueError:
            raise ValueError(f"{where}: x y z qx qy qz qw must be numbers") from None
        if frame in ("", root):
            raise ValueError(f"{where}: the frame must differ from the root frame {root!r}")
        if frame in out:
            raise ValueError(f"{where}: frame {frame!r} is given twice")
        try:
            T_frame_root = pose_matrix(values, where)
        except IKDiffuserError as exc:
            raise ValueError(str(exc)) from None
        out[frame] = np.linalg.inv(T_frame_root)
    return out


def outside_frames(query: IKQuery, robot: RobotModel) -> set[str]:
    """Frames the query's targets name that are neither empty, the root frame nor a link of ``robot``."""
    links = robot.urdf.links
    return {f for t in query.targets for f in map(normalize, t.frames)
            if f and f != robot.root_frame and f not in links}


def latest_stamps(headers: Iterable[Header]) -> dict[str, Time]:
    """``{frame: the latest nonzero stamp among the headers naming it}`` (frames with only zero stamps: absent)."""
    out: dict[str, Time] = {}
    for h in headers:
        frame, s = normalize(h.frame_id), h.stamp
        if (s.sec, s.nanosec) != (0, 0) and (frame not in out or (s.sec, s.nanosec) > (out[frame].sec, out[frame].nanosec)):
            out[frame] = s
    return out


def transform_matrix(t: TransformStamped | Transform) -> np.ndarray:
    """geometry_msgs/TransformStamped (or Transform) -> (4, 4) float64 (a bad quaternion: InvalidGoalError)."""
    t = getattr(t, "transform", t)
    tr, r = t.translation, t.rotation
    return pose_matrix([tr.x, tr.y, tr.z, r.x, r.y, r.z, r.w], "transform")


def _frame_error(frame: str, message: str) -> UnknownFrameError:
    """The core's UnknownFrameError (FRAME_TRANSFORM_FAILURE) with this message instead of its listing."""
    exc = UnknownFrameError(frame, [])
    exc.args = (message,)
    return exc


class ExternalFrames(Mapping):
    """:attr:`IKQuery.external_frames` of a request: ``{frame: T_root_frame}`` for the frames found, and the
    frames that could not be resolved, whose look-up raises their error (UnknownFrameError with tf2's
    reason). The core looks a target's frames up while it checks that target, so only the targets that
    name such a frame are answered FRAME_TRANSFORM_FAILURE (GetIKSolutions' per-target codes); the
    request's other targets are solved."""

    def __init__(self, found: Mapping[str, np.ndarray], failed: Mapping[str, UnknownFrameError]) -> None:
        self.found, self.failed = dict(found), dict(failed)

    def __getitem__(self, frame: str) -> np.ndarray:
        if frame in self.failed:
            exc = self.failed[frame]
            raise _frame_error(exc.frame, str(exc))
        return self.found[frame]

    def __contains__(self, frame: object) -> bool:
        return frame in self.found or frame in self.failed

    def __iter__(self):
        return iter([*self.found, *(f for f in self.failed if f not in self.found)])

    def __len__(self) -> int:
        return len(self.found.keys() | self.failed.keys())


class TfFrames:
    """The node's source of external frames: a tf2 buffer fed by /tf and /tf_static, and the
    ``fixed_frame_transforms`` parameter (see the module docstring).

    ``cfg`` is the node's live config (read at every request: ``ros2 param set`` applies to the next
    one). ValueError from ``__init__``: a bad ``fixed_frame_transforms`` entry."""

    def __init__(self, node: Node, cfg: Any, root_frame: str) -> None:
        self.node, self.cfg, self.root = node, cfg, root_frame
        self._fixed_key = tuple(getattr(cfg, FIXED_PARAM, ()) or ())
        self._fixed = parse_fixed_transforms(self._fixed_key, root_frame)  # a bad value stops the node
        self.buffer = None
        if tf2_ros is None:
            node.get_logger().warning(f"tf2 not importable ({TF2_MISSING}): poses in frames outside the robot are "
                                      f"resolved only from {FIXED_PARAM} (build tf2: make setup)")
            return
        self.buffer = tf2_ros.Buffer()
        self.group = MutuallyExclusiveCallbackGroup()
        qos = QoSProfile(depth=100, durability=DurabilityPolicy.VOLATILE, history=HistoryPolicy.KEEP_LAST)
        static_qos = QoSProfile(depth=100, durability=DurabilityPolicy.TRANSIENT_LOCAL, history=HistoryPolicy.KEEP_LAST)
        self._subs = [
            node.create_subscription(TFMessage, TF_TOPIC, self._on_tf, qos, callback_group=self.group),
            node.create_subscription(TFMessage, TF_STATIC_TOPIC, self._on_tf_static, static_qos,
                                     callback_group=self.group)]

    def _on_tf(self, msg: TFMessage) -> None:
        self._store(msg, self.buffer.set_transform)

    def _on_tf_static(self, msg: TFMessage) -> None:
        self._store(msg, self.buffer.set_transform_static)

    def _store(self, msg: TFMessage, store: Callable[[TransformStamped, str], None]) -> None:
        for t in msg.transforms:
            try:
                store(t, "default_authority")
            except Exception as exc:  # noqa: BLE001 - tf2 refuses bad transforms (NaN, self loops): logged, ignored
                self.node.get_logger().warning(f"tf2 refused the transform {t.header.frame_id!r} -> "
                                               f"{t.child_frame_id!r}: {exc}", throttle_duration_sec=5.0)

    def fixed(self) -> dict[str, np.ndarray]:
        """``{frame: T_root_frame}`` of the ``fixed_frame_transforms`` parameter (parsed once per value; a bad
        value set at run time: one warning, and the last good value stays in use)."""
        entries = tuple(getattr(self.cfg, FIXED_PARAM, ()) or ())
        if entries != self._fixed_key:
            try:
                self._fixed = parse_fixed_transforms(entries, self.root)
            except ValueError as exc:
                self.node.get_logger().warning(f"{exc}; keeping the previous {FIXED_PARAM}")
            self._fixed_key = entries
        return self._fixed

    def external_frames(self, frames: Iterable[str], stamps: Mapping[str, Time] | None = None,
                        deadline: float | None = None) -> dict[str, np.ndarray]:
        """``{frame: T_root_frame}`` for each frame: tf2 at ``stamps[frame]`` (absent: the latest), else
        the fixed transform, else a wait for tf2 of at most ``tf_timeout`` s that ends by ``deadline``
        (``time.monotonic()``). UnknownFrameError (FRAME_TRANSFORM_FAILURE) for a frame still missing."""
        found, failed = self._lookup_all(frames, stamps or {}, deadline)
        if failed:
            raise next(iter(failed.values()))
        return found

    def resolve(self, query: IKQuery, robot: RobotModel, headers: Sequence[Header]) -> IKQuery:
        """``query`` with ``external_frames`` for every frame outside ``robot`` its targets name, stamped by
        ``headers`` (the request's PoseStamped headers), the wait bounded by the query's budget (``query``
        itself when there is no such frame). A frame that cannot be resolved fails only the targets that
        name it (see :class:`ExternalFrames`)."""
        frames = outside_frames(query, robot)
        if not frames:
            return query
        deadline = None
        if query.timeout is not None:
            deadline = (query.start if query.start is not None else time.monotonic()) + query.timeout
        found, failed = self._lookup_all(frames, latest_stamps(headers), deadline)
        return dataclasses.replace(query, external_frames=ExternalFrames({**query.external_frames, **found}, failed))

    # ------------------------------------------------------------------------------------------
    def _lookup_all(self, frames: Iterable[str], stamps: Mapping[str, Time], deadline: float | None
                    ) -> tuple[dict[str, np.ndarray], dict[str, UnknownFrameError]]:
        """(found ``{frame: T_root_frame}``, failed ``{frame: error}``); one wait of at most ``tf_timeout``
        (and to ``deadline`` at most) for all the frames tf2 does not have yet."""
        t0 = time.monotonic()
        wait_until = t0 + float(getattr(self.cfg, TIMEOUT_PARAM, DEFAULT_TF_TIMEOUT))
        if deadline is not None:
            wait_until = min(wait_until, deadline)
        found, failed = {}, {}
        for frame in sorted(set(frames)):
            try:
                found[frame] = self._lookup(frame, stamps.get(frame), t0, wait_until)
            except UnknownFrameError as exc:
                failed[frame] = exc
        return found, failed

    def _lookup(self, frame: str, stamp: Time | None, t0: float, wait_until: float) -> np.ndarray:
        """T_root_frame: tf2 now, else the fixed transform, else tf2 once it has it (until ``wait_until``)."""
        when = stamp if stamp is not None else _ZERO
        at = f"at stamp {stamp.sec}.{stamp.nanosec:09d}" if stamp is not None else "(latest)"
        reason = f"tf2 is not available in this node: {TF2_MISSING}"
        if self.buffer is not None:
            ok, reason = self._can(frame, when)
            if ok:
                return self._matrix(frame, when)
        fixed = self.fixed()
        if frame in fixed:
            return fixed[frame]
        if self.buffer is not None:
            while not ok and time.monotonic() < wait_until:
                time.sleep(min(POLL_S, max(0.0, wait_until - time.monotonic())))
                ok, reason = self._can(frame, when)
            if ok:
                return self._matrix(frame, when)
        reason = " ".join(str(reason).split()) or "no reason given"
        hint = (f"publish it on {TF_TOPIC} or {TF_STATIC_TOPIC}, or give the node a fixed transform in the "
                f"{FIXED_PARAM} parameter ('{frame} x y z qx qy qz qw': the pose of {self.root!r} in {frame!r})")
        raise _frame_error(frame, f"no transform from {frame!r} to {self.root!r} {at} after waiting "
                                  f"{time.monotonic() - t0:.3f} s (tf2: {reason}); {hint}")

    def _can(self, frame: str, when: Time) -> tuple[bool, str]:
        try:
            ok, reason = self.buffer.can_transform_core(self.root, frame, when)
        except Exception as exc:  # noqa: BLE001 - tf2's exceptions (invalid frame names...) are reasons here
            return False, f"{type(exc).__name__}: {exc}"
        return bool(ok), reason or ""

    def _matrix(self, frame: str, when: Time) -> np.ndarray:
        try:
            return transform_matrix(self.buffer.lookup_transform_core(self.root, frame, when))
        except IKDiffuserError as exc:
            raise _frame_error(frame, f"the transform from {frame!r} to {self.root!r} is not a rigid transform: "
                                      f"{exc}") from None
        except Exception as exc:  # noqa: BLE001 - the transform went away between the check and the lookup
            raise _frame_error(frame, f"no transform from {frame!r} to {self.root!r} (tf2: {type(exc).__name__}: "
                                      f"{exc})") from None
