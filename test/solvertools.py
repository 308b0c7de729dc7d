"""Helpers shared by the solver, sampling and collision tests (a unique module name: ``conftest`` is ambiguous
on sys.path). Importable from every test folder: test/ is on sys.path (see test/conftest.py)."""

from __future__ import annotations

import torch


def tiny_loaded_model(robot, seed: int = 0, train_steps: int = 80):
    """A LoadedModel with a tiny denoiser, trained for ``train_steps`` Adam steps on uniform FK samples.

    A few dozen steps are enough to learn roughly the joint marginal, so its samples are spread
    inside the limits (a freshly initialised network saturates every joint at a limit) but carry
    little information about the target: refinement starts from near-random configurations.
    """
    import torch.nn.functional as F
    from ikdiffuser_ros.model.checkpoint import LoadedModel
    from ikdiffuser_ros.model.denoiser import DenoiserConfig, IKDenoiser
    from ikdiffuser_ros.model.normalizer import Normalizer
    from ikdiffuser_ros.model.schedule import NoiseSchedule, ScheduleConfig

    torch.manual_seed(seed)
    cfg = DenoiserConfig(n_joints=robot.n_joints, n_ee=len(robot.end_effectors), d_model=32, n_heads=2,
                         n_layers=1, ff_mult=2)
    model = IKDenoiser(cfg)
    lo, hi = robot.limits()
    g = torch.Generator().manual_seed(seed)
    q = lo + (hi - lo) * torch.rand(4096, robot.n_joints, generator=g, dtype=torch.float64)
    T = robot.fk(q)
    normalizer = Normalizer.fit(lo, hi, T[..., :3, 3])
    schedule = NoiseSchedule(ScheduleConfig(num_train_steps=20))
    x0_all = normalizer.normalize_joints(q.float()).float()
    pos_all = normalizer.normalize_pos(T[..., :3, 3].float()).float()
    rot_all = torch.cat([T[..., :3, 0], T[..., :3, 1]], -1).float()
    E = len(robot.end_effectors)
    ones = torch.ones(128, E, dtype=torch.bool)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(train_steps):
        idx = torch.randint(0, q.shape[0], (128,), generator=g)
        t = torch.randint(0, 20, (128,), generator=g)
        eps = torch.randn(128, robot.n_joints, generator=g)
        x_t = schedule.add_noise(x0_all[idx], eps, t)
        loss = F.mse_loss(model(x_t, t, pos_all[idx], rot_all[idx], ones, ~ones), eps)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return LoadedModel(model, normalizer, schedule, {}, robot)


def random_q(robot, count: int, seed: int) -> torch.Tensor:
    """(count, n) float64 configurations uniform within the limits."""
    lo, hi = robot.limits()
    g = torch.Generator().manual_seed(seed)
    return lo + (hi - lo) * torch.rand(count, robot.n_joints, generator=g, dtype=torch.float64)


def solve_rows(solver, T, N: int, *, objectives=None, seed=None, world=None, cost_fn=None, target_mask=None,
               position_only=None, locked=None, timeout=None, **run_kwargs):
    """One :meth:`IKDiffuserSolver.run` call as the pipeline makes it (cost from the objective registry,
    a trusted :class:`SolveBatch`), its rows reshaped per target: a namespace of ``q`` (B, N, n) and
    ``position_error``, ``rotation_error``, ``within_limits``, ``success``, ``in_self_collision``,
    ``cost`` (B, N) (the last two None where absent). T (B, E, 4, 4); seed (B, n) or None."""
    import time
    from types import SimpleNamespace

    from ikdiffuser_ros.solver import SolveBatch

    T = torch.as_tensor(T, dtype=torch.float64)
    B, n = T.shape[0], solver.robot.n_joints
    seed = None if seed is None else torch.as_tensor(seed, dtype=torch.float64).expand(B, n)
    batch = SolveBatch.of(T, N, n, target_mask, position_only, seed, locked)
    cost = solver.make_cost(objectives, batch.seed_rows, world, cost_fn) if objectives or cost_fn else None
    deadline = None if timeout is None else time.monotonic() + timeout
    rows = solver.run(batch, cost, deadline=deadline, self_collision=True, **run_kwargs)
    return SimpleNamespace(**{k: None if v is None else v.reshape(B, N, *v.shape[1:]) for k, v in rows.items()})
