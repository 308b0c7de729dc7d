"""Irregular trees (branches of different lengths, prismatic joints, fixed offsets) and
``fk_links`` over every link, vs pytorch_kinematics: exercises each way the level-wise
kernel links a node to its parent (one shared parent, same position, general gather)."""

from __future__ import annotations

import pytest
import torch

from ikdiffuser_ros.kinematics.robot_model import RobotModel
from kinref import pose_error, random_q
from test_jacobian_fd import fd_jacobian

LIM = '<limit lower="-1.5" upper="1.5" effort="1" velocity="1"/>'


def _joint(name, parent, child, jtype="revolute", xyz="0.1 0 0.2", rpy="0.1 -0.2 0.3", axis="0 0 1"):
    limit = "" if jtype in ("fixed", "continuous") else LIM
    return (f'<joint name="{name}" type="{jtype}"><parent link="{parent}"/><child link="{child}"/>'
            f'<origin xyz="{xyz}" rpy="{rpy}"/><axis xyz="{axis}"/>{limit}</joint>')


def tree_urdf() -> str:
    """base -> a1 (1 joint); base -> b1 -> b2 -> b3 (prismatic in the middle);
    base -> c1 -> {c2 -> c3, d2 -> d3 -> d4}; fixed tool frames at the tips."""
    links = "base a1 a_tool b1 b2 b3 b_tool c1 c2 c3 d2 d3 d4 d_tool".split()
    joints = [
        _joint("ja1", "base", "a1", axis="1 0 0"),
        _joint("ja_tool", "a1", "a_tool", "fixed", xyz="0 0.3 0"),
        _joint("jb1", "base", "b1", rpy="0 0 1.0"),
        _joint("jb2", "b1", "b2", "prismatic", axis="0.6 0 0.8"),
        _joint("jb3", "b2", "b3", "continuous", axis="0 1 0"),
        _joint("jb_tool", "b3", "b_tool", "fixed", xyz="0.05 0.05 0.1", rpy="1 0 0"),
        _joint("jc1", "base", "c1", xyz="-0.2 0 0.1"),
        _joint("jc2", "c1", "c2", axis="0 1 0"),
        _joint("jc3", "c2", "c3", axis="1 1 1"),
        _joint("jd2", "c1", "d2", "fixed", xyz="0 0 0.4"),
        _joint("jd3", "d2", "d3", axis="0 -1 0"),
        _joint("jd4", "d3", "d4", axis="1 0 0"),
        _joint("jd_tool", "d4", "d_tool", "fixed", xyz="0.1 0.1 0.1"),
    ]
    return '<robot name="tree">' + "".join(f'<link name="{n}"/>' for n in links) + "".join(joints) + "</robot>"


EES = ["a_tool", "b_tool", "c3", "d_tool"]


@pytest.mark.parametrize("ees", [EES, EES[::-1], ["d_tool", "b_tool"], ["c3"]])
def test_irregular_tree_vs_pk_and_fd(ees, pk_chain):
    xml = tree_urdf()
    model = RobotModel.from_urdf(xml, end_effectors=ees)
    q = random_q(model, 300, seed=31)
    T, J = model.fk_and_jacobian(q)
    for e, ee in enumerate(ees):
        chain = pk_chain(xml, ee)
        idx = [model.index_of(n) for n in chain.get_joint_parameter_names()]
        J_pk, T_pk = chain.jacobian(q[:, idx], ret_eef_pose=True)
        pos, rot = pose_error(T[:, e], T_pk)
        assert pos <= 1e-9 and rot <= 1e-9, (ee, pos, rot)
        assert (J[:, e][:, :, idx] - J_pk).abs().max().item() <= 1e-9
        others = [i for i in range(model.n_joints) if i not in idx]
        assert torch.all(J[:, e][:, :, others] == 0)
    assert (J[:20] - fd_jacobian(model, q[:20])).abs().max().item() <= 1e-6
    T32, J32 = model.fk_and_jacobian(q.float())
    assert (T32.double() - T).abs().max().item() <= 1e-5 and (J32.double() - J).abs().max().item() <= 1e-5


def test_fk_links_all_links_vs_pk_full_tree(robot, urdf_text):
    """Every link of panda (fingers and hand included) vs pk's whole-tree FK."""
    from kinref import _quiet, pk_float64, strip_transmissions

    model = robot("panda")
    xml = urdf_text("panda")
    with pk_float64() as pk, _quiet():
        chain = pk.build_chain_from_urdf(strip_transmissions(xml).encode()).to(dtype=torch.float64)
    q = random_q(model, 100, seed=32)
    names = chain.get_joint_parameter_names()
    th = torch.zeros(100, len(names), dtype=torch.float64)
    for k, n in enumerate(names):
        if n in model.joint_names:
            th[:, k] = q[:, model.index_of(n)]
        else:  # passive joints sit at 0 clamped into their limits
            th[:, k] = model.passive_value(model.urdf.joints[n])
    ref = chain.forward_kinematics(th)
    links = [n for n in model.link_names if n in ref]
    assert len(links) == len(model.link_names)
    T = model.fk_links(q, links)
    for k, link in enumerate(links):
        pos, rot = pose_error(T[:, k], ref[link].get_matrix())
        assert pos <= 1e-9 and rot <= 1e-9, link
