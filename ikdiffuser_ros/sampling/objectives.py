"""Inference-time objectives: ``cost(q (M, n)) -> (M,)``, differentiable in ``q``.

Each factory returns a plain function of the joint values (any float dtype and
device; float32 inside the sampler's guidance, float64 in the refinement).
Lower is better. The solver uses them in two places:

1. as the sampler's guidance hook (a gradient step on the denoiser's clean
   sample estimate at every reverse step), and
2. in the null-space polish of :func:`ikdiffuser_ros.sampling.refine.polish`,
   which lowers the cost while keeping the end-effector poses.

Objectives and units (weights in :func:`combine` multiply these):

========================= ============================================================ ===========
name                      cost per row                                                 unit
========================= ============================================================ ===========
``seed``                  ``sum_k (q_k - seed_k)^2`` (wrapping joints modulo 2 pi)     rad^2 / m^2
``joint_limits``          ``sum_k relu(margin - dist_k)^2 / margin^2``, ``dist_k``      1
                          the distance of joint k to its nearer limit
``collision``             ``sum_pairs (relu(margin - d) / margin)^2`` over self sphere 1
                          pairs and robot-sphere / world-shape pairs (signed
                          distance ``d`` [m]; 1 per pair at contact)
``manipulability``        ``-sum_e log(det(J_e J_e^T) + eps)`` (J_e the (6, n)          1
                          geometric Jacobian of end effector e)
``user``                  ``fn(q)``                                                    user's
========================= ============================================================ ===========
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch

from ikdiffuser_ros.errors import InvalidRequestError
from ikdiffuser_ros.kinematics.robot_model import RobotModel
from ikdiffuser_ros.sampling.refine import joint_kinds, wrap_to_pi

CostFn = Callable[[torch.Tensor], torch.Tensor]

#: Names accepted by :func:`combine` (the solver's ``objectives`` keys).
KNOWN_OBJECTIVES = ("seed", "joint_limits", "collision", "manipulability", "user")


def seed_distance(seed: torch.Tensor, wrapping: torch.Tensor | None = None) -> CostFn:
    """Squared joint-space distance to ``seed`` (n,) or (M, n) [rad^2 or m^2].

    Wrapping variables (continuous joints, see :func:`refine.joint_kinds`) use the
    shorter way round.
    """
    seed = torch.as_tensor(seed)

    def cost(q: torch.Tensor) -> torch.Tensor:
        d = q - seed.to(dtype=q.dtype, device=q.device)
        if wrapping is not None and bool(wrapping.any()):
            d = torch.where(wrapping.to(q.device), wrap_to_pi(d), d)
        return (d * d).sum(-1)

    return cost


def joint_limit_margin(model: RobotModel, margin: float = 0.1) -> CostFn:
    """Penalty for joints within ``margin`` [rad or m] of a limit: ``sum relu(margin - dist)^2 / margin^2``.

    Wrapping (continuous) joints have no limits and are ignored. Zero for
    configurations at least ``margin`` away from every limit; 1 per joint on a limit.
    """
    _, wrapping = joint_kinds(model)
    keep = ~wrapping

    def cost(q: torch.Tensor) -> torch.Tensor:
        lo, hi = model.limits(q.dtype, q.device)
        m = torch.as_tensor(margin, dtype=q.dtype, device=q.device)
        m = torch.minimum(m, (hi - lo) / 2)  # a joint narrower than 2*margin is penalised only near the ends
        dist = torch.minimum(q - lo, hi - q)
        pen = torch.relu(m - dist) / m.clamp_min(1e-9)
        return (pen * pen * keep.to(q.device)).sum(-1)

    return cost


def collision(sphere_model, world=None, margin: float = 0.02) -> CostFn:
    """Hinge on signed distances of the sphere model: ``sum (relu(margin - d) / margin)^2`` (dimensionless).

    ``d`` runs over the checked self sphere pairs and, with ``world``, over
    attached-object / link pairs and (robot or attached-object sphere, world
    shape) pairs, all minus those the ACM allows (see
    :meth:`SphereModel.self_pair_distances_with` and :meth:`SphereModel.world_distance`).
    """

    def cost(q: torch.Tensor) -> torch.Tensor:
        total = (torch.relu(margin - sphere_model.self_pair_distances_with(q, world)) / margin).pow(2).sum(-1)
        if world is not None and world.objects:
            d = sphere_model.world_distance(q, world, per_shape=True)
            d = torch.where(torch.isinf(d), torch.full_like(d, margin), d)
            total = total + (torch.relu(margin - d) / margin).pow(2).flatten(-2).sum(-1)
        return total

    return cost


def manipulability_index(model: RobotModel, q: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """(M, n) -> (M, E) Yoshikawa manipulability ``sqrt(det(J_e J_e^T))`` of every end effector."""
    _, J = model.fk_and_jacobian(q)
    return torch.sqrt(torch.linalg.det(J @ J.transpose(-1, -2)).clamp_min(eps))


def manipulability(model: RobotModel, eps: float = 1e-12) -> CostFn:
    """``-sum_e log(det(J_e J_e^T) + eps)`` (dimensionless): lower = farther from singularities."""

    def cost(q: torch.Tensor) -> torch.Tensor:
        _, J = model.fk_and_jacobian(q)
        det = torch.linalg.det(J @ J.transpose(-1, -2))
        return -torch.log(det.clamp_min(0) + eps).sum(-1)

    return cost


def user(fn: CostFn) -> CostFn:
    """Wrap a user callable ``q (M, n) -> (M,)``, checking the output shape."""

    def cost(q: torch.Tensor) -> torch.Tensor:
        out = fn(q)
        if not isinstance(out, torch.Tensor) or out.shape != q.shape[:-1]:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise InvalidRequestError(f"cost_fn must return a tensor of shape {tuple(q.shape[:-1])}, got {shape}")
        return out

    return cost


def combine(weights: Mapping[str, float], factories: Mapping[str, Callable[[], CostFn]]) -> CostFn | None:
    """Weighted sum ``sum_k w_k cost_k(q)`` of named objectives.

    Args:
        weights: ``{name: weight}``; names must be in :data:`KNOWN_OBJECTIVES`.
            Zero weights are dropped; negative or non-finite weights are refused.
        factories: ``{name: () -> cost}`` for the objectives available in this
            context (e.g. ``seed`` only when a seed was given). A known name
            whose factory is missing raises with the reason.

    Returns:
        the combined cost, or None when every weight is zero.
    """
    terms = []
    for name, weight in weights.items():
        if name not in KNOWN_OBJECTIVES:
            raise InvalidRequestError(f"unknown objective {name!r}; known objectives: {', '.join(KNOWN_OBJECTIVES)}")
        w = float(weight)
        if not math.isfinite(w) or w < 0:
            raise InvalidRequestError(f"objective {name!r}: weight must be finite and >= 0, got {weight!r}")
        if w == 0:
            continue
        if name not in factories:
            need = {"seed": "a seed joint vector", "user": "a cost_fn", "collision": "a sphere model"}.get(name, "")
            raise InvalidRequestError(f"objective {name!r} needs {need or 'more context'} in this request")
        terms.append((w, factories[name]()))
    if not terms:
        return None

    def cost(q: torch.Tensor) -> torch.Tensor:
        total = terms[0][0] * terms[0][1](q)
        for w, fn in terms[1:]:
            total = total + w * fn(q)
        return total

    return cost
