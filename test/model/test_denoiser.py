import torch

from ikdiffuser_ros.model.denoiser import DenoiserConfig, IKDenoiser


def _inputs(B, n, E, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, n, generator=g), torch.randint(0, 100, (B,), generator=g), torch.randn(B, E, 3, generator=g),
            torch.randn(B, E, 6, generator=g), torch.ones(B, E, dtype=torch.bool), torch.zeros(B, E, dtype=torch.bool))


def _model(n=14, E=2):
    torch.manual_seed(0)
    return IKDenoiser(DenoiserConfig(n, E, d_model=32, n_heads=4, n_layers=2, ff_mult=2)).eval()


def test_shapes_and_gradients():
    m = _model()
    x, t, p, r, mask, po = _inputs(5, 14, 2)
    out = m(x.requires_grad_(), t, p, r, mask, po)
    assert out.shape == (5, 14)
    out.sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in m.parameters() if p.requires_grad
                                      and p is not m.free_emb and p is not m.pos_only_emb)


def test_free_end_effector_pose_does_not_matter():
    m = _model()
    x, t, p, r, mask, po = _inputs(6, 14, 2)
    mask[:, 1] = False
    p2, r2 = p.clone(), r.clone()
    p2[:, 1] += 10 * torch.randn(6, 3)
    r2[:, 1] = torch.randn(6, 6)
    with torch.no_grad():
        torch.testing.assert_close(m(x, t, p, r, mask, po), m(x, t, p2, r2, mask, po))
        # ... while a constrained end effector's pose does
        assert not torch.allclose(m(x, t, p, r, mask, po), m(x, t, p2, r, ~mask | True, po))


def test_position_only_ignores_rotation():
    m = _model()
    x, t, p, r, mask, po = _inputs(4, 14, 2)
    po[:, 0] = True
    r2 = r.clone()
    r2[:, 0] = torch.randn(4, 6)
    with torch.no_grad():
        torch.testing.assert_close(m(x, t, p, r, mask, po), m(x, t, p, r2, mask, po))
        # the position-only flag itself changes the prediction
        assert not torch.allclose(m(x, t, p, r, mask, po), m(x, t, p, r, mask, torch.zeros_like(po)))


def test_batch_permutation_equivariance():
    m = _model(7, 1)
    x, t, p, r, mask, po = _inputs(8, 7, 1)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = m(x, t, p, r, mask, po)
        out_p = m(x[perm], t[perm], p[perm], r[perm], mask[perm], po[perm])
    torch.testing.assert_close(out_p, out[perm], atol=1e-5, rtol=1e-5)


def test_precomputed_context_matches():
    m = _model()
    x, t, p, r, mask, po = _inputs(3, 14, 2)
    mask[0, 0] = False
    with torch.no_grad():
        ctx = m.encode_targets(p, r, mask, po)
        torch.testing.assert_close(m(x, t, None, None, None, None, ctx=ctx), m(x, t, p, r, mask, po))
