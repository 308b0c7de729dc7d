"""Planning groups: which joints a group moves and which links are its tips.

Groups come from the SRDF (chains, joints, links and subgroups, resolved as
srdfdom does), from the robot config and from user definitions
(``name -> tip links``). A group is usable for IK when every tip is rigidly
attached to an end effector of the model (:func:`~ikdiffuser_ros.kinematics.frames.rigid_offsets`)
and it moves at least one active variable.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ikdiffuser_ros.errors import UnknownGroupError
from ikdiffuser_ros.kinematics.joint_names import variables_of


@dataclass(frozen=True)
class Group:
    """A planning group as the IK query sees it.

    Attributes:
        name: group name.
        tips: links (end effectors or frames rigidly attached to them), in order.
        joints: indices of the model's active variables the group moves (the others stay locked).
        source: where it was defined: ``srdf``, ``robot config`` or ``parameter``.
    """

    name: str
    tips: tuple[str, ...]
    joints: tuple[int, ...]
    source: str = "srdf"


def _srdf_group_joints(robot, srdf_groups, name: str, seen=()) -> tuple[set[str], list[str]]:
    """SRDF group -> (URDF joint names, tip links) (chains: tip_link; subgroups recursively)."""
    group = srdf_groups[name]
    urdf = robot.urdf
    joints: set[str] = set(group.joints)
    tips: list[str] = []
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


def active_variables(robot, joint_names: Iterable[str]) -> tuple[int, ...]:
    """URDF / virtual joint names -> sorted indices of their active variables (multi-DOF: all of them)."""
    index = {n: i for i, n in enumerate(robot.joint_names)}
    return tuple(sorted({index[v] for j in joint_names for v in variables_of(j, index)}))


def variables_moving(robot, links: Iterable[str]) -> tuple[int, ...]:
    """Indices of the active variables that move any of ``links`` (their root paths + the virtual joint)."""
    names = {j.name for link in links for j in robot.urdf.path_from_root(link)}
    if robot.virtual_joint is not None:
        names.add(robot.virtual_joint.name)
    return active_variables(robot, names)


def _srdf_groups(robot, tip_links: Mapping, logger=None) -> dict[str, Group]:
    groups: dict[str, Group] = {}
    srdf = robot.srdf
    for name in srdf.groups:
        joints, tips = _srdf_group_joints(robot, srdf.groups, name)
        active = active_variables(robot, joints)
        tips += [e.parent_link for e in srdf.end_effectors if e.parent_group == name and e.parent_link not in tips]
        if not tips and active:
            tips = [ee for ee in robot.end_effectors if set(variables_moving(robot, [ee])) & set(active)]
        usable = [t for t in tips if t in tip_links]
        if not active or not usable or len(usable) != len(tips):
            if logger is not None:
                logger.debug(f"SRDF group {name!r} is not usable for IK (active joints {len(active)}, tips {tips})")
            continue
        groups[name] = Group(name, tuple(usable), active, "srdf")
    return groups


def build_groups(robot, config_groups: Mapping[str, tuple[str, ...]], param_groups: Mapping[str, tuple[str, ...]],
                 tip_links: Mapping, logger=None) -> dict[str, Group]:
    """Planning groups: usable SRDF groups, then robot-config groups, then ``groups`` parameter entries
    (later definitions override earlier ones of the same name). ``tip_links``: link -> (end effector,
    offset), as :func:`~ikdiffuser_ros.kinematics.frames.rigid_offsets` returns."""
    groups = _srdf_groups(robot, tip_links, logger)
    for source, defs in (("robot config", config_groups), ("parameter", param_groups)):
        for name, links in (defs or {}).items():
            bad = [link for link in links if link not in tip_links]
            if bad:
                if logger is not None:
                    logger.warning(f"group {name!r} ({source}): links {bad} are not end effectors of the model "
                                   f"{robot.end_effectors}; group skipped")
                continue
            groups[name] = Group(name, tuple(links), variables_moving(robot, links), source)
    return groups


def find_group(groups: Mapping[str, Group], name: str) -> Group:
    """``groups[name]``, or :class:`UnknownGroupError` listing the known groups."""
    try:
        return groups[name]
    except KeyError:
        raise UnknownGroupError(name, groups) from None


def _moved_by_each_end_effector(robot) -> list[set[int]]:
    """For each end effector (E), the set of active variables that move it."""
    return [set(variables_moving(robot, [ee])) for ee in robot.end_effectors]


def independent_chains(robot) -> tuple[list[int], list[int]]:
    """Split the robot into chains that share no joint: (group id of each active variable (n,), group id of
    each end effector (E,)). End effectors moved by a common joint (a torso, a mobile base) share a group;
    a variable that moves no end effector joins group 0. Baxter: two groups (one per arm); talos: three
    (both hands through the torso, each foot); a mobile manipulator or a single arm: one."""
    moving = _moved_by_each_end_effector(robot)
    ees = range(len(moving))
    parent = list(ees)

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for a in ees:
        for b in range(a + 1, len(moving)):
            if moving[a] & moving[b]:
                parent[root(b)] = root(a)
    ids = {r: k for k, r in enumerate(dict.fromkeys(root(i) for i in ees))}
    ee_groups = [ids[root(i)] for i in ees]
    joint_groups = [0] * len(robot.joint_names)
    for e, joints in enumerate(moving):
        for j in joints:
            joint_groups[j] = ee_groups[e]
    return joint_groups, ee_groups


#: group id of the trunk in :func:`trunk_and_branches` (and in a factorized network's ``joint_groups``)
TRUNK = -1


def trunk_and_branches(robot) -> tuple[list[int], list[int]]:
    """One branch per end effector and a trunk: (group id of each active variable (n,), group id of each end
    effector (E,)). End effector e is branch e; a variable that moves one end effector belongs to its
    branch; a variable that moves several (a torso, a mobile base) or none is the trunk (:data:`TRUNK`),
    unless no variable moves several, when those that move none join branch 0 (as in
    :func:`independent_chains`). Baxter: two branches, no trunk (= its independent chains); mobile_baxter:
    the base is the trunk under two arms; talos: the torso is the trunk under the hands, and each leg a branch."""
    moving = _moved_by_each_end_effector(robot)
    count = [sum(j in m for m in moving) for j in range(len(robot.joint_names))]
    spare = TRUNK if max(count, default=0) > 1 else 0
    joint_groups = [spare] * len(robot.joint_names)
    for e, joints in enumerate(moving):
        for j in joints:
            if count[j] == 1:
                joint_groups[j] = e
            elif count[j] > 1:
                joint_groups[j] = TRUNK
    return joint_groups, list(range(len(moving)))
