"""No function or method in ``ikdiffuser_ros/`` is over :data:`MAX_LINES` lines (issue 18).

A function's length is ``ast``'s ``end_lineno - lineno + 1``: from the ``def`` line (decorators aside) to its
last line, signature, docstring and nested functions included.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "ikdiffuser_ros"
MAX_LINES = 40


def function_lengths(path: Path) -> list[tuple[str, int, int]]:
    """(qualified name, first line, length in lines) of every function and method in ``path``."""
    out: list[tuple[str, int, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.append((prefix + child.name, child.lineno, child.end_lineno - child.lineno + 1))
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(path.read_text(), filename=str(path)), "")
    return out


def test_no_function_is_over_40_lines():
    files = sorted(PKG.rglob("*.py"))
    assert files, f"no Python files under {PKG}"
    offenders = [f"{path.relative_to(PKG.parent)}:{line} {name}: {length} lines"
                 for path in files for name, line, length in function_lengths(path) if length > MAX_LINES]
    assert not offenders, f"{len(offenders)} function(s) over {MAX_LINES} lines:\n" + "\n".join(offenders)
