"""Batch semantics: batch == per-sample loop, arbitrary batch shapes, dtypes, autograd, CUDA."""

from __future__ import annotations

import pytest
import torch

from kinref import ROBOTS, random_q


@pytest.mark.parametrize("name", ROBOTS)
def test_batch_equals_per_sample_loop(name, robot):
    model = robot(name)
    q = random_q(model, 16, seed=7)
    T, J = model.fk_and_jacobian(q)
    for b in range(q.shape[0]):
        T_b, J_b = model.fk_and_jacobian(q[b])  # unbatched (n,) input
        assert T_b.shape == (len(model.end_effectors), 4, 4)
        torch.testing.assert_close(T[b], T_b, atol=1e-13, rtol=0)
        torch.testing.assert_close(J[b], J_b, atol=1e-13, rtol=0)


def test_no_batch_mixing(robot):
    """Changing one sample changes no other sample's result."""
    model = robot("baxter")
    q = random_q(model, 8, seed=8)
    T, J = model.fk_and_jacobian(q)
    q2 = q.clone()
    q2[3] = random_q(model, 1, seed=9)[0]
    T2, J2 = model.fk_and_jacobian(q2)
    keep = [i for i in range(8) if i != 3]
    torch.testing.assert_close(T2[keep], T[keep], atol=1e-14, rtol=0)
    torch.testing.assert_close(J2[keep], J[keep], atol=1e-14, rtol=0)
    assert not torch.allclose(T2[3], T[3])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(), (1,), (7,), (3, 5), (2, 1, 4)])
def test_batch_shapes_and_dtypes(shape, dtype, robot):
    model = robot("pr2")
    E, n = len(model.end_effectors), model.n_joints
    q = random_q(model, max(1, int(torch.tensor(shape).prod().item())), seed=10, dtype=dtype).reshape(*shape, n)
    T = model.fk(q)
    T2, J = model.fk_and_jacobian(q)
    assert T.shape == (*shape, E, 4, 4) and T.dtype == dtype
    assert J.shape == (*shape, E, 6, n) and J.dtype == dtype
    assert torch.equal(T, T2)
    torch.testing.assert_close(model.jacobian(q), J)
    flat_T, flat_J = model.fk_and_jacobian(q.reshape(-1, n))
    torch.testing.assert_close(T.reshape(-1, E, 4, 4), flat_T)
    torch.testing.assert_close(J.reshape(-1, E, 6, n), flat_J)
    # homogeneous bottom row
    assert torch.all(T[..., 3, :] == torch.tensor([0, 0, 0, 1], dtype=dtype))
    links = model.fk_links(q, [model.root_frame, model.end_effectors[0]])
    assert links.shape == (*shape, 2, 4, 4) and links.dtype == dtype
    torch.testing.assert_close(links[..., 1, :, :], T[..., 0, :, :])
    assert torch.all(links[..., 0, :, :] == torch.eye(4, dtype=dtype))


def test_empty_batch(robot):
    model = robot("panda")
    T, J = model.fk_and_jacobian(torch.zeros(0, model.n_joints))
    assert T.shape == (0, 1, 4, 4) and J.shape == (0, 1, 6, model.n_joints)


@pytest.mark.parametrize("name", ["panda", "dual_ur5_mobile"])
def test_autograd_through_fk_equals_jacobian(name, robot):
    """d(position)/dq by autograd equals the position rows of the Jacobian."""
    model = robot(name)
    q = random_q(model, 4, seed=12).requires_grad_(True)
    T = model.fk(q)
    J = model.jacobian(q.detach())
    for e in range(len(model.end_effectors)):
        for k in range(3):
            (grad,) = torch.autograd.grad(T[:, e, k, 3].sum(), q, retain_graph=True)
            torch.testing.assert_close(grad, J[:, e, k], atol=1e-12, rtol=0)
    # gradients also flow through the Jacobian output
    _, J2 = model.fk_and_jacobian(q)
    J2.square().sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ROBOTS)
def test_cuda_matches_cpu(name, robot):
    model = robot(name)
    q = random_q(model, 512, seed=13)
    T, J = model.fk_and_jacobian(q)
    T_gpu, J_gpu = model.fk_and_jacobian(q.cuda())
    assert T_gpu.device.type == "cuda" and J_gpu.device.type == "cuda"
    torch.testing.assert_close(T_gpu.cpu(), T, atol=1e-12, rtol=0)
    torch.testing.assert_close(J_gpu.cpu(), J, atol=1e-12, rtol=0)
    T32, _ = model.fk_and_jacobian(q.float().cuda())
    assert T32.dtype == torch.float32
    torch.testing.assert_close(T32.cpu().double(), T, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ROBOTS)
def test_recording_and_non_recording_paths_agree(name, robot):
    """The kernel writes into preallocated buffers unless autograd records; both paths agree."""
    model = robot(name)
    q = random_q(model, 33, seed=14)
    T, J = model.fk_and_jacobian(q)
    T_g, J_g = model.fk_and_jacobian(q.clone().requires_grad_(True))
    assert T_g.requires_grad and J_g.requires_grad
    torch.testing.assert_close(T_g.detach(), T, atol=1e-15, rtol=0)
    torch.testing.assert_close(J_g.detach(), J, atol=1e-15, rtol=0)
