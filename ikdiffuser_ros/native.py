"""The compiled small-batch path: FK, Jacobians, Levenberg-Marquardt and the MLP sampler in C++.

A request for one target pays, in torch, for hundreds of small ops of 5-10 us each (one LM
iteration of a 14-joint robot is ~60 ops); the work itself is a few thousand flops. The C++
module ``ikdiffuser_ros._native`` (``native/``: Eigen through pybind11, built by ``make setup`` and
by the package's CMake) does the same arithmetic row by row:

- :class:`NativeKinematics`: FK and geometric Jacobians of the end effectors, float64, the
  conventions of :class:`~ikdiffuser_ros.kinematics.chain.KinematicTree`;
- :meth:`NativeKinematics.refine`: the LM of :func:`~ikdiffuser_ros.sampling.lm.refine` (same step,
  active set, damping and stopping rules; the same iterations, q within 1e-8), one row after the other, so a
  deadline leaves the first rows fully refined;
- :class:`NativeSampler`: the :class:`~ikdiffuser_ros.model.mlp_denoiser.IKMLPDenoiser` sampling loop
  (DDIM with eta = 0 and the low-noise tail, kinematic feedback, no guidance) in float32, as
  :func:`~ikdiffuser_ros.sampling.sampler.sample` computes it.

Nothing here changes an answer's meaning: the torch path stays for GPUs, guidance, training and
machines where the module was not built (:func:`available` is False; ``unavailable_reason`` says
why). Tests compare both paths on every shipped robot.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import asdict

import numpy as np
import torch

from ikdiffuser_ros.kinematics.joint_kinds import joint_kinds
from ikdiffuser_ros.kinematics.robot_model import RobotModel
from ikdiffuser_ros.sampling.lm import RefineConfig, RefineResult

try:
    from ikdiffuser_ros import _native
    unavailable_reason = ""
except ImportError as exc:  # not built (make setup builds it)
    _native = None
    unavailable_reason = f"ikdiffuser_ros._native is not built ({exc}); run make setup"

# The C++ deadline clock and time.monotonic() must be the same clock.
if _native is not None and abs(_native.monotonic() - time.monotonic()) > 0.5:  # pragma: no cover
    _native, unavailable_reason = None, "ikdiffuser_ros._native's clock differs from time.monotonic()"


def available() -> bool:
    """Whether the compiled module is importable."""
    return _native is not None


def _shaped(a: np.ndarray, shape) -> np.ndarray:
    """``a`` broadcast to ``shape`` (itself when it has it: the one-row call skips numpy's broadcasting)."""
    return a if a.shape == tuple(shape) else np.broadcast_to(a, shape)


def _u8(x, shape) -> np.ndarray:
    """``x`` (bools, or one bool) as a C-contiguous uint8 array of ``shape``."""
    return np.ascontiguousarray(_shaped(np.asarray(x, dtype=np.uint8), shape))


def compiled_tree(robot: RobotModel, links: Sequence[str]):
    """The compiled twin of ``robot.tree(links)`` (an ``ikdiffuser_ros._native.Tree``): ``.fk(q)`` maps (M, n)
    float64 joint values to the (M, len(links), 4, 4) poses ``robot.fk_links`` gives, without torch's per-op cost
    (one row in microseconds)."""
    if _native is None:
        raise RuntimeError(unavailable_reason)
    tree = robot.tree(links)
    nodes, frames = tree.nodes, tree.frames
    return _native.Tree(
        tree.n_vars, np.array([nd.parent for nd in nodes], np.int64),
        np.array([nd.origin for nd in nodes], np.float64).reshape(-1, 4, 4),
        np.array([nd.axis for nd in nodes], np.float64).reshape(-1, 3),
        np.array([nd.prismatic for nd in nodes], np.uint8), np.array([nd.var for nd in nodes], np.int64),
        np.array([nd.multiplier for nd in nodes], np.float64), np.array([nd.offset for nd in nodes], np.float64),
        np.array([f.parent for f in frames], np.int64),
        np.array([f.offset for f in frames], np.float64).reshape(-1, 4, 4))


class NativeKinematics:
    """FK, Jacobians and LM of one robot's end effectors (the frames of ``robot.fk``), float64."""

    def __init__(self, robot: RobotModel) -> None:
        self.robot = robot
        self.n, self.E = robot.n_joints, len(robot.end_effectors)
        self.tree = compiled_tree(robot, robot.end_effectors)
        lower, upper = robot.limits(torch.float64)
        self.lower, self.upper = lower.numpy().copy(), upper.numpy().copy()
        self.wrapping = joint_kinds(robot)[1].numpy().astype(np.uint8)

    def fk(self, q: np.ndarray) -> np.ndarray:
        """(M, n) joint values -> (M, E, 4, 4) end-effector poses in the root frame."""
        return self.tree.fk(np.asarray(q, np.float64).reshape(-1, self.n))

    def fk_and_jacobian(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(M, n) -> poses (M, E, 4, 4) and geometric Jacobians (M, E, 6, n), rows (v, w) in root axes."""
        return self.tree.fk_and_jacobian(np.asarray(q, np.float64).reshape(-1, self.n))

    def refine(self, q0, targets, target_mask=None, position_only=None, config: RefineConfig = RefineConfig(),
               deadline: float | None = None, frozen=None, tip_points=None, bounds=None) -> RefineResult:
        """:func:`~ikdiffuser_ros.sampling.lm.refine` with the same arguments and result, row by row in C++.

        ``targets`` (M, E, 4, 4) or (E, 4, 4) end-effector targets in the root frame; ``tip_points``
        (M, E, 3) or (E, 3) [m] in the end effectors' frames (errors are taken there); ``deadline``
        a ``time.monotonic()`` value; ``bounds`` (lower (n,), upper (n,)) the box [rad or m] (default
        the joint limits). Tensors or arrays; the result holds CPU float64 tensors.
        """
        lower, upper = (self.lower, self.upper) if bounds is None else (
            np.ascontiguousarray(_numpy(b), np.float64) for b in bounds)
        q0 = _numpy(q0).reshape(-1, self.n)
        M, E, n = len(q0), self.E, self.n
        T = _shaped(_numpy(targets), (M, E, 4, 4))
        tips = None
        if tip_points is not None:
            tips = np.ascontiguousarray(_shaped(_numpy(tip_points), (M, E, 3)))
            T = T.copy()
            T[..., :3, 3] += (T[..., :3, :3] @ tips[..., None])[..., 0]
        mask = _u8(True if target_mask is None else _numpy(target_mask), (M, E))
        pos_only = _u8(False if position_only is None else _numpy(position_only), (M, E))
        fixed = _u8(False if frozen is None else _numpy(frozen), (M, n))
        q, pe, re, conv, iters = _native.lm_solve(
            self.tree, q0, np.ascontiguousarray(T), mask, pos_only, tips, fixed, lower, upper, self.wrapping, _config_dict(config), -1.0 if deadline is None else float(deadline))
        t = torch.from_numpy
        return RefineResult(q=t(q), position_error=t(pe), rotation_error=t(re), converged=t(conv), iterations=t(iters))


@functools.lru_cache(maxsize=16)
def _config_dict(config: RefineConfig) -> dict:
    return asdict(config)


def _numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return x.numpy() if x.dtype == torch.bool else x.to(torch.float64).numpy()
    return np.asarray(x)


class NativeSampler:
    """The sampling loop of an :class:`~ikdiffuser_ros.model.mlp_denoiser.IKMLPDenoiser` checkpoint in C++
    (a snapshot of its weights: build it from a loaded, frozen model)."""

    def __init__(self, loaded, kin: NativeKinematics) -> None:
        den, norm = loaded.denoiser, loaded.normalizer
        self.loaded, self.kin = loaded, kin
        self.n = den.config.n_joints
        ln_eps = float(den.blocks[0].ln.eps)
        weights = [den.inp.weight, den.inp.bias]
        for b in den.blocks:
            weights += [b.ln.weight, b.ln.bias, b.fc1.weight, b.fc1.bias, b.fc2.weight, b.fc2.bias]
        weights += [den.ln_out.weight, den.ln_out.bias, den.head.weight, den.head.bias]
        f64 = lambda x: x.detach().cpu().to(torch.float64).numpy().reshape(-1)  # noqa: E731
        self.sampler = _native.MLPSampler(
            kin.tree, f64(norm.lower), f64(norm.upper), f64(norm.pos_mean), f64(norm.pos_std),
            [w.detach().cpu().float().contiguous().numpy() for w in weights], _t_table(den, loaded.schedule),
            bool(den.config.fk_feedback), ln_eps, list(den.ln_out.segments))
        self.lower, self.upper = norm.lower.detach().cpu(), norm.upper.detach().cpu()
        self._passes = functools.lru_cache(maxsize=16)(self._coefficients)

    def _coefficients(self, plan: tuple[tuple[int, int | None], ...], eta: float = 0.0) -> list[tuple]:
        """The compiled loop's passes of a plan (computed once per plan and eta): (t, sqrt(abar_t),
        sqrt(1 - abar_t), sqrt(abar_prev), sqrt(1 - abar_prev - sigma^2), sigma, tail pass?), float32
        values as the torch sampler rounds them (:func:`~ikdiffuser_ros.model.schedule.ddim_step`),
        abar(-1) = 1."""
        ab = self.loaded.schedule.alphas_cumprod.to(torch.float32).numpy()
        f = np.float32

        def abar(t):
            return f(1.0) if t is None or t < 0 else f(ab[t])

        out = []
        for t, tp in plan:
            a_t, a_p = abar(t), abar(tp)
            sigma = f(0.0)
            if eta > 0 and tp is not None and tp >= 0:
                sigma = f(eta) * np.sqrt((f(1) - a_p) / (f(1) - a_t)) * np.sqrt(max(f(1) - a_t / a_p, f(0)))
            direction = np.sqrt(max(f(1) - a_p - sigma * sigma, f(0)))
            out.append((t, float(np.sqrt(a_t)), float(np.sqrt(f(1) - a_t)), float(np.sqrt(a_p)), float(direction),
                        float(sigma), tp is None))
        return out

    @staticmethod
    def supports(loaded) -> bool:
        """Whether ``loaded`` is a CPU IKMLPDenoiser checkpoint this class can run."""
        from ikdiffuser_ros.model.mlp_denoiser import IKMLPDenoiser

        return (_native is not None and isinstance(loaded.denoiser, IKMLPDenoiser)
                and torch.device(loaded.device).type == "cpu")

    def sample(self, x: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, pos_only: torch.Tensor,
               plan: list[tuple[int, int | None]], deadline: float | None = None, eta: float = 0.0,
               noise: torch.Tensor | None = None) -> torch.Tensor:
        """Denoise x (M, n) float32 initial noise toward targets (M, E, 4, 4) with masks (M, E) along
        ``plan`` ((t, t_prev) pairs, t_prev None = tail pass) -> q (M, n) float32 within the limits.
        ``eta`` > 0: stochastic DDIM with the step ``noise`` (len(plan), M, n)
        (:func:`~ikdiffuser_ros.sampling.sampler.step_noise`)."""
        if eta > 0 and (noise is None or tuple(noise.shape) != (len(plan), *x.shape)):
            raise ValueError(f"eta > 0 needs noise of shape {(len(plan), *x.shape)}")
        noise_np = np.zeros((0, 0, 0), np.float32) if eta <= 0 else noise.detach().cpu().float().contiguous().numpy()
        out, _ = self.sampler.sample(
            x.detach().cpu().float().contiguous().numpy(), np.ascontiguousarray(_numpy(targets), np.float64),
            _u8(_numpy(mask), mask.shape), _u8(_numpy(pos_only), pos_only.shape), self._passes(tuple(plan), eta),
            noise_np, self.loaded.schedule.num_train_steps, -1.0 if deadline is None else float(deadline))
        xq = torch.from_numpy(out).clamp(-1, 1)
        q = self.lower + (xq + 1) * 0.5 * (self.upper - self.lower)
        return torch.minimum(torch.maximum(q, self.lower), self.upper)


@torch.no_grad()
def _t_table(den, schedule) -> np.ndarray:
    """(T, n_blocks * d) float32: each block's timestep term t_proj(SiLU(t_mlp(embedding(t)))) for every t."""
    from ikdiffuser_ros.model.denoiser import sinusoidal_embedding

    t = torch.arange(schedule.num_train_steps)
    t_act = torch.nn.functional.silu(den.t_mlp(sinusoidal_embedding(t, den.config.d_model)))
    return torch.cat([b.t_proj(t_act) for b in den.blocks], -1).float().contiguous().numpy()


__all__ = ["NativeKinematics", "NativeSampler", "available", "compiled_tree", "unavailable_reason"]
