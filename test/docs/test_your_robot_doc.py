"""docs/your_robot.md says what the code does: its five commands parse with the real ``ikdiffuser`` parser and
name declared launch arguments, its robot-YAML table lists exactly the schema's keys, and the README links
it. (test/ros/test_your_robot.py runs the commands.)"""
from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "your_robot.md"


def five_commands() -> list[list[str]]:
    """The argv of each command of the doc's first bash block (comments and VAR=value prefixes dropped)."""
    text = DOC.read_text()
    block = text[text.index("```bash\n", text.index("## The five commands")) + len("```bash\n"):]
    block = block[:block.index("```")]
    commands = []
    for line in block.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            argv = shlex.split(line, comments=True)
            while argv and re.match(r"^[A-Z_]+=", argv[0]):
                argv.pop(0)
            commands.append(argv)
    return commands


def test_at_most_five_commands_and_the_ikdiffuser_ones_parse():
    from ikdiffuser_ros.cli import build_parser

    commands = five_commands()
    assert len(commands) <= 5
    assert [c[0] for c in commands] == ["ikdiffuser", "ikdiffuser", "ikdiffuser", "ros2", "ros2"]
    assert [c[1] for c in commands[:3]] == ["init-robot", "train", "ship"]
    for argv in commands[:3]:
        assert callable(build_parser().parse_args(argv[1:]).func)


def test_the_launch_command_names_declared_arguments():
    launch = five_commands()[3]
    assert launch[:4] == ["ros2", "launch", "ikdiffuser_ros", "ikdiffuser.launch.py"]
    tree = ast.parse((ROOT / "launch" / "ikdiffuser.launch.py").read_text())
    declared = {n.args[0].value for n in ast.walk(tree) if isinstance(n, ast.Call)
                and getattr(n.func, "id", None) == "DeclareLaunchArgument"}
    given = {a.split(":=")[0] for a in launch[4:]}
    assert given == {"robot", "model_path"} and given <= declared


def test_the_robot_yaml_table_lists_the_schema_keys():
    from ikdiffuser_ros.robots import ROBOT_KEYS

    text = DOC.read_text()
    table = text[text.index("| key | type | units | default | meaning |"):]
    table = table[:table.index("\n\n")]
    keys = [row.split("|")[1].strip().strip("`") for row in table.splitlines()[2:]]
    assert keys == list(ROBOT_KEYS)


def test_the_readme_links_it():
    assert "(docs/your_robot.md)" in (ROOT / "README.md").read_text()
