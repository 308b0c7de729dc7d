"""Declared dependencies match what the package imports (pyproject.toml, package.xml, the README's
and docs/building.md's pip lines)."""

import ast
import re
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: import name -> distribution (pip) name, where they differ
DIST = {"yaml": "pyyaml", "fcl": "python-fcl", "mpl_toolkits": "matplotlib", "pinocchio": "pin",
        "pink": "pin-pink", "roboticstoolbox": "roboticstoolbox-python", "pytorch_kinematics": "pytorch-kinematics"}
#: import name -> ROS package name, where they differ
ROS_PACKAGE = {"tf2_ros": "tf2_ros_py"}
#: peers of the bench (requirements/bench.txt) and Debian's python3-pykdl: optional, imported lazily
BENCH = {"pytracik", "roboticstoolbox-python", "pin", "pin-pink", "PyKDL"}


def _third_party_imports(folder: Path) -> set[str]:
    mods = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                mods.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                mods.add(node.module.split(".")[0])
    return {m for m in mods if m not in sys.stdlib_module_names and m != "ikdiffuser_ros"}


def _package_xml() -> set[str]:
    tags = ("depend", "exec_depend", "build_depend", "buildtool_depend")
    root = ET.parse(ROOT / "package.xml").getroot()
    return {e.text.strip() for tag in tags for e in root.iter(tag)}


def _pyproject() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] + [d for group in project["optional-dependencies"].values() for d in group]
    return {re.split(r"[<>=!~ \[]", s)[0].lower() for s in specs}


def test_every_import_is_declared():
    ros = _package_xml()
    pip = _pyproject()
    for mod in sorted(_third_party_imports(ROOT / "ikdiffuser_ros") | _third_party_imports(ROOT / "launch")):
        dist = DIST.get(mod, mod)
        assert dist.lower() in pip or ROS_PACKAGE.get(mod, mod) in ros or dist in BENCH, \
            f"{mod} is imported but declared neither in pyproject.toml nor in package.xml"


def test_every_declared_ros_package_is_used():
    imported = {ROS_PACKAGE.get(m, m) for m in _third_party_imports(ROOT / "ikdiffuser_ros")
                | _third_party_imports(ROOT / "launch")}
    interfaces = " ".join(p.read_text() for p in (ROOT / "msg").glob("*.msg")) + \
        " ".join(p.read_text() for p in (ROOT / "srv").glob("*.srv"))
    build_only = {"ament_cmake", "ament_cmake_python", "rosidl_default_generators", "rosidl_default_runtime",
                  "eigen", "pybind11-dev", "builtin_interfaces"}
    for pkg in sorted(_package_xml() - build_only):
        if pkg.startswith("python3-"):
            continue
        assert pkg in imported or f"{pkg}/" in interfaces, f"package.xml declares {pkg}, which nothing uses"


def test_pip_lines_of_the_docs_agree_with_pyproject():
    lines = [re.search(r"pip install (torch [^\n#]*)", (ROOT / f).read_text()).group(1).split()
             for f in ("README.md", "docs/building.md")]
    assert lines[0] == lines[1], "README.md and docs/building.md give different pip lines"
    assert {p.lower() for p in lines[0]} <= _pyproject()
