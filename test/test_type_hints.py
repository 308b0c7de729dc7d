"""Type hints in ``ikdiffuser_ros/ros/``: every parameter annotated (``self``/``cls`` aside), except in the
modules listed as not yet done."""

from __future__ import annotations

import ast
from pathlib import Path

ROS = Path(__file__).resolve().parents[1] / "ikdiffuser_ros" / "ros"
#: Modules still to annotate (their owners remove them from this set when they are done).
NOT_YET_DONE = {"conversions.py", "ik_solutions.py", "params.py", "scene_monitor.py"}


def unannotated(path: Path) -> list[str]:
    """``function:parameter`` of every parameter without an annotation in ``path``."""
    out = []
    for fn in ast.walk(ast.parse(path.read_text())):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = fn.args
            params = a.posonlyargs + a.args + a.kwonlyargs + [p for p in (a.vararg, a.kwarg) if p is not None]
            out += [f"{fn.name}:{p.arg}" for p in params if p.annotation is None and p.arg not in ("self", "cls")]
    return out


def test_every_parameter_is_annotated_in_the_finished_modules():
    missing = {p.name: unannotated(p) for p in sorted(ROS.glob("*.py")) if p.name not in NOT_YET_DONE}
    assert not any(missing.values()), {k: v for k, v in missing.items() if v}

