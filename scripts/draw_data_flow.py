"""Draw docs/img/data_flow.png: from a service call to its answer (docs/architecture.md).

    python scripts/draw_data_flow.py [--out docs/img/data_flow.png]
"""
from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

ROS, CORE = "#dbe9f6", "#e6f4e1"
#: (x, y, text, colour): boxes, top to bottom, in axes units
BOXES = [
    (0.23, 0.97, "service callback (executor thread)\nSolveQueue: admit or answer 'busy'", ROS),
    (0.23, 0.75, "ik_solutions.query_of / moveit_bridge.query_of\nmessage -> IKQuery (poses, frames, seed,\n"
                 "objectives, budget, scene snapshot)", ROS),
    (0.72, 0.75, "IKPipeline.answer(query)\nplan: sizes, group, locked joints, objectives,\n"
                 "targets -> end effectors + tip points (frames at the seed)", CORE),
    (0.72, 0.53, "rounds x chunks (ChunkSizer: throughput x time left)\nround 0: every target; later: targets without\n"
                 "a valid solution (collision guidance)", CORE),
    (0.72, 0.31, "chunk: IKDiffuserSolver.run\nsample -> LM (locked columns frozen) -> polish\n"
                 "-> measure at the tips (the one success test)\n-> JointBounds -> FCL check_until(deadline)", CORE),
    (0.72, 0.09, "finish: pool, unique, rank (the one ordering),\nnum_solutions, status\n"
                 "SOLVED / NO_SOLUTION / TIMED_OUT / INVALID", CORE),
    (0.23, 0.09, "fill_response: IKAnswer -> message\nerror_codes: the one table\n(exceptions and statuses -> codes)", ROS),
]
ARROWS = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 6)]


def draw(out: str) -> None:
    fig, ax = plt.subplots(figsize=(10, 7.5))
    ax.set_axis_off()
    for x, y, text, colour in BOXES:
        ax.add_patch(FancyBboxPatch((x - 0.22, y - 0.075), 0.44, 0.15, boxstyle="round,pad=0.01", fc=colour,
                                    ec="0.3", transform=ax.transAxes, clip_on=False))
        ax.text(x, y, text, ha="center", va="center", fontsize=8.5, transform=ax.transAxes)
    for a, b in ARROWS:
        (xa, ya, *_), (xb, yb, *_) = BOXES[a], BOXES[b]
        start = (xa + 0.22, ya) if xb > xa + 0.1 else (xa - 0.22, ya) if xb < xa - 0.1 else (xa, ya - 0.085)
        end = (xb - 0.22, yb) if xb > xa + 0.1 else (xb + 0.22, yb) if xb < xa - 0.1 else (xb, yb + 0.085)
        ax.annotate("", end, start, xycoords="axes fraction", arrowprops=dict(arrowstyle="->", lw=1.4))
    ax.text(0.23, 1.08, "ikdiffuser_ros/ros/ (translation only)", ha="center", fontsize=10, weight="bold",
            transform=ax.transAxes, color="#2b5d8a")
    ax.text(0.72, 1.08, "core (no ROS): one pipeline for node, MoveIt and Python", ha="center", fontsize=10,
            weight="bold", transform=ax.transAxes, color="#3d7a2f")
    ax.text(0.5, -0.03, "every stage checks the deadline between short units: answer within budget + 20 ms",
            ha="center", fontsize=9, style="italic", transform=ax.transAxes)
    fig.savefig(out, dpi=110, bbox_inches="tight")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/img/data_flow.png")
    draw(parser.parse_args().out)
