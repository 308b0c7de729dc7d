"""FK and Jacobians of every configured robot vs pytorch_kinematics (float64-patched, see kinref).

pk builds one serial chain per end effector from the URDF root. For the robots with a moving
SRDF planar virtual joint (root frame ``odom``), the base is composed independently:
``T_odom_ee = T(x, y, 0) Rz(theta) @ T_pk``; the arm Jacobian columns are pk's rotated by
Rz(theta), and the base columns are checked analytically and by finite differences.
"""

from __future__ import annotations

import pytest
import torch

from kinref import MOBILE_ROBOTS, ROBOTS, planar_T, pose_error, random_q

N_CONFIGS = 2000
BASE_VARS = ("base_joint/x", "base_joint/y", "base_joint/theta")


def _reference(model, xml, pk_chain, q, e):
    """(T_ref (B, 4, 4), J_ref (B, 6, n) with NaN in the base columns, pk column indices)."""
    ee = model.end_effectors[e]
    chain = pk_chain(xml, ee)
    idx = [model.index_of(name) for name in chain.get_joint_parameter_names()]
    J_pk, T_pk = chain.jacobian(q[:, idx], ret_eef_pose=True)
    J_ref = torch.zeros(q.shape[0], 6, model.n_joints, dtype=torch.float64)
    if model.name in MOBILE_ROBOTS:
        base = [model.index_of(v) for v in BASE_VARS]
        T_base = planar_T(*q[:, base].unbind(-1))
        R = T_base[:, :3, :3]
        T_ref = T_base @ T_pk
        J_ref[:, :3, idx] = R @ J_pk[:, :3]
        J_ref[:, 3:, idx] = R @ J_pk[:, 3:]
        J_ref[:, :, base] = float("nan")
    else:
        T_ref = T_pk
        J_ref[:, :, idx] = J_pk
    return T_ref, J_ref, idx


@pytest.mark.parametrize("name", ROBOTS)
def test_fk_and_jacobian_match_pk_float64(name, robot, urdf_text, pk_chain):
    model = robot(name)
    xml = urdf_text(name)
    q = random_q(model, N_CONFIGS, seed=1)
    T, J = model.fk_and_jacobian(q)
    assert T.dtype == J.dtype == torch.float64
    for e, ee in enumerate(model.end_effectors):
        T_ref, J_ref, idx = _reference(model, xml, pk_chain, q, e)
        pos, rot = pose_error(T[:, e], T_ref)
        assert pos <= 1e-9 and rot <= 1e-9, (ee, pos, rot)
        known = ~torch.isnan(J_ref)
        assert (J[:, e][known] - J_ref[known]).abs().max().item() <= 1e-9, ee
        # columns of joints off this end effector's chain are exactly zero
        others = [i for i in range(model.n_joints)
                  if i not in idx and model.joint_names[i] not in BASE_VARS]
        assert torch.all(J[:, e][:, :, others] == 0), ee


@pytest.mark.parametrize("name", ROBOTS)
def test_fk_and_jacobian_float32_close_to_float64_reference(name, robot, urdf_text, pk_chain):
    model = robot(name)
    xml = urdf_text(name)
    q = random_q(model, N_CONFIGS, seed=2)
    T, J = model.fk_and_jacobian(q.float())
    assert T.dtype == J.dtype == torch.float32
    for e, ee in enumerate(model.end_effectors):
        T_ref, J_ref, _ = _reference(model, xml, pk_chain, q, e)
        pos, rot = pose_error(T[:, e], T_ref)
        assert pos <= 1e-5 and rot <= 1e-5, (ee, pos, rot)
        known = ~torch.isnan(J_ref)
        assert (J[:, e].double()[known] - J_ref[known]).abs().max().item() <= 1e-5, ee


@pytest.mark.parametrize("name", MOBILE_ROBOTS)
def test_planar_base_columns(name, robot):
    """Base columns: x -> (1,0,0 | 0), y -> (0,1,0 | 0), theta -> (z x (p_ee - p_base) | z);
    and the same columns by central differences of the independent composition."""
    model = robot(name)
    q = random_q(model, 200, seed=3)
    T, J = model.fk_and_jacobian(q)
    bx, by, bt = (model.index_of(v) for v in BASE_VARS)
    B = q.shape[0]
    ez = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand(B, 3)
    for e in range(len(model.end_effectors)):
        Je = J[:, e]
        exp_x = torch.tensor([1.0, 0, 0, 0, 0, 0], dtype=torch.float64).expand(B, 6)
        exp_y = torch.tensor([0, 1.0, 0, 0, 0, 0], dtype=torch.float64).expand(B, 6)
        lever = T[:, e, :3, 3] - torch.stack([q[:, bx], q[:, by], torch.zeros(B, dtype=torch.float64)], -1)
        exp_t = torch.cat([torch.linalg.cross(ez, lever), ez], -1)
        torch.testing.assert_close(Je[:, :, bx], exp_x, atol=1e-12, rtol=0)
        torch.testing.assert_close(Je[:, :, by], exp_y, atol=1e-12, rtol=0)
        torch.testing.assert_close(Je[:, :, bt], exp_t, atol=1e-12, rtol=0)
    # finite differences of T(x, y, theta) @ T_arm, with T_arm fixed
    h = 1e-6
    T_arm = torch.linalg.solve(planar_T(q[:, bx], q[:, by], q[:, bt]), T[:, 0])
    for col in (bx, by, bt):
        dq = torch.zeros(3, dtype=torch.float64)
        dq[(bx, by, bt).index(col)] = h
        Tp = planar_T(q[:, bx] + dq[0], q[:, by] + dq[1], q[:, bt] + dq[2]) @ T_arm
        Tm = planar_T(q[:, bx] - dq[0], q[:, by] - dq[1], q[:, bt] - dq[2]) @ T_arm
        v = (Tp[:, :3, 3] - Tm[:, :3, 3]) / (2 * h)
        dR = (Tp[:, :3, :3] - Tm[:, :3, :3]) / (2 * h) @ T[:, 0, :3, :3].transpose(-1, -2)
        w = torch.stack([dR[:, 2, 1], dR[:, 0, 2], dR[:, 1, 0]], -1)
        torch.testing.assert_close(J[:, 0, :, col], torch.cat([v, w], -1), atol=1e-6, rtol=0)
