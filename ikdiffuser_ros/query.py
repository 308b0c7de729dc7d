"""The meaning of an IK query, independent of how it arrives (Python call, ROS service, MoveIt).

An :class:`IKQuery` asks for up to ``num_solutions`` joint configurations for each of its
:class:`IKTarget` s. :meth:`ikdiffuser_ros.pipeline.IKPipeline.answer` answers it with an
:class:`IKAnswer`: one :class:`TargetAnswer` per target, in order.

Units and frames: poses are (4, 4) float64 transforms or ``(x, y, z, qx, qy, qz, qw)``
(ROS quaternion order), in metres, expressed in the frame named next to them (empty = the
robot's root frame; a link frame is placed at the query's reference state: its seed, else
the robot's default state). Joint values are radians or metres, in ``robot.joint_names`` order.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ikdiffuser_ros.collision.world import World


@dataclass
class IKTarget:
    """One IK problem: poses for some links of the robot.

    ``links[k]`` must reach ``poses[k]`` (expressed in ``frames[k]``; ``frames`` empty = all in the
    root frame). A link is an end effector of the model or a frame rigidly attached to one (a TCP).
    ``position_only[k]`` (empty = all False) leaves that link's orientation free. End effectors not
    named are free, unless the query names a planning group (see :class:`IKQuery`).

    ``tolerances[k]`` (empty = all exact; an entry None = exact): six numbers ``(x, y, z [m], rx, ry,
    rz [rad])``, how far the link may be from its pose along and about the pose's own axes
    (TRAC-IK's bounds; ``inf`` frees an axis, e.g. ``(0, 0, 0, 0, 0, inf)``: any yaw about the
    tool's z axis). Rotation components are those of the rotation vector between the link's and
    the target's orientation, in the target's axes. A solution's errors are what is left beyond
    the tolerances, and they must be within the solver's own (1e-5 m, 1e-4 rad).
    """

    links: Sequence[str]
    poses: Sequence
    frames: Sequence[str] = ()
    position_only: Sequence[bool] = ()
    tolerances: Sequence[Sequence[float] | None] = ()


@dataclass(frozen=True)
class JointBounds:
    """Constraint: joint ``joint`` must lie in ``[lower, upper]`` [rad or m] (MoveIt's JointConstraint
    is ``position - tolerance_below .. position + tolerance_above``)."""

    joint: str
    lower: float
    upper: float

    def satisfied(self, q: np.ndarray, index: int) -> np.ndarray:
        """(k, n) candidates -> (k,) bool, with 1e-9 of slack for rounding."""
        v = q[:, index]
        return (v >= self.lower - 1e-9) & (v <= self.upper + 1e-9)


@dataclass
class IKQuery:
    """What to solve and how (see the module docstring for units and frames).

    Attributes:
        targets: the IK problems; each gets its own :class:`TargetAnswer`.
        num_solutions: solutions wanted per target (at most; valid ones only unless ``keep_invalid``).
        group: planning group name (MoveIt semantics): only the group's joints move, the others are
            locked at the seed (or default) state, and group tips without a pose keep their pose at
            that state. None = every joint moves and unnamed end effectors are free.
        locked: ``{joint name: value}`` held fixed (in addition to the group's locking).
        seed: (n,) joint values: the reference state for frames and locking, the ``seed`` objective,
            and the order of the answers (closest first when no objective is weighted). The LM starts
            from the seed before any sampling: a seed that solves the pose comes back as it is, and
            the seed's own solution, when valid, is the first answer.
        consistency_limits: local mode (MoveIt's consistency limits, TRAC-IK's and pick_ik's local
            solving): every answer lies within this distance of the seed in each joint [rad or m]
            (one number for all joints, or n of them); needs a seed. The search starts from the seed
            and from points around it, not from the learned prior. None = global mode.
        objectives: ``{name or alias: weight}`` of :data:`ikdiffuser_ros.sampling.objectives.OBJECTIVES`.
        cost_fn: your own differentiable cost ``q (M, n) float64 -> (M,)``, row-wise: the ``user``
            objective (weight 1 unless ``objectives`` names ``user``); it guides the sampling, the
            null-space polish and the order of the answers.
        constraints: joint bounds every valid solution satisfies.
        external_frames: ``{frame name: T_root_frame}`` (4, 4) poses of frames outside the robot (``world``,
            ``map``...) in its root frame, for targets given in them (the ROS node fills it from tf2).
        avoid_collisions: only solutions free of self collision and of collision with ``world``
            (exact FCL check) are valid.
        world: the planning scene (objects, attached objects, ACM), or None.
        report_collisions: check every returned candidate for collisions (``in_collision``) even
            without ``avoid_collisions`` (an exact check per candidate, about 0.5 ms each on a CPU;
            False: ``in_collision`` is False for candidates that were not checked).
        timeout: wall-clock budget [s] of the whole answer; None = the pipeline's default.
        start: ``time.monotonic()`` at which the budget started (a service sets it when it picks
            the request up, so converting the request counts too); None = when ``answer`` is called.
        random_seed: seed of the sampling (same query + seed = same answer); None = random.
        max_rounds: most sampling rounds; a target is sampled again, with more candidates each round,
            while it has fewer than ``num_solutions`` valid solutions and the budget lasts (the default
            lets the budget decide).
        keep_invalid: also return candidates that failed (flagged by ``valid`` False).
        diversity: how widely the learned prior's samples spread over the solution set, in [0, 1]: 0 =
            the checkpoint's fast, mode-seeking plan; 1 = stochastic sampling with more steps (more
            distinct solutions, more passes each). None = automatic: 1 when ``num_solutions`` is at
            least :attr:`PipelineConfig.diverse_min_solutions` and the timeout at least
            :attr:`PipelineConfig.diverse_min_budget` (20 ms), else 0.
        delivery_s_per_solution: time [s] the caller spends per returned solution after the answer
            (the ROS node: building and sending its messages). The rounds end early enough to leave it
            for the solutions the answer will hold, counted as they are found, so a large request
            keeps time for what it found, not for all it asked for.
    """

    targets: Sequence[IKTarget]
    num_solutions: int = 32
    group: str | None = None
    locked: Mapping[str, float] = field(default_factory=dict)
    seed: np.ndarray | None = None
    consistency_limits: float | Sequence[float] | None = None
    objectives: Mapping[str, float] = field(default_factory=dict)
    cost_fn: Callable | None = None
    constraints: Sequence[JointBounds] = ()
    external_frames: Mapping[str, np.ndarray] = field(default_factory=dict)
    avoid_collisions: bool = False
    world: World | None = None
    report_collisions: bool = False
    timeout: float | None = None
    start: float | None = None
    random_seed: int | None = 0
    max_rounds: int = 100
    keep_invalid: bool = False
    diversity: float | None = None
    delivery_s_per_solution: float = 0.0


class Status(enum.Enum):
    """Outcome of one target."""

    SOLVED = "solved"  #: at least one valid solution
    NO_SOLUTION = "no solution"  #: candidates were measured; none is valid
    TIMED_OUT = "timed out"  #: the deadline came before any candidate of this target was measured
    INVALID = "invalid"  #: the target itself is malformed (``error`` says why)


@dataclass
class TargetAnswer:
    """Solutions of one target, best first (k rows; k <= num_solutions).

    Attributes:
        status, message: outcome and a human-readable reason (``error``: the exception of an INVALID target).
        q: (k, n) float64 joint values.
        position_error: (k,) worst position error over the constrained links [m].
        rotation_error: (k,) worst rotation error over the rotation-constrained links [rad].
        in_collision: (k,) bool, exact check against itself and the world (False where not checked:
            no checker, or ``report_collisions`` and ``avoid_collisions`` both False).
        valid: (k,) bool, within tolerances, limits, constraints (and collision free if asked).
    """

    status: Status
    message: str = ""
    q: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    position_error: np.ndarray = field(default_factory=lambda: np.zeros(0))
    rotation_error: np.ndarray = field(default_factory=lambda: np.zeros(0))
    in_collision: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    valid: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    error: Exception | None = None


@dataclass
class IKAnswer:
    """The answer to an :class:`IKQuery`: one :class:`TargetAnswer` per target, ``solve_time`` [s]."""

    targets: list[TargetAnswer]
    joint_names: list[str]
    solve_time: float = 0.0

    @property
    def solved(self) -> bool:
        return all(t.status is Status.SOLVED for t in self.targets)

    def summary(self) -> str:
        """One line: how many targets were solved, or the first failure."""
        failed = [i for i, t in enumerate(self.targets) if t.status is not Status.SOLVED]
        if not failed:
            return f"{len(self.targets)} target(s) solved"
        first, prefix = self.targets[failed[0]], f"target {failed[0]}: "
        message = first.message if first.message.startswith(prefix) else prefix + first.message  # named once
        return f"{len(failed)} of {len(self.targets)} target(s) failed; {message}"
