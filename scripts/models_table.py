"""The shipped models' table of docs/training.md from their cards and eval.json files.

    python scripts/models_table.py models/panda models/baxter ...

Columns: total training (hours, steps, runs), the held-out raw median with the shipped sampler and
with plain DDIM-20, one sample + the solver's LM against its goal, and the self-collision-free shares
of raw samples (targets feasible without collision / all targets / uniform joints).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def row(directory: Path) -> str:
    card = json.loads((directory / "card.json").read_text())
    ev = json.loads((directory / "eval.json").read_text())
    total = card["training"].get("cumulative", {})
    runs = total.get("runs", 1)
    training = f"{total.get('hours', 0):.2f} h, {total.get('steps', 0) / 1000:.0f} k steps" + (f" ({runs} runs)" if runs > 1 else "")
    shipped, ddim20 = ev["all_end_effectors"], ev.get("all_end_effectors_ddim20", {})
    one = ev.get("one_sample_lm")
    one_cell = "n/a" if one is None else f"{pct(one['success'])} (goal {pct(one['goal'])})"
    free = " / ".join(pct(ev.get(k)) for k in ("self_collision_free_share_feasible_targets",
                                              "self_collision_free_share", "uniform_self_collision_free_share"))
    return (f"| {directory.name} | {training} | {shipped['pos_mm_median']:.1f} mm / {shipped['rot_deg_median']:.2f}° | "
            f"{ddim20.get('pos_mm_median', float('nan')):.1f} mm | {one_cell} | {free} |")


def main(dirs: list[str]) -> None:
    print("| model | total training | raw median, shipped sampler | raw median, DDIM-20 | one sample + LM | "
          "self-collision-free raw samples (feasible targets / all targets / uniform joints) |")
    print("|---|---|---|---|---|---|")
    for d in dirs:
        print(row(Path(d)))


if __name__ == "__main__":
    main(sys.argv[1:])
