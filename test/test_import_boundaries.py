"""Architecture guards: the core imports no ROS module, and the package has no import cycles."""

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "ikdiffuser_ros"
ROS_PREFIXES = ("rclpy", "rosidl", "geometry_msgs", "sensor_msgs", "moveit_msgs", "std_msgs", "shape_msgs",
                "visualization_msgs", "builtin_interfaces", "launch", "tf2")


def _core_modules() -> list[str]:
    out = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).with_suffix("")
        parts = rel.parts
        if "ros" in parts[1:2] or parts[1:2] in (("msg",), ("srv",)):
            continue
        out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


def test_core_imports_no_ros_module():
    code = ("import importlib, sys\n"
            f"for m in {_core_modules()!r}: importlib.import_module(m)\n"
            f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {ROS_PREFIXES!r})\n"
            "print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"core modules import ROS: {res.stdout} {res.stderr[-2000:]}"


def _imports(path: Path) -> set[str]:
    """ikdiffuser_ros modules imported by ``path``, at module level or inside functions (a deferred
    import hides a cycle from Python, not from the design)."""
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and getattr(block.test, "id", None) == "TYPE_CHECKING" for n in ast.walk(block)}
    mods = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:  # type hints only: never executed
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ikdiffuser_ros"):
            mods.add(node.module)
            mods.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            mods.update(a.name for a in node.names if a.name.startswith("ikdiffuser_ros"))
    return mods


def test_no_import_cycles_between_modules():
    modules = {}
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG.parent).with_suffix("").parts
        modules[".".join(rel[:-1] if rel[-1] == "__init__" else rel)] = path
    graph = {m: {d for d in _imports(p) if d in modules and d != m and d != "ikdiffuser_ros"}
             for m, p in modules.items()}
    state: dict[str, int] = {}

    def visit(m, stack):
        state[m] = 1
        for d in graph[m]:
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(d):] + [d]))
            if d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
