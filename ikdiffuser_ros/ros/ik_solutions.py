"""``ikdiffuser_ros/srv/GetIKSolutions`` <-> :class:`~ikdiffuser_ros.query.IKQuery` / :class:`~ikdiffuser_ros.query.IKAnswer`.

Message semantics (the meaning of the query is the core's):

* ``num_solutions`` 0 = the node's ``default_num_solutions``.
* ``timeout`` 0 = ``default_timeout``; negative is an error. It counts from the start of the
  request's solve, and the whole answer (the wait for the solver included) comes within
  ``max_timeout`` of the request's arrival.
* ``objective_names`` / ``objective_weights``: override the node's default weights by name (or alias).
* ``seed_state``: the seed (joints not named keep their default); ``seed_weight`` > 0 adds the
  ``seed`` objective.
* ``random_seed`` < 0: nondeterministic.
* Each result carries its target's code; the response's code is SUCCESS, the one code all failed
  targets share, or FAILURE when they differ.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from ikdiffuser_ros.errors import InvalidRequestError
from ikdiffuser_ros.msg import IKTargetResult
from ikdiffuser_ros.query import IKAnswer, IKQuery, IKTarget
from ikdiffuser_ros.ros.conversions import JointStateLayout, budget_window, duration_to_seconds, pose_values
from ikdiffuser_ros.ros.error_codes import ErrorCode, status_code
from ikdiffuser_ros.sampling import objectives as obj
from ikdiffuser_ros.ros.params import NodeConfig

if TYPE_CHECKING:
    from builtin_interfaces.msg import Duration

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
    """ikdiffuser_ros/IKTarget -> :class:`IKTarget` (the core validates it)."""
    return IKTarget(links=list(msg.link_names), poses=[pose_values(p.pose) for p in msg.poses],
                    frames=[p.header.frame_id for p in msg.poses], position_only=[bool(v) for v in msg.position_only])


def query_of(request: GetIKSolutions.Request, layout: JointStateLayout, cfg: NodeConfig, world: World | None,
             start: float | None = None, received: float | None = None) -> IKQuery:
    """A GetIKSolutions request -> :class:`IKQuery` (raises the core's errors on bad fields); ``start``:
    when its solve started, ``received``: when it arrived (``time.monotonic()``; :func:`budget_window`)."""
    seed_weight = float(request.seed_weight)
    if not math.isfinite(seed_weight) or seed_weight < 0:
        raise InvalidRequestError(f"seed_weight {seed_weight} must be finite and >= 0")
    seed = None
    if len(request.seed_state.name) or len(request.seed_state.position):
        seed, _, _ = layout.from_joint_state(request.seed_state, what="seed_state")
    objectives = objectives_of(request.objective_names, request.objective_weights, cfg, seed is not None)
    if seed is not None and seed_weight > 0:
        objectives["seed"] = seed_weight
    start, timeout = budget_window(timeout_of(request.timeout, cfg.default_timeout, cfg.max_timeout),
                                   cfg.max_timeout, start, received)
    return IKQuery(
        targets=[target_of(t) for t in request.targets],
        num_solutions=int(request.num_solutions) or cfg.default_num_solutions,
        seed=seed, objectives=objectives, avoid_collisions=bool(request.avoid_collisions), world=world, report_collisions=True,
        timeout=timeout, start=start, max_rounds=cfg.max_rounds,
        random_seed=int(request.random_seed) if request.random_seed >= 0 else None,
        keep_invalid=cfg.return_failed_solutions)


def fill_response(response: GetIKSolutions.Response, answer: IKAnswer) -> GetIKSolutions.Response:
    """Write an :class:`IKAnswer` into a GetIKSolutions response (returned)."""
    response.joint_names = list(answer.joint_names)
    for target in answer.targets:
        r = IKTargetResult()
        r.error_code, r.message = int(status_code(target.status, target.error)), target.message
        r.num_solutions = int(len(target.q))
        r.positions = np.asarray(target.q, dtype=float).reshape(-1).tolist()
        r.position_errors = np.asarray(target.position_error, dtype=float).tolist()
        r.rotation_errors = np.asarray(target.rotation_error, dtype=float).tolist()
        r.in_collision = [bool(c) for c in target.in_collision]
        response.results.append(r)
    failed = sorted({r.error_code for r in response.results if r.error_code != ErrorCode.SUCCESS})
    response.error_code = ErrorCode.SUCCESS if not failed else failed[0] if len(failed) == 1 else ErrorCode.FAILURE
    response.message = answer.summary()
    response.solve_time = answer.solve_time
    return response


def fill_error(response: GetIKSolutions.Response, code: int, message: str, joint_names: list[str],
               solve_time: float = 0.0) -> GetIKSolutions.Response:
    """A GetIKSolutions response for a request refused as a whole (no per-target results)."""
    response.error_code, response.message = int(code), message
    response.joint_names, response.results, response.solve_time = list(joint_names), [], solve_time
    return response
