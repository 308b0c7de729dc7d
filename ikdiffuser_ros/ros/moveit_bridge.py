"""``moveit_msgs/srv/GetPositionIK`` <-> :class:`~ikdiffuser_ros.query.IKQuery` / :class:`~ikdiffuser_ros.query.IKAnswer`.

Served as ``~/compute_ik`` (a drop-in for move_group's ``/compute_ik``) and ``~/solve_ik`` (the
service MoveIt's ``srv_kinematics_plugin`` calls; docs/moveit.md says which setups work).
Message rules follow move_group's kinematics_service_capability; the meaning (groups, locked
joints, tips held at the seed) is the core's :class:`IKQuery` with ``group`` set:

* ``group_name``: a planning group (:mod:`ikdiffuser_ros.kinematics.groups`).
* poses: ``pose_stamped_vector`` with >= 2 entries is the multi-tip form and needs as many
  ``ik_link_names``; otherwise the single pose is ``pose_stamped`` (or the vector's only entry)
  for ``ik_link_name`` (or ``ik_link_names[0]``); an empty link means the group's first tip.
* ``robot_state``: the seed of the group's joints and the values of all other joints (they are
  copied into the solution unchanged; passive joints too).
* ``avoid_collisions``, ``constraints.joint_constraints`` (as :class:`JointBounds`), ``timeout``
  (``sec`` + ``nanosec``; 0 = ``moveit_default_timeout``; from the start of the solve, and the answer
  comes within ``max_timeout`` of the request's arrival, the wait for the solver included).
* Result: SUCCESS with the full robot state of the best solution (closest to the seed, unless
  objectives are weighted), or the code of :mod:`ikdiffuser_ros.ros.error_codes` (compute_ik column).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ikdiffuser_ros.errors import InvalidGoalError, UnknownLinkError
from ikdiffuser_ros.kinematics.groups import Group, find_group
from ikdiffuser_ros.query import IKAnswer, IKQuery, IKTarget, JointBounds, Status
from ikdiffuser_ros.ros.conversions import JointStateLayout, budget_window, duration_to_seconds, pose_values
from ikdiffuser_ros.ros.error_codes import ErrorCode, status_code
from ikdiffuser_ros.ros.params import NodeConfig

if TYPE_CHECKING:  # moveit_msgs is optional at run time (the node serves get_ik_solutions without it)
    from geometry_msgs.msg import PoseStamped
    from moveit_msgs.msg import Constraints, PositionIKRequest
    from moveit_msgs.srv import GetPositionIK

    from ikdiffuser_ros.collision.world import World


def fail(response: GetPositionIK.Response, code: int, message: str) -> GetPositionIK.Response:
    """Fill ``response`` (GetPositionIK) with an error code and message; returns it."""
    response.error_code.val = int(code)
    if hasattr(response.error_code, "message"):  # moveit_msgs >= 2.4 (not Humble)
        response.error_code.message = message
        response.error_code.source = "ikdiffuser_node"
    return response


def links_and_poses(req: PositionIKRequest, group: Group) -> tuple[list[str], list[PoseStamped]]:
    """move_group's rules for the requested links and their PoseStamped messages."""
    vec = list(req.pose_stamped_vector)
    if len(vec) >= 2:
        links = list(req.ik_link_names)
        if len(links) != len(vec):
            raise UnknownLinkError(",".join(links), group.tips, f"does not match the poses: {len(vec)} poses in "
                                   f"pose_stamped_vector but {len(links)} ik_link_names")
        poses = vec
    else:
        poses = [vec[0] if vec else req.pose_stamped]
        links = [(req.ik_link_names[0] if req.ik_link_names else "") if vec else req.ik_link_name]
    links = [link or group.tips[0] for link in links]
    if len(set(links)) != len(links):
        raise UnknownLinkError(links[0], group.tips, f"is named twice in {links}")
    return links, poses


def joint_bounds(constraints: Constraints) -> list[JointBounds]:
    """moveit_msgs/Constraints.joint_constraints -> :class:`JointBounds` (the core checks the joints)."""
    out = []
    for jc in constraints.joint_constraints:
        values = (jc.position, jc.tolerance_above, jc.tolerance_below)
        if not all(np.isfinite(values)) or jc.tolerance_above < 0 or jc.tolerance_below < 0:
            raise InvalidGoalError(f"joint constraint on {jc.joint_name!r}: bad values")
        out.append(JointBounds(jc.joint_name, jc.position - jc.tolerance_below, jc.position + jc.tolerance_above))
    return out


def query_of(req: PositionIKRequest, groups: dict[str, Group], layout: JointStateLayout, cfg: NodeConfig,
             world: World | None, start: float | None = None,
             received: float | None = None) -> tuple[IKQuery, dict[str, float]]:
    """moveit_msgs/PositionIKRequest -> (:class:`IKQuery`, passive joint values of the robot state);
    ``start``: when its solve started, ``received``: when it arrived (``time.monotonic()``;
    :func:`~ikdiffuser_ros.ros.conversions.budget_window`)."""
    group = find_group(groups, req.group_name)
    links, poses = links_and_poses(req, group)
    seed, passive, _ = layout.from_joint_state(req.robot_state.joint_state, what="robot_state")
    layout.from_multi_dof(req.robot_state.multi_dof_joint_state, seed)
    timeout = duration_to_seconds(req.timeout)
    start, timeout = budget_window(min(timeout if timeout > 0 else cfg.moveit_default_timeout, cfg.max_timeout),
                                   cfg.max_timeout, start, received)
    target = IKTarget(links, [pose_values(p.pose) for p in poses], [p.header.frame_id for p in poses])
    query = IKQuery(
        [target], num_solutions=cfg.moveit_num_candidates, group=group.name, seed=seed,
        objectives=cfg.default_objectives(has_seed=True), constraints=joint_bounds(req.constraints),
        avoid_collisions=bool(req.avoid_collisions), world=world, report_collisions=False,
        consistency_limits=cfg.moveit_consistency_limit or None,
        timeout=timeout, start=start,
        random_seed=cfg.moveit_random_seed if cfg.moveit_random_seed >= 0 else None, max_rounds=cfg.max_rounds)
    return query, passive


def fill_response(response: GetPositionIK.Response, answer: IKAnswer, layout: JointStateLayout,
                  passive: dict[str, float], root: str) -> GetPositionIK.Response:
    """The best solution (the first) as the full robot state, or the failure's code; returns ``response``."""
    [target] = answer.targets
    if target.status is not Status.SOLVED:
        return fail(response, status_code(target.status, target.error, moveit=True), target.message)
    js, mdof = layout.to_joint_state(target.q[0], passive)
    js.header.frame_id = root
    response.solution.joint_state, response.solution.multi_dof_joint_state = js, mdof
    response.error_code.val = ErrorCode.SUCCESS
    if hasattr(response.error_code, "message"):
        response.error_code.message = (f"position error {target.position_error[0] * 1000:.2f} mm, rotation error "
                                       f"{np.degrees(target.rotation_error[0]):.2f} deg")
        response.error_code.source = "ikdiffuser_node"
    return response
