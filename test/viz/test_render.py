"""render_solutions writes a PNG; ``ikdiffuser render`` draws the pipeline's answers (shipped panda model)."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("matplotlib")

from ikdiffuser_ros.collision.world import Shape, World, WorldObject, translation  # noqa: E402
from ikdiffuser_ros.robots import load_robot  # noqa: E402
from ikdiffuser_ros.viz.render import (  # noqa: E402
    _moving_and_trunk_edges, _solution_frames, register, render_solutions,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _random_q(model, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    lower, upper = model.limits()
    return lower + (upper - lower) * torch.rand(n, model.n_joints, generator=g, dtype=torch.float64)


def test_render_panda_png(tmp_path):
    model = load_robot("panda")
    q = _random_q(model, 6)
    targets = model.fk(q[0])
    world = World([WorldObject("table", [Shape.box([0.6, 0.8, 0.04], translation(0.5, 0.0, -0.02))]),
                   WorldObject("ball", [Shape.sphere(0.05, translation(0.4, 0.3, 0.5))]),
                   WorldObject("can", [Shape.cylinder(0.2, 0.05, translation(0.4, -0.3, 0.1))])])
    out = render_solutions(model, q, targets, tmp_path / "img" / "panda.png", "panda test", world=world,
                           failed=[False] * 5 + [True], subtitle="6 random configurations")
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 20_000


@pytest.mark.parametrize("shape", ["one", "one-1d", "identical"])
def test_render_single_solution(tmp_path, shape):
    """Regression: one solution (or identical ones) moves no edge; the chains to the end effectors are drawn."""
    model = load_robot("panda")
    q = _random_q(model, 1)
    q = {"one": q, "one-1d": q[0], "identical": q.repeat(3, 1)}[shape]
    links, T_links, _ = _solution_frames(model, q)
    moving, _ = _moving_and_trunk_edges(model, links, T_links)
    assert moving and {links[b] for _, b in moving} <= {j.child for j in model.urdf.path_from_root(model.end_effectors[0])}
    out = render_solutions(model, q, model.fk(q.reshape(-1, model.n_joints)[0]), tmp_path / "one.png")
    assert out.read_bytes().startswith(PNG_MAGIC)


@pytest.mark.parametrize("num_solutions", ["8", "1"])
def test_render_cli_draws_the_pipelines_answers(tmp_path, capsys, num_solutions):
    """``ikdiffuser render`` answers one IKQuery with the shipped panda model and draws what it returns."""
    import argparse

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    out = tmp_path / "panda_solutions.png"
    args = parser.parse_args(["render", "--robot", "panda", "--checkpoint", "models/panda", "--num-solutions",
                              num_solutions, "--out", str(out), "--seed", "3"])
    assert args.func(args) == 0
    assert out.read_bytes().startswith(PNG_MAGIC)
    printed = capsys.readouterr().out
    assert f"{num_solutions} solutions drawn ({num_solutions} valid of {num_solutions} drawn" in printed
    assert "of them in self collision (FCL)" in printed
