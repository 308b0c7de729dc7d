"""Inference-time objectives: ``cost(q (M, n)) -> (M,)``, differentiable in ``q``.

Each factory returns a plain function of the joint values (any float dtype and
device; float32 inside the sampler's guidance, float64 in the refinement).
Lower is better. The solver uses them in two places:

1. as the sampler's guidance hook (a gradient step on the denoiser's clean
   sample estimate at every reverse step), and
2. in the null-space polish of :func:`ikdiffuser_ros.sampling.polish.polish`,
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

:func:`spread_apart` is not a per-row objective: it couples the rows drawn for one target (a
repulsion between them), and the solver adds it to the guidance of diverse calls only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch

from ikdiffuser_ros.errors import InvalidRequestError
from ikdiffuser_ros.kinematics.joint_kinds import joint_kinds, wrap_to_pi
from ikdiffuser_ros.kinematics.robot_model import RobotModel

CostFn = Callable[[torch.Tensor], torch.Tensor]

def seed_distance(seed: torch.Tensor, wrapping: torch.Tensor | None = None) -> CostFn:
    """Squared joint-space distance to ``seed`` (n,) or (M, n) [rad^2 or m^2].

    Wrapping variables (continuous joints, see :func:`~ikdiffuser_ros.kinematics.joint_kinds.joint_kinds`) use the
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
            d = sphere_model.world_distance(q, world, per_shape=True, within=margin)
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


#: Largest block of rows that repel each other (the pairwise cost is quadratic in it).
SPREAD_BLOCK = 64


def spread_apart(rows_per_target: int, block: int = SPREAD_BLOCK) -> CostFn:
    """Repulsion between the rows drawn for one target: ``cost_i = sum_j exp(-|q_i - q_j|^2 / h^2)`` over
    the other rows ``j`` of ``i``'s block (blocks of up to ``block`` consecutive rows of a target; rows are
    target-major, ``rows_per_target`` = N each), ``h^2`` half the median squared distance in the block
    (SVGD's bandwidth rule, in joint units [rad or m]). Its gradient pushes a target's samples apart.
    """
    N = int(rows_per_target)
    G = min(N, int(block))

    def blocks(q: torch.Tensor) -> torch.Tensor:
        """(K, G, n) blocks -> (K, G): each row's repulsion from the others of its block."""
        d2 = torch.cdist(q, q) ** 2
        h2 = d2.detach().flatten(-2).median(-1).values.clamp_min(1e-6)[..., None, None] / 2
        return torch.exp(-d2 / h2).sum(-1) - 1.0

    def cost(q: torch.Tensor) -> torch.Tensor:
        M, n = q.shape
        per_target = q.view(M // N, N, n)
        full = (N // G) * G
        out = [blocks(per_target[:, :full].reshape(-1, G, n)).view(M // N, full)]
        if N > full:
            out.append(blocks(per_target[:, full:]).view(M // N, N - full))
        return torch.cat(out, 1).reshape(M)

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


@dataclass(frozen=True)
class ObjectiveContext:
    """What objectives may need in one solve: the robot and, where the request has them, per-row
    seeds (M, n), the sphere model, the world and a user cost. Margins in m or rad."""

    robot: RobotModel
    seed_rows: torch.Tensor | None = None
    sphere_model: object = None
    world: object = None
    cost_fn: CostFn | None = None
    joint_limit_margin: float = 0.1
    collision_margin: float = 0.02


class Objective:
    """One named objective: ``build(context)`` returns its cost function (``q (M, n) -> (M,)``).

    A new objective is one subclass with a ``name`` (and optional ``aliases``) added to
    :data:`OBJECTIVES`; requests, the solver and the node all read that registry.
    """

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    #: what the request must provide, for the error message when it is missing
    needs: ClassVar[str] = ""

    @classmethod
    def available(cls, ctx: ObjectiveContext) -> bool:
        return True

    @classmethod
    def build(cls, ctx: ObjectiveContext) -> CostFn:
        raise NotImplementedError


class SeedDistance(Objective):
    name, aliases, needs = "seed", ("seed_distance",), "a seed joint vector"

    @classmethod
    def available(cls, ctx):
        return ctx.seed_rows is not None

    @classmethod
    def build(cls, ctx):
        return seed_distance(ctx.seed_rows, joint_kinds(ctx.robot)[1])


class JointLimitMargin(Objective):
    name, aliases = "joint_limits", ("joint_limit_margin",)

    @classmethod
    def build(cls, ctx):
        return joint_limit_margin(ctx.robot, ctx.joint_limit_margin)


class Collision(Objective):
    name, aliases, needs = "collision", ("self_collision", "world_collision"), "a sphere model"

    @classmethod
    def available(cls, ctx):
        return ctx.sphere_model is not None

    @classmethod
    def build(cls, ctx):
        return collision(ctx.sphere_model, ctx.world, ctx.collision_margin)


class Manipulability(Objective):
    name = "manipulability"

    @classmethod
    def build(cls, ctx):
        return manipulability(ctx.robot)


class UserCost(Objective):
    name, needs = "user", "a cost_fn"

    @classmethod
    def available(cls, ctx):
        return ctx.cost_fn is not None

    @classmethod
    def build(cls, ctx):
        return user(ctx.cost_fn)


#: The objective registry: name -> class.
OBJECTIVES: dict[str, type[Objective]] = {
    cls.name: cls for cls in (SeedDistance, JointLimitMargin, Collision, Manipulability, UserCost)}
#: Alternative names accepted for registered objectives.
ALIASES: dict[str, str] = {alias: cls.name for cls in OBJECTIVES.values() for alias in cls.aliases}


def canonical_name(name: str) -> str:
    """A registered objective name or alias -> its name; :class:`InvalidRequestError` listing them otherwise."""
    name = ALIASES.get(name, name)
    if name not in OBJECTIVES:
        raise InvalidRequestError(f"unknown objective {name!r}; known objectives: {', '.join(OBJECTIVES)} "
                                  f"(aliases: {', '.join(sorted(ALIASES))})")
    return name


def canonical_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """``{name or alias: weight}`` -> ``{name: weight}``, weights finite and >= 0 (else InvalidRequestError)."""
    out: dict[str, float] = {}
    for name, weight in weights.items():
        canon = canonical_name(name)
        w = float(weight)
        if not math.isfinite(w) or w < 0:
            raise InvalidRequestError(f"objective {name!r}: weight must be finite and >= 0, got {weight!r}")
        out[canon] = w
    return out


def combine(weights: Mapping[str, float], ctx: ObjectiveContext) -> CostFn | None:
    """Weighted sum ``sum_k w_k cost_k(q)`` of named objectives (names or aliases of :data:`OBJECTIVES`).

    Zero weights are dropped; negative or non-finite weights, unknown names and objectives whose
    context is missing (``seed`` without a seed...) raise :class:`InvalidRequestError` with the reason.
    Returns the combined cost, or None when every weight is zero.
    """
    terms, weights = [], canonical_weights(weights)
    for name, w in weights.items():
        if w == 0:
            continue
        cls = OBJECTIVES[name]
        if not cls.available(ctx):
            raise InvalidRequestError(f"objective {name!r} needs {cls.needs or 'more context'} in this request")
        terms.append((w, cls.build(ctx)))
    if not terms:
        return None

    def cost(q: torch.Tensor) -> torch.Tensor:
        total = terms[0][0] * terms[0][1](q)
        for w, fn in terms[1:]:
            total = total + w * fn(q)
        return total

    cost.names = tuple(sorted(n for n, w in weights.items() if w))  # what it costs to evaluate
    return cost
