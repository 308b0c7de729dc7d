"""FK and Jacobians vs Orocos KDL (Debian's python3-pykdl), chains built here from the URDF XML.

The KDL chain follows kdl_parser: per joint on the path, a ``Segment(child, joint, F_origin)``
where ``F_origin`` is the joint's <origin> (``Rotation.RPY``, ``Vector``) and the joint axis is
expressed in the parent frame via ``F_origin.M * axis``. ``ChainJntToJacSolver`` gives the
Jacobian of the tip origin in base axes, rows (v, w): the same convention as ours.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
import torch

from kinref import import_pykdl, pose_error, random_q

N_CONFIGS = 300

# (robot, end effector, KDL base link, frame our model is expressed in must equal that base)
CASES = [
    ("panda", "panda_hand_tcp"),
    ("baxter", "left_gripper"),
    ("baxter", "right_gripper"),
    ("pr2", "l_gripper_tool_frame"),  # arm with the torso lift
    ("pr2", "r_gripper_tool_frame"),
]


def _floats(text, default):
    return [float(v) for v in text.split()] if text else list(default)


def kdl_chain(kdl, xml: str, tip: str):
    """KDL chain URDF root -> tip, and the names of its moving joints (root first)."""
    root = ET.fromstring(xml)
    by_child = {j.find("child").get("link"): j for j in root.findall("joint")}
    path = []
    link = tip
    while link in by_child:
        path.append(by_child[link])
        link = by_child[link].find("parent").get("link")
    chain, names = kdl.Chain(), []
    for joint in reversed(path):
        origin = joint.find("origin")
        xyz = _floats(origin.get("xyz") if origin is not None else None, (0, 0, 0))
        rpy = _floats(origin.get("rpy") if origin is not None else None, (0, 0, 0))
        F = kdl.Frame(kdl.Rotation.RPY(*rpy), kdl.Vector(*xyz))
        jtype = joint.get("type")
        name = joint.get("name")
        assert joint.find("mimic") is None, "mimic joints are not expected on these chains"
        if jtype == "fixed":
            kj = kdl.Joint(name, kdl.Joint.Fixed)
        else:
            axis_el = joint.find("axis")
            axis = kdl.Vector(*_floats(axis_el.get("xyz") if axis_el is not None else None, (1, 0, 0)))
            axis = F.M * (axis / axis.Norm())
            kind = {"revolute": kdl.Joint.RotAxis, "continuous": kdl.Joint.RotAxis,
                    "prismatic": kdl.Joint.TransAxis}[jtype]
            kj = kdl.Joint(name, F.p, axis, kind)
            names.append(name)
        chain.addSegment(kdl.Segment(joint.find("child").get("link"), kj, F))
    return chain, names


@pytest.mark.parametrize("name,ee", CASES)
def test_fk_and_jacobian_match_kdl(name, ee, robot, urdf_text):
    kdl = import_pykdl()
    model = robot(name)
    chain, names = kdl_chain(kdl, urdf_text(name), ee)
    idx = [model.index_of(n) for n in names]
    assert chain.getNrOfJoints() == len(idx)
    e = model.end_effectors.index(ee)
    q = random_q(model, N_CONFIGS, seed=11)
    T, J = model.fk_and_jacobian(q)
    fk_solver, jac_solver = kdl.ChainFkSolverPos_recursive(chain), kdl.ChainJntToJacSolver(chain)
    T_kdl = torch.zeros(N_CONFIGS, 4, 4, dtype=torch.float64)
    J_kdl = torch.zeros(N_CONFIGS, 6, len(idx), dtype=torch.float64)
    qk = kdl.JntArray(len(idx))
    frame, jac = kdl.Frame(), kdl.Jacobian(len(idx))
    for b in range(N_CONFIGS):
        for k, i in enumerate(idx):
            qk[k] = float(q[b, i])
        assert fk_solver.JntToCart(qk, frame) >= 0
        assert jac_solver.JntToJac(qk, jac) >= 0
        T_kdl[b] = torch.tensor([[frame[r, c] for c in range(4)] for r in range(3)] + [[0, 0, 0, 1]], dtype=torch.float64)
        J_kdl[b] = torch.tensor([[jac[r, c] for c in range(len(idx))] for r in range(6)], dtype=torch.float64)
    pos, rot = pose_error(T[:, e], T_kdl)
    assert pos <= 1e-9 and rot <= 1e-9, (pos, rot)
    assert (J[:, e][:, :, idx] - J_kdl).abs().max().item() <= 1e-9
    others = [i for i in range(model.n_joints) if i not in idx]
    assert torch.all(J[:, e][:, :, others] == 0)
