"""The batched rows of ``ikdiffuser bench``: IKDiffuser (the product's pipeline) and its ablation.

Both answer the three calls of the protocols (:mod:`ikdiffuser_ros.bench.protocols`):
``first_solutions`` (one solution per target of a batch within a budget), ``all_solutions``
(every solution of one target found within a budget) and ``one_start`` (one start per target,
no restart, no time limit).

* ``ikdiffuser``: :meth:`IKPipeline.answer`, what the node runs for every request: one
  :class:`IKQuery` per call with the budget as its timeout; its rounds, chunking, restarts and LM
  are the pipeline's own (the checkpoint's sampler plan, the compiled path on CPU).
* ``uniform+LM``: joint values drawn uniformly within the limits, then the solver's LM (the same
  :class:`RefineConfig`, float64), restarted from new uniform rows while time is left.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ikdiffuser_ros import native
from ikdiffuser_ros.kinematics.joint_kinds import uniform_in_limits
from ikdiffuser_ros.kinematics.robot_model import RobotModel
from ikdiffuser_ros.native import NativeKinematics
from ikdiffuser_ros.pipeline import IKPipeline
from ikdiffuser_ros.query import IKQuery, IKTarget
from ikdiffuser_ros.sampling.lm import refine

#: rounds of a bench query: the budget ends it first
MAX_ROUNDS = 100_000


class PriorPipeline:
    """IKDiffuser: :meth:`IKPipeline.answer` (its ``config`` sized for the protocols' batches)."""

    name = "ikdiffuser"

    def __init__(self, pipeline: IKPipeline) -> None:
        self.pipeline = pipeline
        self.model: RobotModel = pipeline.robot
        cfg = pipeline.config
        self.description = (f"IKPipeline.answer, one IKQuery per call with the budget as its timeout (diffusion "
                            f"samples, {cfg.steps or 'the card'}'s DDIM steps, perturbed restarts in rounds "
                            f"of >= {cfg.restart_min_rows} rows of a multi-solution query, its LM, rounds until the "
                            f"deadline)")

    def _answer(self, targets: torch.Tensor, num: int, timeout: float, rounds: int, seed: int) -> list:
        ees = list(self.model.end_effectors)
        query = IKQuery([IKTarget(ees, list(T)) for T in targets.numpy()], num_solutions=num, timeout=timeout,
                        max_rounds=rounds, random_seed=seed)
        return self.pipeline.answer(query).targets

    def first_solutions(self, targets: torch.Tensor, budget: float, seed: int) -> torch.Tensor:
        """targets (B, E, 4, 4), ``budget`` [s] for the whole batch -> q (B, n) float64 (NaN: none in time)."""
        answers = self._answer(targets, 1, budget, MAX_ROUNDS, seed)
        return _first_valid(answers, self.model.n_joints)

    def all_solutions(self, target: torch.Tensor, budget: float, seed: int) -> torch.Tensor:
        """One target (E, 4, 4) -> every valid solution found within ``budget`` [s], (M, n) float64."""
        [answer] = self._answer(target[None], self.pipeline.config.max_num_solutions, budget, MAX_ROUNDS, seed)
        return torch.from_numpy(answer.q[answer.valid])

    def one_start(self, targets: torch.Tensor, seed: int) -> torch.Tensor:
        """One diffusion sample + LM per target, no restart, no time limit -> q (B, n) (NaN: failed)."""
        return _first_valid(self._answer(targets, 1, 3600.0, 1, seed), self.model.n_joints)


def _first_valid(answers: list, n: int) -> torch.Tensor:
    """Each target's first valid solution, (B, n) float64, NaN where it has none."""
    q = np.full((len(answers), n), np.nan)
    for i, a in enumerate(answers):
        if a.valid.any():
            q[i] = a.q[np.argmax(a.valid)]
    return torch.from_numpy(q)


class UniformPipeline:
    """Ablation: uniform starts within the limits + the same LM as the solver, restarted while time is left."""

    name = "uniform+LM"

    def __init__(self, model: RobotModel, refine_config, max_chunk: int = 256) -> None:
        self.model, self.config, self.max_chunk = model, refine_config, max_chunk
        # the same LM as the solver's: the compiled one on CPU when it is built
        self.lm = (NativeKinematics(model).refine if native.available()
                   else lambda q0, T, **kw: refine(model, q0, T, **kw))
        self.description = ("uniform starts within the limits, then the solver's LM (same RefineConfig, "
                            f"{'compiled' if native.available() else 'torch'} path)")

    def rows(self, targets: torch.Tensor, num: int, deadline: float | None, seed: int
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """targets (B, E, 4, 4), ``num`` uniform starts each -> (q (B, num, n) float64, converged (B, num));
        ``deadline``: a ``time.monotonic()`` value or None."""
        g = torch.Generator().manual_seed(seed)
        B, n = targets.shape[0], self.model.n_joints
        q0 = uniform_in_limits(self.model.lower, self.model.upper, B * num, g)
        res = self.lm(q0, targets.to(torch.float64).repeat_interleave(num, 0), config=self.config, deadline=deadline)
        return res.q.view(B, num, n), res.converged.view(B, num)

    def first_solutions(self, targets: torch.Tensor, budget: float, seed: int) -> torch.Tensor:
        """As :meth:`PriorPipeline.first_solutions`: rows that fail get new uniform starts while time is left."""
        B = targets.shape[0]
        deadline = time.monotonic() + budget
        q = torch.full((B, self.model.n_joints), float("nan"), dtype=torch.float64)
        todo, round_ = torch.arange(B), 0
        while todo.numel() and time.monotonic() < deadline:
            q_new, ok = self.rows(targets[todo], 1, deadline, seed + round_)
            q[todo[ok[:, 0]]] = q_new[ok[:, 0], 0]
            todo, round_ = todo[~ok[:, 0]], round_ + 1
        return q

    def all_solutions(self, target: torch.Tensor, budget: float, seed: int) -> torch.Tensor:
        """As :meth:`PriorPipeline.all_solutions`. Batches start at 16 rows and double while a batch takes
        less than a quarter of the time left, up to ``max_chunk`` rows."""
        deadline = time.monotonic() + budget
        found, round_, chunk = [], 0, 16
        while time.monotonic() < deadline:
            start = time.monotonic()
            q, ok = self.rows(target[None], chunk, deadline, seed + round_)
            found.append(q[0][ok[0]])
            round_ += 1
            if 4 * (time.monotonic() - start) < deadline - time.monotonic():
                chunk = min(2 * chunk, self.max_chunk)
        return torch.cat(found) if found else torch.zeros(0, self.model.n_joints, dtype=torch.float64)

    def one_start(self, targets: torch.Tensor, seed: int) -> torch.Tensor:
        """One uniform start + LM per target, no time limit -> q (B, n) (NaN: failed)."""
        return self.rows(targets, 1, None, seed)[0][:, 0]
