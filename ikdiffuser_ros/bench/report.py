"""Tables, goal checks, plots and the docs section of ``ikdiffuser bench`` (from its JSON report).

The report is ``{"settings": ..., "robots": {name: {"one_solution": [...], "many": [...],
"solvers": {name: description}, "notes": [...]}}}`` (see :func:`ikdiffuser_ros.bench.ik.run`).
"""

from __future__ import annotations

import math
from pathlib import Path

from ikdiffuser_ros.training.model_card import one_sample_goal

BEGIN, END = "<!-- ikdiffuser-bench:begin -->", "<!-- ikdiffuser-bench:end -->"
OURS, ABLATION = "ikdiffuser", "uniform+LM"
PLOT_SUCCESS = "bench_success_vs_budget.png"
PLOT_FREE = "bench_collision_free_per_s.png"


def _pct(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:.1f} %"


def _num(x: float, fmt: str = "{:.3g}") -> str:
    return "n/a" if x is None or math.isnan(x) else fmt.format(x)


def one_solution_table(robot: dict, main: int) -> str:
    """Markdown: success per budget, mean time per target and answer errors at ``budgets[main]``."""
    rows = robot["one_solution"]
    budgets = rows[0]["budgets"] if rows else []
    head = ["solver"] + [f"success @ {b * 1e3:g} ms" for b in budgets]
    head += [f"ms/target @ {budgets[main] * 1e3:g} ms", "pos err p50 / p95 [m]", "rot err p50 / p95 [rad]"]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for r in rows:
        cells = [r["solver"]] + [_pct(s) for s in r["success"]]
        cells.append(_num(r["time_per_target"][main] * 1e3, "{:.2f}"))
        cells.append(f"{_num(r['pos_err'][0], '{:.1e}')} / {_num(r['pos_err'][1], '{:.1e}')}")
        cells.append(f"{_num(r['rot_err'][0], '{:.1e}')} / {_num(r['rot_err'][1], '{:.1e}')}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def many_table(robot: dict) -> str:
    """Markdown: protocol 2 per solver (rates per second of solver time)."""
    head = ["solver", "verified/s", "distinct/s", "diversity [rad]", "self-coll-free share",
            "**distinct self-coll-free/s**", "distinct free of self + scene/s", "diversity of self-coll-free [rad]"]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for r in robot["many"]:
        s = r["seconds"]
        share = r["self_free"] / r["distinct"] if r["distinct"] else float("nan")
        lines.append("| " + " | ".join([
            r["solver"], _num(r["verified"] / s, "{:.0f}"), _num(r["distinct"] / s, "{:.0f}"),
            _num(r["mean_diversity"], "{:.2f}"), _pct(share), _num(r["self_free"] / s, "{:.0f}"),
            _num(r["scene_free"] / s, "{:.0f}"), _num(r.get("mean_diversity_self_free", math.nan), "{:.2f}")]) + " |")
    return "\n".join(lines)


def _by_solver(rows: list[dict]) -> dict[str, dict]:
    return {r["solver"]: r for r in rows}


def prior_vs_uniform_table(report: dict, main: int) -> str:
    """Markdown: protocol 3, the learned prior against uniform starts, per robot."""
    head = ["robot", "1 start per target, no limit: success (ms/target) prior / uniform",
            "success @ budget: prior / uniform", "distinct/s: prior / uniform",
            "self-coll-free distinct/s: prior / uniform", "diversity: prior / uniform"]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for name, robot in report["robots"].items():
        one, many = _by_solver(robot["one_solution"]), _by_solver(robot["many"])
        if OURS not in one or ABLATION not in one:
            continue
        p, u = many.get(OURS), many.get(ABLATION)

        def pair(key: str, fmt: str = "{:.0f}") -> str:
            if p is None or u is None:
                return "n/a"
            return f"{_num(p[key] / p['seconds'], fmt)} / {_num(u[key] / u['seconds'], fmt)}"

        single = " / ".join(f"{_pct(one[k]['single_success'])} "
                            f"({_num(one[k]['single_time_per_target'] * 1e3, '{:.2f}')})" for k in (OURS, ABLATION))
        lines.append("| " + " | ".join([
            name, single, f"{_pct(one[OURS]['success'][main])} / {_pct(one[ABLATION]['success'][main])}",
            pair("distinct"), pair("self_free"),
            "n/a" if p is None or u is None else
            f"{_num(p['mean_diversity'], '{:.2f}')} / {_num(u['mean_diversity'], '{:.2f}')}"]) + " |")
    return "\n".join(lines)


def goals(report: dict, main: int) -> list[str]:
    """The issue's goals, checked per robot: one bullet each, 'met' or 'missed' with the numbers (each
    protocol's where it ran)."""
    out = []
    for name, robot in report["robots"].items():
        one, many = _by_solver(robot["one_solution"]), _by_solver(robot["many"])
        out += _one_goals(name, robot, one, main)
        peer_many = [r for s, r in many.items() if s not in (OURS, ABLATION)]
        out += _many_goals(name, many[OURS], peer_many) if OURS in many and peer_many else []
    return out


def _one_goals(name: str, robot: dict, one: dict[str, dict], main: int) -> list[str]:
    """Protocol 1's goals: one solution against TRAC-IK and the fastest peer, one sample + LM against its goal."""
    peers = [s for s in one if s not in (OURS, ABLATION)]
    if OURS not in one or not peers:
        return []
    ours = one[OURS]
    fastest = min(one[s]["time_per_target"][main] for s in peers)
    success, t = ours["success"][main], ours["time_per_target"][main]
    tr = one["trac_ik"]["success"][main] if "trac_ik" in one else 0.0
    out = [f"{name}: one-solution success >= TRAC-IK's at a mean time within 2x the fastest peer: "
           f"{_pct(success)} in {t * 1e3:.2f} ms vs TRAC-IK {_pct(tr)}, fastest peer {fastest * 1e3:.2f} ms: "
           f"{'met' if success >= tr and t <= 2 * fastest else 'missed'}"]
    single, goal = ours.get("single_success", math.nan), one_sample_goal(len(robot["end_effectors"]))
    if not math.isnan(single):
        out.append(f"{name}: one sample + LM >= {_pct(goal)} (the goal for {len(robot['end_effectors'])} end "
                   f"effector(s)): {_pct(single)}: {'met' if single >= goal else 'missed'}")
    return out


def _many_goals(name: str, m: dict, peer_many: list[dict]) -> list[str]:
    """Protocol 2's goals: distinct self-collision-free solutions per second against 3x the best peer, diversity
    (of every distinct solution, and of the self-collision-free ones) against the most spread peer."""
    best = max(peer_many, key=lambda r: r["self_free"] / r["seconds"])
    rate, best_rate = m["self_free"] / m["seconds"], best["self_free"] / best["seconds"]
    out = [f"{name}: distinct self-collision-free solutions/s >= 3x the best peer ({best['solver']}): "
           f"{rate:.0f} vs {best_rate:.0f}/s ({rate / best_rate:.2f}x): "
           f"{'met' if rate >= 3 * best_rate else 'missed'}" if best_rate else
           f"{name}: no peer found a self-collision-free solution"]
    for key, what in (("mean_diversity", "diversity"), ("mean_diversity_self_free", "diversity of the "
                                                         "self-collision-free solutions")):
        values = [r for r in peer_many if not math.isnan(r.get(key, math.nan))]
        if key not in m or not values:
            continue
        top = max(values, key=lambda r: r[key])
        out.append(f"{name}: {what} >= every peer's: {m[key]:.2f} vs {top[key]:.2f} rad ({top['solver']}): "
                   f"{'met' if m[key] >= top[key] else 'missed'}")
    return out


def _plot_success(robots: dict, path: Path) -> Path:
    """One panel per robot: protocol-1 success [%] of each solver against the time budget per target [ms]."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(robots), figsize=(4.2 * len(robots), 3.6), squeeze=False, sharey=True)
    for ax, (name, robot) in zip(axes[0], robots.items()):
        for r in robot["one_solution"]:
            style = "-o" if r["solver"] in (OURS, ABLATION) else "--."
            ax.plot([b * 1e3 for b in r["budgets"]], [100 * s for s in r["success"]], style, label=r["solver"])
        budgets_ms = [b * 1e3 for b in robot["one_solution"][0]["budgets"]] if robot["one_solution"] else []
        ax.set(xscale="log", xlabel="time budget per target [ms]", title=name, ylim=(0, 101))
        ax.set_xticks(budgets_ms, [f"{b:g}" for b in budgets_ms])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("success [%] (1e-5 m, 1e-4 rad)")
    axes[0][-1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _free_rates(robots: dict, solver: str, k: int, n_solvers: int,
                width: float) -> tuple[list[float], list[float], list[float]]:
    """Bar positions of ``solver`` (the k-th of ``n_solvers``, bars ``width`` wide, robot i centred at x = i) and its
    protocol-2 distinct self-collision-free and scene-free solutions per second (at least 0.5, for the log
    scale), for the robots it ran on."""
    xs, self_free, scene_free = [], [], []
    for i, robot in enumerate(robots.values()):
        r = _by_solver(robot["many"]).get(solver)
        if r:
            xs.append(i + (k - (n_solvers - 1) / 2) * width)
            self_free.append(max(r["self_free"] / r["seconds"], 0.5))
            scene_free.append(max(r["scene_free"] / r["seconds"], 0.5))
    return xs, self_free, scene_free


def _plot_collision_free(robots: dict, path: Path) -> Path:
    """Grouped bars per robot: distinct self-collision-free solutions/s of each solver; black ticks: also scene-free."""
    import matplotlib.pyplot as plt

    solvers = list(dict.fromkeys(r["solver"] for robot in robots.values() for r in robot["many"]))
    fig, ax = plt.subplots(figsize=(1.6 + 1.9 * len(robots), 3.8))
    width = 0.8 / max(len(solvers), 1)
    for k, solver in enumerate(solvers):
        xs, self_free, scene_free = _free_rates(robots, solver, k, len(solvers), width)
        bars = ax.bar(xs, self_free, width, label=solver)
        ax.scatter(xs, scene_free, marker="_", s=120, color="k", zorder=3)
        ax.bar_label(bars, labels=[f"{v:.0f}" for v in self_free], fontsize=6, rotation=90, padding=2)
    ax.set_xticks(range(len(robots)), list(robots))
    ax.set(yscale="log", ylabel="distinct self-collision-free solutions / s",
           title="many solutions per target (bars: self-collision-free; black ticks: also scene-free)")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7, ncol=len(solvers), loc="upper center", bbox_to_anchor=(0.5, -0.08), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot(report: dict, out_dir: Path) -> list[Path]:
    """Write the two PNGs (success vs budget; distinct collision-free solutions/s) into ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")

    out_dir.mkdir(parents=True, exist_ok=True)
    robots = report["robots"]
    return [_plot_success(robots, out_dir / PLOT_SUCCESS), _plot_collision_free(robots, out_dir / PLOT_FREE)]


def markdown(report: dict, img_prefix: str = "img/") -> str:
    """The whole docs section: settings, per-robot tables, protocol 3, goals, plots, notes."""
    s = report["settings"]
    main = s["budgets_s"].index(s["main_budget_s"])
    parts = [
        f"Command: `{s['command']}` ({s['date']}, {s['machine']}, torch {s['torch']} with "
        f"{s['torch_threads']} thread(s); peers: {', '.join(f'{k} {v}' for k, v in s['versions'].items())}).",
        "",
        f"Targets: FK poses of uniform random configurations (seed {s['seed']}); protocol 1: "
        f"{s['one_targets']} targets, budgets {', '.join(f'{b * 1e3:g}' for b in s['budgets_s'])} ms per target; "
        f"protocol 2: {s['many_targets']} targets x {s['many_budget_s']:g} s each. "
        f"Success = 1e-5 m / 1e-4 rad at every end effector and within limits, by one float64 FK of our "
        f"RobotModel.",
        "",
        f"![success vs budget]({img_prefix}{PLOT_SUCCESS})",
        "",
        f"![distinct collision-free solutions per second]({img_prefix}{PLOT_FREE})",
        "",
    ]
    for name, robot in report["robots"].items():
        parts += [f"### {name} ({robot['n_joints']} joints, end effectors {', '.join(robot['end_effectors'])})", ""]
        if robot["one_solution"]:
            parts += ["One solution per target:", "", one_solution_table(robot, main), ""]
        if robot["many"]:
            parts += [f"Many solutions per target ({s['many_budget_s']:g} s each):", "", many_table(robot), ""]
        parts += [f"- {k}: {v}" for k, v in robot["solvers"].items()]
        parts += [f"- note: {n}" for n in robot["notes"]] + [""]
    parts += ["### The learned prior against uniform starts (same LM, same dedup, same budget)", "",
              prior_vs_uniform_table(report, main), "", "### Against the goals of the issue", ""]
    parts += [f"- {g}" for g in goals(report, main)]
    return "\n".join(parts) + "\n"


def replace_section(path: Path, text: str, begin: str = BEGIN, end: str = END) -> None:
    """Put ``text`` between the ``begin``/``end`` markers of ``path`` (appended with the markers if absent)."""
    doc = path.read_text() if path.exists() else ""
    block = f"{begin}\n{text}{end}"
    if begin in doc and end in doc:
        head, rest = doc.split(begin, 1)
        doc = head + block + rest.split(end, 1)[1]
    else:
        doc = doc.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(doc)
