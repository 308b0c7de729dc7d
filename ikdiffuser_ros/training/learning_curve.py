"""Learning curves: held-out raw-sample error against cumulative training hours, one line per robot.

``python -m ikdiffuser_ros.training.learning_curve models/panda models/baxter ... --out docs/img/learning_curves.png``
(``--table``: also print, per model, the steps and hours to a DDIM-20 raw median of 50 mm and the last point,
as a markdown table.)

``--x steps`` puts training steps on the horizontal axis instead of hours; ``--per-end-effector`` adds each end
effector's own median (dotted) where the curve records it. ``--shipped`` plots what ``ikdiffuser ship`` measures
instead (the shipped plan's raw median and one sample + LM, which CPU runs record since 2026-12-07).

Each checkpoint directory holds ``learning_curve.jsonl`` (the ``metrics.jsonl`` lines of every run
that led to it, copied when the model is shipped); a training run's ``--out`` directory, which has only its
``metrics.jsonl``, is read from that. Lines without ``total_hours`` (older runs) get
their hours from the step count and the card's totals (steps and hours grow together on one CPU).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

CURVE_FILE = "learning_curve.jsonl"
RUN_METRICS_FILE = "metrics.jsonl"


def read_curve(directory: str | Path) -> list[dict]:
    """Metrics lines of a checkpoint directory, each with ``total_hours``, ordered by it."""
    directory = Path(directory)
    card = json.loads((directory / "card.json").read_text())
    total = card.get("training", {}).get("cumulative", {})
    hours_per_step = total.get("hours", 0.0) / max(1, total.get("steps", 1))
    path = directory / CURVE_FILE if (directory / CURVE_FILE).is_file() else directory / RUN_METRICS_FILE
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for row in rows:
        row.setdefault("total_hours", row.get("total_steps", row["step"]) * hours_per_step)
    return sorted(rows, key=lambda r: r["total_hours"])


def first_below(rows: list[dict], mm: float) -> dict | None:
    """The first row of a curve whose median raw position error is at most ``mm`` [mm] (None if none is)."""
    return next((r for r in rows if r["pos_mm_median"] <= mm), None)


def table(directories: list[str | Path], mm: float = 50.0) -> str:
    """Markdown rows: model, steps and hours to ``mm`` [mm] (or "not yet"), and the last point's steps and median."""
    lines = [f"| model | steps to {mm:.0f} mm | hours to {mm:.0f} mm | last: steps, median [mm] |", "|---|---:|---:|---:|"]
    for d in directories:
        rows = read_curve(d)
        hit, last = first_below(rows, mm), rows[-1]
        reach = (f"{hit.get('total_steps', hit['step']):,} | {hit['total_hours']:.2f}" if hit else "not yet | not yet")
        lines.append(f"| {Path(d).name} | {reach} | {last.get('total_steps', last['step']):,}, "
                     f"{last['pos_mm_median']:.1f} |")
    return "\n".join(lines)


#: (left key, right key, left label, right label, left goals, right goals, right axis scale, title) of each view
VIEWS = {
    "ddim20": ("pos_mm_median", "rot_deg_median", "median position error [mm]", "median rotation error [deg]",
               (10, 20), (3, 5), "log", "Raw samples (DDIM-20, no refinement) on held-out targets; dashed: goals "
                                        "(single arm, multi-arm)"),
    "shipped": ("shipped_pos_mm_median", "one_sample_lm", "median position error, shipped plan [mm]",
                "one sample + LM solved [share]", (10, 20), (0.95, 0.98, 0.995), "linear",
                "What ikdiffuser ship measures, on the trainer's held-out targets; dashed: goals"),
}


def plot(directories: list[str | Path], out: str | Path, x: str = "hours", per_end_effector: bool = False,
         view: str = "ddim20") -> Path:
    """Two panels of ``VIEWS[view]`` vs CPU hours (``x="hours"``) or training steps (``x="steps"``), log x, to a PNG;
    each line is labelled by its directory's name (``ddim20``: median raw position [mm] and rotation [deg] error;
    ``shipped``: the shipped plan's median [mm] and one sample + LM, from the rows that record them).
    ``per_end_effector``: also each end effector's own DDIM-20 median position error, dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    left, right, label_l, label_r, goals_l, goals_r, scale_r, title = VIEWS[view]
    fig, (ax_p, ax_r) = plt.subplots(1, 2, figsize=(10, 4))
    for i, d in enumerate(directories):
        rows = [r for r in read_curve(d) if left in r and right in r]
        xs = [r["total_hours"] if x == "hours" else r.get("total_steps", r["step"]) for r in rows]
        style = {"color": plt.cm.tab20(i % 20), "marker": ".", "label": Path(d).name}  # 20 colours, none twice
        line, = ax_p.plot(xs, [r[left] for r in rows], **style)
        per_ee = [r.get("pos_mm_median_per_ee") for r in rows]
        if per_end_effector and view == "ddim20" and rows and all(per_ee):
            for e in range(len(per_ee[0])):
                ax_p.plot(xs, [v[e] for v in per_ee], ls=":", color=line.get_color())
        ax_r.plot(xs, [r[right] for r in rows], **style)
    xlabel = "training hours (one CPU thread)" if x == "hours" else "training steps (batch 1024)"
    for ax, label, goals, scale in ((ax_p, label_l, goals_l, "log"), (ax_r, label_r, goals_r, scale_r)):
        ax.set(xscale="log", yscale=scale, xlabel=xlabel, ylabel=label)
        for g in goals:
            ax.axhline(g, color="grey", lw=0.8, ls="--")
        ax.grid(True, which="both", alpha=0.3)
    ax_p.legend(fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoints", nargs="+", help="checkpoint directories with learning_curve.jsonl")
    ap.add_argument("--out", default="docs/img/learning_curves.png")
    ap.add_argument("--table", action="store_true", help="also print the steps to a 50 mm median per model")
    ap.add_argument("--x", choices=("hours", "steps"), default="hours", help="the horizontal axis")
    ap.add_argument("--per-end-effector", action="store_true",
                    help="also plot each end effector's own median position error (dotted)")
    ap.add_argument("--shipped", action="store_true",
                    help="plot what ikdiffuser ship measures (the shipped plan's median, one sample + LM) instead")
    args = ap.parse_args(argv)
    print(plot(args.checkpoints, args.out, args.x, args.per_end_effector, "shipped" if args.shipped else "ddim20"))
    if args.table:
        print(table(args.checkpoints))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
