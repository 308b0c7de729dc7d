"""``moveit_msgs/srv/GetPositionIK`` on top of :class:`~ikdiffuser_ros.ros.engine.IKEngine`.

Served as ``~/compute_ik`` (a drop-in for move_group's ``/compute_ik``) and
``~/solve_ik`` (the service MoveIt's ``srv_kinematics_plugin/SrvKinematicsPlugin``
calls, see config/kinematics.yaml). Semantics follow move_group's
kinematics_service_capability (docs: /work/shared/notes/moveit.md §2):

* ``group_name``: a planning group (SRDF groups whose tips map onto the model's
  end effectors, plus the robot config's and the ``groups`` parameter's);
  unknown -> INVALID_GROUP_NAME.
* poses: ``pose_stamped_vector`` with >= 2 entries is the multi-tip form and
  needs as many ``ik_link_names`` (else INVALID_LINK_NAME); otherwise the single
  pose is ``pose_stamped`` (or the vector's only entry) for ``ik_link_name``
  (or ``ik_link_names[0]``); an empty link means the group's tip (the first,
  for multi-tip groups). Group tips that get no pose keep their pose at the
  seed state, as MoveIt's setFromIK does.
* ``robot_state``: seed for the group's joints and the values of all other
  joints (they are copied into the solution unchanged).
* ``avoid_collisions``: only collision-free solutions (exact FCL check against
  the mirrored planning scene, including self collision).
* ``constraints.joint_constraints``: solutions must satisfy them (position
  within [-tolerance_below, +tolerance_above]).
* ``timeout``: ``sec`` + ``nanosec`` (move_group ignores ``nanosec``; we honour
  it); 0 (or negative) means ``moveit_default_timeout``; it is capped at
  ``max_timeout``. Sampling rounds are repeated until a solution passes, the
  time is up, or ``max_rounds`` rounds were sampled.
* Result: SUCCESS with the full robot state (every joint), or NO_IK_SOLUTION.

Deviations (more specific codes where move_group would say NO_IK_SOLUTION):
unknown / non-tip links -> INVALID_LINK_NAME, unknown frames ->
FRAME_TRANSFORM_FAILURE, NaN poses / bad quaternions -> INVALID_GOAL_CONSTRAINTS,
a robot state with unknown joints -> INVALID_ROBOT_STATE, joint constraints on
unknown joints -> INVALID_GOAL_CONSTRAINTS.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from ikdiffuser_ros.ros.conversions import ErrorCode, RequestError, duration_to_seconds
from ikdiffuser_ros.ros.engine import IKEngine, SolveOptions, TargetSpec, error_from_exception


@dataclass(frozen=True)
class Group:
    """A planning group as the bridge sees it."""

    name: str
    tips: tuple[str, ...]  # links (end effectors or rigidly attached frames), in order
    joints: tuple[int, ...]  # indices of the model's active variables that the group moves
    source: str = "srdf"


def _srdf_group_joints(robot, srdf_groups, name: str, seen=()) -> tuple[set[str], list[str]]:
    """SRDF group -> (URDF joint names, tip links) (chains: tip_link; subgroups recursively)."""
    group = srdf_groups[name]
    urdf = robot.urdf
    joints: set[str] = set()
    tips: list[str] = []
    for j in group.joints:
        joints.add(j)
    for link in group.links:
        if link in urdf.child_joint:
            joints.add(urdf.child_joint[link].name)
    for base, tip in group.chains:
        base_path = {j.name for j in urdf.path_from_root(base)}
        joints.update(j.name for j in urdf.path_from_root(tip) if j.name not in base_path)
        tips.append(tip)
    for sub in group.subgroups:
        if sub in srdf_groups and sub not in seen and sub != name:
            j, t = _srdf_group_joints(robot, srdf_groups, sub, (*seen, name))
            joints |= j
            tips += [x for x in t if x not in tips]
    return joints, tips


def build_groups(robot, config_groups: dict[str, tuple[str, ...]], param_groups: dict[str, tuple[str, ...]],
                 tips_map: dict, logger=None) -> dict[str, Group]:
    """Planning groups: usable SRDF groups, then robot-config groups, then ``groups`` parameter entries."""
    index = {n: i for i, n in enumerate(robot.joint_names)}

    def active_of(joint_names) -> tuple[int, ...]:
        out = set()
        for j in joint_names:
            if j in index:
                out.add(index[j])
            for v, i in index.items():  # multi-DOF variables of that joint
                if v.startswith(j + "/"):
                    out.add(i)
        return tuple(sorted(out))

    def joints_to(links) -> tuple[int, ...]:
        names = set()
        for link in links:
            names.update(j.name for j in robot.urdf.path_from_root(link))
        vj = robot.virtual_joint
        if vj is not None:
            names.add(vj.name)
        return active_of(names)

    groups: dict[str, Group] = {}
    srdf = robot.srdf
    for name in srdf.groups:
        joints, tips = _srdf_group_joints(robot, srdf.groups, name)
        active = active_of(joints)
        tips += [e.parent_link for e in srdf.end_effectors if e.parent_group == name and e.parent_link not in tips]
        if not tips and active:
            tips = [ee for ee in robot.end_effectors
                    if set(joints_to([ee])) & set(active)]
        usable = [t for t in tips if t in tips_map]
        if not active or not usable or len(usable) != len(tips):
            if logger is not None:
                logger.debug(f"SRDF group {name!r} is not usable for IK (active joints {len(active)}, tips {tips})")
            continue
        groups[name] = Group(name, tuple(usable), active, "srdf")
    for source, defs in (("robot config", config_groups), ("parameter", param_groups)):
        for name, links in (defs or {}).items():
            bad = [link for link in links if link not in tips_map]
            if bad:
                if logger is not None:
                    logger.warning(f"group {name!r} ({source}): links {bad} are not end effectors of the model "
                                   f"{robot.end_effectors}; group skipped")
                continue
            groups[name] = Group(name, tuple(links), joints_to(links), source)
    return groups


class MoveItBridge:
    """Handles GetPositionIK requests (see the module docstring)."""

    def __init__(self, engine: IKEngine, groups: dict[str, Group]) -> None:
        self.engine = engine
        self.groups = groups

    def fail(self, response, code: int, message: str):
        """Fill ``response`` (GetPositionIK) with an error code and message; returns it."""
        response.error_code.val = int(code)
        if hasattr(response.error_code, "message"):  # moveit_msgs >= 2.4 (not Humble)
            response.error_code.message = message
            response.error_code.source = "ikdiffuser_node"
        return response

    def compute_ik(self, request, response, world=None):
        """Fill a GetPositionIK response. Never raises."""
        try:
            return self._compute_ik(request.ik_request, response, world)
        except Exception as exc:  # noqa: BLE001 - every failure becomes an error code
            code, message = error_from_exception(exc)
            if code == ErrorCode.INVALID_REQUEST:
                code = ErrorCode.INVALID_GOAL
            return self.fail(response, code, message)

    def _compute_ik(self, req, response, world):
        t0 = time.monotonic()
        eng, cfg = self.engine, self.engine.config
        group = self.groups.get(req.group_name)
        if group is None:
            return self.fail(response, ErrorCode.INVALID_GROUP_NAME,
                             f"unknown group {req.group_name!r}; groups: {sorted(self.groups)}")
        # ---- poses and links (move_group's rules)
        vec = list(req.pose_stamped_vector)
        if len(vec) >= 2:
            links = list(req.ik_link_names)
            if len(links) != len(vec):
                return self.fail(response, ErrorCode.INVALID_LINK_NAME,
                                 f"{len(vec)} poses in pose_stamped_vector but {len(links)} ik_link_names")
            poses = vec
        else:
            poses = [vec[0] if vec else req.pose_stamped]
            links = [(req.ik_link_names[0] if req.ik_link_names else "") if vec else req.ik_link_name]
        links = [link or group.tips[0] for link in links]
        if len(set(links)) != len(links):
            return self.fail(response, ErrorCode.INVALID_LINK_NAME, f"a link is named twice: {links}")
        for link in links:
            if link not in eng.tips:
                return self.fail(response, ErrorCode.INVALID_LINK_NAME,
                                 f"link {link!r} is not a tip of group {req.group_name!r} (tips: "
                                 f"{list(group.tips)}, or frames rigidly attached to them)")
            ee = eng.tips[link][0]
            if ee not in {eng.tips[t][0] for t in group.tips}:
                return self.fail(response, ErrorCode.INVALID_LINK_NAME,
                                 f"link {link!r} is not a tip of group {req.group_name!r} (tips: {list(group.tips)})")
        # ---- robot state: seed + other joints
        try:
            q_seed, passive, _ = eng.layout.from_joint_state(req.robot_state.joint_state, what="robot_state")
            eng.layout.from_multi_dof(req.robot_state.multi_dof_joint_state, q_seed)
        except RequestError as exc:
            return self.fail(response, exc.code, exc.message)
        # ---- target: requested tips + the group's other tips at their seed pose
        spec = eng.target_spec(links, poses, [], q_seed, "ik_request")
        T_seed = eng.robot.fk(torch.as_tensor(q_seed)).numpy()
        for tip in group.tips:
            e = eng.ee_index[eng.tips[tip][0]]
            if not spec.mask[e]:
                spec.T[e], spec.mask[e] = T_seed[e], True
        # ---- joint constraints
        accept = self._joint_constraint_test(req.constraints)
        timeout = duration_to_seconds(req.timeout)
        if not timeout > 0:
            timeout = cfg.moveit_default_timeout
        timeout = min(timeout, cfg.max_timeout)
        if req.avoid_collisions and eng.checker is None:
            return self.fail(response, ErrorCode.NO_IK_SOLUTION,
                             "avoid_collisions requested but exact collision checking is unavailable")
        fixed = {i: float(q_seed[i]) for i in range(eng.n) if i not in set(group.joints)}
        objectives = {"seed": cfg.weight_seed} if cfg.weight_seed > 0 else {}
        if cfg.weight_joint_limits > 0:
            objectives["joint_limits"] = cfg.weight_joint_limits
        opts = SolveOptions(
            num_solutions=cfg.moveit_num_candidates, seed=q_seed, objectives=objectives,
            avoid_collisions=bool(req.avoid_collisions),
            random_seed=cfg.moveit_random_seed if cfg.moveit_random_seed >= 0 else None,
            deadline=t0 + timeout, accept=accept, fixed=fixed, max_rounds=cfg.max_rounds,
            fallback_guidance=False)  # guided rounds cannot be interrupted: keep to the budget
        [sol] = eng.solve([spec], opts, world if req.avoid_collisions else world)
        if sol.code != ErrorCode.SUCCESS or len(sol.q) == 0:
            return self.fail(response, ErrorCode.NO_IK_SOLUTION, sol.message or "no IK solution")
        # closest to the seed over the group's joints
        gj = list(group.joints)
        best = int(np.argmin(np.linalg.norm(sol.q[:, gj] - q_seed[gj], axis=-1)))
        q = sol.q[best]
        js, mdof = eng.layout.to_joint_state(q, passive)
        js.header.frame_id = eng.robot.root_frame
        response.solution.joint_state = js
        response.solution.multi_dof_joint_state = mdof
        response.error_code.val = ErrorCode.SUCCESS
        if hasattr(response.error_code, "message"):
            response.error_code.message = (f"position error {sol.position_error[best] * 1000:.2f} mm, rotation error "
                                           f"{np.degrees(sol.rotation_error[best]):.2f} deg")
            response.error_code.source = "ikdiffuser_node"
        return response

    def _joint_constraint_test(self, constraints):
        jcs = list(constraints.joint_constraints)
        if not jcs:
            return None
        eng = self.engine
        idx, lo, hi = [], [], []
        for jc in jcs:
            if jc.joint_name not in eng.layout.index:
                raise RequestError(ErrorCode.INVALID_GOAL,
                                   f"joint constraint on {jc.joint_name!r}, which is not an active joint "
                                   f"{eng.robot.joint_names}")
            values = (jc.position, jc.tolerance_above, jc.tolerance_below)
            if not all(np.isfinite(values)) or jc.tolerance_above < 0 or jc.tolerance_below < 0:
                raise RequestError(ErrorCode.INVALID_GOAL, f"joint constraint on {jc.joint_name!r}: bad values")
            idx.append(eng.layout.index[jc.joint_name])
            lo.append(jc.position - jc.tolerance_below)
            hi.append(jc.position + jc.tolerance_above)
        idx_a, lo_a, hi_a = np.array(idx), np.array(lo), np.array(hi)

        def accept(q: np.ndarray) -> np.ndarray:
            v = q[:, idx_a]
            return np.all((v >= lo_a - 1e-9) & (v <= hi_a + 1e-9), axis=-1)

        return accept


__all__ = ["Group", "MoveItBridge", "build_groups", "TargetSpec"]
