"""Names of the variables of multi-DOF joints: the one place that builds and parses them.

A single-DOF joint (revolute, continuous, prismatic) has one variable named like the joint. A planar
joint ``base`` (URDF ``planar`` with axis z, or an SRDF planar virtual joint) has three,
``base/x``, ``base/y`` [m] and ``base/theta`` [rad]; a floating one six, ``<joint>/x``, ``/y``,
``/z`` [m] and ``/yaw``, ``/pitch``, ``/roll`` [rad] (``R = Rz(yaw) Ry(pitch) Rx(roll)``), each
an elementary motion along or about an axis of the joint's frame, chained in that order.

Full-turn angles (planar ``theta``, floating ``yaw`` and ``roll``) wrap: ``-pi`` and ``pi`` are
the same value. Floating ``pitch`` spans ``[-pi/2, pi/2]`` and does not wrap.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: Between a multi-DOF joint's name and its axis suffix.
SEPARATOR = "/"


@dataclass(frozen=True)
class AxisVariable:
    """One elementary variable of a multi-DOF joint."""

    #: Name suffix (``x``, ``theta``...): the variable is ``<joint>/<suffix>``.
    suffix: str
    #: Translation [m] along ``axis`` (True) or rotation [rad] about it (False).
    prismatic: bool
    #: ``"x"``, ``"y"`` or ``"z"``: the axis of the joint frame it moves along or about.
    axis: str
    #: A full-turn angle (period 2 pi).
    wraps: bool


_X, _Y, _Z = (AxisVariable(a, True, a, False) for a in ("x", "y", "z"))
#: Variables of a planar joint, in chain order.
PLANAR = (_X, _Y, AxisVariable("theta", False, "z", True))
#: Variables of a floating joint, in chain order.
FLOATING = (_X, _Y, _Z, AxisVariable("yaw", False, "z", True), AxisVariable("pitch", False, "y", False),
            AxisVariable("roll", False, "x", True))
_BY_SUFFIX = {v.suffix: v for v in PLANAR + FLOATING}


def axes(joint_type: str) -> tuple[AxisVariable, ...]:
    """The variables of a joint of URDF/SRDF type ``joint_type`` (``planar``, ``floating``); () for the others."""
    return {"planar": PLANAR, "floating": FLOATING}.get(joint_type, ())


def variable_name(joint: str, suffix: str) -> str:
    """``joint``'s variable along/about ``suffix``: ``variable_name("base", "x") == "base/x"``."""
    return f"{joint}{SEPARATOR}{suffix}"


def split(name: str) -> tuple[str, AxisVariable | None]:
    """A variable name -> (its joint, its :class:`AxisVariable`); (``name``, None) for a single-DOF joint's
    variable (including a joint name that holds a ``/`` but does not end in an axis suffix)."""
    joint, sep, suffix = name.rpartition(SEPARATOR)
    axis = _BY_SUFFIX.get(suffix) if sep and joint else None
    return (joint, axis) if axis is not None else (name, None)


def axis_of(name: str) -> AxisVariable | None:
    """The :class:`AxisVariable` of a multi-DOF joint's variable; None for a single-DOF joint's."""
    return split(name)[1]


def joint_of(name: str) -> str:
    """The joint a variable belongs to (``base/x`` -> ``base``; ``j1`` -> ``j1``)."""
    return split(name)[0]


def flat_name(name: str) -> str:
    """The single-DOF joint that stands for variable ``name`` where a multi-DOF joint is written out as a
    chain of single-DOF joints (the bench peers' kinematic URDF): ``base/x`` -> ``base_x``; a single-DOF
    joint's variable keeps its name."""
    joint, axis = split(name)
    return name if axis is None else f"{joint}_{axis.suffix}"


def variables_of(joint: str, names: Iterable[str]) -> list[str]:
    """The variables among ``names`` that belong to ``joint`` (itself, or its ``<joint>/<suffix>`` ones), in order."""
    return [n for n in names if n == joint or joint_of(n) == joint]


def planar_indices(names: Sequence[str]) -> list[tuple[int, int, int]]:
    """Indices in ``names`` of the ``x``, ``y`` and ``theta`` variables of every planar joint that has all three
    there, in the order of their ``x``."""
    index = {n: i for i, n in enumerate(names)}
    out = []
    for name in names:
        joint, axis = split(name)
        if axis is PLANAR[0]:
            found = [index.get(variable_name(joint, v.suffix)) for v in PLANAR]
            if None not in found:  # a floating joint has x and y, no theta
                out.append(tuple(found))
    return out
