"""The batched pipelines of ``ikdiffuser bench``: IKDiffuser and its ablation, uniform starts.

Both are the same pipeline: ``B * N`` start rows -> the solver's batched Levenberg-Marquardt
(the solver's: the compiled :meth:`~ikdiffuser_ros.native.NativeKinematics.refine` on CPU, else
:func:`~ikdiffuser_ros.sampling.lm.refine`; the solver's :class:`RefineConfig`, float64)
until the deadline; rows that fail get fresh starts while time is left (protocol "one solution").
They differ only in where the starts come from:

* ``ikdiffuser``: the product's batch call, :meth:`IKDiffuserSolver.run` as the pipeline makes it
  (diffusion samples of the shipped model, perturbed restarts for >= 16 rows, then its LM);
* ``uniform+LM``: joint values drawn uniformly within the limits, then the same ``refine``.
"""

from __future__ import annotations

import time

import torch

from ikdiffuser_ros import native
from ikdiffuser_ros.kinematics.robot_model import RobotModel
from ikdiffuser_ros.native import NativeKinematics
from ikdiffuser_ros.pipeline import PipelineConfig
from ikdiffuser_ros.sampling.lm import refine


class PriorPipeline:
    """IKDiffuser: diffusion samples + the solver's LM (``IKDiffuserSolver.solve``)."""

    name = "ikdiffuser"

    def __init__(self, solver, steps: int | None = None) -> None:
        self.solver, self.steps = solver, steps
        self.model: RobotModel = solver.robot
        self.description = (f"IKDiffuserSolver.run, the pipeline's batch call (diffusion samples, "
                            f"{steps or 'the card'}'s DDIM steps, perturbed restarts for >= 16 rows, then its LM), "
                            f"failed rows re-sampled while time is left")

    def solve(self, targets: torch.Tensor, num: int, deadline: float | None, seed: int
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """targets (B, E, 4, 4), ``num`` rows each -> (q (B, num, n) float64, converged (B, num) bool).

        ``deadline`` is a ``time.monotonic()`` value, passed to the solver as its timeout (None: none).
        """
        cfg = PipelineConfig()
        rows = self.solver.run(self.solver.batch(targets, num), deadline=deadline, random_seed=seed, steps=self.steps,
                               restarts=cfg.restarts if num >= cfg.restart_min_rows else 1)
        B, n = targets.shape[0], self.model.n_joints
        return rows["q"].view(B, num, n), rows["success"].view(B, num)


class UniformPipeline:
    """Ablation: uniform starts within the limits + the same LM as the solver."""

    name = "uniform+LM"

    def __init__(self, model: RobotModel, refine_config) -> None:
        self.model, self.config = model, refine_config
        # the same LM as the solver's: the compiled one on CPU when it is built
        self.lm = (NativeKinematics(model).refine if native.available()
                   else lambda q0, T, **kw: refine(model, q0, T, **kw))
        self.description = ("uniform starts within the limits, then the solver's LM (same RefineConfig, "
                            f"{'compiled' if native.available() else 'torch'} path)")

    def solve(self, targets: torch.Tensor, num: int, deadline: float | None, seed: int
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Same contract as :meth:`PriorPipeline.solve`."""
        g = torch.Generator().manual_seed(seed)
        B, n = targets.shape[0], self.model.n_joints
        lower, upper = self.model.lower, self.model.upper
        q0 = lower + (upper - lower) * torch.rand(B * num, n, generator=g, dtype=torch.float64)
        res = self.lm(q0, targets.to(torch.float64).repeat_interleave(num, 0), config=self.config, deadline=deadline)
        return res.q.view(B, num, n), res.converged.view(B, num)


def solve_with_restarts(pipeline, targets: torch.Tensor, budget: float, seed: int) -> torch.Tensor:
    """One solution per target within ``budget`` seconds for the whole batch.

    targets (B, E, 4, 4) -> q (B, n) float64 (NaN where no row converged in time). Rows that fail
    are started again (new samples / uniform starts) while time is left.
    """
    B = targets.shape[0]
    deadline = time.monotonic() + budget
    q = torch.full((B, pipeline.model.n_joints), float("nan"), dtype=torch.float64)
    todo = torch.arange(B)
    round_ = 0
    while todo.numel() and time.monotonic() < deadline:
        q_new, ok = pipeline.solve(targets[todo], 1, deadline, seed + round_)
        ok = ok[:, 0]
        q[todo[ok]] = q_new[ok, 0]
        todo, round_ = todo[~ok], round_ + 1
    return q


def solve_many(pipeline, target: torch.Tensor, budget: float, max_chunk: int, seed: int) -> torch.Tensor:
    """Every converged row for one target (E, 4, 4) within ``budget`` [s] -> (M, n) float64.

    Batches start at 16 rows and double while a batch takes less than a quarter of the time
    left, up to ``max_chunk`` rows (so a slow sampler still fits its batches in the budget).
    """
    deadline = time.monotonic() + budget
    found, round_, chunk = [], 0, 16
    while time.monotonic() < deadline:
        start = time.monotonic()
        q, ok = pipeline.solve(target[None], chunk, deadline, seed + round_)
        found.append(q[0][ok[0]])
        round_ += 1
        if 4 * (time.monotonic() - start) < deadline - time.monotonic():
            chunk = min(2 * chunk, max_chunk)
    return torch.cat(found) if found else torch.zeros(0, pipeline.model.n_joints, dtype=torch.float64)
