"""``ikdiffuser_ros/srv/GetIKSolutions`` <-> :class:`~ikdiffuser_ros.query.IKQuery` / :class:`~ikdiffuser_ros.query.IKAnswer`.

Message semantics (the meaning of the query is the core's):

* ``num_solutions`` 0 = the node's ``default_num_solutions``.
* ``timeout`` 0 = ``default_timeout``; negative is an error. It counts from the start of the
  request's solve, and the whole answer (the wait for the solver included) comes within
  ``max_timeout`` of the request's arrival.
* ``objective_names`` / ``objective_weights``: override the node's default weights by name (or alias).
* ``seed_state``: the seed (joints not named keep their default; passive joints named keep their
  value in the answers); ``seed_weight`` > 0 adds the ``seed`` objective.
* ``group_name`` (empty = none), ``locked_joints`` (by name; passive ones set the answers' value),
  ``joint_constraints`` (:func:`~ikdiffuser_ros.ros.moveit_bridge.joint_bounds`, the conversion of
  compute_ik's) and ``max_rounds`` (0 = the node's, which also caps it): the core's
  :class:`IKQuery` ``group``, ``locked``, ``constraints`` and ``max_rounds``, as for compute_ik.
* ``random_seed`` < 0: nondeterministic.
* Each result carries its target's code and its solutions as full joint states
  (:meth:`JointStateLayout.to_joint_states`); the response's code is SUCCESS, the one code all
  failed targets share, or FAILURE when they differ. :func:`solutions_array` reads them back.
"""

from __future__ import annotations

import array
import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ikdiffuser_ros.errors import InvalidGoalError, InvalidRequestError
from ikdiffuser_ros.msg import IKTargetResult
from ikdiffuser_ros.query import IKAnswer, IKQuery, IKTarget
from ikdiffuser_ros.ros.conversions import JointStateLayout, budget_window, duration_to_seconds, pose_values
from ikdiffuser_ros.ros.error_codes import ErrorCode, status_code
from ikdiffuser_ros.ros.moveit_bridge import joint_bounds
from ikdiffuser_ros.sampling import objectives as obj
from ikdiffuser_ros.ros.params import NodeConfig

if TYPE_CHECKING:
    from builtin_interfaces.msg import Duration
    from sensor_msgs.msg import JointState

    from ikdiffuser_ros.collision.world import World
    from ikdiffuser_ros.msg import IKTarget as IKTargetMsg
    from ikdiffuser_ros.srv import GetIKSolutions


def timeout_of(duration: Duration, default: float, cap: float) -> float:
    """builtin_interfaces/Duration -> budget [s]: 0 = ``default``, capped at ``cap``; negative: InvalidRequestError."""
    timeout = duration_to_seconds(duration)
    if timeout < 0 or not math.isfinite(timeout):
        raise InvalidRequestError(f"negative timeout {timeout:.9g} s")
    return min(timeout or default, cap)


def objectives_of(names: Iterable[str], weights: Iterable[float], cfg: NodeConfig,
                  has_seed: bool) -> dict[str, float]:
    """The node's default objectives (``objective_weights``) overridden by the request's lists, by
    canonical name -> ``{name: weight}`` (InvalidRequestError: lists of unequal length, an unknown name)."""
    names, weights = list(names), list(weights)
    if len(names) != len(weights):
        raise InvalidRequestError(f"objective_names has {len(names)} entries but objective_weights {len(weights)}")
    out = cfg.default_objectives(has_seed)
    out.update((obj.canonical_name(n), float(w)) for n, w in zip(names, weights))
    return out


def target_of(msg: IKTargetMsg) -> IKTarget:
    """ikdiffuser_ros/IKTarget -> :class:`IKTarget` (the core validates it; the frames come with the poses, so
    with a pose count that does not match the links they are left out, not counted as a second mismatch)."""
    frames = [p.header.frame_id for p in msg.poses] if len(msg.poses) == len(msg.link_names) else []
    tol = list(msg.tolerances)
    if len(tol) not in (0, 6 * len(msg.link_names)):
        raise InvalidGoalError(f"tolerances has {len(tol)} values: 6 per link name ({len(msg.link_names)} links: "
                               f"{6 * len(msg.link_names)}), or none")
    return IKTarget(links=list(msg.link_names), poses=[pose_values(p.pose) for p in msg.poses],
                    frames=frames, position_only=[bool(v) for v in msg.position_only],
                    tolerances=[tol[6 * k:6 * k + 6] for k in range(len(tol) // 6)])


def locked_of(msg: JointState, layout: JointStateLayout) -> tuple[dict[str, float], dict[str, float]]:
    """``locked_joints`` -> ({active variable: value} for :attr:`IKQuery.locked`, {passive joint: value} for
    the answers); InvalidRobotStateError on unknown names, NaN values or a length mismatch."""
    if not (len(msg.name) or len(msg.position)):
        return {}, {}
    q, passive, names = layout.from_joint_state(msg, what="locked_joints")
    return {n: float(q[layout.index[n]]) for n in names if n in layout.index}, passive


def query_of(request: GetIKSolutions.Request, layout: JointStateLayout, cfg: NodeConfig, world: World | None,
             start: float | None = None, received: float | None = None) -> tuple[IKQuery, dict[str, float]]:
    """A GetIKSolutions request -> (:class:`IKQuery`, passive joint values of the answers: ``seed_state``'s,
    then ``locked_joints``'); raises the core's errors on bad fields. ``start``: when its solve started,
    ``received``: when it arrived (``time.monotonic()``; :func:`budget_window`)."""
    seed_weight = float(request.seed_weight)
    if not math.isfinite(seed_weight) or seed_weight < 0:
        raise InvalidRequestError(f"seed_weight {seed_weight} must be finite and >= 0")
    seed, passive = None, {}
    if len(request.seed_state.name) or len(request.seed_state.position):
        seed, passive, _ = layout.from_joint_state(request.seed_state, what="seed_state")
    locked, locked_passive = locked_of(request.locked_joints, layout)
    passive.update(locked_passive)
    objectives = objectives_of(request.objective_names, request.objective_weights, cfg, seed is not None)
    if seed is not None and seed_weight > 0:
        objectives["seed"] = seed_weight
    start, timeout = budget_window(timeout_of(request.timeout, cfg.default_timeout, cfg.max_timeout),
                                   cfg.max_timeout, start, received)
    query = IKQuery(
        targets=[target_of(t) for t in request.targets],
        num_solutions=int(request.num_solutions) or cfg.default_num_solutions,
        group=request.group_name or None, locked=locked,
        constraints=joint_bounds(request),  # compute_ik's conversion: it reads request.joint_constraints
        seed=seed, objectives=objectives, avoid_collisions=bool(request.avoid_collisions), world=world,
        report_collisions=bool(request.report_collisions),
        timeout=timeout, start=start, max_rounds=min(int(request.max_rounds) or cfg.max_rounds, cfg.max_rounds),
        random_seed=int(request.random_seed) if request.random_seed >= 0 else None,
        keep_invalid=cfg.return_failed_solutions)
    return query, passive


def fill_response(response: GetIKSolutions.Response, answer: IKAnswer, layout: JointStateLayout,
                  passive: dict[str, float], root: str, collisions_known: bool = True,
                  flat: bool = False) -> GetIKSolutions.Response:
    """Write an :class:`IKAnswer` into a GetIKSolutions response (returned): each solution a JointState of
    every joint (``passive``: the passive joints' values, others at their default; frame ``root``), or with
    ``flat`` all of a target's solutions in one array of the active joints (``joint_names``, ``positions``);
    ``collisions_known`` False (the query neither reported nor avoided collisions): ``in_collision`` empty."""
    for target in answer.targets:
        r = IKTargetResult()
        r.error_code, r.message = int(status_code(target.status, target.error)), target.message
        r.num_solutions = int(len(target.q))
        if flat:
            r.joint_names = layout.active
            r.positions = array.array("d", np.ascontiguousarray(target.q, dtype=np.float64).tobytes())
        else:
            r.solutions = layout.to_joint_states(target.q, passive, root) if len(target.q) else []
        r.position_errors = np.asarray(target.position_error, dtype=float).tolist()
        r.rotation_errors = np.asarray(target.rotation_error, dtype=float).tolist()
        r.in_collision = [bool(c) for c in target.in_collision] if collisions_known else []
        response.results.append(r)
    failed = sorted({r.error_code for r in response.results if r.error_code != ErrorCode.SUCCESS})
    response.error_code = ErrorCode.SUCCESS if not failed else failed[0] if len(failed) == 1 else ErrorCode.FAILURE
    response.message = answer.summary()
    response.solve_time = answer.solve_time
    return response


def fill_error(response: GetIKSolutions.Response, code: int, message: str,
               solve_time: float = 0.0) -> GetIKSolutions.Response:
    """A GetIKSolutions response for a request refused as a whole (no per-target results)."""
    response.error_code, response.message = int(code), message
    response.results, response.solve_time = [], solve_time
    return response


def solutions_array(result: IKTargetResult, joint_names: Sequence[str]) -> np.ndarray:
    """A result's solutions (JointStates or flat) -> (N, len(joint_names)) float64, columns in ``joint_names``
    order (for clients: e.g. ``robot.joint_names``); KeyError naming a joint a solution lacks."""
    if len(result.joint_names):
        flat = np.asarray(result.positions, dtype=np.float64).reshape(-1, len(result.joint_names))
        column = {name: k for k, name in enumerate(result.joint_names)}
        missing = [name for name in joint_names if name not in column]
        if missing:
            raise KeyError(f"the solutions have no joint {missing[0]!r} (they name {list(result.joint_names)})")
        return flat[:, [column[name] for name in joint_names]]
    out = np.empty((len(result.solutions), len(joint_names)))
    for k, js in enumerate(result.solutions):
        values = dict(zip(js.name, js.position))
        try:
            out[k] = [values[name] for name in joint_names]
        except KeyError as exc:
            raise KeyError(f"solution {k} has no joint {exc.args[0]!r} (it names {list(js.name)})") from None
    return out
