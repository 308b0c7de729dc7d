"""The docs say what the code does: tables generated from the code are in sync."""

from pathlib import Path

from ikdiffuser_ros.ros.params import markdown_table

ROOT = Path(__file__).resolve().parents[2]


def test_node_parameter_table_matches_params_py():
    assert markdown_table() in (ROOT / "docs" / "ros_node.md").read_text(), \
        "docs/ros_node.md's parameter table is stale: python -m ikdiffuser_ros.ros.params"


def test_robot_param_files_hold_only_overrides():
    """config/<robot>.yaml set no parameter to its default (a default changed in params.py reaches them)."""
    import dataclasses

    import yaml

    from ikdiffuser_ros.ros.params import NodeConfig

    defaults = {f.name: f.default for f in dataclasses.fields(NodeConfig) if f.default is not dataclasses.MISSING}
    for path in sorted((ROOT / "config").glob("*.yaml")):
        data = yaml.safe_load(path.read_text()) or {}
        params = data.get("ikdiffuser_node", {}).get("ros__parameters")
        if params is None:
            continue
        same = {k: v for k, v in params.items() if k in defaults and defaults[k] == v}
        assert not same, f"{path.name} restates defaults {same}"
        assert set(params) <= set(NodeConfig.names()), f"{path.name}: unknown parameters"


def test_readme_python_example_runs_from_any_directory(tmp_path, monkeypatch):
    """The README's first Python example, run as written from an empty directory."""
    text = (ROOT / "README.md").read_text()
    start = text.index("```python\nfrom ikdiffuser_ros import IKPipeline")
    code = text[start + len("```python\n"):text.index("```\n", start + 10)]
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - our own README
    from ikdiffuser_ros import Status

    assert scope["answer"].targets[0].status is Status.SOLVED
    assert abs(scope["seeded"].targets[0].q[0] - scope["q_true"].numpy()).max() <= 1e-6
