"""``moveit_msgs/srv/GetPositionIK`` <-> :class:`~ikdiffuser_ros.query.IKQuery` / :class:`~ikdiffuser_ros.query.IKAnswer`.

Served as ``~/compute_ik`` (a drop-in for move_group's ``/compute_ik``) and ``~/solve_ik`` (the
service MoveIt's ``srv_kinematics_plugin`` calls; docs/moveit.md says which setups work).
Message rules follow move_group's kinematics_service_capability; the meaning (groups, locked
joints, tips held at the seed) is the core's :class:`IKQuery` with ``group`` set:

* ``group_name``: a planning group (:mod:`ikdiffuser_ros.kinematics.groups`).
* poses: ``pose_stamped_vector`` with >= 2 entries is the multi-tip form and needs as many
  ``ik_link_names``; otherwise the single pose is ``pose_stamped`` (or the vector's only entry)
  for ``ik_link_name`` (or ``ik_link_names[0]``); an empty link means the group's first tip.
* pose frames: the root frame (or empty), a link of the robot, or any frame tf2 or the
  ``fixed_frame_transforms`` parameter resolves (the node fills ``external_frames``: ros/tf_frames.py).
* ``robot_state``: the seed of the group's joints and the values of all other joints (they are
  copied into the solution unchanged; passive joints too).
* ``constraints.position_constraints`` / ``orientation_constraints`` on a requested link become its
  per-axis tolerances (:attr:`IKTarget.tolerances`, in the target's axes): an orientation constraint
  replaces the pose's orientation by its own with ``absolute_{x,y,z}_axis_tolerance`` (both
  parameterizations read as rotation-vector components); a position constraint's one box (aligned
  with the target orientation) or sphere (its inscribed cube: conservative) replaces the position by
  the region's centre, half its extents as bounds. Constraints must be given in the pose's frame,
  without ``target_point_offset``; anything else is refused (INVALID_GOAL), never ignored.
* ``avoid_collisions``, ``constraints.joint_constraints`` (as :class:`JointBounds`), ``timeout``
  (``sec`` + ``nanosec``; 0 = ``moveit_default_timeout``; from the start of the solve, and the answer
  comes within ``max_timeout`` of the request's arrival, the wait for the solver included).
* Result: SUCCESS with the full robot state of the best solution (closest to the seed, unless
  objectives are weighted), or the code of :mod:`ikdiffuser_ros.ros.error_codes` (compute_ik column).
"""

from __future__ import annotations

from collections.abc import Sequence
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
    from moveit_msgs.msg import Constraints, OrientationConstraint, PositionConstraint, PositionIKRequest
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


def pose_tolerances(constraints: Constraints, links: list[str], values: list[np.ndarray], frames: list[str]
                    ) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """Position and orientation constraints on the requested links -> (their (7,) pose values with the
    constrained parts replaced by the constraints', per-link tolerances (6,) or None); see the module
    docstring. InvalidGoalError names what cannot be expressed."""
    values = [np.array(v, dtype=np.float64) for v in values]
    bounds = [np.zeros(6) for _ in links]
    for kind, cs in (("orientation", constraints.orientation_constraints),
                     ("position", constraints.position_constraints)):
        for c in cs:
            k = _constrained_link(c, kind, links, frames)
            if kind == "orientation":
                values[k][3:] = (c.orientation.x, c.orientation.y, c.orientation.z, c.orientation.w)
                bounds[k][3:] = _finite_tolerances(
                    (c.absolute_x_axis_tolerance, c.absolute_y_axis_tolerance, c.absolute_z_axis_tolerance), c.link_name)
            else:
                values[k][:3], bounds[k][:3] = _position_region(c, values[k])
    return values, [b if b.any() else None for b in bounds]


def _constrained_link(c: OrientationConstraint | PositionConstraint, kind: str, links: list[str], frames: list[str]) -> int:
    """Index of the requested link a position or orientation constraint applies to (InvalidGoalError)."""
    if c.link_name not in links:
        raise InvalidGoalError(f"{kind} constraint on link {c.link_name!r}, which has no pose in the request "
                               f"(posed links: {links}); such constraints apply to the requested links")
    k = links.index(c.link_name)
    if c.header.frame_id.strip("/") != frames[k].strip("/"):
        raise InvalidGoalError(f"{kind} constraint on {c.link_name!r} is in frame {c.header.frame_id!r} but its "
                               f"pose in {frames[k]!r}: give both in the same frame")
    return k


def _finite_tolerances(values: Sequence[float] | np.ndarray, link: str) -> np.ndarray:
    b = np.asarray(values, dtype=np.float64)
    if np.any(~np.isfinite(b)) or np.any(b < 0):
        raise InvalidGoalError(f"constraint on {link!r}: tolerances must be finite and >= 0, got {b.tolist()}")
    return b


def _position_region(c: PositionConstraint, value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A PositionConstraint's region -> (centre (3,) [m], half extents (3,) [m] in the target's axes)."""
    from shape_msgs.msg import SolidPrimitive

    from ikdiffuser_ros.kinematics.frames import quaternion_matrix

    region = c.constraint_region
    if any(abs(v) > 0 for v in (c.target_point_offset.x, c.target_point_offset.y, c.target_point_offset.z)):
        raise InvalidGoalError(f"position constraint on {c.link_name!r}: target_point_offset is not supported; "
                               f"name the offset link (a TCP) instead")
    if len(region.primitives) != 1 or len(region.primitive_poses) != 1 or len(region.meshes):
        raise InvalidGoalError(f"position constraint on {c.link_name!r}: the region must be one box or sphere")
    prim, pose = region.primitives[0], region.primitive_poses[0]
    centre = np.array([pose.position.x, pose.position.y, pose.position.z], dtype=np.float64)
    dims = np.asarray(prim.dimensions, dtype=np.float64)
    if prim.type == SolidPrimitive.SPHERE and dims.size >= 1:
        half = np.full(3, dims[0] / np.sqrt(3.0))  # the sphere's inscribed cube
    elif prim.type == SolidPrimitive.BOX and dims.size >= 3:
        R_box = quaternion_matrix((pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w))
        if not np.allclose(R_box, quaternion_matrix(value[3:]), atol=1e-6):
            raise InvalidGoalError(f"position constraint on {c.link_name!r}: a box region must have the target's "
                                   f"orientation (its bounds are along the target's axes)")
        half = dims[:3] / 2
    else:
        raise InvalidGoalError(f"position constraint on {c.link_name!r}: the region must be one box or sphere")
    return centre, _finite_tolerances(half, c.link_name)


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
    frames = [p.header.frame_id for p in poses]
    values, tolerances = pose_tolerances(req.constraints, links, [pose_values(p.pose) for p in poses], frames)
    target = IKTarget(links, values, frames, tolerances=tolerances)
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
